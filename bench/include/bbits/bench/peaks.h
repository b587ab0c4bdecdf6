// bbits bench — measured peak MAC throughput of every kernel of the kernel
// table (at its native bit widths) and of the oneDNN baselines, per layer
// family and thread count: the compute side of the roofline.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "bbits/bench/calibration.h"
#include "bbits/kernels/kernels.h"

namespace bbits::bench {

// Layer families a peak is measured for: "conv2d" (KxK, K > 1), "pointwise"
// (1x1), "depthwise", "fully_connected" (peaks in MACs/s), and the operators
// without weights: "max_pool2d", "avg_pool2d", "global_avg_pool", "add",
// "relu", "relu6", "concat", "reshape", "softmax" (peaks in element
// operations/s, kernels::op_work).
const std::vector<std::string>& peak_families();

// A compute-heavy layer of the family at the given bits (wbits ignored for
// operators without weights). `small` gives a cheaper shape, for reference kernels. Inputs are unsigned (after
// ReLU), outputs unsigned 8-bit with a fused ReLU; float32 when abits is 32.
kernels::OpDesc representative_desc(const std::string& family, int wbits, int abits, bool small);

// The shapes a kernel's peak is measured on: for conv2d, pointwise and
// depthwise a grid over the reduction length K, the output channels N and the
// output pixels M (square maps of side 7, 14, 28, 56, 112; the largest sides
// are left out where a shape would exceed kMaxCalibrationMacs, the smallest is
// always kept); for fully_connected a grid over K and N (M = 1). One shape for
// the other families and for `small`. See docs/BENCH.md.
// With signed_input (conv families, integer inputs), the same shapes with the
// input on the signed grid, on a coarser spatial grid (sides 7, 28, 112).
inline constexpr double kMaxCalibrationMacs = 60e6;
std::vector<kernels::OpDesc> calibration_shapes(const std::string& family, int wbits, int abits, bool small,
                                                bool signed_input = false);

// A tiny layer of the family (a 4x4 map of 16 channels, or 16 -> 16 for fully
// connected: at most 37 k MACs):
// the shape a kernel's fixed per-call cost is measured on.
kernels::OpDesc tiny_desc(const std::string& family, int wbits, int abits);

// GEMM view of a layer for the peak lookup: (reduction length, output
// channels) of conv / fc, (0, 0) otherwise.
std::pair<int64_t, int64_t> gemm_kn(const kernels::OpDesc& d);
// GEMM rows: output pixels N*OH*OW of a conv, the batch of a fully connected
// layer, 0 otherwise.
int64_t gemm_m(const kernels::OpDesc& d);

struct PeakCalibrationOptions {
  std::vector<int> threads = {1, 2};
  // Bandwidths for the scratch round trip taken out of the peaks
  // (scratch_round_trip_ns); null: nothing taken out for scratch.
  const Calibration* machine = nullptr;
  kernels::Isa max_isa = kernels::Isa::AMX;  // kernels above this ISA are skipped
  // One run per sample, many samples, fastest kept: on a shared machine a
  // short run is often left alone while a long batch almost never is.
  TimingOptions timing{.warmup = 2, .repeats = 15, .min_sample_ns = 0};
  bool onednn = true;
  // Only kernels whose name contains this text (empty: all).
  std::string filter;
  // The whole set of shapes is measured this many times, one after the other,
  // with timing.repeats split between the passes, and the fastest pass kept
  // per shape: a burst of load on a shared machine then spoils one pass, not
  // every sample of a shape.
  int passes = 3;
  // A coarse grid (`bbits calibrate --quick`): per kernel and width at most
  // three of the shapes (smallest, middle, largest) and no signed-input
  // variants. For tests and a first look, not for measurements.
  bool coarse = false;
};

using Progress = std::function<void(const std::string&)>;

struct PeakCalibration {
  std::vector<KernelPeak> peaks;
  std::vector<KernelOverhead> overheads;
};

// Per-call cost (on tiny_desc) and peaks (on calibration_shapes) of every
// (kernel, family) the kernel supports, at every weight width it accepts.
PeakCalibration calibrate_kernel_peaks(const PeakCalibrationOptions& opts, const Progress& progress = {});
// The same for oneDNN f32 and int8 per family ("onednn_f32", "onednn_int8").
PeakCalibration calibrate_onednn_peaks(const PeakCalibrationOptions& opts, const Progress& progress = {});

}  // namespace bbits::bench

namespace bbits::bench {

// Dispatch cost of kernels::ThreadPool and of an OpenMP parallel region for
// each thread count > 1 (lower quartile of 201 empty parallel runs).
std::vector<DispatchCost> calibrate_dispatch(const std::vector<int>& threads);

struct MachineCalibrationOptions {
  BandwidthCalibrationOptions bandwidth;
  PeakCalibrationOptions peaks;
};

// The machine probe: a compute-bound int8 3x3 convolution (28x28, 128 -> 128
// channels, the plan's kernel) timed on one thread (median of 7, the fastest
// of `probes`) and, for threads > 1, its speedup on `threads` threads over
// one (the best of `probes` interleaved 1-thread / t-thread measurements).
struct MachineProbe {
  double one_thread_ns = 0;
  double speedup = 1;
};
MachineProbe probe_machine(int threads, int probes = 3);
// The calibration's probe on `threads` threads: probe() repeated, with
// pause() between tries and at most max_tries tries, while the best speedup
// so far stays below 75% of linear; returns the fastest 1-thread time and the
// best speedup over all tries. A VM's vCPUs that share one physical core for
// seconds would otherwise leave a calibrated scaling near 1, against which
// the bench cannot tell a slowed-down machine.
MachineProbe settled_probe(int threads, const std::function<MachineProbe()>& probe, const std::function<void()>& pause,
                           int max_tries);

// Everything `bbits calibrate` measures: caches, read bandwidth per level and
// thread count, kernel and oneDNN peaks, stamped with cpu, isa and commit.
Calibration calibrate_machine(const MachineCalibrationOptions& opts, const Progress& progress = {});

}  // namespace bbits::bench
