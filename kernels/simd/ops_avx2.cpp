// bbits SIMD kernels — portable AVX2 depthwise conv, residual add and max pool
// on 8-bit NHWC data. Compiled with -mavx2; reached only after detection.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "simd_internal.h"

namespace bbits::kernels::simd {
namespace {

// 8 bytes (or fewer at a tail) zero-extended / sign-extended to int32.
inline __m256i load8_epi32(const uint8_t* p, int64_t left, bool sgn) {
  int64_t v = 0;
  std::memcpy(&v, p, static_cast<size_t>(std::min<int64_t>(8, left)));
  const __m128i x = _mm_cvtsi64_si128(v);
  return sgn ? _mm256_cvtepi8_epi32(x) : _mm256_cvtepu8_epi32(x);
}

inline __m256i sra_epi64(__m256i p, __m128i s) {
  const __m256i sgn = _mm256_cmpgt_epi64(_mm256_setzero_si256(), p);
  return _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(p, sgn), s), sgn);
}

// Requantize 8 int32 lanes with one multiplier / shift (exact, 64 bits).
inline __m256i requant8(__m256i v, __m256i m, __m256i round, __m128i shift) {
  __m256i pe = _mm256_mul_epi32(v, m);
  __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(v, 32), m);
  pe = sra_epi64(_mm256_add_epi64(pe, round), shift);
  po = sra_epi64(_mm256_add_epi64(po, round), shift);
  return _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
}

inline void store8(uint8_t* o, __m256i v, int64_t left, bool sgn) {
  // v: 8 int32 already clamped to the byte range of the output grid.
  const __m256i p16 = _mm256_packs_epi32(v, v);  // per 128-bit lane
  const __m256i p8 = sgn ? _mm256_packs_epi16(p16, p16) : _mm256_packus_epi16(p16, p16);
  const __m256i ord = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
  int64_t w = _mm256_extract_epi64(ord, 0);
  std::memcpy(o, &w, static_cast<size_t>(std::min<int64_t>(8, left)));
}

}  // namespace

void add_u8_avx2(const AddParams& p, const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t n) {
  const __m256i ma = _mm256_set1_epi64x(p.ma), mb = _mm256_set1_epi64x(p.mb), rnd = _mm256_set1_epi64x(p.round);
  const __m128i da = _mm_cvtsi64_si128(p.da), db = _mm_cvtsi64_si128(p.db), sh = _mm_cvtsi64_si128(p.shift);
  const __m256i lo = _mm256_set1_epi32(p.lo), hi = _mm256_set1_epi32(p.hi);
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t left = n - i;
    const __m256i va = load8_epi32(a + i, left, p.a_signed), vb = load8_epi32(b + i, left, p.b_signed);
    // Both sides aligned to the common shift and rounded once (see add_u8_avx512).
    __m256i pe = _mm256_add_epi64(_mm256_sll_epi64(_mm256_mul_epi32(va, ma), da),
                                  _mm256_sll_epi64(_mm256_mul_epi32(vb, mb), db));
    __m256i po = _mm256_add_epi64(_mm256_sll_epi64(_mm256_mul_epi32(_mm256_srli_epi64(va, 32), ma), da),
                                  _mm256_sll_epi64(_mm256_mul_epi32(_mm256_srli_epi64(vb, 32), mb), db));
    pe = sra_epi64(_mm256_add_epi64(pe, rnd), sh);
    po = sra_epi64(_mm256_add_epi64(po, rnd), sh);
    __m256i r = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    r = _mm256_min_epi32(_mm256_max_epi32(r, lo), hi);
    store8(out + i, r, left, p.out_signed);
  }
}

void maxpool_rows_avx2(const MaxPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i m = _mm256_set1_epi64x(p.m), rnd = _mm256_set1_epi64x(p.round);
  const __m128i sh = _mm_cvtsi64_si128(p.shift);
  const __m256i lo = _mm256_set1_epi32(p.lo), hi = _mm256_set1_epi32(p.hi);
  alignas(32) uint8_t buf[32];
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    const int64_t h0 = oh * p.sh - p.pt;
    const int64_t hs = std::max<int64_t>(h0, 0), he = std::min<int64_t>(h0 + p.KH, p.H);
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const int64_t w0 = ow * p.sw - p.pl;
      const int64_t ws = std::max<int64_t>(w0, 0), we = std::min<int64_t>(w0 + p.KW, p.W);
      uint8_t* o = out + ((n * p.OH + oh) * p.OW + ow) * p.C;
      for (int64_t c = 0; c < p.C; c += 32) {
        const int64_t nc = std::min<int64_t>(32, p.C - c);
        __m256i mx = _mm256_setzero_si256();
        for (int64_t ih = hs; ih < he; ++ih)
          for (int64_t iw = ws; iw < we; ++iw) {
            const uint8_t* src = in + ((n * p.H + ih) * p.W + iw) * p.C + c;
            __m256i v;
            if (nc == 32) {
              v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
            } else {
              std::memset(buf, p.in_signed ? 0x80 : 0, 32);
              std::memcpy(buf, src, static_cast<size_t>(nc));
              v = _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
            }
            if (p.in_signed) v = _mm256_xor_si256(v, flip);
            mx = _mm256_max_epu8(mx, v);
          }
        if (p.in_signed) mx = _mm256_xor_si256(mx, flip);
        _mm256_store_si256(reinterpret_cast<__m256i*>(buf), mx);
        for (int64_t q = 0; q < nc; q += 8) {
          __m256i v = load8_epi32(buf + q, 8, p.in_signed);
          if (!p.identity) v = requant8(v, m, rnd, sh);
          v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
          store8(o + c + q, v, nc - q, p.out_signed);
        }
      }
    }
  }
}

}  // namespace bbits::kernels::simd
