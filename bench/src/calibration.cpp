#include "bbits/bench/calibration.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "bbits/bench/bandwidth.h"

namespace bbits::bench {

int64_t effective_capacity(const CacheLevel& c, int threads) {
  return c.shared_by <= 1 ? c.bytes * std::max(threads, 1) : c.bytes;
}

std::vector<ReuseBandwidth> calibrate_reuse(const std::vector<CacheLevel>& caches,
                                            const BandwidthCalibrationOptions& opts) {
  if (opts.threads.empty()) throw std::invalid_argument("reuse calibration: no thread counts");
  int64_t llc = 0;
  for (const auto& c : caches) llc = std::max(llc, c.bytes);
  if (llc <= 0) llc = 32ll << 20;
  std::vector<ReuseBandwidth> out;
  for (int t : opts.threads) {
    if (t < 1) throw std::invalid_argument("reuse calibration: thread counts must be at least 1");
    for (double f : {0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0}) {
      const auto d = static_cast<int64_t>(f * static_cast<double>(llc));
      double best = 0;
      for (int k = 0; k < 2; ++k) best = std::max(best, measure_reuse_bandwidth(d, t, opts.timing).median);
      out.push_back({t, d, best});
    }
  }
  return out;
}

std::vector<BandwidthLevel> calibrate_bandwidth(const std::vector<CacheLevel>& caches,
                                                const BandwidthCalibrationOptions& opts) {
  if (opts.threads.empty()) throw std::invalid_argument("bandwidth calibration: no thread counts");
  if (opts.fills.empty()) throw std::invalid_argument("bandwidth calibration: no probe fractions");
  for (double f : opts.fills)
    if (!(f > 0 && f <= 1)) throw std::invalid_argument("bandwidth calibration: probe fractions must be in (0, 1]");
  std::vector<BandwidthLevel> out;
  for (int t : opts.threads) {
    if (t < 1) throw std::invalid_argument("bandwidth calibration: thread counts must be at least 1");
    int64_t last = 0;
    for (const auto& c : caches) {
      const int64_t cap = effective_capacity(c, t);
      BandwidthLevel best{t, fmt::format("L{}", c.level), cap, 0, 0, 0};
      for (double f : opts.fills) {
        const int64_t probe = static_cast<int64_t>(f * static_cast<double>(cap));
        if (probe <= last) continue;  // would still fit the previous level
        const int64_t per_thread = std::max<int64_t>(probe / t, 4096);
        const Summary s = measure_read_bandwidth(per_thread, t, opts.timing);
        if (s.median > best.bytes_per_s) {
          best.probe_bytes = per_thread * t;
          best.bytes_per_s = s.median;
          best.iqr = s.iqr();
        }
      }
      if (best.bytes_per_s == 0) {  // every fraction fell below the previous level
        const int64_t per_thread = std::max<int64_t>((last + cap) / 2 / t, 4096);
        const Summary s = measure_read_bandwidth(per_thread, t, opts.timing);
        best.probe_bytes = per_thread * t;
        best.bytes_per_s = s.median;
        best.iqr = s.iqr();
      }
      out.push_back(best);
      last = cap;
    }
    const int64_t dram = std::max<int64_t>(static_cast<int64_t>(opts.dram_factor * static_cast<double>(last)), opts.dram_min_bytes);
    const Summary s = measure_read_bandwidth(dram / t, t, opts.timing);
    out.push_back({t, "DRAM", 0, dram / t * t, s.median, s.iqr()});
  }
  return out;
}

}  // namespace bbits::bench
