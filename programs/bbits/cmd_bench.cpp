// bbits bench MODEL [--json] [--csv FILE] [--json-out FILE] [--threads 1,2]
//                   [--repeats N] [--passes N] [--calibration FILE] [--no-baselines]
//                   [--target-ms T] [--cost-table FILE]
// (bbits::bench::commands::bench; columns: docs/BENCH.md).
#include <memory>

#include "bbits/bench/commands.h"
#include "command.h"

BBITS_COMMAND("bench", "Measure per-layer and whole-model time against BOP and roofline predictions",
              [](CLI::App& sub) {
                auto o = std::make_shared<bbits::bench::commands::BenchOptions>();
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
                return [o]() -> int { return bbits::bench::commands::bench(*o); };
              });
