// What `bbits bench` and `bbits calibrate` do (bbits/bench/commands.h).
#include "bbits/bench/commands.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "bbits/bench/calibration.h"
#include "bbits/bench/model_bench.h"
#include "bbits/bench/report.h"

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
  mo.calibration_path = o.calibration.empty() ? bb::default_calibration_path() : o.calibration;
  const char* env = std::getenv("BBITS_CALIBRATION");
  const bool cache = o.calibration.empty() && !(env && *env);  // the default place, not a file the user named
  if (cache && !std::filesystem::exists(mo.calibration_path)) {
    // First use: the roofline needs this machine's bandwidths and kernel
    // peaks. A quick calibration now (saved atomically and reused), rather
    // than a run without the roofline columns.
    fmt::print(stderr,
               "bbits bench: no calibration at {}: running a quick one first (about 20 s, once; it is saved there "
               "and reused; `bbits calibrate` measures a full one in 3 to 11 minutes and replaces it)\n",
               mo.calibration_path);
    const bb::Calibration c = bb::calibrate_machine(
        quick_calibration_options(o.threads), [](const std::string& s) { fmt::print(stderr, "bbits calibrate: {}\n", s); });
    c.save(mo.calibration_path);
    fmt::print(stderr, "bbits bench: quick calibration saved to {}\n", mo.calibration_path);
  }
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

}  // namespace bbits::bench::commands
