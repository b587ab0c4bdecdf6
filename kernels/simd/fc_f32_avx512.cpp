// bbits SIMD kernels — AVX-512 fully connected layer with packed 2/4/8-bit
// weights and float32 activations (fc_w{2,4,8}a32_f32_avx512; layout and
// arithmetic in fc_f32.h). Compiled with AVX-512 flags; reached only after
// run-time CPU detection.
//
// Per chunk of 16 reduction values and per row of a 4-row block, the weights
// become 16 floats in registers:
//   8 bits: vpmovsxbd (16 bytes), vcvtdq2ps;
//   4 bits: vpbroadcastq (8 bytes), vpsllvd (each lane's nibble to the top),
//           vpsrad 28 (sign extension), vcvtdq2ps;
//   2 bits: vpbroadcastd (4 bytes), vpsllvd, vpsrad 30, vcvtdq2ps;
// and one FMA per input row of the pass (up to 4 input rows share the unpack).
#include <immintrin.h>

#include <cstring>

#include "fc_f32.h"

namespace bbits::kernels::simd {
namespace {

constexpr int kLanes = 16;
constexpr int kMaxRowsPerPass = 4;  // input rows sharing one unpack

template <int BITS>
inline __m512 unpack16(const uint8_t* p, __m512i shl) {
  if constexpr (BITS == 8) {
    (void)shl;
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  } else if constexpr (BITS == 4) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    const __m512i t = _mm512_sllv_epi32(_mm512_set1_epi64(static_cast<long long>(v)), shl);
    return _mm512_cvtepi32_ps(_mm512_srai_epi32(t, 28));
  } else {
    uint32_t v;
    std::memcpy(&v, p, 4);
    const __m512i t = _mm512_sllv_epi32(_mm512_set1_epi32(static_cast<int>(v)), shl);
    return _mm512_cvtepi32_ps(_mm512_srai_epi32(t, 30));
  }
}

inline __m512i shift_counts(int bits) {
  alignas(64) int32_t s[kLanes];
  for (int l = 0; l < kLanes; ++l) s[l] = bits == 4 ? 28 - 4 * (l >> 1) : (bits == 2 ? 30 - 2 * l : 0);
  return _mm512_load_si512(s);
}

inline __m256 half_sum(__m512 v) {
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
}

// One block of 4 output rows against NB input rows starting at x (row stride K).
// NB <= 2 keeps two accumulator sets (even / odd chunks) for enough
// independent FMA chains.
template <int BITS, int NB>
void block(const FcF32Call& c, const uint8_t* wb, const float* x, int64_t n0, int64_t o0, __m512i shl) {
  constexpr int CB = kLanes * BITS / 8;  // bytes of one row's chunk
  constexpr int SETS = NB <= 2 ? 2 : 1;
  const int64_t K = c.K;
  __m512 acc[SETS][NB][kFcF32Rows];
  for (int s = 0; s < SETS; ++s)
    for (int n = 0; n < NB; ++n)
      for (int r = 0; r < kFcF32Rows; ++r) acc[s][n][r] = _mm512_setzero_ps();

  auto step = [&](int s, const uint8_t* p, const __m512* xv) {
    for (int r = 0; r < kFcF32Rows; ++r) {
      const __m512 w = unpack16<BITS>(p + r * CB, shl);
      for (int n = 0; n < NB; ++n) acc[s][n][r] = _mm512_fmadd_ps(w, xv[n], acc[s][n][r]);
    }
  };

  const int64_t full = K / kLanes;
  int64_t ch = 0;
  __m512 xv[NB];
  for (; ch + SETS <= full; ch += SETS) {
    for (int s = 0; s < SETS; ++s) {
      for (int n = 0; n < NB; ++n) xv[n] = _mm512_loadu_ps(x + n * K + (ch + s) * kLanes);
      step(s, wb + (ch + s) * kFcF32Rows * CB, xv);
    }
  }
  for (; ch < full; ++ch) {
    for (int n = 0; n < NB; ++n) xv[n] = _mm512_loadu_ps(x + n * K + ch * kLanes);
    step(0, wb + ch * kFcF32Rows * CB, xv);
  }
  if (ch < c.kchunks) {  // K tail: the packed weights are zero past K, the input is masked to 0
    const auto m = static_cast<__mmask16>((1u << (K - ch * kLanes)) - 1u);
    for (int n = 0; n < NB; ++n) xv[n] = _mm512_maskz_loadu_ps(m, x + n * K + ch * kLanes);
    step(0, wb + ch * kFcF32Rows * CB, xv);
  }
  for (int n = 0; n < NB; ++n) {
    __m256 h[kFcF32Rows];
    for (int r = 0; r < kFcF32Rows; ++r) {
      __m512 a = acc[0][n][r];
      if constexpr (SETS == 2) a = _mm512_add_ps(a, acc[1][n][r]);
      h[r] = half_sum(a);
    }
    fc_f32_finish4(c, fc_f32_hsum4(h[0], h[1], h[2], h[3]), n0 + n, o0);
  }
}

template <int BITS>
void rows(const FcF32Call& c, int64_t b0, int64_t b1) {
  const __m512i shl = shift_counts(BITS);
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* wb = c.w + b * c.block_bytes;
    const int64_t o0 = b * kFcF32Rows;
    int64_t n = 0;
    for (; n + kMaxRowsPerPass <= c.N; n += kMaxRowsPerPass) block<BITS, 4>(c, wb, c.x + n * c.K, n, o0, shl);
    switch (c.N - n) {
      case 3: block<BITS, 3>(c, wb, c.x + n * c.K, n, o0, shl); break;
      case 2: block<BITS, 2>(c, wb, c.x + n * c.K, n, o0, shl); break;
      case 1: block<BITS, 1>(c, wb, c.x + n * c.K, n, o0, shl); break;
      default: break;
    }
  }
}

}  // namespace

void fc_f32_rows_avx512(const FcF32Call& c, int64_t b0, int64_t b1) {
  switch (c.bits) {
    case 8: rows<8>(c, b0, b1); break;
    case 4: rows<4>(c, b0, b1); break;
    case 2: rows<2>(c, b0, b1); break;
    default: break;  // create() admits only 2, 4, 8
  }
}

}  // namespace bbits::kernels::simd
