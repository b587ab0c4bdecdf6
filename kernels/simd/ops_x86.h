// bbits SIMD kernels — the parts of Ops shared by the x86 tags (AVX2 and
// AVX-512 both have them): 4-wide float epilogues of the float fc family.
// Included by ops_avx2.h and ops_avx512.h only.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace bbits::kernels::simd {

struct OpsX86 {
  // The 4 horizontal sums of a, b, c, d (8 lanes each), in out[0..4).
  BBITS_INLINE static void hsum4_256(__m256 a, __m256 b, __m256 c, __m256 d, float* out) {
    const __m256 ab = _mm256_hadd_ps(a, b);  // a01 a23 b01 b23 | a45 a67 b45 b67
    const __m256 cd = _mm256_hadd_ps(c, d);
    const __m256 abcd = _mm256_hadd_ps(ab, cd);  // a0123 b0123 c0123 d0123 | a4567 ...
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
  }
  // out[i] = act(float(double(s[i]) * scale[i] + bias[i])), i < 4; act 0 none,
  // 1 relu, 2 relu6 (NaN and -0 -> +0, as the reference).
  BBITS_INLINE static void affine4(const float* s, const double* scale, const double* bias, int act, float* out) {
    const __m256d v = _mm256_add_pd(_mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(s)), _mm256_loadu_pd(scale)),
                                    _mm256_loadu_pd(bias));
    __m128 f = _mm256_cvtpd_ps(v);
    if (act != 0) {
      f = _mm_max_ps(f, _mm_setzero_ps());
      if (act == 2) f = _mm_min_ps(f, _mm_set1_ps(6.0f));
    }
    _mm_storeu_ps(out, f);
  }
  // q[i] = quantize_to_grid(f[i], step, lo, hi): NaN -> 0, float32 divide,
  // round half to even, clamp (lo, hi integers as floats).
  BBITS_INLINE static void quantize4(const float* f, float step, float lo, float hi, int32_t* q) {
    __m128 v = _mm_loadu_ps(f);
    v = _mm_and_ps(v, _mm_cmpord_ps(v, v));
    __m128 r = _mm_round_ps(_mm_div_ps(v, _mm_set1_ps(step)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm_min_ps(_mm_max_ps(r, _mm_set1_ps(lo)), _mm_set1_ps(hi));  // -inf -> lo, +inf -> hi
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm_cvtps_epi32(r));
  }
};

}  // namespace bbits::kernels::simd
