// bbits SIMD kernels — average / global average pool, concat (requantizing
// copy) and softmax rows on 8-bit data, AVX-512 (compiled with AVX-512 flags;
// reached only after run-time CPU detection). Semantics: kernels.h; the exact
// division argument of the average: simd_internal.h (AvgPoolParams).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "simd_internal.h"

namespace bbits::kernels::simd {
namespace {

inline __mmask16 mask16(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

inline __m512i load_widen(const uint8_t* p, __mmask16 k, bool sgn) {
  const __m128i b = _mm_maskz_loadu_epi8(k, p);
  return sgn ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
}

// 8 window sums (int32) -> exact avg_pool_divide, as int32. q0 = floor(N *
// (1 / D)) is within one of floor(N / D) (N < 2^53, relative error ~2^-52);
// the remainder N - q0 D, exact in double (q0 D < 2^53 is an exact product),
// corrects it.
inline __m256i divide8(__m256i sum, __m512d two_m, __m512d c2s, __m512d D, __m512d invD) {
  const __m512d t = _mm512_cvtepi32_pd(_mm256_abs_epi32(sum));
  const __m512d N = _mm512_add_pd(_mm512_mul_pd(t, two_m), c2s);  // exact
  __m512d q = _mm512_roundscale_pd(_mm512_mul_pd(N, invD), _MM_FROUND_TO_NEG_INF);
  const __m512d rem = _mm512_sub_pd(N, _mm512_mul_pd(q, D));  // exact
  const __m512d one = _mm512_set1_pd(1.0);
  q = _mm512_mask_sub_pd(q, _mm512_cmp_pd_mask(rem, _mm512_setzero_pd(), _CMP_LT_OQ), q, one);
  q = _mm512_mask_add_pd(q, _mm512_cmp_pd_mask(rem, D, _CMP_GE_OQ), q, one);
  return _mm256_sign_epi32(_mm512_cvttpd_epi32(q), sum);  // sign(sum) * q (0 when sum == 0)
}

// The same on one grid (m = 2^30, s = 30: q = floor((2 |sum| + count) /
// (2 count))), 16 lanes in float32: N = 2 |sum| + count < 2^24 and q0 D are
// exact floats, so the argument above holds with 2^24 in place of 2^53.
inline __m512i divide16_same_grid(__m512i sum, __m512 cnt, __m512 D, __m512 invD) {
  const __m512 N = _mm512_add_ps(_mm512_cvtepi32_ps(_mm512_slli_epi32(_mm512_abs_epi32(sum), 1)), cnt);
  __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(N, invD), _MM_FROUND_TO_NEG_INF);
  const __m512 rem = _mm512_sub_ps(N, _mm512_mul_ps(q, D));
  const __m512 one = _mm512_set1_ps(1.0f);
  q = _mm512_mask_sub_ps(q, _mm512_cmp_ps_mask(rem, _mm512_setzero_ps(), _CMP_LT_OQ), q, one);
  q = _mm512_mask_add_ps(q, _mm512_cmp_ps_mask(rem, D, _CMP_GE_OQ), q, one);
  const __m512i qi = _mm512_cvttps_epi32(q);
  return _mm512_mask_sub_epi32(qi, _mm512_cmplt_epi32_mask(sum, _mm512_setzero_si512()), _mm512_setzero_si512(), qi);
}

// 64 channels of 16-bit window sums (<= 256 taps: 255 * 256 and 128 * 256 fit)
// added to int32 sums s[0..4).
inline void flush16(__m512i a0, __m512i a1, bool sgn, __m512i* s) {
  auto wid = [sgn](__m256i h) { return sgn ? _mm512_cvtepi16_epi32(h) : _mm512_cvtepu16_epi32(h); };
  s[0] = _mm512_add_epi32(s[0], wid(_mm512_castsi512_si256(a0)));
  s[1] = _mm512_add_epi32(s[1], wid(_mm512_extracti64x4_epi64(a0, 1)));
  s[2] = _mm512_add_epi32(s[2], wid(_mm512_castsi512_si256(a1)));
  s[3] = _mm512_add_epi32(s[3], wid(_mm512_extracti64x4_epi64(a1, 1)));
}

}  // namespace

void avgpool_rows_avx512(const AvgPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1) {
  const bool sgn = p.in_signed;
  const __m512d two_m = _mm512_set1_pd(2.0 * static_cast<double>(p.r.multiplier));
  const double pow2s = std::ldexp(1.0, p.r.shift);
  const __m512i lo = _mm512_set1_epi32(p.lo), hi = _mm512_set1_epi32(p.hi);
  const int64_t C = p.C;
  // One grid and count <= 2^14 (N < 2^23, q0 D < 2^24): the float32 division.
  const bool same_grid = p.r.multiplier == (1 << 30) && p.r.shift == 30 && int64_t{p.KH} * p.KW <= 16384;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    const int64_t h0 = oh * p.sh - p.pt;
    const int64_t hs = std::max<int64_t>(h0, 0), he = std::min<int64_t>(h0 + p.KH, p.H);
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const int64_t w0 = ow * p.sw - p.pl;
      const int64_t ws = std::max<int64_t>(w0, 0), we = std::min<int64_t>(w0 + p.KW, p.W);
      const int64_t count = p.count_include_pad ? int64_t{p.KH} * p.KW : (he - hs) * (we - ws);
      const float cf = static_cast<float>(count), Df = 2.0f * cf;
      const __m512 cntf = _mm512_set1_ps(cf), Dv = _mm512_set1_ps(Df), invDv = _mm512_set1_ps(1.0f / Df);
      const double Dd = static_cast<double>(count) * pow2s * 2.0;  // count 2^(s+1), exact
      const __m512d D = _mm512_set1_pd(Dd), invD = _mm512_set1_pd(1.0 / Dd);
      const __m512d c2s = _mm512_set1_pd(static_cast<double>(count) * pow2s);
      uint8_t* o = out + ((n * p.OH + oh) * p.OW + ow) * C;
      for (int64_t c0 = 0; c0 < C; c0 += 64) {
        const int64_t left = C - c0;
        const __mmask64 kb = left >= 64 ? ~__mmask64{0} : ((__mmask64{1} << left) - 1);
        __m512i s[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                        _mm512_setzero_si512()};
        __m512i a0 = _mm512_setzero_si512(), a1 = a0;
        int taps = 0;
        for (int64_t ih = hs; ih < he; ++ih) {
          const uint8_t* row = in + ((n * p.H + ih) * p.W) * C + c0;
          for (int64_t iw = ws; iw < we; ++iw) {
            const __m512i v = _mm512_maskz_loadu_epi8(kb, row + iw * C);
            const __m256i v0 = _mm512_castsi512_si256(v), v1 = _mm512_extracti64x4_epi64(v, 1);
            a0 = _mm512_add_epi16(a0, sgn ? _mm512_cvtepi8_epi16(v0) : _mm512_cvtepu8_epi16(v0));
            a1 = _mm512_add_epi16(a1, sgn ? _mm512_cvtepi8_epi16(v1) : _mm512_cvtepu8_epi16(v1));
            if (++taps == 256) {
              flush16(a0, a1, sgn, s);
              a0 = a1 = _mm512_setzero_si512();
              taps = 0;
            }
          }
        }
        flush16(a0, a1, sgn, s);
        for (int j = 0; j < 4 && 16 * j < left; ++j) {
          __m512i q;
          if (same_grid) {
            q = divide16_same_grid(s[j], cntf, Dv, invDv);
          } else {
            const __m256i qa = divide8(_mm512_castsi512_si256(s[j]), two_m, c2s, D, invD);
            const __m256i qb = divide8(_mm512_extracti64x4_epi64(s[j], 1), two_m, c2s, D, invD);
            q = _mm512_inserti64x4(_mm512_castsi256_si512(qa), qb, 1);
          }
          q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
          const int64_t cnt = left - 16 * j;
          const __mmask16 k = cnt >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << cnt) - 1u);
          _mm512_mask_cvtepi32_storeu_epi8(o + c0 + 16 * j, k, q);
        }
      }
    }
  }
}

void avgpool_rows_f32_avx512(const AvgPoolParams& p, const uint8_t* in, float* out, int64_t r0, int64_t r1) {
  const bool sgn = p.in_signed;
  const __m512 sc = _mm512_set1_ps(p.in_scale);
  const int64_t C = p.C;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    const int64_t h0 = oh * p.sh - p.pt;
    const int64_t hs = std::max<int64_t>(h0, 0), he = std::min<int64_t>(h0 + p.KH, p.H);
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const int64_t w0 = ow * p.sw - p.pl;
      const int64_t ws = std::max<int64_t>(w0, 0), we = std::min<int64_t>(w0 + p.KW, p.W);
      const int64_t count = p.count_include_pad ? int64_t{p.KH} * p.KW : (he - hs) * (we - ws);
      const __m512d cnt = _mm512_set1_pd(static_cast<double>(count));
      float* o = out + ((n * p.OH + oh) * p.OW + ow) * C;
      for (int64_t c0 = 0; c0 < C; c0 += 16) {
        const __mmask16 k = mask16(C - c0);
        __m512d s0 = _mm512_setzero_pd(), s1 = s0;
        for (int64_t ih = hs; ih < he; ++ih) {
          const uint8_t* row = in + ((n * p.H + ih) * p.W) * C + c0;
          for (int64_t iw = ws; iw < we; ++iw) {
            // float(q) * s in float (as the reference), summed in double (exact).
            const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(load_widen(row + iw * C, k, sgn)), sc);
            s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
            s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
          }
        }
        const __m256 a = _mm512_cvtpd_ps(_mm512_div_pd(s0, cnt)), b = _mm512_cvtpd_ps(_mm512_div_pd(s1, cnt));
        _mm512_mask_storeu_ps(o + c0, k, _mm512_insertf32x8(_mm512_castps256_ps512(a), b, 1));
      }
    }
  }
}

void convert8_avx512(const Convert8Params& p, const uint8_t* in, uint8_t* out, int64_t n) {
  if (p.identity && p.in_signed == p.out_signed &&
      p.lo <= (p.in_signed ? -128 : 0) && p.hi >= (p.in_signed ? 127 : 255)) {
    std::memcpy(out, in, static_cast<size_t>(n));
    return;
  }
  const __m512i lo = _mm512_set1_epi32(p.lo), hi = _mm512_set1_epi32(p.hi);
  const __m512i m = _mm512_set1_epi64(p.m), rnd = _mm512_set1_epi64(p.round), sh = _mm512_set1_epi64(p.shift);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = mask16(n - i);
    __m512i x = load_widen(in + i, k, p.in_signed);
    if (!p.identity) {
      // (x * m + 2^(s-1)) >> s in 64-bit lanes (|x| * m < 2^39).
      __m512i e = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(x));
      __m512i f = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(x, 1));
      e = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(e, m), rnd), sh);
      f = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(f, m), rnd), sh);
      // Clamp in 64 bits before narrowing (a large multiplier may exceed int32).
      const __m512i lo64 = _mm512_set1_epi64(p.lo), hi64 = _mm512_set1_epi64(p.hi);
      e = _mm512_min_epi64(_mm512_max_epi64(e, lo64), hi64);
      f = _mm512_min_epi64(_mm512_max_epi64(f, lo64), hi64);
      x = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(e)), _mm512_cvtepi64_epi32(f), 1);
    }
    x = _mm512_min_epi32(_mm512_max_epi32(x, lo), hi);
    _mm512_mask_cvtepi32_storeu_epi8(out + i, k, x);
  }
}

void softmax_row_u8_avx512(const uint8_t* in, bool in_signed, float scale, int64_t n, float* out, double* table) {
  // Row max / min of the stored integers (dequantization is monotone: the
  // reference's max of the dequantized values is that of the largest q).
  __m512i vmax = _mm512_set1_epi8(in_signed ? -128 : 0), vmin = _mm512_set1_epi8(in_signed ? 127 : -1);
  for (int64_t i = 0; i < n; i += 64) {
    const __mmask64 k = n - i >= 64 ? ~__mmask64{0} : ((__mmask64{1} << (n - i)) - 1);
    const __m512i v = _mm512_maskz_loadu_epi8(k, in + i);
    if (in_signed) {
      vmax = _mm512_mask_max_epi8(vmax, k, vmax, v);
      vmin = _mm512_mask_min_epi8(vmin, k, vmin, v);
    } else {
      vmax = _mm512_mask_max_epu8(vmax, k, vmax, v);
      vmin = _mm512_mask_min_epu8(vmin, k, vmin, v);
    }
  }
  alignas(64) uint8_t bmax[64], bmin[64];
  _mm512_store_si512(bmax, vmax);
  _mm512_store_si512(bmin, vmin);
  int qmx = in_signed ? -128 : 0, qmn = in_signed ? 127 : 255;
  for (int j = 0; j < 64; ++j) {
    const int a = in_signed ? static_cast<int8_t>(bmax[j]) : bmax[j];
    const int b = in_signed ? static_cast<int8_t>(bmin[j]) : bmin[j];
    qmx = std::max(qmx, a);
    qmn = std::min(qmn, b);
  }
  auto deq = [scale](int q) { return static_cast<double>(static_cast<float>(q) * scale); };
  const double mx = deq(qmx);
  const int range = qmx - qmn + 1;
  const bool by_value = range <= n;  // else n < 256: one exp per element
  double sum = 0.0;
  if (by_value) {
    for (int q = qmn; q <= qmx; ++q) table[q - qmn] = std::exp(deq(q) - mx);
    for (int64_t i = 0; i < n; ++i) {
      const int q = in_signed ? static_cast<int8_t>(in[i]) : in[i];
      sum += table[q - qmn];  // the reference's order of additions
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const int q = in_signed ? static_cast<int8_t>(in[i]) : in[i];
      table[i] = std::exp(deq(q) - mx);
      sum += table[i];
    }
  }
  const __m512d vs = _mm512_set1_pd(sum);
  const __m512i bias = _mm512_set1_epi32(qmn);
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t cnt = std::min<int64_t>(8, n - i);
    const __mmask8 k = static_cast<__mmask8>(cnt >= 8 ? 0xff : (1u << cnt) - 1u);
    __m512d e;
    if (by_value) {
      const __m128i b = _mm_maskz_loadu_epi8(static_cast<__mmask16>(k), in + i);
      const __m512i q = in_signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
      const __m256i idx = _mm512_castsi512_si256(_mm512_sub_epi32(q, bias));
      e = _mm512_mask_i32gather_pd(_mm512_set1_pd(1.0), k, idx, table, 8);
    } else {
      e = _mm512_mask_loadu_pd(_mm512_set1_pd(1.0), k, table + i);
    }
    _mm256_mask_storeu_ps(out + i, k, _mm512_cvtpd_ps(_mm512_div_pd(e, vs)));
  }
}

}  // namespace bbits::kernels::simd
