// bbits SIMD kernels — Ops for AVX2 + FMA (see ops.h). Compiled only with the
// AVX2 flags.
#pragma once

#include <immintrin.h>

#include <algorithm>

#include "ops.h"
#include "ops_x86.h"

namespace bbits::kernels::simd {

template <>
struct Ops<Avx2> : OpsX86 {
  using arch = xsimd::avx2;
  using i32 = xsimd::batch<int32_t, arch>;
  using i64 = xsimd::batch<int64_t, arch>;
  using u8 = xsimd::batch<uint8_t, arch>;
  static constexpr int kLanes = 8, kBytes = 32;
  static constexpr bool kEvenOdd = true;
  static constexpr bool kSignedBytes = false;

  BBITS_INLINE static u8 bcast4(const uint8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
  }

  // ---- dot products: vpmaddubsw (u8 x s8 -> saturating s16 pairs) + vpmaddwd.
  // Exact when no pair can reach the s16 limit: |w| <= 64 (2 * 255 * 64 <
  // 32767); for any int8 w the activation is split x = 2 (x >> 1) + (x & 1)
  // (2 * 127 * 128 and 2 * 1 * 128 stay below 32767).
  using Acc = i32;
  struct Split {
    __m256i h, l;
  };
  template <bool W>
  using XP = std::conditional_t<W, Split, u8>;
  BBITS_INLINE static Acc acc_zero() { return _mm256_setzero_si256(); }
  BBITS_INLINE static i32 acc_sum(const Acc& a) { return a; }
  template <bool W>
  BBITS_INLINE static XP<W> prep(u8 x) {
    if constexpr (W)
      return Split{_mm256_and_si256(_mm256_srli_epi16(x, 1), _mm256_set1_epi8(0x7f)),
                   _mm256_and_si256(x, _mm256_set1_epi8(0x01))};
    else
      return x;
  }
  template <bool W>
  BBITS_INLINE static void dot(Acc& acc, const XP<W>& x, u8 w) {
    if constexpr (W) {
      const __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(x.h, w), _mm256_set1_epi16(2));
      const __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(x.l, w), _mm256_set1_epi16(1));
      acc = _mm256_add_epi32(acc, _mm256_add_epi32(ph, pl));
    } else {
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1)));
    }
  }

  // ---- requantization steps: even / odd 32-bit lanes ----------------------------
  struct Mult {
    __m256i e, o;
  };
  BBITS_INLINE static Mult mult(i32 m) { return {m, _mm256_srli_epi64(m, 32)}; }
  BBITS_INLINE static void mul(i32 a, const Mult& m, i64& e, i64& o) {
    e = _mm256_mul_epi32(a, m.e);
    o = _mm256_mul_epi32(_mm256_shuffle_epi32(a, 0xF5), m.o);
  }
  // AVX2 has no 64-bit arithmetic shift: a logical shift of the sign-folded value.
  BBITS_INLINE static i64 sra(i64 v, i64 s) {
    const __m256i sgn = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
    return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(v, sgn), s), sgn);
  }
  BBITS_INLINE static i32 join(i64 e, i64 o) { return _mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0xAA); }
  BBITS_INLINE static i32 join_hi(i64 e, i64 o) { return _mm256_blend_epi32(e, o, 0xAA); }

  // ---- bytes ----------------------------------------------------------------------
  BBITS_INLINE static u8 load_bytes(const uint8_t* p, int64_t n) {
    if (n >= 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    alignas(32) uint8_t t[32] = {};
    std::memcpy(t, p, static_cast<size_t>(n));
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
  }
  BBITS_INLINE static void store_bytes_n(uint8_t* p, u8 v, int64_t n) {
    if (n >= 32) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
      return;
    }
    alignas(32) uint8_t t[32];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), v);
    std::memcpy(p, t, static_cast<size_t>(n));
  }
  BBITS_INLINE static i64 byte_sums(u8 v) { return _mm256_sad_epu8(v, _mm256_setzero_si256()); }
  BBITS_INLINE static int64_t sum_i64(i64 v) {
    const __m128i h = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
  }
  // Bytes [0, n) as int32 lanes (n <= 8), sign- or zero-extended.
  BBITS_INLINE static i32 load_widen(const uint8_t* p, int64_t n, bool sgn) {
    int64_t v = 0;
    if (n >= 8) std::memcpy(&v, p, 8);
    else std::memcpy(&v, p, static_cast<size_t>(n));
    const __m128i x = _mm_cvtsi64_si128(v);
    return sgn ? _mm256_cvtepi8_epi32(x) : _mm256_cvtepu8_epi32(x);
  }

  // ---- widening / conversions (in lane order: lo = the first half) ---------------
  using i16 = xsimd::batch<int16_t, arch>;
  using f32 = xsimd::batch<float, arch>;
  using f64 = xsimd::batch<double, arch>;
  BBITS_INLINE static void widen_bytes(u8 v, bool sgn, i16& lo, i16& hi) {
    const __m128i a = _mm256_castsi256_si128(v), b = _mm256_extracti128_si256(v, 1);
    lo = sgn ? _mm256_cvtepi8_epi16(a) : _mm256_cvtepu8_epi16(a);
    hi = sgn ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b);
  }
  BBITS_INLINE static void widen_words(i16 v, bool sgn, i32& lo, i32& hi) {
    const __m128i a = _mm256_castsi256_si128(v), b = _mm256_extracti128_si256(v, 1);
    lo = sgn ? _mm256_cvtepi16_epi32(a) : _mm256_cvtepu16_epi32(a);
    hi = sgn ? _mm256_cvtepi16_epi32(b) : _mm256_cvtepu16_epi32(b);
  }
  BBITS_INLINE static void to_f64(i32 v, f64& lo, f64& hi) {
    lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(v));
    hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(v, 1));
  }
  // Truncating conversion back (values within int32).
  BBITS_INLINE static i32 from_f64(f64 lo, f64 hi) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm256_cvttpd_epi32(lo)), _mm256_cvttpd_epi32(hi), 1);
  }
  BBITS_INLINE static void f32_to_f64(f32 v, f64& lo, f64& hi) {
    lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
  }
  BBITS_INLINE static f32 f64_to_f32(f64 lo, f64 hi) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
  }
  BBITS_INLINE static void store_f32(float* o, f32 v, int64_t n) {
    if (n >= 8) {
      _mm256_storeu_ps(o, v);
      return;
    }
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    std::memcpy(o, t, static_cast<size_t>(n) * 4);
  }

  // ---- 16-bit pairs and 64-bit lanes (the 16-bit family) --------------------------
  // acc[l] += x[2l] w[2l] + x[2l+1] w[2l+1] (int16 pairs, vpmaddwd, wrapping int32).
  BBITS_INLINE static void dot16(i32& acc, i32 x, i32 w) { acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, w)); }
  BBITS_INLINE static void widen_i32(i32 v, i64& lo, i64& hi) {
    lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v));
    hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1));
  }
  BBITS_INLINE static i32 narrow64(i64 lo, i64 hi) {
    const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256i a = _mm256_permutevar8x32_epi32(lo, pick), b = _mm256_permutevar8x32_epi32(hi, pick);
    return _mm256_permute2x128_si256(a, b, 0x20);
  }
  BBITS_INLINE static i64 mul_s32(i64 a, i64 b) { return _mm256_mul_epi32(a, b); }
  BBITS_INLINE static i64 mul_u32(i64 a, i64 b) { return _mm256_mul_epu32(a, b); }
  BBITS_INLINE static i64 srl64(i64 v, int n) { return _mm256_srli_epi64(v, n); }
  BBITS_INLINE static i64 clamp64(i64 v, i64 lo, i64 hi) {
    v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
    return _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
  }
  BBITS_INLINE static bool fits_i32(i64 a) {
    const __m256i big = _mm256_or_si256(_mm256_cmpgt_epi64(a, _mm256_set1_epi64x(INT32_MAX)),
                                        _mm256_cmpgt_epi64(_mm256_set1_epi64x(INT32_MIN), a));
    return _mm256_testz_si256(big, big) != 0;
  }
  BBITS_INLINE static void halves_to_order(i64 e, i64 o, i64& c0, i64& c1) {
    const __m256i a = _mm256_unpacklo_epi64(e, o), b = _mm256_unpackhi_epi64(e, o);  // (0 1 4 5) (2 3 6 7)
    c0 = _mm256_permute2x128_si256(a, b, 0x20);
    c1 = _mm256_permute2x128_si256(a, b, 0x31);
  }
  BBITS_INLINE static i32 load_widen16(const void* p, int64_t n, bool sgn) {
    __m128i b;
    if (n >= 8) {
      b = _mm_loadu_si128(static_cast<const __m128i*>(p));
    } else {
      alignas(16) int16_t t[8] = {};
      std::memcpy(t, p, static_cast<size_t>(n) * 2);
      b = _mm_load_si128(reinterpret_cast<const __m128i*>(t));
    }
    return sgn ? _mm256_cvtepi16_epi32(b) : _mm256_cvtepu16_epi32(b);
  }

  // ---- packed weights to floats (the float fc family) -----------------------------
  // Field j (< 8) of a chunk of 8 fields: byte j (8 bits), bits 4j of a dword
  // (4 bits), bits 2j of a word (2 bits).
  static constexpr int field_pos(int bits, int j) { return bits * j; }
  struct Fields {
    __m256i shift;  // 4 bits: left shifts bringing lane l's nibble to the top; 2 bits: right shifts 2l
    __m256 table;   // 2 bits: the values of the low 2 bits, repeated (vpermps reads 3 index bits)
  };
  BBITS_INLINE static Fields fields(int bits) {
    alignas(32) int32_t s[8];
    for (int l = 0; l < 8; ++l) s[l] = bits == 4 ? 28 - 4 * l : (bits == 2 ? 2 * l : 0);
    return {_mm256_load_si256(reinterpret_cast<const __m256i*>(s)),
            _mm256_setr_ps(0.0f, 1.0f, -2.0f, -1.0f, 0.0f, 1.0f, -2.0f, -1.0f)};
  }
  template <int BITS>
  BBITS_INLINE static f32 unpack_f32(const uint8_t* p, const Fields& u) {
    if constexpr (BITS == 8) {
      (void)u;
      return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    } else if constexpr (BITS == 4) {
      uint32_t v;
      std::memcpy(&v, p, 4);
      const __m256i t = _mm256_sllv_epi32(_mm256_set1_epi32(static_cast<int>(v)), u.shift);
      return _mm256_cvtepi32_ps(_mm256_srai_epi32(t, 28));
    } else {
      short v;
      std::memcpy(&v, p, 2);
      return _mm256_permutevar8x32_ps(u.table, _mm256_srlv_epi32(_mm256_set1_epi16(v), u.shift));
    }
  }
  BBITS_INLINE static f32 load_f32(const float* p, int64_t n) {
    alignas(32) int32_t m[8];
    for (int l = 0; l < 8; ++l) m[l] = l < n ? -1 : 0;
    return _mm256_maskload_ps(p, _mm256_load_si256(reinterpret_cast<const __m256i*>(m)));
  }
  BBITS_INLINE static void hsum4(f32 a, f32 b, f32 c, f32 d, float* out) { hsum4_256(a, b, c, d, out); }

  // Interleave within each 128-bit lane (vpunpck{l,h}{bw,wd}).
  BBITS_INLINE static u8 unpacklo8(u8 a, u8 b) { return _mm256_unpacklo_epi8(a, b); }
  BBITS_INLINE static u8 unpackhi8(u8 a, u8 b) { return _mm256_unpackhi_epi8(a, b); }
  BBITS_INLINE static u8 unpacklo16(u8 a, u8 b) { return _mm256_unpacklo_epi16(a, b); }
  BBITS_INLINE static u8 unpackhi16(u8 a, u8 b) { return _mm256_unpackhi_epi16(a, b); }
  // a_j holds, in 128-bit lane q, channels 16 q + 4 j .. + 3: out[0..4) the
  // 32 channels in order.
  BBITS_INLINE static void to_channel_order(const i32 (&a)[4], i32 (&out)[4]) {
    out[0] = _mm256_permute2x128_si256(a[0], a[1], 0x20);
    out[1] = _mm256_permute2x128_si256(a[2], a[3], 0x20);
    out[2] = _mm256_permute2x128_si256(a[0], a[1], 0x31);
    out[3] = _mm256_permute2x128_si256(a[2], a[3], 0x31);
  }

  // NB vectors of requantized int32 lanes (channels b * 8 + l) as n <= 8 NB
  // bytes: saturating packs, a byte clamp to [lo, hi], one store.
  template <int NB, bool CLAMP = true>
  BBITS_INLINE static void store_u8(uint8_t* o, i32 r0, i32 r1, i32 r2, i32 r3, int64_t n, bool sgn, int32_t lo,
                                    int32_t hi) {
    const __m256i z = _mm256_setzero_si256();
    // Per 128-bit half: r0 r1 | r2 r3 words, then bytes r0 r1 r2 r3 (4 each).
    const __m256i p01 = _mm256_packs_epi32(r0, NB >= 2 ? __m256i(r1) : z);
    const __m256i p23 = NB >= 3 ? _mm256_packs_epi32(r2, NB == 4 ? __m256i(r3) : z) : z;
    const __m256i ord = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i v;
    if (sgn) {
      v = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), ord);
      if constexpr (CLAMP)
        v = _mm256_min_epi8(_mm256_max_epi8(v, _mm256_set1_epi8(static_cast<char>(lo))),
                            _mm256_set1_epi8(static_cast<char>(hi)));
    } else {
      v = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23), ord);
      if constexpr (CLAMP)
        v = _mm256_min_epu8(_mm256_max_epu8(v, _mm256_set1_epi8(static_cast<char>(lo))),
                            _mm256_set1_epi8(static_cast<char>(hi)));
    }
    if (n >= 32) _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), v);
    else if (n == 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm256_castsi256_si128(v));
    else store_bytes_n(o, v, n);
  }
  // n <= 8 lanes of int32 values within the 16-bit type, as 16-bit values.
  BBITS_INLINE static void store_u16(uint16_t* o, i32 r, int64_t n) {
    const __m256i p = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(r, _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1)), 0x08);
    alignas(16) uint16_t t[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(t), _mm256_castsi256_si128(p));
    std::memcpy(o, t, static_cast<size_t>(std::min<int64_t>(8, n)) * 2);
  }
};

}  // namespace bbits::kernels::simd
