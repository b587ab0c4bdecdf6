// bbits SIMD kernels — fully connected layers with packed 2/4/8-bit weights
// and float32 input activations (fc_w{2,4,8}a32_f32_{avx512,avx2}).
//
// y[n][o] = act(float(double(sum_k w[o][k] * x[n][k]) * s_w[o] + bias[o])),
// then stored as float32 or quantized with quantize_to_grid's rules. The
// weights stay packed: 4x (8-bit) to 16x (2-bit) fewer bytes than the float32
// weights of the oneDNN kernel. The sum is taken in float32 (16 or 8 lanes,
// then a tree), so it differs from the reference's double sum of
// float(w * s_w) * x in the last bits only.
//
// Prepacked layout (made once at create time from the model's packed rows):
// blocks of kRows = 4 output rows; a block holds kchunks = ceil(K / lanes)
// chunks, and each chunk the `lanes` weights k = c * lanes .. + lanes - 1 of
// its 4 rows one after the other (chunk_bytes = lanes * bits / 8 each), zero
// past K and past OC. Within a chunk, weight j sits at bit position pos(j):
//   8 bits: byte j (vpmovsxbd order);
//   2 bits: bits 2j (the model's own order; one 32- (zmm) or 16-bit (ymm)
//           word is broadcast, each lane shifts its field down and vpermps
//           looks its value up in a small float table);
//   4 bits, 8 lanes (ymm): bits 4j (the model's order, one broadcast dword;
//           each lane shifts its nibble to the top, vpsrad sign-extends);
//   4 bits, 16 lanes (zmm): bits 32 * (j & 1) + 4 * (j >> 1) (one broadcast
//           qword: even lanes read its low dword, odd lanes its high one;
//           shift down, vpermps from the 16 nibble values).
// So one block is one sequential stream of kchunks * 4 * chunk_bytes bytes.
//
// This header is included by the portable driver (fc_f32.cpp) and by the ISA
// translation units; it holds only plain data and declarations.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bbits::kernels::simd {

inline constexpr int kFcF32Rows = 4;  // output rows per block

enum class FcF32Out : uint8_t { F32, U8, S8, U16, S16 };

struct FcF32Call {
  int bits = 8;                   // 2, 4, 8
  int64_t K = 0, OC = 0, N = 1;
  int64_t kchunks = 0;            // ceil(K / lanes)
  int64_t block_bytes = 0;        // kchunks * kFcF32Rows * chunk_bytes
  const uint8_t* w = nullptr;     // prepacked blocks
  const double* scale = nullptr;  // s_w per output row (padded to whole blocks)
  const double* bias = nullptr;   // float bias as double (0 when none), padded
  const float* x = nullptr;       // N rows of K floats
  void* y = nullptr;              // N rows of OC outputs
  FcF32Out out = FcF32Out::F32;
  int act = 0;                    // 0 none, 1 relu, 2 relu6
  float out_scale = 1.0f;         // integer output: step of the grid
  float lo = 0.0f, hi = 0.0f;     // integer output: clamp range (integers as floats)
};

// Output row blocks [b0, b1) for all N input rows.
void fc_f32_rows_avx512(const FcF32Call& c, int64_t b0, int64_t b1);
void fc_f32_rows_avx2(const FcF32Call& c, int64_t b0, int64_t b1);

}  // namespace bbits::kernels::simd

// ---- shared by the ISA translation units (compiled with AVX2 or higher) -------
#ifdef __AVX2__
#include <immintrin.h>

namespace bbits::kernels::simd {
namespace {  // internal linkage: each ISA translation unit keeps its own copy

// Rows o0 .. o0 + 3 of input row n: sums[i] = sum_k w[o0 + i][k] * x[n][k].
// Scale and bias in double, the activation, then the store of the rows < OC
// (float32, or quantize_to_grid: NaN -> 0, float32 divide by the step, round
// half to even, clamp to [lo, hi]).
inline void fc_f32_finish4(const FcF32Call& c, __m128 sums, int64_t n, int64_t o0) {
  const __m256d v = _mm256_add_pd(_mm256_mul_pd(_mm256_cvtps_pd(sums), _mm256_loadu_pd(c.scale + o0)),
                                  _mm256_loadu_pd(c.bias + o0));
  __m128 f = _mm256_cvtpd_ps(v);
  if (c.act != 0) {
    f = _mm_max_ps(f, _mm_setzero_ps());  // NaN and -0 -> +0, as apply_act_float
    if (c.act == 2) f = _mm_min_ps(f, _mm_set1_ps(6.0f));
  }
  const int64_t m = c.OC - o0 < kFcF32Rows ? c.OC - o0 : kFcF32Rows;
  const int64_t at = n * c.OC + o0;
  if (c.out == FcF32Out::F32) {
    float* y = static_cast<float*>(c.y) + at;
    if (m == 4) {
      _mm_storeu_ps(y, f);
    } else {
      alignas(16) float t[4];
      _mm_store_ps(t, f);
      for (int64_t i = 0; i < m; ++i) y[i] = t[i];
    }
    return;
  }
  f = _mm_and_ps(f, _mm_cmpord_ps(f, f));  // NaN -> 0
  __m128 q = _mm_round_ps(_mm_div_ps(f, _mm_set1_ps(c.out_scale)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  q = _mm_min_ps(_mm_max_ps(q, _mm_set1_ps(c.lo)), _mm_set1_ps(c.hi));  // -inf -> lo, +inf -> hi
  alignas(16) int32_t t[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(t), _mm_cvtps_epi32(q));
  switch (c.out) {
    case FcF32Out::U8:
      for (int64_t i = 0; i < m; ++i) static_cast<uint8_t*>(c.y)[at + i] = static_cast<uint8_t>(t[i]);
      break;
    case FcF32Out::S8:
      for (int64_t i = 0; i < m; ++i) static_cast<int8_t*>(c.y)[at + i] = static_cast<int8_t>(t[i]);
      break;
    case FcF32Out::U16:
      for (int64_t i = 0; i < m; ++i) static_cast<uint16_t*>(c.y)[at + i] = static_cast<uint16_t>(t[i]);
      break;
    case FcF32Out::S16:
      for (int64_t i = 0; i < m; ++i) static_cast<int16_t*>(c.y)[at + i] = static_cast<int16_t>(t[i]);
      break;
    case FcF32Out::F32:
      break;
  }
}

// The 4 horizontal sums of a, b, c, d (8 lanes each) as one vector.
inline __m128 fc_f32_hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 ab = _mm256_hadd_ps(a, b);      // a01 a23 b01 b23 | a45 a67 b45 b67
  const __m256 cd = _mm256_hadd_ps(c, d);
  const __m256 abcd = _mm256_hadd_ps(ab, cd);  // a0123 b0123 c0123 d0123 | a4567 ...
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

}  // namespace
}  // namespace bbits::kernels::simd
#endif  // __AVX2__
