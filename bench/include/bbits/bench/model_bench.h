// bbits bench — the measured-vs-predicted benchmark of one model file: per
// layer and for the whole model, at each thread count, the measured time of
// bbits (per layer inside a profiled Session, and each chosen kernel alone)
// and of the oneDNN float32 and int8 baselines; the speedups BOPs and the roofline predict against those
// baselines; the measured speedups; and the error of each prediction.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bbits/bench/calibration.h"
#include "bbits/bench/report.h"
#include "bbits/bench/stats.h"

namespace bbits::bench {

struct ModelBenchOptions {
  std::vector<int> threads = {1, 2};
  TimingOptions timing{.warmup = 2, .repeats = 15};
  // Passes over all the measurements; each keeps its fastest pass (see
  // run_model_bench). Must be at least 1.
  int passes = 3;
  // Before each pass: when the calibration recorded the machine probe
  // (probe_machine) and the machine is now more than 15% slower on it on one
  // thread, or gives less than 85% of the calibrated thread scaling (the VM's
  // vCPUs on one core's SMT siblings), wait for it to come back, re-measuring
  // every half second, for at most this many seconds per run in total; then
  // measure anyway and add a warning. Every probe is recorded in the results
  // (meta "probe_us_T", "thread_scaling_T").
  double max_wait_s = 60;
  bool baselines = true;   // time the oneDNN baselines
  bool whole_model = true; // time bbits::Session end to end
  Calibration calibration;
  std::string calibration_path;  // recorded in the results
};

struct ModelBenchResult {
  Meta meta;    // model, arch, cpu, isa, commit, created, onednn, calibration
  Table rows;   // one row per layer and thread count, then one "model" row per thread count
  // Share of layers (with a positive measured time) whose roofline time is
  // within +/-25% of the measured median, per thread count.
  std::vector<std::pair<int, double>> roofline_hit_rate;
  // Conditions that make the figures less trustworthy (e.g. the machine's
  // thread scaling below the calibrated one); also in the summary and JSON.
  std::vector<std::string> warnings;
  nlohmann::json to_json() const;
};

// Column names of ModelBenchResult::rows (documented in docs/BENCH.md).
const std::vector<Column>& bench_columns();
// The columns `bbits bench` prints in the terminal.
const std::vector<std::string>& terminal_columns();

// Runs the benchmark. `progress` receives one line per finished stage.
// Throws std::runtime_error naming the problem (bad file, missing calibration entries).
ModelBenchResult run_model_bench(const std::string& model_path, const ModelBenchOptions& opts,
                                 const std::function<void(const std::string&)>& progress = {});

// Text summary under the table: roofline hit rate, median BOP and roofline
// errors per thread count.
std::string summary_text(const ModelBenchResult& r);

}  // namespace bbits::bench
