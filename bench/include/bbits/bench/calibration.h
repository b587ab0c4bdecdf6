// bbits bench — measuring the machine calibration that `bbits calibrate` writes
// (the file itself, bbits/runtime/calibration.h, is the runtime's): read
// bandwidth per cache level and thread count, and the reuse bandwidth.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bbits/bench/stats.h"
#include "bbits/bench/sysinfo.h"
#include "bbits/runtime/calibration.h"

namespace bbits::bench {

// The calibration file's schema, reader and writer are the runtime's.
using bbits::BandwidthLevel;
using bbits::Calibration;
using bbits::CalibrationError;
using bbits::DispatchCost;
using bbits::KernelOverhead;
using bbits::KernelPeak;
using bbits::ReuseBandwidth;
using bbits::ThreadScaling;
using bbits::default_calibration_path;

// Capacity a cache level offers to `threads` threads: private levels
// (shared_by == 1) add up across threads, shared ones do not.
int64_t effective_capacity(const CacheLevel& c, int threads);

struct BandwidthCalibrationOptions {
  std::vector<int> threads = {1, 2};
  TimingOptions timing{.warmup = 2, .repeats = 9};
  // Fractions of a level's capacity used as probe working sets (each above
  // the previous level's capacity); the level's bandwidth is the best median
  // among them (noise on a shared machine only ever lowers a median).
  std::vector<double> fills = {0.125, 0.25, 0.5};
  // DRAM probe: max(dram_factor x last-level capacity, dram_min_bytes).
  double dram_factor = 4.0;
  int64_t dram_min_bytes = 64ll << 20;
};

// Measures the read bandwidth of every cache level and DRAM for each thread count.
std::vector<BandwidthLevel> calibrate_bandwidth(const std::vector<CacheLevel>& caches,
                                                const BandwidthCalibrationOptions& opts);

// The reuse bandwidth (measure_reuse_bandwidth) for each thread count at
// distances 0, 1/8, 1/4, 1/2, 3/4 and 1 of the last-level cache, then
// 1.5x, 2x and 4x it: the best median of two tries each.
std::vector<ReuseBandwidth> calibrate_reuse(const std::vector<CacheLevel>& caches,
                                            const BandwidthCalibrationOptions& opts);

}  // namespace bbits::bench
