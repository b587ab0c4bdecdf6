// bbits SIMD kernels — AVX-512 (VNNI) depthwise conv, residual add and max
// pool on 8-bit NHWC data. Compiled with AVX-512 flags; reached only after
// run-time detection.
#include <immintrin.h>

#include <algorithm>

#include "simd_internal.h"

namespace bbits::kernels::simd {
namespace {


inline __mmask64 mask64(int64_t n) { return n >= 64 ? ~__mmask64{0} : ((__mmask64{1} << n) - 1); }

// Requantize 16 int32 lanes (one multiplier / shift for all): 64-bit exact.
inline __m512i requant16(__m512i v, __m512i m, __m512i round, __m128i shift) {
  __m512i pe = _mm512_mul_epi32(v, m);
  __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(v, 32), m);
  pe = _mm512_sra_epi64(_mm512_add_epi64(pe, round), shift);
  po = _mm512_sra_epi64(_mm512_add_epi64(po, round), shift);
  return _mm512_mask_blend_epi32(static_cast<__mmask16>(0xAAAA), pe, _mm512_slli_epi64(po, 32));
}

}  // namespace

void add_u8_avx512(const AddParams& p, const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t n) {
  const __m512i ma = _mm512_set1_epi64(p.ma), mb = _mm512_set1_epi64(p.mb), rnd = _mm512_set1_epi64(p.round);
  const __m128i da = _mm_cvtsi64_si128(p.da), db = _mm_cvtsi64_si128(p.db), sh = _mm_cvtsi64_si128(p.shift);
  const __m512i lo = _mm512_set1_epi32(p.lo), hi = _mm512_set1_epi32(p.hi);
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
    const __m128i va8 = _mm_maskz_loadu_epi8(k, a + i), vb8 = _mm_maskz_loadu_epi8(k, b + i);
    const __m512i va = p.a_signed ? _mm512_cvtepi8_epi32(va8) : _mm512_cvtepu8_epi32(va8);
    const __m512i vb = p.b_signed ? _mm512_cvtepi8_epi32(vb8) : _mm512_cvtepu8_epi32(vb8);
    // Exact 64-bit products (|q| <= 255, m < 2^31), aligned to the common
    // shift (<= 15 bits more), summed, rounded once. The multipliers are
    // checked <= 2^22 at create time, so the result fits int32.
    __m512i pe = _mm512_add_epi64(_mm512_sll_epi64(_mm512_mul_epi32(va, ma), da),
                                  _mm512_sll_epi64(_mm512_mul_epi32(vb, mb), db));
    __m512i po = _mm512_add_epi64(_mm512_sll_epi64(_mm512_mul_epi32(_mm512_srli_epi64(va, 32), ma), da),
                                  _mm512_sll_epi64(_mm512_mul_epi32(_mm512_srli_epi64(vb, 32), mb), db));
    pe = _mm512_sra_epi64(_mm512_add_epi64(pe, rnd), sh);
    po = _mm512_sra_epi64(_mm512_add_epi64(po, rnd), sh);
    __m512i r = _mm512_mask_blend_epi32(static_cast<__mmask16>(0xAAAA), pe, _mm512_slli_epi64(po, 32));
    r = _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
    _mm512_mask_cvtepi32_storeu_epi8(out + i, k, r);
  }
}

void maxpool_rows_avx512(const MaxPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i m = _mm512_set1_epi64(p.m), rnd = _mm512_set1_epi64(p.round);
  const __m128i sh = _mm_cvtsi64_si128(p.shift);
  const __m512i lo = _mm512_set1_epi32(p.lo), hi = _mm512_set1_epi32(p.hi);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    const int64_t h0 = oh * p.sh - p.pt;
    const int64_t hs = std::max<int64_t>(h0, 0), he = std::min<int64_t>(h0 + p.KH, p.H);
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const int64_t w0 = ow * p.sw - p.pl;
      const int64_t ws = std::max<int64_t>(w0, 0), we = std::min<int64_t>(w0 + p.KW, p.W);
      uint8_t* o = out + ((n * p.OH + oh) * p.OW + ow) * p.C;
      for (int64_t c = 0; c < p.C; c += 64) {
        const __mmask64 km = mask64(p.C - c);
        // Max in the unsigned domain (signed values flipped by 0x80).
        __m512i mx = _mm512_setzero_si512();
        for (int64_t ih = hs; ih < he; ++ih)
          for (int64_t iw = ws; iw < we; ++iw) {
            __m512i v = _mm512_maskz_loadu_epi8(km, in + ((n * p.H + ih) * p.W + iw) * p.C + c);
            if (p.in_signed) v = _mm512_xor_si512(v, flip);
            mx = _mm512_max_epu8(mx, v);
          }
        if (p.in_signed) mx = _mm512_xor_si512(mx, flip);
        for (int q = 0; q < 4 && c + q * 16 < p.C; ++q) {
          __m128i part;
          switch (q) {
            case 0: part = _mm512_extracti32x4_epi32(mx, 0); break;
            case 1: part = _mm512_extracti32x4_epi32(mx, 1); break;
            case 2: part = _mm512_extracti32x4_epi32(mx, 2); break;
            default: part = _mm512_extracti32x4_epi32(mx, 3); break;
          }
          __m512i v = p.in_signed ? _mm512_cvtepi8_epi32(part) : _mm512_cvtepu8_epi32(part);
          if (!p.identity) v = requant16(v, m, rnd, sh);
          v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
          const int64_t left = p.C - c - q * 16;
          const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
          _mm512_mask_cvtepi32_storeu_epi8(o + c + q * 16, k, v);
        }
      }
    }
  }
}

}  // namespace bbits::kernels::simd
