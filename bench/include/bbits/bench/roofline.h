// bbits bench — the roofline model and the BOP model of a layer's time.
//
// roofline time = max(work / peak of the chosen kernel,   (work = MACs for conv/fc,
//                                                         element operations otherwise)
//                     bytes / read bandwidth of the level holding the working set)
// BOP speedup vs a reference = BOPs(reference) / BOPs(layer).
#pragma once

#include <cstdint>
#include <string>

#include "bbits/bench/calibration.h"

namespace bbits::bench {

// What a layer moves and computes (batch 1).
struct LayerCost {
  int64_t macs = 0;           // with pruned channels removed
  // Work the kernel's peak is measured in: MACs for conv / fc, element
  // operations for the others (kernels::op_work); 0 means `macs`.
  int64_t work = 0;
  int64_t macs_unpruned = 0;  // the same layer before pruning
  int wbits = 0;              // 0 for layers without weights
  int abits = 0;              // input activation bits
  int64_t weight_bytes = 0;   // packed weights + bias
  int64_t input_bytes = 0;    // activations read (all inputs)
  int64_t output_bytes = 0;   // activations written
  int64_t m = 0;              // GEMM rows: output pixels (conv, N*OH*OW) or batch (fc); 0 otherwise
  int64_t bytes() const { return weight_bytes + input_bytes + output_bytes; }
  // Everything the layer touches once: what must stay in cache.
  int64_t working_set() const { return bytes(); }
  int64_t compute_work() const { return work > 0 ? work : macs; }
};

// Bytes one stored activation element takes inside the runtime: one byte up
// to 8 bits, two at 16, four for float32. Throws std::invalid_argument otherwise.
int activation_bytes(int bits);

struct RooflinePrediction {
  double compute_ns = 0;  // work / peak (0 when the layer does no work)
  double memory_ns = 0;   // bytes / bandwidth
  double overhead_ns = 0; // dispatch cost of a parallel run (0 on one thread)
  double time_ns = 0;     // max of the two, plus the overhead
  std::string level;      // cache level holding the working set
  double bytes_per_s = 0;
  double macs_per_s = 0;  // the peak used (0: none)
  bool compute_bound() const { return compute_ns >= memory_ns; }
};

// Throws CalibrationError when the calibration has no bandwidth entries, and
// std::invalid_argument for negative costs or a layer with work but no peak.
// `overhead_ns` (Calibration::dispatch_ns) is added to the max: the fixed cost
// of waking the other threads, which dominates layers of a few microseconds.
RooflinePrediction roofline(const LayerCost& cost, double peak_macs_per_s, const Calibration& cal, int threads,
                            double overhead_ns = 0);

// BOPs of the layer as it runs: MACs x wbits x abits (0 when nothing is computed).
int64_t layer_bops(const LayerCost& c);
// BOP-predicted speedup of the layer against the same unpruned layer at
// ref_w / ref_a bits: macs_unpruned x ref_w x ref_a / (macs x wbits x abits).
// NaN when the layer has no MACs (pools, adds: BOPs say nothing about them).
double bop_speedup(const LayerCost& c, int ref_wbits, int ref_abits);

// Relative error of a prediction: predicted / measured - 1 (NaN when either is
// not positive and finite). +0.25 means predicted 25% too high.
double relative_error(double predicted, double measured);

}  // namespace bbits::bench
