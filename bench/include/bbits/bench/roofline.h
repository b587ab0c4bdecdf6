// bbits bench — the roofline model and the BOP model of a layer's time.
//
// roofline time = max(work / peak of the chosen kernel,   (work = MACs for conv/fc,
//                                                         element operations otherwise)
//                     bytes / read bandwidth of the level holding the working set)
//                + scratch round trip (2 x scratch bytes / bandwidth of the level holding them)
//                + per-call cost (measured per kernel, family and thread count; with
//                  more than one thread at least the single-thread cost plus the
//                  dispatch cost of waking the workers)
// BOP speedup vs a reference = BOPs(reference) / BOPs(layer).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

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
  // Scratch the kernel asks for (Kernel::scratch_bytes at the thread count):
  // written and read back once per call, e.g. the int32 accumulators of a
  // GEMM whose requantizing epilogue is a second pass. Not part of bytes().
  int64_t scratch_bytes = 0;
  bool in_signed = false;     // conv / fc input on the signed grid (peaks are measured both ways)
  bool out_float = false;     // float32 output from integer inputs (peaks are measured both ways)
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
  double memory_ns = 0;   // bytes / bandwidth (weights from weights_level, the rest from level;
                          // inside a session with reuse data: + cold_ns + cross_ns)
  double cold_ns = 0;     // inside a session: weights read back at the reuse bandwidth, not overlapped
  double cross_ns = 0;    // inside a session on t > 1 threads: the (t-1)/t of the input other cores wrote
  double epilogue_ns = 0; // scratch written and read back: 2 x scratch_bytes / bandwidth
  double overhead_ns = 0; // fixed cost of the call (per-call cost, dispatch)
  double time_ns = 0;     // max(compute, memory) + epilogue + overhead; inside a session with reuse
                          // data: max(compute, activations) + cold + cross + epilogue + overhead
  std::string level;      // cache level holding the working set
  std::string weights_level;  // level the weights come from (= level unless a reuse distance was given)
  double bytes_per_s = 0;
  double macs_per_s = 0;  // the peak used (0: none)
  bool compute_bound() const { return compute_ns >= memory_ns; }
  // The largest of the four terms: "compute", "memory", "epilogue" or "call".
  std::string dominant() const;
};

// Throws CalibrationError when the calibration has no bandwidth entries, and
// std::invalid_argument for negative costs or a layer with work but no peak.
// `overhead_ns` (call_overhead_ns) is added to the max: the fixed cost of a
// call, which dominates layers of a few microseconds.
// `weights_reuse_bytes` > 0: the bytes the rest of the model touches between
// two calls of this layer (inside a session: one whole run). With the
// calibration's reuse bandwidths (Calibration::reuse), the weights and biases
// come back at the reuse bandwidth for that distance, and that read is not
// overlapped with the arithmetic (cold_ns, added); on t > 1 threads the
// (t-1)/t of the input that other cores wrote crosses through the first
// shared cache level (cross_ns, added); the activations come from the level
// holding the working set. Without reuse entries in the calibration the
// weights come from the first level holding that many bytes (DRAM beyond the
// last one) inside the max. 0: everything from the working set's level (a
// layer run on its own, over and over).
RooflinePrediction roofline(const LayerCost& cost, double peak_macs_per_s, const Calibration& cal, int threads,
                            double overhead_ns = 0, int64_t weights_reuse_bytes = 0);

// The roofline time of a layer run by `kernel` (a kernel-table name or a
// oneDNN baseline's) for its family: the calibration's peak for the layer's
// GEMM view `kn` (gemm_kn), width, rows and signedness, the per-call cost of
// `runtime` ("pool" or "openmp") at `threads`, and roofline(). nullopt when
// the kernel was never calibrated for the family.
std::optional<RooflinePrediction> predict_roofline(const LayerCost& c, const Calibration& cal,
                                                   const std::string& kernel, const std::string& family,
                                                   int threads, std::pair<int64_t, int64_t> kn,
                                                   int64_t weights_reuse_bytes, const std::string& runtime);

// Time of a scratch round trip: 2 x bytes over the bandwidth of the level
// holding `bytes` at `threads` threads (0 for no scratch).
double scratch_round_trip_ns(int64_t bytes, const Calibration& cal, int threads);

// Fixed cost of one call of `kernel` on a `family` layer at `threads`:
// the calibration's per-call cost (KernelOverhead) at that thread count; on
// more than one thread at least the single-thread per-call cost plus the
// dispatch cost of `runtime` ("pool" or "openmp"). Without per-call entries
// in the calibration: the dispatch cost alone.
double call_overhead_ns(const Calibration& cal, const std::string& kernel, const std::string& family, int threads,
                        const std::string& runtime);

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
