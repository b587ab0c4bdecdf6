// bbits SIMD kernels — AVX-512 fully connected layer with packed 2/4/8-bit
// weights and float32 activations (fc_w{2,4,8}a32_f32_avx512; layout and
// arithmetic in fc_f32.h). Compiled with AVX-512 flags; reached only after
// run-time CPU detection.
//
// Per chunk of 16 reduction values and per row of a 4-row block, the weights
// become 16 floats in registers:
//   8 bits: vpmovsxbd (16 bytes), vcvtdq2ps;
//   4 bits: vpbroadcastq (8 bytes), vpsrlvd (each lane's nibble to bits 0..3),
//           vpermps from a 16-float table of the nibble's values;
//   2 bits: vpbroadcastd (4 bytes), vpsrlvd, vpermps (the table repeats the
//           4 values, so the bits above the field do not matter);
// and one FMA per input row of the pass (up to 4 input rows share the unpack).
#include <immintrin.h>

#include <cstring>

#include "fc_f32.h"

namespace bbits::kernels::simd {
namespace {

constexpr int kLanes = 16;
constexpr int kMaxRowsPerPass = 4;  // input rows sharing one unpack
// Software prefetch distance in the weight stream (bytes): measured on Zen 4,
// 1 KB ahead cuts a DRAM-cold 1280x1000 8-bit run from ~73 to ~60 us.
constexpr int kPrefetch = 1024;

// Lane constants of the 2- and 4-bit unpack: per-lane right shifts bringing
// each lane's field to bits 0.., and the 16-entry table of vpermps (which reads
// the low 4 bits of each index lane) mapping a field to its float value.
struct Unpack {
  __m512i shr;
  __m512 table;
};

inline Unpack unpack_consts(int bits) {
  alignas(64) int32_t s[kLanes];
  alignas(64) float t[kLanes];
  for (int l = 0; l < kLanes; ++l) {
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
inline __m512 unpack16(const uint8_t* p, const Unpack& u) {
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

inline __m256 half_sum(__m512 v) {
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
}

// One block of 4 output rows against NB input rows starting at x (row stride K).
// NB <= 2 keeps two accumulator sets (even / odd chunks) for enough
// independent FMA chains.
template <int BITS, int NB>
void block(const FcF32Call& c, const uint8_t* wb, const float* x, int64_t n0, int64_t o0, const Unpack& u) {
  constexpr int CB = kLanes * BITS / 8;  // bytes of one row's chunk
  constexpr int SETS = NB <= 2 ? 2 : 1;
  const int64_t K = c.K;
  __m512 acc[SETS][NB][kFcF32Rows];
  for (int s = 0; s < SETS; ++s)
    for (int n = 0; n < NB; ++n)
      for (int r = 0; r < kFcF32Rows; ++r) acc[s][n][r] = _mm512_setzero_ps();

  auto step = [&](int s, const uint8_t* p, const __m512* xv) {
    _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch), _MM_HINT_T0);
    for (int r = 0; r < kFcF32Rows; ++r) {
      const __m512 w = unpack16<BITS>(p + r * CB, u);
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
  const Unpack u = unpack_consts(BITS);
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* wb = c.w + b * c.block_bytes;
    const int64_t o0 = b * kFcF32Rows;
    int64_t n = 0;
    for (; n + kMaxRowsPerPass <= c.N; n += kMaxRowsPerPass) block<BITS, 4>(c, wb, c.x + n * c.K, n, o0, u);
    switch (c.N - n) {
      case 3: block<BITS, 3>(c, wb, c.x + n * c.K, n, o0, u); break;
      case 2: block<BITS, 2>(c, wb, c.x + n * c.K, n, o0, u); break;
      case 1: block<BITS, 1>(c, wb, c.x + n * c.K, n, o0, u); break;
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
