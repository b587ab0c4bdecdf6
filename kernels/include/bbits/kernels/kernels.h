// bbits — the kernel API: operator descriptors, the kernel table, kernel
// choice. Free of oneDNN / xsimd / FlatBuffers: the runtime, the SIMD kernels,
// the tests and the benchmarks all include only this. kKernelApiVersion
// counts source-incompatible changes.
//
// ---------------------------------------------------------------------------
// Conventions (see also docs/FORMAT.md)
// - Activations are NHWC (batch first). Fully connected inputs/outputs are N,K
//   / N,OC. Element storage by bit width (element_bytes()): bits <= 8 -> one
//   byte (uint8_t on the unsigned grid, int8_t on the signed grid), 16 ->
//   uint16_t / int16_t, 32 -> float. Zero points are always 0.
// - Weights arrive exactly as stored in the model file (Weights below): rows =
//   kept output channels; a conv row holds K = KH*KW*(C/groups) values in
//   (kh, kw, ci) order; packed low bits first at 2/4 bits, int8 at 8, int16 LE
//   at 16, float32 at 32; rows padded to whole bytes (bbits::packed_row_bytes).
//   Weight bits 0 = the whole layer is pruned: no weight bytes, the output is
//   the bias (after the activation).
// - Integer layer (weights and input integer): acc[oc] = sum_k w_q * in_q + bias_q[oc]
//   (the exact sum; kernels whose accumulator could overflow for a desc must
//   return false from supports()), then
//     out = clamp(apply_requant(acc, R[oc]), lo, hi),
//     R[oc] = make_requant(double(s_w[oc]) * double(s_in) / double(s_out)),
//   [lo, hi] = output grid intersected with the activation (relu: lo = max(lo, 0);
//   relu6: also hi = min(hi, llround(6.0 / double(s_out)))).
//   Float output (out.bits == 32): out = float(double(acc_without_bias) *
//   s_w[oc] * s_in + bias_f[oc]) then the activation (relu: max(0, x); relu6:
//   min(max(0, x), 6)).
// - Float layer (weights or input at 32 bits): the other side is dequantized
//   (q * scale), the layer runs in float, the activation is applied in float,
//   and an integer output is quantized with quantize_to_grid() (float32 divide
//   by the output step, round half to even, clamp to [lo, hi]).
// - Bias: bias_q (int32, as stored for integer layers) and/or bias_f (float).
//   When only one is given the other is derived: bias_f = bias_q * s_w[oc] * s_in
//   (a float side counts as scale 1), bias_q = bbits::quantize_bias(bias_f, ...).
//   An integer layer given bias_f also keeps the bias's sub-step part:
//   out = clamp(apply_requant(acc + bias_q, R[oc], F[oc])) with
//   F[oc] = bbits::bias_fraction(bias_f, s_w, s_in, bias_q, R[oc]) (quant.h).
//   With only bias_q, F = 0.
// ---------------------------------------------------------------------------
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bbits/format/quant.h"  // bbits::Requant, grids, packing (header-only vocabulary)

namespace bbits::kernels {

inline constexpr int kKernelApiVersion = 5;

class ThreadPool;  // thread_pool.h

// ---- ISA levels ---------------------------------------------------------------
// Each architecture has its own ladder above the portable reference kernels:
//   x86-64:  Reference < AVX2 < AVX512 < AVX512_VNNI < AMX
//   AArch64: Reference < NEON < NEON_DOTPROD
// A cap (BBITS_MAX_ISA) means "at most this level on this architecture":
// isa_at_most(isa, cap) holds when isa is Reference or on cap's ladder at or
// below it; levels of the other architecture are never "at most" a cap.
enum class Isa : uint8_t {
  Reference = 0,
  AVX2 = 1,
  AVX512 = 2,
  AVX512_VNNI = 3,
  AMX = 4,
  NEON = 5,
  NEON_DOTPROD = 6,
};
enum class IsaFamily : uint8_t { Portable, X86, Arm };
constexpr IsaFamily isa_family(Isa isa) {
  return isa == Isa::Reference ? IsaFamily::Portable
         : (isa == Isa::NEON || isa == Isa::NEON_DOTPROD) ? IsaFamily::Arm
                                                          : IsaFamily::X86;
}
// Position on its architecture's ladder (Reference = 0).
constexpr int isa_level(Isa isa) {
  switch (isa) {
    case Isa::Reference: return 0;
    case Isa::AVX2: return 1;
    case Isa::AVX512: return 2;
    case Isa::AVX512_VNNI: return 3;
    case Isa::AMX: return 4;
    case Isa::NEON: return 1;
    case Isa::NEON_DOTPROD: return 2;
  }
  return 0;
}
// "reference", "avx2", "avx512", "avx512_vnni", "amx", "neon", "neon_dotprod"
const char* isa_name(Isa isa);
// Inverse of isa_name (case-insensitive; also accepts "ref", "avx512vnni",
// "avx512-vnni", "neondot", "neon-dotprod"); nullopt for anything else.
std::optional<Isa> parse_isa(std::string_view text);
constexpr bool isa_at_most(Isa isa, Isa cap) {
  if (isa == Isa::Reference) return true;
  return isa_family(isa) == isa_family(cap) && isa_level(isa) <= isa_level(cap);
}

// ---- operators -----------------------------------------------------------------
enum class OpKind : uint8_t {
  Conv2D,
  FullyConnected,
  Relu,
  Relu6,
  MaxPool2D,
  AvgPool2D,
  GlobalAvgPool,
  Add,
  Concat,
  Reshape,
  Softmax,
};
// "conv2d", "fully_connected", "relu", "relu6", "max_pool2d", "avg_pool2d",
// "global_avg_pool", "add", "concat", "reshape", "softmax"
const char* op_kind_name(OpKind op);

enum class Activation : uint8_t { None, Relu, Relu6 };
const char* activation_name(Activation a);  // "none", "relu", "relu6"

// Quantization of one activation tensor. bits 2/4/8/16 = integer grid with
// step `scale`; bits 32 = float32 (scale and is_signed ignored).
struct QuantInfo {
  int bits = 8;
  bool is_signed = false;
  float scale = 1.0f;

  bool is_float() const { return bits == 32; }
  bool operator==(const QuantInfo& o) const {
    return bits == o.bits && (bits == 32 || (is_signed == o.is_signed && scale == o.scale));
  }
};

// Bytes per stored activation element: 1 (bits <= 8), 2 (16) or 4 (32).
constexpr size_t element_bytes(int bits) { return bits <= 8 ? 1 : (bits == 16 ? 2 : 4); }

// Conv2D, NHWC in (N,H,W,C) -> out (N,OH,OW,OC). groups == C == OC: depthwise.
struct ConvDesc {
  int64_t N = 1, H = 0, W = 0, C = 0, OC = 0, KH = 1, KW = 1;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int dilation_h = 1, dilation_w = 1;
  int groups = 1;
  int wbits = 8;  // 0 (pruned), 2, 4, 8, 16, 32
  QuantInfo in, out;
  Activation activation = Activation::None;

  int64_t out_h() const { return (H + pad_top + pad_bottom - dilation_h * (KH - 1) - 1) / stride_h + 1; }
  int64_t out_w() const { return (W + pad_left + pad_right - dilation_w * (KW - 1) - 1) / stride_w + 1; }
  int64_t K() const { return KH * KW * (C / groups); }  // values per weight row
  bool is_depthwise() const { return groups > 1 && groups == C && groups == OC; }
  int64_t macs() const { return N * out_h() * out_w() * OC * K(); }
};

// Fully connected: in (N,K) -> out (N,OC).
struct FcDesc {
  int64_t N = 1, K = 0, OC = 0;
  int wbits = 8;
  QuantInfo in, out;
  Activation activation = Activation::None;

  int64_t macs() const { return N * K * OC; }
};

// A fully connected layer as the 1x1 convolution on a 1x1 map it is
// (the same weights, grids and arithmetic).
inline ConvDesc fc_as_conv(const FcDesc& f) {
  ConvDesc c;
  c.N = f.N;
  c.H = c.W = 1;
  c.C = f.K;
  c.OC = f.OC;
  c.KH = c.KW = 1;
  c.wbits = f.wbits;
  c.in = f.in;
  c.out = f.out;
  c.activation = f.activation;
  return c;
}

// Stand-alone Relu / Relu6 over `count` elements (in and out grids may differ:
// the input is requantized to the output grid; make_requant(s_in / s_out)).
struct ActivationDesc {
  int64_t count = 0;
  Activation act = Activation::Relu;  // Relu or Relu6
  QuantInfo in, out;
};

enum class PoolKind : uint8_t { Max, Avg, GlobalAvg };

// Pooling, NHWC (N,H,W,C) -> (N,OH,OW,C). GlobalAvg: kernel = H x W, stride 1,
// no padding, out 1x1 (kernel/stride/pad fields are ignored).
// Max: padded positions are ignored (-inf). Avg: the divisor is the number of
// window positions inside the input, or KH*KW when count_include_pad.
// Integer avg (docs/FORMAT.md: sum, divide, round half away from zero), with
// {m, s} = make_requant(s_in / s_out) and D = count * 2^s, in 128-bit integers:
//   out = clamp(sign(sum) * floor((2 * |sum| * m + D) / (2 * D)))
// (avg_pool_divide()); on one grid (m = 2^30, s = 30) this is the exact
// integer average rounded half away from zero.
// integer max: out = clamp(apply_requant(max, make_requant(s_in / s_out))) (the
// identity copy when the grids agree, as the format requires for max pool).
struct PoolDesc {
  PoolKind kind = PoolKind::Max;
  int64_t N = 1, H = 0, W = 0, C = 0;
  int KH = 1, KW = 1;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  bool count_include_pad = false;
  QuantInfo in, out;

  int64_t out_h() const { return kind == PoolKind::GlobalAvg ? 1 : (H + pad_top + pad_bottom - KH) / stride_h + 1; }
  int64_t out_w() const { return kind == PoolKind::GlobalAvg ? 1 : (W + pad_left + pad_right - KW) / stride_w + 1; }
};

// Residual add of two tensors of `count` elements, output on its own grid,
// fused activation. Integer semantics (docs/FORMAT.md: the real sum rounded
// once onto the output grid, then clamped):
//   out = clamp(apply_requant_sum(a_q, Ra, b_q, Rb), lo, hi)
//   Ra = make_requant(s_a / s_out), Rb = make_requant(s_b / s_out)   (add_requant())
// Any float side: float add + activation (+ quantize_to_grid when the output
// is integer).
struct AddDesc {
  int64_t count = 0;
  QuantInfo a, b, out;
  Activation activation = Activation::None;
};

// Concat: each input i has shape (outer, sizes[i], inner) and the output
// (outer, sum(sizes), inner). NHWC channel concat: outer = N*H*W, inner = 1.
// Every input is requantized to the output grid (make_requant(s_i / s_out);
// a float side goes through float + quantize_to_grid).
struct ConcatDesc {
  int64_t outer = 1, inner = 1;
  std::vector<int64_t> sizes;
  std::vector<QuantInfo> in;  // one per input
  QuantInfo out;
};

// Reshape / flatten. The model's flatten of N,C,H,W is N,C*H*W in C,H,W order
// while the runtime holds N,H,W,C: with to_chw == true the kernel writes
// out[n][c*H*W + h*W + w] = in[n][h][w][c]. With to_chw == false it is a plain
// copy of N*H*W*C elements (any reshape that keeps the element order).
// Differing in/out grids requantize like ActivationDesc (without clamp to >= 0).
struct ReshapeDesc {
  int64_t N = 1, H = 1, W = 1, C = 0;
  bool to_chw = false;
  QuantInfo in, out;
};

// Softmax over the middle axis of (outer, axis_size, inner). The input is
// dequantized; computed as exp(x - max) / sum in float (double sum). Output
// normally float (bits 32); an integer output is quantize_to_grid'ed.
struct SoftmaxDesc {
  int64_t outer = 1, axis_size = 0, inner = 1;
  QuantInfo in, out{32, false, 1.0f};
};

using OpDesc = std::variant<ConvDesc, FcDesc, ActivationDesc, PoolDesc, AddDesc, ConcatDesc, ReshapeDesc,
                            SoftmaxDesc>;

OpKind op_kind(const OpDesc& desc);
// Weight bits of a conv/fc desc; -1 for operators without weights.
int weight_bits(const OpDesc& desc);
// Bits of the (first) activation input.
int input_bits(const OpDesc& desc);
// Number of activation inputs (1, 2 for add, sizes.size() for concat).
int num_inputs(const OpDesc& desc);
// Elements of activation input i / of the output.
int64_t input_elements(const OpDesc& desc, int i);
int64_t output_elements(const OpDesc& desc);
QuantInfo input_quant(const OpDesc& desc, int i);
QuantInfo output_quant(const OpDesc& desc);
// MACs (conv/fc) or element operations (others), for cost models and reports.
int64_t op_work(const OpDesc& desc);
// Bytes read from activations + weights and written, for cost models.
int64_t op_bytes(const OpDesc& desc);

// Throws std::invalid_argument naming the problem when the desc is malformed:
// non-positive dimensions, groups that do not divide C and OC, an empty
// output, illegal bit widths, non-positive or non-finite scales, an add/concat
// with mismatching counts, ...
void check_desc(const OpDesc& desc);

// "conv2d 1x28x28x1 -> 1x28x28x6 k5x5 s1x1 p2,2,2,2 d1x1 g1 w4 a8u(0.0039)->a8u(0.021) relu"
std::string describe(const OpDesc& desc);

// ---- weights --------------------------------------------------------------------
// Constant inputs of conv / fc. The runtime keeps `data` valid for the lifetime
// of every kernel created from it (the Model outlives its plans); kernels may
// reference it or copy / prepack it. `scales`, `bias_q`, `bias_f` are copied by
// create() if needed and may be released after it.
struct Weights {
  const uint8_t* data = nullptr;  // OC rows of packed_row_bytes(K, wbits) bytes
  size_t size = 0;                // bytes available at data (checked by create)
  std::span<const float> scales;  // s_w: OC values or 1 (per tensor); empty for wbits 32 and 0
  std::span<const int32_t> bias_q;  // OC values or empty
  std::span<const float> bias_f;    // OC values or empty
};

// ---- kernels ----------------------------------------------------------------------
// Finished output: a kernel that reports_done() calls it once for every range
// [begin, end) of output elements (in storage order) as soon as the range is
// final, each element in exactly one range, from the thread that finished it
// (ranges may be reported concurrently from different pool threads, and
// before the kernel returns). The runtime runs an element-wise consumer (a
// residual add) on each range while it is still in cache.
struct DoneFn {
  void (*fn)(const void* ctx, int64_t begin, int64_t end) = nullptr;
  const void* ctx = nullptr;
  void operator()(int64_t begin, int64_t end) const { fn(ctx, begin, end); }
};

struct KernelArgs {
  std::span<const void* const> inputs;  // activation inputs, in desc order
  void* output = nullptr;
  void* scratch = nullptr;  // >= scratch_bytes(threads used) bytes, 64-byte aligned
  size_t scratch_size = 0;
  const DoneFn* done = nullptr;  // optional; only kernels that reports_done() call it
};

// A prepared kernel for one layer. run() is const and thread-safe: several
// sessions may run the same kernel at once with different args. run() throws
// std::invalid_argument on a wrong number of inputs or too small a scratch.
class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual std::string_view name() const = 0;
  // Scratch needed by one run() that uses up to `num_threads` threads.
  virtual size_t scratch_bytes(int num_threads = 1) const { (void)num_threads; return 0; }
  // pool == nullptr: run on the calling thread only.
  virtual void run(const KernelArgs& args, ThreadPool* pool) const = 0;
  // True when run() reports every finished output range through args.done
  // (when given; see DoneFn).
  virtual bool reports_done() const { return false; }
  // Element-wise kernels (output element i depends on input elements i
  // only, no scratch): run_elements() computes output elements [begin, end)
  // alone, on the calling thread, exactly as run() computes them.
  virtual bool elementwise() const { return false; }
  virtual void run_elements(const KernelArgs& args, int64_t begin, int64_t end) const;
};

inline constexpr int kAnyBits = -1;

struct KernelInfo {
  // Says everything: op, bits, data types, tile, ISA ("conv2d_ref_w4a8",
  // "fc_w4a8_u8s4_avx512vnni_lut").
  std::string name;
  OpKind op = OpKind::Conv2D;
  int weight_bits = kAnyBits;  // native weight bits (kAnyBits for ops without weights)
  int act_bits = kAnyBits;     // native input activation bits
  Isa isa = Isa::Reference;
  // True when this kernel computes the layer exactly as the reference does
  // (integers bit-exact; float layers within float rounding). A kernel may
  // accept a desc whose bits differ from its native ones (e.g. an int8 kernel
  // running a 4-bit layer): supports() decides.
  std::function<bool(const OpDesc&)> supports;
  // Estimated single-thread time of one run in nanoseconds.
  std::function<double(const OpDesc&)> cost_ns;
  // Throws std::invalid_argument on a desc it does not support or bad weights.
  std::function<std::unique_ptr<Kernel>(const OpDesc&, const Weights&)> create;
  // One line about what the kernel is good at, shown by explain_choice().
  std::string note;
};

// The one registry: every reference kernel, then the SIMD kernels when built
// with them (register_simd_kernels, simd.h). Built once, never modified.
const std::vector<KernelInfo>& kernel_table();

// Every kernel whose ISA is <= max_isa and that supports the desc, cheapest
// first (ties: higher ISA first, then table order). The reference kernel of the
// op and bit widths is always among them. Throws std::invalid_argument
// (check_desc) on a malformed desc.
std::vector<const KernelInfo*> candidates(const OpDesc& desc, Isa max_isa);

// The reference kernel for a desc (never null for a valid desc).
const KernelInfo* reference_kernel(const OpDesc& desc);
// A kernel by exact name, or nullptr.
const KernelInfo* find_kernel(std::string_view name);

struct KernelChoice {
  const KernelInfo* info = nullptr;
  double cost_ns = 0.0;
};
// The cheapest candidate.
KernelChoice choose_kernel(const OpDesc& desc, Isa max_isa);

// Human-readable account of the choice for BBITS_VERBOSE, e.g.
//   "fc_ref_w4a8 (reference, est. 12.3 us): cheapest of 1 candidate [fc_ref_w4a8 12.3 us]"
// `cands` as returned by candidates() (first = chosen); `max_isa` is the cap
// in force (it is named when it excluded faster kernels).
std::string explain_choice(const OpDesc& desc, std::span<const KernelInfo* const> cands, Isa max_isa);

// ---- helpers shared by every kernel implementation ---------------------------------
// Simple cost model: work / work_per_ns + bytes / bytes_per_ns + overhead_ns.
constexpr double cost_model_ns(double work, double work_per_ns, double bytes, double bytes_per_ns,
                               double overhead_ns) {
  return work / work_per_ns + bytes / bytes_per_ns + overhead_ns;
}

// [lo, hi] of an integer output grid intersected with the activation.
struct ClampRange {
  int64_t lo = 0, hi = 0;
};
ClampRange output_clamp(const QuantInfo& out, Activation act);

// Quantize a float onto an integer grid: round_half_even(x / scale) (float32
// divide), clamped to [lo, hi]; NaN -> 0 then clamped.
int64_t quantize_to_grid(float x, float scale, int64_t lo, int64_t hi);

// Read / write element i of an activation buffer stored by QuantInfo rules.
// Integer grids return the integer; float32 returns the bits as a float via
// load_float. (Slow generic helpers for reference code and tests.)
int64_t load_int(const void* data, int64_t i, const QuantInfo& q);
float load_float(const void* data, int64_t i, const QuantInfo& q);  // dequantized value
void store_int(void* data, int64_t i, const QuantInfo& q, int64_t v);  // v within the grid
void store_float(void* data, int64_t i, float v);                    // float32 output

// Integer average of an avg / global avg pool (see PoolDesc): sum / count on
// the input grid, moved to the output grid by r = make_requant(s_in / s_out),
// rounded half away from zero (one rounding).
inline int64_t avg_pool_divide(int64_t sum, int64_t count, bbits::Requant r) {
  if (r.multiplier == 0 || count <= 0) return 0;
  const __int128 mag = static_cast<__int128>(sum < 0 ? -sum : sum) * r.multiplier;
  const __int128 den = static_cast<__int128>(count) << r.shift;
  const auto q = static_cast<int64_t>((2 * mag + den) / (2 * den));
  return sum < 0 ? -q : q;
}

// Integer constants of an integer add (see AddDesc).
struct AddRequant {
  bbits::Requant a, b;  // make_requant(s_a / s_out), make_requant(s_b / s_out)
};
AddRequant add_requant(const QuantInfo& a, const QuantInfo& b, const QuantInfo& out);

}  // namespace bbits::kernels
