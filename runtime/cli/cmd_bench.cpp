// bbits bench MODEL [--json] [--csv FILE] [--json-out FILE] [--threads 1,2]
//                   [--repeats N] [--passes N] [--calibration FILE] [--no-baselines]
// Per layer and for the whole model: measured time (median, IQR), oneDNN
// float32 and int8 baselines, BOP- and roofline-predicted speedups, measured
// speedups and the error of each prediction. Columns: docs/BENCH.md.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>

#include "bbits/bench/calibration.h"
#include "bbits/bench/cost_profile.h"
#include "bbits/bench/model_bench.h"
#include "bbits/bench/report.h"
#include "calibration_options.h"
#include "command.h"

namespace bbits::cli {
namespace {

struct BenchOptions {
  std::string model;
  bool json = false;
  std::string csv;
  std::string json_out;
  std::vector<int> threads = {1, 2};
  int repeats = 15;
  int warmup = 2;
  int passes = 3;
  std::string calibration;
  bool no_baselines = false;
  bool all_columns = false;
  double target_ms = 0;    // > 0: report the whole model against this budget
  std::string cost_table;  // its prediction beside the measurement
};

int run_bench(const BenchOptions& o) {
  namespace bb = bbits::bench;
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
  if (o.target_ms > 0 || !o.cost_table.empty()) {
    std::optional<contract::CostTable> table;
    if (!o.cost_table.empty()) table = contract::CostTable::load(o.cost_table);
    fmt::print("{}", bb::budget_report(r, o.model, o.target_ms, table ? &*table : nullptr));
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

BBITS_COMMAND("bench", "Measure per-layer and whole-model time against BOP and roofline predictions",
              [](CLI::App& sub) {
                auto o = std::make_shared<BenchOptions>();
                sub.add_option("model", o->model, "Model file (.bbm)")->required();
                sub.add_flag("--json", o->json, "Print the results as JSON instead of a table");
                sub.add_option("--csv", o->csv, "Also write the results as CSV to FILE");
                sub.add_option("--json-out", o->json_out, "Also write the results as JSON to FILE");
                sub.add_option("--threads", o->threads, "Thread counts, e.g. 1,2")->delimiter(',');
                sub.add_option("--repeats", o->repeats, "Timed samples per measurement (median and IQR)");
                sub.add_option("--warmup", o->warmup, "Untimed runs before sampling");
                sub.add_option("--passes", o->passes,
                               "Passes over all measurements; each keeps its fastest pass (default 3)");
                sub.add_option("--calibration", o->calibration,
                               "Calibration JSON from `bbits calibrate` (default: $BBITS_CALIBRATION or "
                               "~/.cache/bbits/calibration.json; made by a quick calibration on first use)");
                sub.add_flag("--no-baselines", o->no_baselines, "Skip the oneDNN float32 and int8 baselines");
                sub.add_flag("--all-columns", o->all_columns, "Print every column in the terminal table");
                sub.add_option("--target-ms", o->target_ms,
                               "Print the measured whole-model time against this budget (ms)");
                sub.add_option("--cost-table", o->cost_table,
                               "Print the cost table's prediction (`bbits profile`) beside the measured time")
                    ->check(CLI::ExistingFile);
                return [o]() -> int { return run_bench(*o); };
              });

}  // namespace bbits::cli
