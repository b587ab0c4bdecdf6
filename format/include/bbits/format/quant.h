// bbits — the numbers every part agrees on: bit widths, grids, scales,
// quantization, sub-byte packing and requantization.
//
// Header-only and free of any dependency, so that the training library,
// the converter, the kernels and the runtime all compute exactly the same
// integers. See docs/FORMAT.md ("Quantization arithmetic").
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace bbits {

// ---- legal bit widths ----------------------------------------------------
inline constexpr int kWeightBits[] = {0, 2, 4, 8, 16, 32};
inline constexpr int kActBits[] = {2, 4, 8, 16, 32};

constexpr bool is_legal_weight_bits(int b) {
  return b == 0 || b == 2 || b == 4 || b == 8 || b == 16 || b == 32;
}
constexpr bool is_legal_act_bits(int b) {
  return b == 2 || b == 4 || b == 8 || b == 16 || b == 32;
}
// 32 bits means float32: no integer grid.
constexpr bool is_integer_bits(int b) { return b == 2 || b == 4 || b == 8 || b == 16; }

// ---- hard-concrete gate constants and the test-time rule ------------------
inline constexpr double kGateBeta = 2.0 / 3.0;
inline constexpr double kGateGamma = -0.1;
inline constexpr double kGateZeta = 1.1;
inline constexpr double kGateThreshold = 0.34;  // gate on when P(z = 0) < 0.34
inline constexpr double kGateCutoff = -2.0;     // log alpha <= -2: gate closed with all above

// P(z = 0) of a hard-concrete gate with parameter log_alpha.
inline double gate_prob_zero(double log_alpha) {
  const double offset = kGateBeta * std::log(-kGateGamma / kGateZeta);
  return 1.0 / (1.0 + std::exp(-(offset - log_alpha)));
}
// Deterministic test-time decision (reference rule): on when P(z = 0) < 0.34,
// i.e. log_alpha > -0.9353 for the constants above.
inline bool gate_on(double log_alpha) { return gate_prob_zero(log_alpha) < kGateThreshold; }

// Bit width chosen by the nested gates z4, z8, z16, z32 (z2 is pruning and is
// decided per channel by gate_on). The reference's cut-off: a gate whose
// log alpha is <= -2 is closed together with every gate above it.
inline int bits_from_gates(double la4, double la8, double la16, double la32) {
  const double la[4] = {la4, la8, la16, la32};
  int bits = 2;
  for (int i = 0; i < 4; ++i) {
    if (la[i] <= kGateCutoff || !gate_on(la[i])) break;
    bits *= 2;
  }
  return bits;
}

// ---- grids ----------------------------------------------------------------
// Signed grid: integers in [-(2^(b-1)-1), 2^(b-1)-1]; unsigned: [0, 2^b-1].
constexpr int64_t qmin(int bits, bool is_signed) {
  return is_signed ? -((int64_t{1} << (bits - 1)) - 1) : 0;
}
constexpr int64_t qmax(int bits, bool is_signed) {
  return is_signed ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1;
}

// Grid step at bit width b, computed in float32 exactly as the Bayesian Bits
// quantizer does: s2 = range / 3, s4 = s2 / 5, s8 = s4 / 17, s16 = s8 / 257
// (range = 2 x_max signed, x_max unsigned). Mathematically range / (2^b - 1).
inline float grid_scale(float x_max, int bits, bool is_signed) {
  if (!is_integer_bits(bits)) throw std::invalid_argument("grid_scale: bits must be 2, 4, 8 or 16");
  const float range = is_signed ? (x_max - (-x_max)) : x_max;
  float s = range / 3.0f;
  if (bits >= 4) s = s / 5.0f;
  if (bits >= 8) s = s / 17.0f;
  if (bits >= 16) s = s / 257.0f;
  return s;
}

// The clip bound used by the quantizer: x_max * (1 - 1e-7) in float32, so that
// x_max itself never rounds past the top of the grid.
inline float clip_bound(float x_max) { return (1.0f - 1e-7f) * x_max; }

// Round half to even (torch.round), independent of the FP environment, and
// without a libm call (the session quantizes every input value with it):
// below 2^23 the integer part converts exactly (truncation toward zero), the
// fraction v - t is exact, and the sign of a zero result is v's (as
// std::round's); from 2^23 on every float is an integer; NaN and infinities
// come back unchanged.
inline float round_half_even(float v) {
  if (!(std::fabs(v) < 8388608.0f)) return v;
  int32_t t = static_cast<int32_t>(v);
  const float f = v - static_cast<float>(t);
  const bool odd = (t & 1) != 0;
  if (f > 0.5f || (f == 0.5f && odd)) ++t;
  else if (f < -0.5f || (f == -0.5f && odd)) --t;
  return std::copysign(static_cast<float>(t), v);
}

// Quantization onto the grid of (x_max, bits, is_signed) with its constants
// computed once: quantize_value() for many values (same results).
struct ValueQuantizer {
  float s = 1.0f, c = 0.0f, lo = 0.0f, mn = 0.0f, mx = 0.0f;
  ValueQuantizer(float x_max, int bits, bool is_signed)
      : s(grid_scale(x_max, bits, is_signed)),
        c(clip_bound(x_max)),
        lo(is_signed ? -c : 0.0f),
        mn(static_cast<float>(qmin(bits, is_signed))),
        mx(static_cast<float>(qmax(bits, is_signed))) {}
  int32_t operator()(float x) const {
    if (std::isnan(x)) x = 0.0f;
    const float xc = x < lo ? lo : (x > c ? c : x);
    float q = round_half_even(xc / s);
    q = q < mn ? mn : (q > mx ? mx : q);
    return static_cast<int32_t>(q);
  }
};

// Quantize one real value onto the grid (eval mode of the training library):
// clip to [-c, c] (signed) or [0, c] (unsigned), c = clip_bound(x_max); divide
// by the step in float32; round half to even; clamp to the legal integers.
inline int32_t quantize_value(float x, float x_max, int bits, bool is_signed) {
  return ValueQuantizer(x_max, bits, is_signed)(x);
}

// ---- sub-byte packing -------------------------------------------------------
// A row of K values of `bits` bits, low bits first along the reduction
// dimension: value k occupies bits [k*bits, (k+1)*bits) of the row, bit 0
// being the least significant bit of byte 0. Rows are padded to whole bytes.
// 8-bit values are int8, 16-bit values int16 little-endian, 32-bit float32.
constexpr size_t packed_row_bytes(int64_t k, int bits) {
  return bits >= 8 ? static_cast<size_t>(k) * static_cast<size_t>(bits / 8)
                   : static_cast<size_t>((k * bits + 7) / 8);
}

// Pack K signed integers (each within the signed grid of `bits`) into a row.
inline void pack_row(const int32_t* q, int64_t k, int bits, uint8_t* out) {
  const size_t nbytes = packed_row_bytes(k, bits);
  if (bits == 2 || bits == 4) {
    std::memset(out, 0, nbytes);
    const uint32_t mask = (1u << bits) - 1u;
    for (int64_t i = 0; i < k; ++i) {
      const uint64_t bit = static_cast<uint64_t>(i) * static_cast<uint64_t>(bits);
      out[bit / 8] |= static_cast<uint8_t>((static_cast<uint32_t>(q[i]) & mask) << (bit % 8));
    }
  } else if (bits == 8) {
    for (int64_t i = 0; i < k; ++i) out[i] = static_cast<uint8_t>(static_cast<int8_t>(q[i]));
  } else if (bits == 16) {
    for (int64_t i = 0; i < k; ++i) {
      const uint16_t v = static_cast<uint16_t>(static_cast<int16_t>(q[i]));
      out[2 * i] = static_cast<uint8_t>(v & 0xff);
      out[2 * i + 1] = static_cast<uint8_t>(v >> 8);
    }
  } else {
    throw std::invalid_argument("pack_row: bits must be 2, 4, 8 or 16");
  }
}

// Read value k of a packed row (sign-extended).
inline int32_t unpack_value(const uint8_t* row, int64_t k, int bits) {
  switch (bits) {
    case 2:
    case 4: {
      const uint64_t bit = static_cast<uint64_t>(k) * static_cast<uint64_t>(bits);
      const uint32_t raw = (row[bit / 8] >> (bit % 8)) & ((1u << bits) - 1u);
      const int32_t sign = 1 << (bits - 1);
      return static_cast<int32_t>(raw ^ static_cast<uint32_t>(sign)) - sign;
    }
    case 8:
      return static_cast<int8_t>(row[k]);
    case 16:
      return static_cast<int16_t>(static_cast<uint16_t>(row[2 * k] | (row[2 * k + 1] << 8)));
    default:
      throw std::invalid_argument("unpack_value: bits must be 2, 4, 8 or 16");
  }
}

// ---- requantization ----------------------------------------------------------
// A positive real multiplier r is represented as m * 2^-s with m in
// [2^30, 2^31) and 0 <= s <= 62 (s > 62 is reduced by shifting m right).
// Applying it to an integer accumulator a rounds half towards +infinity:
//     out = (a * m + 2^(s-1)) >> s        (arithmetic shift; exact, in 128 bits)
// followed by a clamp to the output grid. Multipliers >= 2^31 are rejected.
struct Requant {
  int32_t multiplier = 0;  // m
  int32_t shift = 0;       // s
};

inline Requant make_requant(double real) {
  if (!(real > 0.0) || !std::isfinite(real))
    throw std::invalid_argument("make_requant: multiplier must be positive and finite");
  int exp = 0;
  const double frac = std::frexp(real, &exp);  // real = frac * 2^exp, frac in [0.5, 1)
  int64_t m = static_cast<int64_t>(std::llround(frac * static_cast<double>(int64_t{1} << 31)));
  int s = 31 - exp;
  if (m == (int64_t{1} << 31)) {  // rounding carried
    m >>= 1;
    --s;
  }
  if (s < 0) throw std::invalid_argument("make_requant: multiplier too large (>= 2^31)");
  while (s > 62) {
    m >>= 1;
    --s;
  }
  if (m == 0) {  // underflow: everything rounds to zero
    return Requant{0, 0};
  }
  return Requant{static_cast<int32_t>(m), static_cast<int32_t>(s)};
}

inline int64_t apply_requant(int64_t acc, Requant r) {
  if (r.multiplier == 0) return 0;
  const __int128 p = static_cast<__int128>(acc) * r.multiplier;
  if (r.shift == 0) return static_cast<int64_t>(p);
  const __int128 rounded = p + (static_cast<__int128>(1) << (r.shift - 1));
  return static_cast<int64_t>(rounded >> r.shift);
}

// The same with an extra term added before the shift (the sub-unit part of a
// float bias, see bias_fraction): (acc * m + extra + 2^(s-1)) >> s.
inline int64_t apply_requant(int64_t acc, Requant r, int64_t extra) {
  if (r.multiplier == 0) return 0;
  __int128 p = static_cast<__int128>(acc) * r.multiplier + extra;
  if (r.shift == 0) return static_cast<int64_t>(p);
  p += static_cast<__int128>(1) << (r.shift - 1);
  return static_cast<int64_t>(p >> r.shift);
}

// Two integers on their own grids summed and rounded once onto the output
// grid (Add): with S the larger shift of the non-zero multipliers,
// (a*m_a*2^(S-s_a) + b*m_b*2^(S-s_b) + 2^(S-1)) >> S, exact in 128 bits. A
// zero multiplier (a scale ratio below 2^-62) contributes nothing.
inline int64_t apply_requant_sum(int64_t a, Requant ra, int64_t b, Requant rb) {
  int S = 0;
  if (ra.multiplier != 0) S = ra.shift;
  if (rb.multiplier != 0 && rb.shift > S) S = rb.shift;
  __int128 v = 0;
  if (ra.multiplier != 0) v += static_cast<__int128>(a) * ra.multiplier * (static_cast<__int128>(1) << (S - ra.shift));
  if (rb.multiplier != 0) v += static_cast<__int128>(b) * rb.multiplier * (static_cast<__int128>(1) << (S - rb.shift));
  if (S == 0) return static_cast<int64_t>(v);
  v += static_cast<__int128>(1) << (S - 1);
  return static_cast<int64_t>(v >> S);
}

inline int64_t clamp_i64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Integer bias for an integer layer: round(b / (s_w * s_in)), half away from zero,
// saturated to int32.
inline int32_t quantize_bias(double b, double s_w, double s_in) {
  const double v = std::round(b / (s_w * s_in));
  if (v > 2147483647.0) return 2147483647;
  if (v < -2147483647.0) return -2147483647;
  return static_cast<int32_t>(v);
}

// A float bias b of an integer layer is applied in two parts: the integer
// bias_q = quantize_bias(b, s_w, s_in) added to the accumulator, and the rest,
// (b / (s_w s_in) - bias_q) in accumulator units, carried at the precision of
// the requantization multiplier: llround(rest * m), added before the shift
// (apply_requant(acc + bias_q, r, bias_fraction(...))). With it the output is
// round((acc + b / (s_w s_in)) * s_w s_in / s_out) up to 2^-31 relative error,
// instead of rounding the bias to a whole accumulator step first, which is
// coarse when both sides have few bits. A saturated bias_q gets no fraction.
inline int64_t bias_fraction(double b, double s_w, double s_in, int64_t bias_q, Requant r) {
  if (!std::isfinite(b) || r.multiplier == 0) return 0;
  const double rest = b / (s_w * s_in) - static_cast<double>(bias_q);
  if (!(std::fabs(rest) <= 1.0)) return 0;
  return static_cast<int64_t>(std::llround(rest * static_cast<double>(r.multiplier)));
}

}  // namespace bbits
