#include "bbits/bench/roofline.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>

namespace bbits::bench {

int activation_bytes(int bits) {
  if (bits == 2 || bits == 4 || bits == 8) return 1;
  if (bits == 16) return 2;
  if (bits == 32) return 4;
  throw std::invalid_argument("activation_bytes: bits must be 2, 4, 8, 16 or 32, got " + std::to_string(bits));
}

namespace {
// The bandwidth entry of the first cache level shared by several cores, at
// the thread counts `level_for` uses; null when there is none.
const BandwidthLevel* shared_level(const Calibration& cal, int threads) {
  int lv = 0;
  for (const auto& c : cal.caches)
    if (c.shared_by > 1 && (lv == 0 || c.level < lv)) lv = c.level;
  if (lv == 0) return nullptr;
  const std::string name = "L" + std::to_string(lv);
  const auto ts = cal.bandwidth_threads();
  int use = ts.empty() ? threads : ts.front();
  for (int t : ts)
    if (t <= threads) use = t;
  for (const auto& b : cal.bandwidth)
    if (b.threads == use && b.level == name) return &b;
  return nullptr;
}
}  // namespace

RooflinePrediction roofline(const LayerCost& cost, double peak_macs_per_s, const Calibration& cal, int threads,
                            double overhead_ns, int64_t weights_reuse_bytes) {
  if (!(overhead_ns >= 0) || !std::isfinite(overhead_ns)) throw std::invalid_argument("roofline: bad overhead");
  if (cost.macs < 0 || cost.work < 0 || cost.weight_bytes < 0 || cost.input_bytes < 0 || cost.output_bytes < 0)
    throw std::invalid_argument("roofline: negative cost");
  if (threads < 1) throw std::invalid_argument("roofline: threads must be at least 1");
  RooflinePrediction p;
  if (cost.compute_work() > 0) {
    if (!(peak_macs_per_s > 0) || !std::isfinite(peak_macs_per_s))
      throw std::invalid_argument("roofline: a layer that does work needs a positive peak");
    p.macs_per_s = peak_macs_per_s;
    p.compute_ns = static_cast<double>(cost.compute_work()) / peak_macs_per_s * 1e9;
  }
  if (cost.scratch_bytes < 0 || weights_reuse_bytes < 0) throw std::invalid_argument("roofline: negative bytes");
  const BandwidthLevel& lvl = cal.level_for(cost.working_set(), threads);
  const std::optional<double> reuse_bw =
      weights_reuse_bytes > 0 ? cal.reuse_bytes_per_s(weights_reuse_bytes, threads) : std::nullopt;
  if (reuse_bw) {
    p.level = lvl.level;
    p.weights_level = "reuse";
    p.bytes_per_s = lvl.bytes_per_s;
    const double act_ns = static_cast<double>(cost.input_bytes + cost.output_bytes) / lvl.bytes_per_s * 1e9;
    p.cold_ns = static_cast<double>(cost.weight_bytes) / *reuse_bw * 1e9;
    if (threads > 1)
      if (const BandwidthLevel* sh = shared_level(cal, threads))
        p.cross_ns = static_cast<double>(cost.input_bytes) * (threads - 1) / threads / sh->bytes_per_s * 1e9;
    p.memory_ns = act_ns + p.cold_ns + p.cross_ns;
    p.epilogue_ns = scratch_round_trip_ns(cost.scratch_bytes, cal, threads);
    p.overhead_ns = overhead_ns;
    p.time_ns = std::max(p.compute_ns, act_ns) + p.cold_ns + p.cross_ns + p.epilogue_ns + overhead_ns;
    return p;
  }
  const BandwidthLevel& wlvl =
      weights_reuse_bytes > 0 ? cal.level_for(std::max(cost.working_set(), weights_reuse_bytes), threads) : lvl;
  p.level = lvl.level;
  p.weights_level = wlvl.level;
  p.bytes_per_s = lvl.bytes_per_s;
  p.memory_ns = static_cast<double>(cost.input_bytes + cost.output_bytes) / lvl.bytes_per_s * 1e9 +
                static_cast<double>(cost.weight_bytes) / wlvl.bytes_per_s * 1e9;
  p.epilogue_ns = scratch_round_trip_ns(cost.scratch_bytes, cal, threads);
  p.overhead_ns = overhead_ns;
  p.time_ns = std::max(p.compute_ns, p.memory_ns) + p.epilogue_ns + overhead_ns;
  return p;
}

std::string RooflinePrediction::dominant() const {
  const std::pair<double, const char*> terms[] = {
      {compute_ns, "compute"}, {memory_ns, "memory"}, {epilogue_ns, "epilogue"}, {overhead_ns, "call"}};
  const auto* best = &terms[0];
  for (const auto& t : terms)
    if (t.first > best->first) best = &t;
  return best->second;
}

double scratch_round_trip_ns(int64_t bytes, const Calibration& cal, int threads) {
  if (bytes <= 0) return 0.0;
  const BandwidthLevel& lvl = cal.level_for(bytes, threads);
  return 2.0 * static_cast<double>(bytes) / lvl.bytes_per_s * 1e9;
}

double call_overhead_ns(const Calibration& cal, const std::string& kernel, const std::string& family, int threads,
                        const std::string& runtime) {
  const double dispatch = cal.dispatch_ns(runtime, threads);
  const auto own = cal.overhead_ns(kernel, family, threads);
  if (threads <= 1) return own.value_or(0.0);
  const auto one = cal.overhead_ns(kernel, family, 1);
  if (!own && !one) return dispatch;
  return std::max(own.value_or(0.0), one.value_or(0.0) + dispatch);
}

int64_t layer_bops(const LayerCost& c) { return c.macs * c.wbits * c.abits; }

double bop_speedup(const LayerCost& c, int ref_wbits, int ref_abits) {
  const int64_t b = layer_bops(c);
  if (b <= 0 || c.macs_unpruned <= 0) return std::numeric_limits<double>::quiet_NaN();
  return static_cast<double>(c.macs_unpruned) * ref_wbits * ref_abits / static_cast<double>(b);
}

double relative_error(double predicted, double measured) {
  if (!(predicted > 0) || !(measured > 0) || !std::isfinite(predicted) || !std::isfinite(measured))
    return std::numeric_limits<double>::quiet_NaN();
  return predicted / measured - 1.0;
}

}  // namespace bbits::bench

namespace bbits::bench {

std::optional<RooflinePrediction> predict_roofline(const LayerCost& c, const Calibration& cal,
                                                   const std::string& kernel, const std::string& family,
                                                   int threads, std::pair<int64_t, int64_t> kn,
                                                   int64_t weights_reuse_bytes, const std::string& runtime) {
  double peak = 0;
  if (c.compute_work() > 0) {
    const auto pk =
        cal.peak_macs_per_s(kernel, family, threads, kn.first, kn.second, c.macs > 0 ? c.wbits : 0, c.m,
                            c.macs > 0 ? int{c.in_signed} : -1, c.macs > 0 ? -1 : int{c.out_float});
    if (!pk) return std::nullopt;  // not calibrated: no prediction
    peak = *pk;
  }
  return roofline(c, peak, cal, threads, call_overhead_ns(cal, kernel, family, threads, runtime), weights_reuse_bytes);
}

}  // namespace bbits::bench
