// bbits SIMD kernels — Ops for AArch64 Advanced SIMD, with and without the
// dot product (see ops.h). The NeonDot instances are compiled with
// -march=armv8-a+dotprod and reached only when the CPU reports HWCAP_ASIMDDP.
#pragma once

#include <arm_neon.h>

#include <algorithm>

#include "ops.h"

namespace bbits::kernels::simd {

struct OpsNeon {
  using arch = xsimd::neon64;
  using i32 = xsimd::batch<int32_t, arch>;
  using i64 = xsimd::batch<int64_t, arch>;
  using u8 = xsimd::batch<uint8_t, arch>;
  static constexpr int kLanes = 4, kBytes = 16;
  static constexpr bool kEvenOdd = false;   // mul() splits into the low and high two lanes
  static constexpr bool kSignedBytes = true;  // sdot / smull read both operands as int8

  BBITS_INLINE static int8x16_t s8(u8 v) { return vreinterpretq_s8_u8(v); }

  BBITS_INLINE static u8 bcast4(const uint8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return vreinterpretq_u8_s32(vdupq_n_s32(v));
  }

  // ---- requantization steps: low / high two lanes ---------------------------------
  struct Mult {
    int32x4_t m;
  };
  BBITS_INLINE static Mult mult(i32 m) { return {m}; }
  BBITS_INLINE static void mul(i32 a, const Mult& m, i64& lo, i64& hi) {
    lo = vmull_s32(vget_low_s32(a), vget_low_s32(m.m));
    hi = vmull_high_s32(a, m.m);
  }
  BBITS_INLINE static i64 sra(i64 v, i64 s) { return vshlq_s64(v, vnegq_s64(s)); }
  BBITS_INLINE static i32 join(i64 lo, i64 hi) { return vuzp1q_s32(vreinterpretq_s32_s64(lo), vreinterpretq_s32_s64(hi)); }

  // ---- bytes ----------------------------------------------------------------------
  BBITS_INLINE static u8 load_bytes(const uint8_t* p, int64_t n) {
    if (n >= 16) return vld1q_u8(p);
    uint8_t t[16] = {};
    std::memcpy(t, p, static_cast<size_t>(n));
    return vld1q_u8(t);
  }
  BBITS_INLINE static void store_bytes_n(uint8_t* p, u8 v, int64_t n) {
    if (n >= 16) {
      vst1q_u8(p, v);
      return;
    }
    uint8_t t[16];
    vst1q_u8(t, v);
    std::memcpy(p, t, static_cast<size_t>(n));
  }
  // Sums of the bytes as the dot products read them (int8), in 64-bit lanes.
  BBITS_INLINE static i64 byte_sums(u8 v) { return vpaddlq_s32(vpaddlq_s16(vpaddlq_s8(s8(v)))); }
  BBITS_INLINE static int64_t sum_i64(i64 v) { return vaddvq_s64(v); }
  // Bytes [0, n) as int32 lanes (n <= 4), sign- or zero-extended.
  BBITS_INLINE static i32 load_widen(const uint8_t* p, int64_t n, bool sgn) {
    uint8_t t[8] = {};
    if (n >= 4) std::memcpy(t, p, 4);
    else std::memcpy(t, p, static_cast<size_t>(n));
    const uint8x8_t b = vld1_u8(t);
    if (sgn) return vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u8(b))));
    return vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(b))));
  }

  // ---- widening / conversions (in lane order: lo = the first half) ---------------
  using i16 = xsimd::batch<int16_t, arch>;
  using f32 = xsimd::batch<float, arch>;
  using f64 = xsimd::batch<double, arch>;
  BBITS_INLINE static void widen_bytes(u8 v, bool sgn, i16& lo, i16& hi) {
    if (sgn) {
      lo = vmovl_s8(vget_low_s8(s8(v)));
      hi = vmovl_high_s8(s8(v));
    } else {
      lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(v)));
      hi = vreinterpretq_s16_u16(vmovl_high_u8(v));
    }
  }
  BBITS_INLINE static void widen_words(i16 v, bool sgn, i32& lo, i32& hi) {
    if (sgn) {
      lo = vmovl_s16(vget_low_s16(v));
      hi = vmovl_high_s16(v);
    } else {
      const uint16x8_t u = vreinterpretq_u16_s16(v);
      lo = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(u)));
      hi = vreinterpretq_s32_u32(vmovl_high_u16(u));
    }
  }
  BBITS_INLINE static void to_f64(i32 v, f64& lo, f64& hi) {
    lo = vcvtq_f64_s64(vmovl_s32(vget_low_s32(v)));
    hi = vcvtq_f64_s64(vmovl_high_s32(v));
  }
  // Truncating conversion back (values within int32).
  BBITS_INLINE static i32 from_f64(f64 lo, f64 hi) {
    return vcombine_s32(vmovn_s64(vcvtq_s64_f64(lo)), vmovn_s64(vcvtq_s64_f64(hi)));
  }
  BBITS_INLINE static void f32_to_f64(f32 v, f64& lo, f64& hi) {
    lo = vcvt_f64_f32(vget_low_f32(v));
    hi = vcvt_high_f64_f32(v);
  }
  BBITS_INLINE static f32 f64_to_f32(f64 lo, f64 hi) { return vcvt_high_f32_f64(vcvt_f32_f64(lo), hi); }
  BBITS_INLINE static void store_f32(float* o, f32 v, int64_t n) {
    if (n >= 4) {
      vst1q_f32(o, v);
      return;
    }
    float t[4];
    vst1q_f32(t, v);
    std::memcpy(o, t, static_cast<size_t>(n) * 4);
  }

  // ---- 16-bit pairs and 64-bit lanes (the 16-bit family) --------------------------
  // acc[l] += x[2l] w[2l] + x[2l+1] w[2l+1] (int16 pairs: smull, pairwise add; wrapping int32).
  BBITS_INLINE static void dot16(i32& acc, i32 x, i32 w) {
    const int16x8_t a = vreinterpretq_s16_s32(x), b = vreinterpretq_s16_s32(w);
    acc = vaddq_s32(acc, vpaddq_s32(vmull_s16(vget_low_s16(a), vget_low_s16(b)), vmull_high_s16(a, b)));
  }
  BBITS_INLINE static void widen_i32(i32 v, i64& lo, i64& hi) {
    lo = vmovl_s32(vget_low_s32(v));
    hi = vmovl_high_s32(v);
  }
  BBITS_INLINE static i32 narrow64(i64 lo, i64 hi) { return vcombine_s32(vmovn_s64(lo), vmovn_s64(hi)); }
  BBITS_INLINE static i64 mul_s32(i64 a, i64 b) { return vmull_s32(vmovn_s64(a), vmovn_s64(b)); }
  BBITS_INLINE static i64 mul_u32(i64 a, i64 b) {
    return vreinterpretq_s64_u64(vmull_u32(vmovn_u64(vreinterpretq_u64_s64(a)), vmovn_u64(vreinterpretq_u64_s64(b))));
  }
  BBITS_INLINE static i64 srl64(i64 v, int n) {
    return vreinterpretq_s64_u64(vshlq_u64(vreinterpretq_u64_s64(v), vdupq_n_s64(-n)));
  }
  BBITS_INLINE static i64 clamp64(i64 v, i64 lo, i64 hi) {
    v = vbslq_s64(vcgtq_s64(v, hi), hi, v);
    return vbslq_s64(vcgtq_s64(lo, v), lo, v);
  }
  BBITS_INLINE static bool fits_i32(i64 a) {
    const uint64x2_t big = vorrq_u64(vcgtq_s64(a, vdupq_n_s64(INT32_MAX)), vcltq_s64(a, vdupq_n_s64(INT32_MIN)));
    return vmaxvq_u32(vreinterpretq_u32_u64(big)) == 0;
  }
  BBITS_INLINE static void halves_to_order(i64 e, i64 o, i64& c0, i64& c1) {
    c0 = e;  // low / high halves are already channels 0, 1 and 2, 3
    c1 = o;
  }
  BBITS_INLINE static i32 load_widen16(const void* p, int64_t n, bool sgn) {
    int16_t t[4] = {};
    if (n >= 4) std::memcpy(t, p, 8);
    else std::memcpy(t, p, static_cast<size_t>(n) * 2);
    const int16x4_t b = vld1_s16(t);
    if (sgn) return vmovl_s16(b);
    return vreinterpretq_s32_u32(vmovl_u16(vreinterpret_u16_s16(b)));
  }

  // ---- packed weights to floats (the float fc family) -----------------------------
  // Field j (< 4) of a chunk of 4 fields: byte j, or bits bits * j of the
  // chunk's 16 (4 bits) or 8 (2 bits) bits.
  static constexpr int field_pos(int bits, int j) { return bits * j; }
  struct Fields {
    int32x4_t shl;  // left shifts bringing lane l's field to the top (then an arithmetic shift down)
  };
  BBITS_INLINE static Fields fields(int bits) {
    int32_t s[4];
    for (int l = 0; l < 4; ++l) s[l] = bits < 8 ? 32 - bits - bits * l : 0;
    return {vld1q_s32(s)};
  }
  template <int BITS>
  BBITS_INLINE static f32 unpack_f32(const uint8_t* p, const Fields& u) {
    if constexpr (BITS == 8) {
      (void)u;
      int32_t v;
      std::memcpy(&v, p, 4);
      const int8x8_t b = vreinterpret_s8_s32(vdup_n_s32(v));
      return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(b))));
    } else {
      uint32_t v = 0;
      std::memcpy(&v, p, BITS == 4 ? 2 : 1);
      const int32x4_t t = vshlq_s32(vdupq_n_s32(static_cast<int32_t>(v)), u.shl);
      return vcvtq_f32_s32(vshrq_n_s32(t, 32 - BITS));
    }
  }
  BBITS_INLINE static f32 load_f32(const float* p, int64_t n) {
    float t[4] = {};
    std::memcpy(t, p, static_cast<size_t>(n) * 4);
    return vld1q_f32(t);
  }
  BBITS_INLINE static void hsum4(f32 a, f32 b, f32 c, f32 d, float* out) {
    vst1q_f32(out, vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d)));
  }
  // out[i] = act(float(double(s[i]) * scale[i] + bias[i])), i < 4 (as OpsX86).
  BBITS_INLINE static void affine4(const float* s, const double* scale, const double* bias, int act, float* out) {
    const float32x4_t f = vld1q_f32(s);
    const float64x2_t lo = vaddq_f64(vmulq_f64(vcvt_f64_f32(vget_low_f32(f)), vld1q_f64(scale)), vld1q_f64(bias));
    const float64x2_t hi = vaddq_f64(vmulq_f64(vcvt_high_f64_f32(f), vld1q_f64(scale + 2)), vld1q_f64(bias + 2));
    float32x4_t v = vcvt_high_f32_f64(vcvt_f32_f64(lo), hi);
    if (act != 0) {
      // !(v > 0) -> 0 (NaN and -0 included), as the reference.
      v = vbslq_f32(vcgtq_f32(v, vdupq_n_f32(0.0f)), v, vdupq_n_f32(0.0f));
      if (act == 2) v = vminq_f32(v, vdupq_n_f32(6.0f));
    }
    vst1q_f32(out, v);
  }
  // q[i] = quantize_to_grid(f[i], step, lo, hi) (as OpsX86).
  BBITS_INLINE static void quantize4(const float* f, float step, float lo, float hi, int32_t* q) {
    float32x4_t v = vld1q_f32(f);
    v = vbslq_f32(vceqq_f32(v, v), v, vdupq_n_f32(0.0f));  // NaN -> 0
    float32x4_t r = vrndnq_f32(vdivq_f32(v, vdupq_n_f32(step)));
    r = vminq_f32(vmaxq_f32(r, vdupq_n_f32(lo)), vdupq_n_f32(hi));  // -inf -> lo, +inf -> hi
    vst1q_s32(q, vcvtq_s32_f32(r));
  }

  // Interleave (zip) of bytes / 16-bit words: x86's in-lane unpacks.
  BBITS_INLINE static u8 unpacklo8(u8 a, u8 b) { return vzip1q_u8(a, b); }
  BBITS_INLINE static u8 unpackhi8(u8 a, u8 b) { return vzip2q_u8(a, b); }
  BBITS_INLINE static u8 unpacklo16(u8 a, u8 b) {
    return vreinterpretq_u8_u16(vzip1q_u16(vreinterpretq_u16_u8(a), vreinterpretq_u16_u8(b)));
  }
  BBITS_INLINE static u8 unpackhi16(u8 a, u8 b) {
    return vreinterpretq_u8_u16(vzip2q_u16(vreinterpretq_u16_u8(a), vreinterpretq_u16_u8(b)));
  }
  // a_j holds channels 4 j .. + 3 (one 128-bit lane): already in order.
  BBITS_INLINE static void to_channel_order(const i32 (&a)[4], i32 (&out)[4]) {
    for (int j = 0; j < 4; ++j) out[j] = a[j];
  }

  // NB vectors of requantized int32 lanes (channels b * 4 + l) as n <= 4 NB
  // bytes: saturating narrowing, a byte clamp to [lo, hi], one store.
  template <int NB, bool CLAMP = true>
  BBITS_INLINE static void store_u8(uint8_t* o, i32 r0, i32 r1, i32 r2, i32 r3, int64_t n, bool sgn, int32_t lo,
                                    int32_t hi) {
    const int16x4_t z = vdup_n_s16(0);
    const int16x8_t h01 = vcombine_s16(vqmovn_s32(r0), NB >= 2 ? vqmovn_s32(r1) : z);
    const int16x8_t h23 = NB >= 3 ? vcombine_s16(vqmovn_s32(r2), NB == 4 ? vqmovn_s32(r3) : z)
                                  : vcombine_s16(z, z);
    uint8x16_t v;
    if (sgn) {
      int8x16_t b = vcombine_s8(vqmovn_s16(h01), vqmovn_s16(h23));
      if constexpr (CLAMP)
        b = vminq_s8(vmaxq_s8(b, vdupq_n_s8(static_cast<int8_t>(lo))), vdupq_n_s8(static_cast<int8_t>(hi)));
      v = vreinterpretq_u8_s8(b);
    } else {
      v = vcombine_u8(vqmovun_s16(h01), vqmovun_s16(h23));
      if constexpr (CLAMP)
        v = vminq_u8(vmaxq_u8(v, vdupq_n_u8(static_cast<uint8_t>(lo))), vdupq_n_u8(static_cast<uint8_t>(hi)));
    }
    store_bytes_n(o, v, n);
  }
  // n <= 4 lanes of int32 values within the 16-bit type, as 16-bit values.
  BBITS_INLINE static void store_u16(uint16_t* o, i32 r, int64_t n) {
    uint16_t t[4];
    vst1_u16(t, vmovn_u32(vreinterpretq_u32_s32(r)));
    std::memcpy(o, t, static_cast<size_t>(std::min<int64_t>(4, n)) * 2);
  }
};

template <>
struct Ops<Neon> : OpsNeon {
  // Without sdot: smull (int8 x int8 -> int16, exact) and sadalp (pairwise
  // add-accumulate into int32). The accumulator holds two partial sums per
  // output lane; acc_sum() adds them.
  struct Acc {
    int32x4_t lo, hi;  // lanes (0,0), (0,1), (1,0), (1,1) / the same for lanes 2, 3
  };
  template <bool W>
  using XP = int8x16_t;
  BBITS_INLINE static Acc acc_zero() { return {vdupq_n_s32(0), vdupq_n_s32(0)}; }
  BBITS_INLINE static i32 acc_sum(const Acc& a) { return vpaddq_s32(a.lo, a.hi); }
  template <bool W>
  BBITS_INLINE static int8x16_t prep(u8 x) {
    return s8(x);
  }
  template <bool W>
  BBITS_INLINE static void dot(Acc& acc, int8x16_t x, u8 w) {
    const int8x16_t ws = s8(w);
    acc.lo = vpadalq_s16(acc.lo, vmull_s8(vget_low_s8(x), vget_low_s8(ws)));
    acc.hi = vpadalq_s16(acc.hi, vmull_high_s8(x, ws));
  }
};

template <>
struct Ops<NeonDot> : OpsNeon {
  using Acc = i32;
  template <bool W>
  using XP = int8x16_t;
  BBITS_INLINE static Acc acc_zero() { return vdupq_n_s32(0); }
  BBITS_INLINE static i32 acc_sum(const Acc& a) { return a; }
  template <bool W>
  BBITS_INLINE static int8x16_t prep(u8 x) {
    return s8(x);
  }
  // sdot as inline asm: arm_neon.h's vdotq_s32 is declared for
  // armv8.2-a+dotprod, which would also let this whole translation unit use
  // the v8.1 atomics (LSE) that a Cortex-A53 lacks; the file is compiled for
  // armv8-a+dotprod instead, and the assembler (binutils 2.40 accepts sdot
  // only from armv8.2-a) is told the architecture of this one instruction.
  template <bool W>
  BBITS_INLINE static void dot(Acc& acc, int8x16_t x, u8 w) {
    int32x4_t a = acc;
    asm(".arch armv8.2-a+dotprod\n\tsdot %0.4s, %1.16b, %2.16b" : "+w"(a) : "w"(x), "w"(s8(w)));
    acc = a;
  }
};

}  // namespace bbits::kernels::simd
