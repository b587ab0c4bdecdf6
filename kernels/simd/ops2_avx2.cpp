// bbits SIMD kernels — average / global average pool, concat (requantizing
// copy) and softmax rows on 8-bit data, AVX2 (compiled with AVX2 flags;
// reached only after run-time CPU detection). Same arithmetic as
// ops2_avx512.cpp (simd_internal.h); channel tails past the last full group of
// 8 run through the scalar form of the same exact formulas.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "simd_internal.h"

namespace bbits::kernels::simd {
namespace {

inline __m256i load8_widen(const uint8_t* p, bool sgn) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return sgn ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
}

// 4 window sums -> exact avg_pool_divide: q0 = floor(N * (1 / D)), then
// one correction from the exact remainder N - q0 D (ops2_avx512.cpp).
inline __m128i divide4(__m128i sum, __m256d two_m, __m256d c2s, __m256d D, __m256d invD) {
  const __m256d t = _mm256_cvtepi32_pd(_mm_abs_epi32(sum));
  const __m256d N = _mm256_add_pd(_mm256_mul_pd(t, two_m), c2s);
  __m256d q = _mm256_floor_pd(_mm256_mul_pd(N, invD));
  const __m256d rem = _mm256_sub_pd(N, _mm256_mul_pd(q, D));
  const __m256d one = _mm256_set1_pd(1.0);
  q = _mm256_sub_pd(q, _mm256_and_pd(_mm256_cmp_pd(rem, _mm256_setzero_pd(), _CMP_LT_OQ), one));
  q = _mm256_add_pd(q, _mm256_and_pd(_mm256_cmp_pd(rem, D, _CMP_GE_OQ), one));
  return _mm_sign_epi32(_mm256_cvttpd_epi32(q), sum);
}

// 8 int32 (already within the output range) -> 8 bytes.
inline void store8(uint8_t* dst, __m256i v, bool out_signed) {
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i b = out_signed ? _mm_packs_epi16(w, w) : _mm_packus_epi16(w, w);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), b);
}

inline int32_t load1(const uint8_t* p, bool sgn) { return sgn ? static_cast<int8_t>(*p) : *p; }

}  // namespace

void avgpool_rows_avx2(const AvgPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1) {
  const bool sgn = p.in_signed;
  const __m256d two_m = _mm256_set1_pd(2.0 * static_cast<double>(p.r.multiplier));
  const double pow2s = std::ldexp(1.0, p.r.shift);
  const __m256i lo = _mm256_set1_epi32(p.lo), hi = _mm256_set1_epi32(p.hi);
  const int64_t C = p.C, C32 = C / 32 * 32, C8 = C / 8 * 8;
  auto wid16 = [sgn](__m128i b) { return sgn ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b); };
  auto wid32 = [sgn](__m128i h) { return sgn ? _mm256_cvtepi16_epi32(h) : _mm256_cvtepu16_epi32(h); };
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    const int64_t h0 = oh * p.sh - p.pt;
    const int64_t hs = std::max<int64_t>(h0, 0), he = std::min<int64_t>(h0 + p.KH, p.H);
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const int64_t w0 = ow * p.sw - p.pl;
      const int64_t ws = std::max<int64_t>(w0, 0), we = std::min<int64_t>(w0 + p.KW, p.W);
      const int64_t count = p.count_include_pad ? int64_t{p.KH} * p.KW : (he - hs) * (we - ws);
      const double Dd = static_cast<double>(count) * pow2s * 2.0;
      const __m256d D = _mm256_set1_pd(Dd), invD = _mm256_set1_pd(1.0 / Dd);
      const __m256d c2s = _mm256_set1_pd(static_cast<double>(count) * pow2s);
      uint8_t* o = out + ((n * p.OH + oh) * p.OW + ow) * C;
      auto finish8 = [&](__m256i sum, uint8_t* dst) {
        const __m128i qa = divide4(_mm256_castsi256_si128(sum), two_m, c2s, D, invD);
        const __m128i qb = divide4(_mm256_extracti128_si256(sum, 1), two_m, c2s, D, invD);
        __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(qa), qb, 1);
        store8(dst, _mm256_min_epi32(_mm256_max_epi32(q, lo), hi), p.out_signed);
      };
      // Blocks of 32 channels: 16-bit sums over at most 256 taps, then int32.
      for (int64_t c0 = 0; c0 < C32; c0 += 32) {
        __m256i s[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                        _mm256_setzero_si256()};
        __m256i a0 = _mm256_setzero_si256(), a1 = a0;
        auto flush = [&] {
          s[0] = _mm256_add_epi32(s[0], wid32(_mm256_castsi256_si128(a0)));
          s[1] = _mm256_add_epi32(s[1], wid32(_mm256_extracti128_si256(a0, 1)));
          s[2] = _mm256_add_epi32(s[2], wid32(_mm256_castsi256_si128(a1)));
          s[3] = _mm256_add_epi32(s[3], wid32(_mm256_extracti128_si256(a1, 1)));
          a0 = a1 = _mm256_setzero_si256();
        };
        int taps = 0;
        for (int64_t ih = hs; ih < he; ++ih) {
          const uint8_t* row = in + ((n * p.H + ih) * p.W) * C + c0;
          for (int64_t iw = ws; iw < we; ++iw) {
            const uint8_t* px = row + iw * C;
            a0 = _mm256_add_epi16(a0, wid16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(px))));
            a1 = _mm256_add_epi16(a1, wid16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(px + 16))));
            if (++taps == 256) {
              flush();
              taps = 0;
            }
          }
        }
        flush();
        for (int j = 0; j < 4; ++j) finish8(s[j], o + c0 + 8 * j);
      }
      // Groups of 8 channels: int32 sums.
      for (int64_t c0 = C32; c0 < C8; c0 += 8) {
        __m256i sum = _mm256_setzero_si256();
        for (int64_t ih = hs; ih < he; ++ih) {
          const uint8_t* row = in + ((n * p.H + ih) * p.W) * C + c0;
          for (int64_t iw = ws; iw < we; ++iw) sum = _mm256_add_epi32(sum, load8_widen(row + iw * C, sgn));
        }
        finish8(sum, o + c0);
      }
      for (int64_t c = C8; c < C; ++c) {
        int64_t sum = 0;
        for (int64_t ih = hs; ih < he; ++ih)
          for (int64_t iw = ws; iw < we; ++iw) sum += load1(in + ((n * p.H + ih) * p.W + iw) * C + c, sgn);
        const int64_t q = clamp_i64(avg_pool_divide(sum, count, p.r), p.lo, p.hi);
        o[c] = static_cast<uint8_t>(q);
      }
    }
  }
}

void avgpool_rows_f32_avx2(const AvgPoolParams& p, const uint8_t* in, float* out, int64_t r0, int64_t r1) {
  const bool sgn = p.in_signed;
  const __m256 sc = _mm256_set1_ps(p.in_scale);
  const int64_t C = p.C, C8 = C / 8 * 8;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    const int64_t h0 = oh * p.sh - p.pt;
    const int64_t hs = std::max<int64_t>(h0, 0), he = std::min<int64_t>(h0 + p.KH, p.H);
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const int64_t w0 = ow * p.sw - p.pl;
      const int64_t ws = std::max<int64_t>(w0, 0), we = std::min<int64_t>(w0 + p.KW, p.W);
      const int64_t count = p.count_include_pad ? int64_t{p.KH} * p.KW : (he - hs) * (we - ws);
      const __m256d cnt = _mm256_set1_pd(static_cast<double>(count));
      float* o = out + ((n * p.OH + oh) * p.OW + ow) * C;
      for (int64_t c0 = 0; c0 < C8; c0 += 8) {
        __m256d s0 = _mm256_setzero_pd(), s1 = s0;
        for (int64_t ih = hs; ih < he; ++ih) {
          const uint8_t* row = in + ((n * p.H + ih) * p.W) * C + c0;
          for (int64_t iw = ws; iw < we; ++iw) {
            const __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(load8_widen(row + iw * C, sgn)), sc);
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
          }
        }
        const __m128 a = _mm256_cvtpd_ps(_mm256_div_pd(s0, cnt)), b = _mm256_cvtpd_ps(_mm256_div_pd(s1, cnt));
        _mm256_storeu_ps(o + c0, _mm256_insertf128_ps(_mm256_castps128_ps256(a), b, 1));
      }
      for (int64_t c = C8; c < C; ++c) {
        double sum = 0.0;
        for (int64_t ih = hs; ih < he; ++ih)
          for (int64_t iw = ws; iw < we; ++iw)
            sum += static_cast<double>(static_cast<float>(load1(in + ((n * p.H + ih) * p.W + iw) * C + c, sgn)) * p.in_scale);
        o[c] = static_cast<float>(sum / static_cast<double>(count));
      }
    }
  }
}

void convert8_avx2(const Convert8Params& p, const uint8_t* in, uint8_t* out, int64_t n) {
  if (p.identity && p.in_signed == p.out_signed &&
      p.lo <= (p.in_signed ? -128 : 0) && p.hi >= (p.in_signed ? 127 : 255)) {
    std::memcpy(out, in, static_cast<size_t>(n));
    return;
  }
  const Requant r{static_cast<int32_t>(p.m), static_cast<int32_t>(p.shift)};
  int64_t i = 0;
  if (p.identity) {
    const __m256i lo = _mm256_set1_epi16(static_cast<int16_t>(p.lo)), hi = _mm256_set1_epi16(static_cast<int16_t>(p.hi));
    for (; i + 16 <= n; i += 16) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
      __m256i x = p.in_signed ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b);
      x = _mm256_min_epi16(_mm256_max_epi16(x, lo), hi);
      const __m128i a = _mm256_castsi256_si128(x), c = _mm256_extracti128_si256(x, 1);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), p.out_signed ? _mm_packs_epi16(a, c) : _mm_packus_epi16(a, c));
    }
  } else {
    // Exact apply_requant on |x| with logical shifts: x >= 0: (|x| m + h) >> s;
    // x < 0: -((|x| m + h - 1) >> s) (h = 2^(s-1); both 0 when s == 0).
    const __m256i m = _mm256_set1_epi64x(p.m), sh = _mm256_set1_epi64x(p.shift);
    const __m256i hpos = _mm256_set1_epi64x(p.round), hneg = _mm256_set1_epi64x(p.round > 0 ? p.round - 1 : 0);
    const __m256i lo64 = _mm256_set1_epi64x(p.lo), hi64 = _mm256_set1_epi64x(p.hi);
    const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    auto half = [&](__m128i x4) {
      const __m256i x = _mm256_cvtepi32_epi64(x4);
      const __m256i neg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
      const __m256i ax = _mm256_cvtepu32_epi64(_mm_abs_epi32(x4));
      __m256i z = _mm256_add_epi64(_mm256_mul_epu32(ax, m), _mm256_blendv_epi8(hpos, hneg, neg));
      z = _mm256_srlv_epi64(z, sh);
      z = _mm256_sub_epi64(_mm256_xor_si256(z, neg), neg);
      z = _mm256_blendv_epi8(z, hi64, _mm256_cmpgt_epi64(z, hi64));
      z = _mm256_blendv_epi8(z, lo64, _mm256_cmpgt_epi64(lo64, z));
      return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(z, pick));
    };
    for (; i + 8 <= n; i += 8) {
      const __m256i x = load8_widen(in + i, p.in_signed);
      const __m128i a = half(_mm256_castsi256_si128(x)), b = half(_mm256_extracti128_si256(x, 1));
      store8(out + i, _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1), p.out_signed);
    }
  }
  for (; i < n; ++i) {
    const int64_t x = load1(in + i, p.in_signed);
    out[i] = static_cast<uint8_t>(clamp_i64(p.identity ? x : apply_requant(x, r), p.lo, p.hi));
  }
}

void softmax_row_u8_avx2(const uint8_t* in, bool in_signed, float scale, int64_t n, float* out, double* table) {
  int qmx = in_signed ? -128 : 0, qmn = in_signed ? 127 : 255;
  int64_t i = 0;
  if (n >= 32) {
    __m256i vmax = _mm256_set1_epi8(in_signed ? -128 : 0), vmin = _mm256_set1_epi8(in_signed ? 127 : -1);
    for (; i + 32 <= n; i += 32) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i));
      vmax = in_signed ? _mm256_max_epi8(vmax, v) : _mm256_max_epu8(vmax, v);
      vmin = in_signed ? _mm256_min_epi8(vmin, v) : _mm256_min_epu8(vmin, v);
    }
    alignas(32) uint8_t bmax[32], bmin[32];
    _mm256_store_si256(reinterpret_cast<__m256i*>(bmax), vmax);
    _mm256_store_si256(reinterpret_cast<__m256i*>(bmin), vmin);
    for (int j = 0; j < 32; ++j) {
      qmx = std::max(qmx, load1(bmax + j, in_signed));
      qmn = std::min(qmn, load1(bmin + j, in_signed));
    }
  }
  for (; i < n; ++i) {
    qmx = std::max(qmx, load1(in + i, in_signed));
    qmn = std::min(qmn, load1(in + i, in_signed));
  }
  auto deq = [scale](int q) { return static_cast<double>(static_cast<float>(q) * scale); };
  const double mx = deq(qmx);
  const bool by_value = qmx - qmn + 1 <= n;
  double sum = 0.0;
  if (by_value) {
    for (int q = qmn; q <= qmx; ++q) table[q - qmn] = std::exp(deq(q) - mx);
    for (int64_t j = 0; j < n; ++j) sum += table[load1(in + j, in_signed) - qmn];  // the reference's order
  } else {
    for (int64_t j = 0; j < n; ++j) {
      table[j] = std::exp(deq(load1(in + j, in_signed)) - mx);
      sum += table[j];
    }
  }
  const __m256d vs = _mm256_set1_pd(sum);
  const __m128i bias = _mm_set1_epi32(qmn);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    __m256d e;
    if (by_value) {
      int32_t b4;
      std::memcpy(&b4, in + j, 4);
      const __m128i b = _mm_cvtsi32_si128(b4);
      const __m128i q = in_signed ? _mm_cvtepi8_epi32(b) : _mm_cvtepu8_epi32(b);
      e = _mm256_i32gather_pd(table, _mm_sub_epi32(q, bias), 8);
    } else {
      e = _mm256_loadu_pd(table + j);
    }
    _mm_storeu_ps(out + j, _mm256_cvtpd_ps(_mm256_div_pd(e, vs)));
  }
  for (; j < n; ++j) {
    const double e = by_value ? table[load1(in + j, in_signed) - qmn] : table[j];
    out[j] = static_cast<float>(e / sum);
  }
}

}  // namespace bbits::kernels::simd
