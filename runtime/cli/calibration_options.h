// The quick machine calibration shared by `bbits calibrate --quick` and the
// one `bbits bench` makes on first use: few samples, at most three shapes
// per kernel and width, one pass (about 20 s for 1 and 2 threads on the
// 2-core test VM; docs/BENCH.md).
#pragma once

#include <vector>

#include "bbits/bench/peaks.h"

namespace bbits::cli {

inline bench::MachineCalibrationOptions quick_calibration_options(const std::vector<int>& threads) {
  bench::MachineCalibrationOptions mo;
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

}  // namespace bbits::cli
