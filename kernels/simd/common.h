// bbits SIMD kernels — what every family shares, in portable code: aligned
// buffers, the CPU check and cost-model rates of the table entries, argument
// checks, and the epilogue of integer conv / fc kernels (corrections, bias,
// requantization tables, clamp; the vector routine is requant.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "arch.h"
#include "bbits/kernels/kernels.h"

namespace bbits::kernels::simd {

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
using AlignedArray = std::unique_ptr<T[], AlignedFree>;

// Zero-initialised, 64-byte aligned, rounded up to whole cache lines.
template <class T>
AlignedArray<T> make_aligned(size_t n) {
  size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return AlignedArray<T>(static_cast<T*>(p));
}

constexpr size_t round64(size_t n) { return (n + 63) / 64 * 64; }
constexpr int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// True when this CPU can run code of ISA level `isa` (ignores BBITS_MAX_ISA,
// which candidates() applies).
bool cpu_has(Isa isa);

// Cost models: the default MAC rate (MACs per ns, one thread) of a kernel, and
// the rate in force (calibrated through set_simd_kernel_rate, or the default).
void set_default_rate(const std::string& name, double macs_per_ns);
double kernel_rate(std::string_view name);

// Cost-model terms shared by the conv / fc families (one thread, measured on
// an AMD EPYC Zen 4): weight streaming rate in bytes per ns by working set
// (L2, L3, DRAM), the fixed cost of a call, the fused epilogue per output.
inline double stream_bytes_per_ns(double wbytes) {
  if (wbytes <= 1.0e6) return 85.0;
  if (wbytes <= 24.0e6) return 55.0;
  return 25.0;
}
inline constexpr double kFixedNs = 300.0;
inline constexpr double kEpilogueNsPerOutput = 0.2;

// Kernel names say the ISA: "avx2", "avx512", "avx512vnni", "neon", "neondot".
const char* isa_tag(Isa isa);

// Argument checks of Kernel::run (std::invalid_argument naming the kernel):
// n_inputs non-null inputs and a non-null output; a scratch of >= need bytes.
void check_io(const KernelArgs& a, size_t n_inputs, const std::string& name);
void check_scratch(const KernelArgs& a, size_t need, const std::string& name);
// Throws std::invalid_argument unless this CPU has `isa`.
void check_cpu(Isa isa, const std::string& name);

// Bits 2, 4 or 8: one byte per stored value.
inline bool int8_grid(const QuantInfo& q) { return q.bits == 2 || q.bits == 4 || q.bits == 8; }

// The vectors of an ISA: int32 lanes, and how the requantization splits them
// into two halves of 64-bit lanes (even / odd lanes on x86, low / high on NEON).
struct VecLayout {
  int lanes = 16;
  bool even_odd = true;
};
constexpr VecLayout vec_layout(Isa isa) {
  switch (isa) {
    case Isa::AVX2: return {8, true};
    case Isa::NEON:
    case Isa::NEON_DOTPROD: return {4, false};
    default: return {16, true};
  }
}

// ---- requantization tables ------------------------------------------------------
// The int32 range [a_lo, a_hi] of an accumulator a outside of which
// clamp(apply_requant(a, r, extra), lo, hi) is lo or hi anyway, clipped to
// int32; every a in it requantizes into int32 (std::logic_error otherwise,
// which make_requant's multipliers never give).
void pre_clamp_bounds(Requant r, int64_t extra, int64_t lo, int64_t hi, int32_t* a_lo, int32_t* a_hi);

// Per-channel parameters of requant.h, for channels [0, n) padded to whole
// vectors of `layout.lanes`: mult (int32) and the pre-clamp bounds in channel
// order; round (2^(s-1) + bias fraction) and shift (int64) in pair order (per
// vector, the lanes of mul()'s first half, then of its second).
struct RequantTable {
  VecLayout layout;
  int64_t n = 0;  // padded channel count
  AlignedArray<int32_t> mult;
  AlignedArray<int64_t> round, shift;
  // Multipliers above 1: the accumulator is clamped to [pre_lo, pre_hi] first.
  bool pre = false;
  AlignedArray<int32_t> pre_lo, pre_hi;
  // fold(): cround = colterm * m + round (the colterm add folded into the
  // rounding; exact, see fold_colterm) and shift32 = shift with the second
  // half reduced by 32 (its result lands in the high 32 bits directly).
  bool folded = false;
  AlignedArray<int64_t> cround, shift32;

  int64_t pair_pos(int64_t c) const {
    const int64_t L = layout.lanes, v = c / L * L, l = c % L;
    return layout.even_odd ? v + (l % 2 == 0 ? l / 2 : L / 2 + l / 2) : c;
  }
};
// One multiplier for `lanes` channels (weightless ops), clamped output [lo, hi].
RequantTable single_requant(Requant r, int64_t lo, int64_t hi, VecLayout layout);

// ---- the epilogue of an integer conv / fc -----------------------------------------
enum class OutKind : uint8_t { U8, S8, U16, S16, F32 };
size_t out_elem_bytes(OutKind k);

// Everything after the dot product: corrections, bias, requantization, clamp,
// activation and the store, per output channel (arrays padded to whole vectors).
//   a = acc + colterm - rowcorr (wrapping int32, exact: see `wide`)
//   integer out: clamp(apply_requant(a (+ bias64 when wide), m, s, bfrac), lo, hi)
//   float out:   act(float(double(a) * mul + bias_f))
struct Epilogue {
  OutKind kind = OutKind::U8;
  int64_t OC = 0;
  // -a_offset * wsum (activations stored shifted by a_offset) + bias_q (integer
  // out, when !wide), wrapping int32.
  AlignedArray<int32_t> colterm;
  // wide: |acc| + |bias| may exceed int32; the epilogue then adds bias64 in
  // 64 bits (scalar path), exactly as the reference does.
  bool wide = false;
  std::vector<int64_t> bias64;
  // Sub-step part of a float bias (bias_fraction), already included in round.
  std::vector<int64_t> bfrac;
  AlignedArray<int64_t> mult, round, shift;  // channel order (scalar and 64-bit paths)
  int64_t lo = 0, hi = 0;
  // Every real multiplier <= 1: requantized values fit int32.
  bool small_mult = false;
  RequantTable rq;  // integer outputs
  // Float output (as the reference): out = act(float(double(acc) * mul[oc] + double(bias_f[oc]))),
  // mul[oc] = double(s_w[oc]) * double(s_in).
  std::vector<double> mul;
  std::vector<float> bias_f;
  Activation act = Activation::None;
};

// Builds the epilogue of an integer conv / fc with OC channels (tables padded
// to OCp, rounded up to whole vectors), K values per row, weights at wbits:
// wsum per channel (from the packed weights), activations stored as
// x + a_offset. Validates scales and biases (std::invalid_argument naming `who`).
// `upshift` (optional, OC entries): the kernel runs channel oc's weights
// multiplied by 2^upshift[oc] (weight_upshifts()); wsum is of those weights.
Epilogue make_epilogue(int64_t OC, int64_t OCp, int64_t K, int wbits, const Weights& w, const QuantInfo& in,
                       const QuantInfo& out, Activation act, const std::vector<int32_t>& wsum, int a_offset,
                       VecLayout layout, const std::string& who, const std::vector<int>& upshift = {});
// 2- and 4-bit weights widened to int8 for an 8-bit kernel, 8-bit integer
// outputs: per output channel, the power of two j (at most 8 - wbits, so the
// weights still fit int8) by which to multiply the channel's weights so that
// its requantization shift reaches 32. The sums are then 2^j times larger and
// the epilogue takes shift s + j, bias and rounding times 2^j: every output
// is the same integer (floor(x 2^j / 2^(s+j)) = floor(x / 2^s)), but
// multipliers above 1 (the sub-byte weights' large scales) drop below 1, so
// the epilogue needs no pre-clamp and can fold (fold_colterm). j stays 0
// where the larger sums could leave int32. Empty when no channel gains.
std::vector<int> weight_upshifts(int64_t OC, int64_t K, int wbits, const Weights& w, const QuantInfo& in,
                                 const QuantInfo& out);
// Folds colterm into the requantization's rounding (RequantTable::cround) when
// that is exact and useful: even / odd layout, every multiplier <= 1, no wide
// sums, 8-bit outputs, every shift >= 32.
void fold_colterm(Epilogue& E);

// The epilogue of channel oc's exact sum a (plus `bias`, integer outputs
// only), stored at out_row[oc]: act(float(double(a) * mul + bias_f)), or
// clamp(apply_requant(a + bias, m, s, bias fraction), lo, hi).
void epilogue_value(const Epilogue& E, int64_t oc, int64_t a, int64_t bias, void* out_row);

// The scalar epilogue of one row segment (float outputs, wide sums, tails):
// n channels from oc0, acc[0..n) their sums.
void epilogue_row_scalar(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                         void* out_row);

// ---- depthwise geometry (8- and 16-bit kernels) -------------------------------------
struct DwShape {
  int64_t N = 1, H = 0, W = 0, C = 0, OH = 0, OW = 0;
  int KH = 1, KW = 1, sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1;
};
// Fills g from a depthwise ConvDesc, and checks that `w` holds the C packed
// rows of KH*KW weights (std::invalid_argument naming `kernel` otherwise).
void set_dw_shape(DwShape& g, const ConvDesc& d, const Weights& w, const std::string& kernel);

// ---- the kernel table -------------------------------------------------------------
// A weightless operator kernel of type K (constructed as K(name, isa, desc))
// over descriptors of type Desc: the table entry around `ok` (what it runs,
// besides the CPU check) and `cost`.
template <class Desc, class K, class Ok, class Cost>
KernelInfo op_kernel(std::string name, OpKind op, Isa isa, int act_bits, Ok ok, Cost cost, std::string note) {
  KernelInfo k;
  k.name = std::move(name);
  k.op = op;
  k.act_bits = act_bits;
  k.isa = isa;
  k.supports = [isa, ok](const OpDesc& d) {
    const auto* x = std::get_if<Desc>(&d);
    return x && cpu_has(isa) && ok(*x);
  };
  k.cost_ns = [cost](const OpDesc& d) { return cost(std::get<Desc>(d)); };
  k.create = [name = k.name, isa](const OpDesc& d, const Weights&) -> std::unique_ptr<Kernel> {
    const auto* x = std::get_if<Desc>(&d);
    if (!x) throw std::invalid_argument(name + ": not an operator this kernel runs: " + describe(d));
    return std::make_unique<K>(name, isa, *x);
  };
  k.note = std::move(note);
  return k;
}

}  // namespace bbits::kernels::simd
