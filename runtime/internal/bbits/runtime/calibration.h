// bbits runtime — the calibration file: its schema, its one reader and writer,
// and lookups into it. `bbits calibrate` (the benchmark harness) measures and
// writes it; the runtime's planner (bbits::load_calibration) and the bench's
// roofline read it through this header. Internal: for tools built inside the
// project (not installed); applications use bbits::load_calibration.
//
// JSON layout (version 1), see docs/BENCH.md:
//   {"version": 1, "created": ..., "cpu": ..., "commit": ..., "isa": ...,
//    "read_loop": "avx512", "caches": [{"level": 1, "bytes": 32768, "shared_by": 1}, ...],
//    "bandwidth": [{"threads": 1, "level": "L1", "capacity": 32768,
//                   "probe_bytes": 16384, "bytes_per_s": ..., "iqr": ...}, ...],
//    "peaks": [{"kernel": "...", "op": "conv2d", "wbits": 4, "abits": 8,
//               "isa": "avx512_vnni", "threads": 1, "macs_per_s": ..., "shape": "...",
//               "k": 576, "n": 128, "m": 784}, ...],
//    "dispatch": [{"threads": 2, "runtime": "pool", "ns": ...}, ...],
//    "overheads": [{"kernel": "...", "op": "pointwise", "threads": 1, "ns": ..., "shape": "..."}, ...],
//    "scaling": [{"threads": 2, "speedup": 1.9}, ...],
//    "reuse": [{"threads": 1, "distance": 16777216, "bytes_per_s": ...}, ...],
//    "probe_ns": 512000.0}
// "dispatch", "overheads", "scaling", "reuse", "probe_ns" and the peaks' "k",
// "n", "m", "compute_macs_per_s", "in_signed", "out_float" may be absent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bbits/runtime.h"

namespace bbits {

// A data or unified cache level as the kernel reports it (sysfs).
struct CacheLevel {
  int level = 0;          // 1, 2, 3
  int64_t bytes = 0;      // capacity of one instance
  int shared_by = 1;      // logical CPUs sharing one instance
};

struct BandwidthLevel {
  int threads = 1;
  std::string level;     // "L1", "L2", "L3", "DRAM"
  int64_t capacity = 0;  // bytes this level holds for `threads` threads (0 for DRAM: unbounded)
  int64_t probe_bytes = 0;  // total working set the bandwidth was measured at
  double bytes_per_s = 0;   // median
  double iqr = 0;           // interquartile range of bytes_per_s
};

struct KernelPeak {
  std::string kernel;  // kernel-table name, or "onednn_f32_conv2d", "onednn_s8_depthwise", ...
  std::string op;      // conv2d, depthwise, fully_connected
  int wbits = 0;
  int abits = 0;
  std::string isa;
  int threads = 1;
  double macs_per_s = 0;  // from the fastest sample (a peak; noise only slows runs down)
  double iqr = 0;
  std::string shape;      // the shape it was measured on
  // GEMM view of the calibrated shape (0: not applicable): reduction length
  // per output (KH*KW*C/groups for conv, K for fc; element ops: 0) and output
  // channels. Peaks of one kernel measured over a grid of (k, n) let the
  // roofline use the throughput the kernel reaches on shapes like the layer's.
  int64_t k = 0;
  int64_t n = 0;
  // GEMM rows of the calibrated shape: output pixels (N*OH*OW) for conv
  // families, the batch for fully connected; 0: not recorded.
  // Peaks of one (kernel, k, n) measured at several m let the roofline use the
  // rate the kernel reaches on a layer's spatial size.
  int64_t m = 0;
  // The same with the kernel's per-call cost (KernelOverhead) and its scratch
  // round trip taken out of that sample: the rate of the arithmetic itself,
  // which the roofline uses (0: not recorded, then macs_per_s).
  double compute_macs_per_s = 0;
  double rate() const { return compute_macs_per_s > 0 ? compute_macs_per_s : macs_per_s; }
  // Input activations on the signed grid (e.g. after a linear projection):
  // int8 kernels built on u8 x s8 dot products take another path for them.
  bool in_signed = false;
  // Output in float32 from integer inputs (e.g. a last global pool feeding a
  // float classifier): another path in the kernel. Measured for the families
  // without weights.
  bool out_float = false;
};

// Fixed cost of one call of a kernel on a layer family at a thread count: the
// fastest time of one call on a tiny shape of the family (tens of outputs),
// i.e. what a call costs whatever its size (dispatch through the plan, setup,
// epilogue set-up, and on more than one thread whatever the kernel pays to
// involve its workers on such a shape). Peaks are stored with this cost taken
// out of the calibration times, and the roofline adds it back per layer.
struct KernelOverhead {
  std::string kernel;  // kernel-table name, or "onednn_f32" / "onednn_int8"
  std::string op;      // family, as KernelPeak::op
  int threads = 1;
  double ns = 0;
  std::string shape;   // the tiny shape it was measured on
};

// Fixed cost of starting one parallel kernel run on `threads` threads: waking
// the workers and waiting for the last one (lower quartile of many empty runs).
struct DispatchCost {
  int threads = 1;
  std::string runtime;  // "pool" (kernels::ThreadPool: every plan kernel) or "openmp" (the oneDNN baselines)
  double ns = 0;
};

// Read bandwidth of data read again after `distance` bytes of other data:
// where a layer's weights come back from inside a session.
struct ReuseBandwidth {
  int threads = 1;
  int64_t distance = 0;
  double bytes_per_s = 0;
};

// How much faster a compute-bound layer runs on `threads` threads than on
// one. On a VM the host may place the vCPUs on one physical core's SMT
// siblings for a while, which halves what the second thread adds; the bench
// compares this with the value at calibration time.
struct ThreadScaling {
  int threads = 2;
  double speedup = 0;
};

// A calibration file that cannot be read or is malformed; the message names
// the file (when read from one) and the field.
class BBITS_API CalibrationError : public Error {
 public:
  using Error::Error;
};

struct BBITS_API Calibration {
  static constexpr int kVersion = 1;
  std::string created;
  std::string cpu;
  std::string commit;
  std::string isa;        // kernel ISA path in use when calibrated
  std::string read_loop;  // vector width of the bandwidth probe
  std::vector<CacheLevel> caches;
  std::vector<BandwidthLevel> bandwidth;
  std::vector<KernelPeak> peaks;
  std::vector<DispatchCost> dispatch;     // may be empty: no overhead term
  std::vector<KernelOverhead> overheads;  // may be empty: dispatch only
  std::vector<ThreadScaling> scaling;     // may be empty
  std::vector<ReuseBandwidth> reuse;      // may be empty
  double probe_ns = 0;                    // the machine probe's 1-thread time; 0: not measured

  nlohmann::json to_json() const;
  // Validates every field; throws CalibrationError naming the bad one.
  static Calibration from_json(const nlohmann::json& j);
  // Atomic write (temporary file + rename), parent directories created.
  void save(const std::string& path) const;
  // Throws CalibrationError naming the path and the problem.
  static Calibration load(const std::string& path);

  // Thread counts with bandwidth entries, ascending.
  std::vector<int> bandwidth_threads() const;
  // The level holding `working_set` bytes when `threads` threads run: the
  // first level (ascending) whose capacity is at least the working set, DRAM
  // otherwise. Uses the entries of the largest thread count <= threads (or
  // the smallest available). Throws CalibrationError when there are none.
  const BandwidthLevel& level_for(int64_t working_set, int threads) const;
  // Peak of a kernel for a layer family ("conv2d", "pointwise", "depthwise",
  // "fully_connected"; empty: any family) at a thread count; when that thread
  // count was not measured, the nearest measured one scaled linearly by
  // threads. nullopt when the kernel was never measured for the family.
  // With k, n > 0 and peaks measured over a (k, n) grid, the peak is
  // interpolated bilinearly in (log k, log n) between the grid points around
  // the layer (clamped to the grid; nearest grid point when a corner is missing).
  // With wbits > 0, entries measured at that weight width are preferred
  // (a kernel may run layers of several widths at different speeds).
  // With m > 0 and several peaks measured at one (k, n) grid point over m
  // (output pixels), each grid point's rate is first interpolated linearly in
  // log m between its measured m (clamped to them).
  // With in_signed 0 / 1, entries measured on unsigned / signed inputs are
  // preferred (unsigned ones otherwise); -1: any. The same for out_float
  // (integer-output entries otherwise).
  std::optional<double> peak_macs_per_s(const std::string& kernel, const std::string& op, int threads,
                                        int64_t k = 0, int64_t n = 0, int wbits = 0, int64_t m = 0,
                                        int in_signed = -1, int out_float = -1) const;
  // Dispatch cost of a runtime at a thread count (0 when not measured or threads == 1).
  double dispatch_ns(const std::string& runtime, int threads) const;
  // Measured per-call cost of a kernel for a family at a thread count;
  // nullopt when not measured (or a kernel that refused the tiny shape).
  std::optional<double> overhead_ns(const std::string& kernel, const std::string& op, int threads) const;
  // Bandwidth of data read again after `distance` bytes of other traffic at
  // `threads` threads: linear in distance between the measured distances
  // (clamped to them), from the entries of the largest measured thread count
  // <= threads (or the smallest). nullopt when there are no reuse entries.
  std::optional<double> reuse_bytes_per_s(int64_t distance, int threads) const;
  // The thread scaling measured at calibration time; nullopt when not measured.
  std::optional<double> scaling_for(int threads) const;
};

// Where the calibration lives: $BBITS_CALIBRATION, else
// $XDG_CACHE_HOME/bbits/calibration.json, else ~/.cache/bbits/calibration.json.
BBITS_API std::string default_calibration_path();

}  // namespace bbits
