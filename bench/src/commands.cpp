// What `bbits bench`, `bbits calibrate` and `bbits profile` do (bbits/bench/commands.h).
#include "bbits/bench/commands.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>

#include "bbits/bench/calibration.h"
#include "bbits/bench/cost_profile.h"
#include "bbits/bench/model_bench.h"
#include "bbits/bench/report.h"
#include "bbits/contract/checkpoint.h"
#include "bbits/contract/zoo.h"

namespace bbits::bench::commands {

namespace bb = bbits::bench;

MachineCalibrationOptions quick_calibration_options(const std::vector<int>& threads) {
  MachineCalibrationOptions mo;
  mo.bandwidth.threads = threads;
  mo.peaks.threads = threads;
  mo.bandwidth.timing.repeats = 3;
  mo.bandwidth.fills = {0.25};
  mo.bandwidth.dram_factor = 1.0;
  mo.bandwidth.dram_min_bytes = 8ll << 20;
  mo.peaks.timing = {.warmup = 1, .repeats = 2, .min_sample_ns = 0};
  mo.peaks.passes = 1;
  mo.peaks.coarse = true;
  return mo;
}

namespace {

// The calibration file a command uses: the one named, or the default place.
// First use: the roofline needs this machine's bandwidths and kernel peaks, so
// a quick calibration is made now (saved atomically and reused), rather than a
// run without the roofline.
std::string calibration_for(const char* command, const std::string& named, const std::vector<int>& threads) {
  const std::string path = named.empty() ? bb::default_calibration_path() : named;
  const char* env = std::getenv("BBITS_CALIBRATION");
  const bool cache = named.empty() && !(env && *env);  // the default place, not a file the user named
  if (cache && !std::filesystem::exists(path)) {
    fmt::print(stderr,
               "bbits {}: no calibration at {}: running a quick one first (about 20 s, once; it is saved there "
               "and reused; `bbits calibrate` measures a full one in 3 to 11 minutes and replaces it)\n",
               command, path);
    const bb::Calibration c = bb::calibrate_machine(
        quick_calibration_options(threads), [](const std::string& s) { fmt::print(stderr, "bbits calibrate: {}\n", s); });
    c.save(path);
    fmt::print(stderr, "bbits {}: quick calibration saved to {}\n", command, path);
  }
  return path;
}

// "1x28x28" -> {1, 28, 28} (C x H x W, positive).
std::vector<int64_t> parse_chw(const std::string& s) {
  std::vector<int64_t> r;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t x = s.find('x', pos);
    const std::string part = s.substr(pos, x == std::string::npos ? std::string::npos : x - pos);
    try {
      size_t used = 0;
      const long long v = std::stoll(part, &used);
      if (used != part.size() || v < 1) throw std::invalid_argument("");
      r.push_back(v);
    } catch (const std::exception&) {
      throw std::invalid_argument("--input must look like 1x28x28 (C x H x W, positive), not '" + s + "'");
    }
    if (x == std::string::npos) break;
    pos = x + 1;
  }
  if (r.size() != 3) throw std::invalid_argument("--input must have three dimensions C x H x W, not '" + s + "'");
  return r;
}

}  // namespace

int bench(const BenchOptions& o) {
  if (o.repeats < 1) throw std::invalid_argument("--repeats must be at least 1");
  if (o.warmup < 0) throw std::invalid_argument("--warmup must not be negative");
  if (o.passes < 1 || o.passes > 100) throw std::invalid_argument("--passes must be 1..100");
  for (int t : o.threads)
    if (t < 1 || t > 256) throw std::invalid_argument(fmt::format("--threads: {} is out of range 1..256", t));
  bb::ModelBenchOptions mo;
  mo.threads = o.threads;
  mo.timing.repeats = o.repeats;
  mo.timing.warmup = o.warmup;
  mo.passes = o.passes;
  mo.baselines = !o.no_baselines;
  mo.calibration_path = calibration_for("bench", o.calibration, o.threads);
  mo.calibration = bb::Calibration::load(mo.calibration_path);
  // Progress goes to stderr so that --json output stays clean.
  const bb::ModelBenchResult r =
      bb::run_model_bench(o.model, mo, [](const std::string& s) { fmt::print(stderr, "bbits bench: {}\n", s); });
  if (!o.csv.empty()) bb::write_text_atomic(o.csv, bb::to_csv(r.rows, r.meta));
  if (!o.json_out.empty()) bb::write_text_atomic(o.json_out, r.to_json().dump(2) + "\n");
  if (o.json) {
    fmt::print("{}\n", r.to_json().dump(2));
  } else {
    const std::vector<std::string> none;
    fmt::print("{}", bb::format_terminal(r.rows, r.meta, o.all_columns ? none : bb::terminal_columns()));
    fmt::print("\n{}", bb::summary_text(r));
    fmt::print("columns: t = measured median (us), iqr = interquartile range, f32/int8 = oneDNN baselines,\n"
               "roof = roofline time, roof_err = roof / t - 1, bop_xN = speedup BOPs predict vs the layer at N/N bits,\n"
               "meas_xN = measured speedup vs the oneDNN baseline at N bits, roof_xN = roofline-predicted speedup\n");
  }
  if (o.target_ms > 0 || !o.cost_table.empty()) {
    std::optional<contract::CostTable> table;
    if (!o.cost_table.empty()) table = contract::CostTable::load(o.cost_table);
    fmt::print("{}", bb::budget_report(r, o.model, o.target_ms, table ? &*table : nullptr));
  }
  std::fflush(stdout);
  return 0;
}

int calibrate(const CalibrateOptions& o) {
  for (int t : o.threads)
    if (t < 1 || t > 256) throw std::invalid_argument(fmt::format("--threads: {} is out of range 1..256", t));
  if (o.repeats < 1) throw std::invalid_argument("--repeats must be at least 1");
  const std::string path = o.out.empty() ? bb::default_calibration_path() : o.out;
  bb::MachineCalibrationOptions mo;
  if (o.quick) {
    mo = quick_calibration_options(o.threads);
  } else {
    mo.bandwidth.threads = o.threads;
    mo.peaks.threads = o.threads;
    mo.peaks.timing.repeats = o.repeats;
  }
  mo.peaks.onednn = !o.no_onednn;
  mo.peaks.filter = o.filter;
  const bb::Calibration c = bb::calibrate_machine(mo, [](const std::string& s) { fmt::print("{}\n", s); });
  c.save(path);
  fmt::print("calibration written to {} ({} bandwidth levels, {} kernel peaks)\n", path, c.bandwidth.size(),
             c.peaks.size());
  return 0;
}

int profile(const ProfileOptions& o) {
  if (o.arch.empty() == o.checkpoint.empty()) throw std::invalid_argument("give either --arch or --checkpoint");
  if (o.repeats < 1) throw std::invalid_argument("--repeats must be at least 1");
  if (o.threads < 1 || o.threads > 256)
    throw std::invalid_argument(fmt::format("--threads: {} is out of range 1..256", o.threads));
  if (o.price != "roofline" && o.price != "measured")
    throw std::invalid_argument("--price must be roofline or measured, not '" + o.price + "'");
  contract::Graph g;
  if (!o.checkpoint.empty()) {
    g = contract::load_checkpoint(o.checkpoint).graph;
  } else {
    // The options bbits-train builds its networks with (Fashion-MNIST by
    // default: 10 classes, pixel / 255, no pruning gates on depthwise layers).
    contract::ZooOptions zo;
    zo.input_shape = parse_chw(o.input);
    zo.num_classes = o.classes;
    zo.width = o.width;
    zo.prune_depthwise = false;
    zo.preprocessing = contract::Preprocessing{};
    g = contract::make_graph(o.arch, zo);
  }
  bb::ProfileOptions po;
  po.threads = o.threads;
  po.width = o.width;
  po.price_measured = o.price == "measured";
  po.measure = o.measure || po.price_measured;
  po.timing.repeats = o.repeats;
  std::vector<int> threads{1};
  if (o.threads > 1) threads.push_back(o.threads);
  po.calibration_path = calibration_for("profile", o.calibration, threads);
  po.calibration = bb::Calibration::load(po.calibration_path);
  const contract::CostTable t =
      bb::profile_graph(g, po, [](const std::string& s) { fmt::print(stderr, "bbits profile: {}\n", s); });
  t.save(o.out);
  std::map<std::string, int> w8, a8;
  for (const auto& L : t.layers) {
    w8[L.name] = 8;
    if (std::find(L.act_bits.begin(), L.act_bits.end(), 8) != L.act_bits.end()) a8[L.name] = 8;
  }
  fmt::print("cost table of {} ({} weight layers, {} other operators) for {} threads on {} ({}), priced by {}: wrote {}\n",
             g.model, t.layers.size(), t.other.size(), t.threads, t.cpu, t.isa, o.price, o.out);
  fmt::print("predicted whole model: {:.1f} us at w8a8, {:.1f} us at w32a32, {:.1f} us outside the layers\n",
             t.predict_us(w8, a8, {}), t.predict_us({}, {}, {}), t.other_us());
  return 0;
}

}  // namespace bbits::bench::commands
