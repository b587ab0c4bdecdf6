// bbits SIMD kernels — Ops for AVX-512 (F, BW, VL, DQ; + VNNI, + VBMI): see
// ops.h. Compiled only with the AVX-512 flags.
#pragma once

#include <immintrin.h>

#include "ops.h"
#include "ops_x86.h"

namespace bbits::kernels::simd {

struct OpsAvx512 : OpsX86 {
  using arch = xsimd::avx512bw;
  using i32 = xsimd::batch<int32_t, arch>;
  using i64 = xsimd::batch<int64_t, arch>;
  using u8 = xsimd::batch<uint8_t, arch>;
  static constexpr int kLanes = 16, kBytes = 64;
  static constexpr bool kEvenOdd = true;
  static constexpr bool kSignedBytes = false;

  BBITS_INLINE static __mmask64 mask_bytes(int64_t n) { return n >= 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1; }
  BBITS_INLINE static __mmask16 mask_lanes(int64_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
  }

  BBITS_INLINE static u8 bcast4(const uint8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
  }

  // ---- requantization steps: even / odd 32-bit lanes ----------------------------
  struct Mult {
    __m512i e, o;  // multipliers of the even lanes, and of the odd lanes moved down
  };
  BBITS_INLINE static Mult mult(i32 m) { return {m, _mm512_srli_epi64(m, 32)}; }
  BBITS_INLINE static void mul(i32 a, const Mult& m, i64& e, i64& o) {
    e = _mm512_mul_epi32(a, m.e);
    o = _mm512_mul_epi32(_mm512_shuffle_epi32(a, _MM_PERM_DDBB), m.o);
  }
  BBITS_INLINE static i64 sra(i64 v, i64 s) { return _mm512_srav_epi64(v, s); }
  BBITS_INLINE static i32 join(i64 e, i64 o) {
    return _mm512_mask_blend_epi32(static_cast<__mmask16>(0xAAAA), e, _mm512_slli_epi64(o, 32));
  }
  BBITS_INLINE static i32 join_hi(i64 e, i64 o) { return _mm512_mask_blend_epi32(static_cast<__mmask16>(0xAAAA), e, o); }

  // ---- bytes ----------------------------------------------------------------------
  BBITS_INLINE static u8 load_bytes(const uint8_t* p, int64_t n) { return _mm512_maskz_loadu_epi8(mask_bytes(n), p); }
  BBITS_INLINE static void store_bytes_n(uint8_t* p, u8 v, int64_t n) { _mm512_mask_storeu_epi8(p, mask_bytes(n), v); }
  BBITS_INLINE static i64 byte_sums(u8 v) { return _mm512_sad_epu8(v, _mm512_setzero_si512()); }
  BBITS_INLINE static int64_t sum_i64(i64 v) { return _mm512_reduce_add_epi64(v); }
  // Bytes [0, n) as int32 lanes (n <= 16), sign- or zero-extended.
  BBITS_INLINE static i32 load_widen(const uint8_t* p, int64_t n, bool sgn) {
    const __m128i b = _mm_maskz_loadu_epi8(mask_lanes(n), p);
    return sgn ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
  }

  // ---- widening / conversions (in lane order: lo = the first half) ---------------
  using i16 = xsimd::batch<int16_t, arch>;
  using f32 = xsimd::batch<float, arch>;
  using f64 = xsimd::batch<double, arch>;
  BBITS_INLINE static void widen_bytes(u8 v, bool sgn, i16& lo, i16& hi) {
    const __m256i a = _mm512_castsi512_si256(v), b = _mm512_extracti64x4_epi64(v, 1);
    lo = sgn ? _mm512_cvtepi8_epi16(a) : _mm512_cvtepu8_epi16(a);
    hi = sgn ? _mm512_cvtepi8_epi16(b) : _mm512_cvtepu8_epi16(b);
  }
  BBITS_INLINE static void widen_words(i16 v, bool sgn, i32& lo, i32& hi) {
    const __m256i a = _mm512_castsi512_si256(v), b = _mm512_extracti64x4_epi64(v, 1);
    lo = sgn ? _mm512_cvtepi16_epi32(a) : _mm512_cvtepu16_epi32(a);
    hi = sgn ? _mm512_cvtepi16_epi32(b) : _mm512_cvtepu16_epi32(b);
  }
  BBITS_INLINE static void to_f64(i32 v, f64& lo, f64& hi) {
    lo = _mm512_cvtepi32_pd(_mm512_castsi512_si256(v));
    hi = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(v, 1));
  }
  // Truncating conversion back (values within int32).
  BBITS_INLINE static i32 from_f64(f64 lo, f64 hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvttpd_epi32(lo)), _mm512_cvttpd_epi32(hi), 1);
  }
  BBITS_INLINE static void f32_to_f64(f32 v, f64& lo, f64& hi) {
    lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  }
  BBITS_INLINE static f32 f64_to_f32(f64 lo, f64 hi) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
  }
  BBITS_INLINE static void store_f32(float* o, f32 v, int64_t n) { _mm512_mask_storeu_ps(o, mask_lanes(n), v); }

  // ---- 64-bit lanes (the 16-bit family's int64 sums) ------------------------------
  // int32 lanes sign-extended to int64, in order.
  BBITS_INLINE static void widen_i32(i32 v, i64& lo, i64& hi) {
    lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
    hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
  }
  // Two vectors of int64 within int32, narrowed in order.
  BBITS_INLINE static i32 narrow64(i64 lo, i64 hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(lo)), _mm512_cvtepi64_epi32(hi), 1);
  }
  // Low 32 bits of each 64-bit lane of a and b multiplied as int32 / uint32.
  BBITS_INLINE static i64 mul_s32(i64 a, i64 b) { return _mm512_mul_epi32(a, b); }
  BBITS_INLINE static i64 mul_u32(i64 a, i64 b) { return _mm512_mul_epu32(a, b); }
  BBITS_INLINE static i64 srl64(i64 v, int n) { return _mm512_srli_epi64(v, static_cast<unsigned>(n)); }
  BBITS_INLINE static i64 clamp64(i64 v, i64 lo, i64 hi) { return _mm512_min_epi64(_mm512_max_epi64(v, lo), hi); }
  // Every lane of a within [-2^31, 2^31).
  BBITS_INLINE static bool fits_i32(i64 a) {
    return (_mm512_cmpge_epi64_mask(a, _mm512_set1_epi64(int64_t{1} << 31)) |
            _mm512_cmplt_epi64_mask(a, _mm512_set1_epi64(-(int64_t{1} << 31)))) == 0;
  }
  // mul()'s two halves (even / odd lanes) back to channel order.
  BBITS_INLINE static void halves_to_order(i64 e, i64 o, i64& c0, i64& c1) {
    c0 = _mm512_permutex2var_epi64(e, _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), o);
    c1 = _mm512_permutex2var_epi64(e, _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), o);
  }
  // n <= 16 int16 at p as int32 lanes, sign- or zero-extended.
  BBITS_INLINE static i32 load_widen16(const void* p, int64_t n, bool sgn) {
    const __m256i b = _mm256_maskz_loadu_epi16(mask_lanes(n), p);
    return sgn ? _mm512_cvtepi16_epi32(b) : _mm512_cvtepu16_epi32(b);
  }

  // ---- packed weights to floats (the float fc family) -----------------------------
  // Field j (< 16) of a chunk of 16 fields: 8 bits: byte j; 2 bits: bits 2j of
  // a dword; 4 bits: bits 32 (j & 1) + 4 (j >> 1) of a qword (even lanes read
  // its low dword, odd lanes its high one).
  static constexpr int field_pos(int bits, int j) { return bits == 4 ? 32 * (j & 1) + 4 * (j >> 1) : bits * j; }
  struct Fields {
    __m512i shr;   // per-lane right shifts bringing each lane's field to bits 0..
    __m512 table;  // vpermps table (low 4 index bits): the field's value
  };
  BBITS_INLINE static Fields fields(int bits) {
    alignas(64) int32_t s[16];
    alignas(64) float t[16];
    for (int l = 0; l < 16; ++l) {
      s[l] = bits == 4 ? 4 * (l >> 1) : (bits == 2 ? 2 * l : 0);
      // 4 bits: i -> i (0..7) or i - 16; 2 bits: the low 2 bits i & 3 -> 0, 1, -2, -1
      // (the bits above the field, the next field's, index repeats of the table).
      const int f = bits == 2 ? (l & 3) : l;
      const int half = bits == 2 ? 2 : 8;
      t[l] = static_cast<float>(f < half ? f : f - 2 * half);
    }
    return {_mm512_load_si512(s), _mm512_load_ps(t)};
  }
  template <int BITS>
  BBITS_INLINE static f32 unpack_f32(const uint8_t* p, const Fields& u) {
    if constexpr (BITS == 8) {
      (void)u;
      return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    } else if constexpr (BITS == 4) {
      long long v;
      std::memcpy(&v, p, 8);
      return _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_set1_epi64(v), u.shr), u.table);
    } else {
      int v;
      std::memcpy(&v, p, 4);
      return _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_set1_epi32(v), u.shr), u.table);
    }
  }
  BBITS_INLINE static f32 load_f32(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(mask_lanes(n), p); }
  BBITS_INLINE static void hsum4(f32 a, f32 b, f32 c, f32 d, float* out) {
    auto half = [](__m512 v) { return _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)); };
    hsum4_256(half(a), half(b), half(c), half(d), out);
  }

  // Interleave within each 128-bit lane (vpunpck{l,h}{bw,wd}).
  BBITS_INLINE static u8 unpacklo8(u8 a, u8 b) { return _mm512_unpacklo_epi8(a, b); }
  BBITS_INLINE static u8 unpackhi8(u8 a, u8 b) { return _mm512_unpackhi_epi8(a, b); }
  BBITS_INLINE static u8 unpacklo16(u8 a, u8 b) { return _mm512_unpacklo_epi16(a, b); }
  BBITS_INLINE static u8 unpackhi16(u8 a, u8 b) { return _mm512_unpackhi_epi16(a, b); }
  // a_j holds, in 128-bit lane q, channels 16 q + 4 j .. + 3: out[0..4) the
  // 64 channels in order.
  BBITS_INLINE static void to_channel_order(const i32 (&a)[4], i32 (&out)[4]) {
    const __m512i t0 = _mm512_shuffle_i32x4(a[0], a[1], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t1 = _mm512_shuffle_i32x4(a[2], a[3], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t2 = _mm512_shuffle_i32x4(a[0], a[1], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i t3 = _mm512_shuffle_i32x4(a[2], a[3], _MM_SHUFFLE(3, 2, 3, 2));
    out[0] = _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));
    out[1] = _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));
    out[2] = _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0));
    out[3] = _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1));
  }

  // NB vectors r0.. of requantized int32 lanes (channels b * 16 + l; the
  // arguments past NB are ignored) as n <= 16 NB
  // bytes: saturating packs (a clamp to the 8-bit type), then a clamp to
  // [lo, hi] on bytes (CLAMP false: [lo, hi] is the whole type), one store per row (whole stores for 16 / 32 / 48 / 64
  // bytes: masked byte stores are slow on Zen 4).
  template <int NB, bool CLAMP = true>
  BBITS_INLINE static void store_u8(uint8_t* o, i32 r0, i32 r1, i32 r2, i32 r3, int64_t n, bool sgn, int32_t lo,
                                    int32_t hi) {
    const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const auto lo8 = static_cast<char>(lo), hi8 = static_cast<char>(hi);
    if constexpr (NB >= 3) {
      const __m512i p01 = _mm512_packs_epi32(r0, r1);
      const __m512i p23 = _mm512_packs_epi32(r2, NB == 4 ? __m512i(r3) : _mm512_setzero_si512());
      __m512i v;
      if (sgn) {
        v = _mm512_permutexvar_epi32(perm, _mm512_packs_epi16(p01, p23));
        if constexpr (CLAMP) v = _mm512_min_epi8(_mm512_max_epi8(v, _mm512_set1_epi8(lo8)), _mm512_set1_epi8(hi8));
      } else {
        v = _mm512_permutexvar_epi32(perm, _mm512_packus_epi16(p01, p23));
        if constexpr (CLAMP) v = _mm512_min_epu8(_mm512_max_epu8(v, _mm512_set1_epi8(lo8)), _mm512_set1_epi8(hi8));
      }
      if (n == 64) {
        _mm512_storeu_si512(o, v);
      } else if (n == 48) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm512_castsi512_si256(v));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 32), _mm512_extracti32x4_epi32(v, 2));
      } else {
        _mm512_mask_storeu_epi8(o, mask_bytes(n), v);
      }
    } else {
      const __m512i p = _mm512_packs_epi32(r0, NB == 2 ? __m512i(r1) : _mm512_setzero_si512());
      __m256i v;
      if (sgn) {
        v = _mm512_castsi512_si256(_mm512_permutexvar_epi32(perm, _mm512_packs_epi16(p, p)));
        if constexpr (CLAMP) v = _mm256_min_epi8(_mm256_max_epi8(v, _mm256_set1_epi8(lo8)), _mm256_set1_epi8(hi8));
      } else {
        v = _mm512_castsi512_si256(_mm512_permutexvar_epi32(perm, _mm512_packus_epi16(p, p)));
        if constexpr (CLAMP) v = _mm256_min_epu8(_mm256_max_epu8(v, _mm256_set1_epi8(lo8)), _mm256_set1_epi8(hi8));
      }
      if (n == 32) _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), v);
      else if (n == 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm256_castsi256_si128(v));
      else _mm256_mask_storeu_epi8(o, static_cast<__mmask32>(mask_bytes(n)), v);
    }
  }
  // n <= 16 lanes of int32 values within the 16-bit type, as 16-bit values.
  BBITS_INLINE static void store_u16(uint16_t* o, i32 r, int64_t n) { _mm512_mask_cvtepi32_storeu_epi16(o, mask_lanes(n), r); }
};

template <>
struct Ops<Avx512> : OpsAvx512 {};

// + VBMI: vpermb, a lookup of 64 bytes by the low 6 bits of each index byte.
template <>
struct Ops<Avx512Vbmi> : OpsAvx512 {
  BBITS_INLINE static u8 lookup64(u8 idx, u8 table) { return _mm512_permutexvar_epi8(idx, table); }
  // Each 16-bit word shifted right by 4, as a multiply high by 2^12 (the
  // multiplier ports are idle in the lookup loop, the shift ports are the ones
  // vpermb needs).
  BBITS_INLINE static u8 words_shr4(u8 v) { return _mm512_mulhi_epu16(v, _mm512_set1_epi16(1 << 12)); }
  // The high byte of each 16-bit word (a multiply high by 2^8, for the same reason).
  BBITS_INLINE static u8 words_hi_byte(u8 v) { return _mm512_mulhi_epu16(v, _mm512_set1_epi16(1 << 8)); }
};

// + VNNI: vpdpbusd (u8 x s8, four products per 32-bit lane, no saturation),
// vpdpwssd (int16 pairs).
template <>
struct Ops<Avx512Vnni> : OpsAvx512 {
  // acc[l] += x[2l] w[2l] + x[2l+1] w[2l+1] (int16 pairs, wrapping int32).
  BBITS_INLINE static void dot16(i32& acc, i32 x, i32 w) { acc = _mm512_dpwssd_epi32(acc, x, w); }
  using Acc = i32;
  template <bool W>
  using XP = u8;
  BBITS_INLINE static Acc acc_zero() { return _mm512_setzero_si512(); }
  BBITS_INLINE static i32 acc_sum(const Acc& a) { return a; }
  template <bool W>
  BBITS_INLINE static u8 prep(u8 x) {
    return x;
  }
  // Inline asm tied to the accumulator: with the intrinsic GCC 12 copies (and
  // spills) the accumulators of an unrolled tile around every dot product.
  template <bool W>
  BBITS_INLINE static void dot(Acc& acc, u8 x, u8 w) {
    __m512i a = acc;
    asm("vpdpbusd %2, %1, %0" : "+v"(a) : "v"(__m512i(x)), "v"(__m512i(w)));
    acc = a;
  }
};

}  // namespace bbits::kernels::simd
