// bbits bench — what `bbits bench`, `bbits calibrate` and `bbits profile` do. Each takes its
// options, prints its report on stdout (progress on stderr) and returns the
// exit code; bad options and failures are thrown (std::exception). The
// columns and the calibration file are documented in docs/BENCH.md. The
// `bbits` program (programs/bbits/) parses the command line into these
// options.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bbits/bench/peaks.h"

namespace bbits::bench::commands {

// bbits bench MODEL: per layer and for the whole model, the measured time
// (median, IQR), the oneDNN float32 and int8 baselines, the BOP- and
// roofline-predicted speedups, the measured ones and the error of each
// prediction. Without a calibration file at the default place, a quick
// calibration is made first and saved there.
struct BenchOptions {
  std::string model;
  bool json = false;           // JSON on stdout instead of the table
  std::string csv;             // also write CSV to this file
  std::string json_out;        // also write JSON to this file
  std::vector<int> threads = {1, 2};
  int repeats = 15;            // timed samples per measurement
  int warmup = 2;              // untimed runs before sampling
  int passes = 3;              // passes over all measurements, the fastest kept
  std::string calibration;     // empty: $BBITS_CALIBRATION or ~/.cache/bbits/calibration.json
  bool no_baselines = false;   // skip the oneDNN baselines
  bool all_columns = false;    // every column in the terminal table
  double target_ms = 0;        // > 0: the measured whole model against this budget (ms)
  std::string cost_table;      // the cost table's prediction beside the measurement
};
int bench(const BenchOptions& o);

// bbits calibrate: this machine's read bandwidth per cache level and the peak
// MAC throughput of every kernel and of the oneDNN baselines, saved as the
// calibration file.
struct CalibrateOptions {
  std::string out;  // empty: $BBITS_CALIBRATION or ~/.cache/bbits/calibration.json
  std::vector<int> threads = {1, 2};
  bool quick = false;      // quick_calibration_options
  bool no_onednn = false;  // skip the oneDNN baseline peaks
  std::string filter;      // only kernels whose name contains this text
  int repeats = 15;        // timed samples per kernel
};
int calibrate(const CalibrateOptions& o);

// bbits profile: the cost table of a network on this CPU (docs/COST_TABLE.md),
// for a zoo architecture (`arch`, with width, input shape and classes as
// bbits-train builds it) or for a checkpoint's graph. Without a calibration
// file at the default place, a quick calibration is made first.
struct ProfileOptions {
  std::string arch;                  // either arch ...
  std::string checkpoint;            // ... or a checkpoint's graph
  std::string out;                   // the table (JSON)
  std::string input = "1x28x28";     // C x H x W
  std::string calibration;           // as BenchOptions::calibration
  double width = 1.0;
  int64_t classes = 10;
  int threads = 1;
  bool measure = false;              // also time the real kernels at every grid point
  std::string price = "roofline";    // roofline | measured (implies measure)
  int repeats = 5;                   // with measure: timed samples per point
};
int profile(const ProfileOptions& o);

// The quick calibration of `bbits calibrate --quick` and of `bbits bench`'s
// first use: few samples, at most three shapes per kernel and width, one pass
// (about 20 s for 1 and 2 threads on the 2-core test VM; docs/BENCH.md).
MachineCalibrationOptions quick_calibration_options(const std::vector<int>& threads);

}  // namespace bbits::bench::commands
