// bbits SIMD kernels — AVX2 + FMA fully connected layer with packed 2/4/8-bit
// weights and float32 activations (fc_w{2,4,8}a32_f32_avx2; layout and
// arithmetic in fc_f32.h). Compiled with AVX2 flags; reached only after
// run-time CPU detection.
//
// Per chunk of 8 reduction values and per row of a 4-row block, the weights
// become 8 floats in registers:
//   8 bits: vpmovsxbd (8 bytes), vcvtdq2ps;
//   4 bits: vpbroadcastd (4 bytes), vpsllvd (each lane's nibble to the top),
//           vpsrad 28 (sign extension), vcvtdq2ps;
//   2 bits: vpbroadcastw (2 bytes; each dword holds the word twice), vpsrlvd
//           (lane l's field 2l..2l+1 to bits 0..1), vpermps from an 8-float
//           table of the 2-bit values repeated (index bit 2 is the next field's);
// and one FMA per input row of the pass (up to 2 input rows share the unpack;
// 16 ymm registers).
#include <immintrin.h>

#include <cstring>

#include "fc_f32.h"

namespace bbits::kernels::simd {
namespace {

constexpr int kLanes = 8;
constexpr int kMaxRowsPerPass = 2;
constexpr int kPrefetch = 1024;  // software prefetch distance in the weight stream (bytes)

template <int BITS>
inline __m256 unpack8(const uint8_t* p, __m256i shl, __m256 table) {
  if constexpr (BITS == 8) {
    (void)shl;
    (void)table;
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  } else if constexpr (BITS == 4) {
    (void)table;
    uint32_t v;
    std::memcpy(&v, p, 4);
    const __m256i t = _mm256_sllv_epi32(_mm256_set1_epi32(static_cast<int>(v)), shl);
    return _mm256_cvtepi32_ps(_mm256_srai_epi32(t, 28));
  } else {  // shl: right shifts 2l; table: the 2-bit values repeated (vpermps reads 3 index bits)
    short v;
    std::memcpy(&v, p, 2);
    return _mm256_permutevar8x32_ps(table, _mm256_srlv_epi32(_mm256_set1_epi16(v), shl));
  }
}

inline __m256i shift_counts(int bits) {
  alignas(32) int32_t s[kLanes];
  for (int l = 0; l < kLanes; ++l) s[l] = bits == 4 ? 28 - 4 * l : (bits == 2 ? 2 * l : 0);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(s));
}

inline __m256 table2() { return _mm256_setr_ps(0.0f, 1.0f, -2.0f, -1.0f, 0.0f, 1.0f, -2.0f, -1.0f); }

inline __m256i tail_mask(int64_t n) {
  alignas(32) int32_t m[kLanes];
  for (int l = 0; l < kLanes; ++l) m[l] = l < n ? -1 : 0;
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
}

// One block of 4 output rows against NB input rows starting at x (row stride K).
template <int BITS, int NB>
void block(const FcF32Call& c, const uint8_t* wb, const float* x, int64_t n0, int64_t o0, __m256i shl, __m256 table) {
  constexpr int CB = kLanes * BITS / 8;  // bytes of one row's chunk
  constexpr int SETS = NB == 1 ? 2 : 1;
  const int64_t K = c.K;
  __m256 acc[SETS][NB][kFcF32Rows];
  for (int s = 0; s < SETS; ++s)
    for (int n = 0; n < NB; ++n)
      for (int r = 0; r < kFcF32Rows; ++r) acc[s][n][r] = _mm256_setzero_ps();

  auto step = [&](int s, const uint8_t* p, const __m256* xv) {
    _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch), _MM_HINT_T0);
    for (int r = 0; r < kFcF32Rows; ++r) {
      const __m256 w = unpack8<BITS>(p + r * CB, shl, table);
      for (int n = 0; n < NB; ++n) acc[s][n][r] = _mm256_fmadd_ps(w, xv[n], acc[s][n][r]);
    }
  };

  const int64_t full = K / kLanes;
  int64_t ch = 0;
  __m256 xv[NB];
  for (; ch + SETS <= full; ch += SETS) {
    for (int s = 0; s < SETS; ++s) {
      for (int n = 0; n < NB; ++n) xv[n] = _mm256_loadu_ps(x + n * K + (ch + s) * kLanes);
      step(s, wb + (ch + s) * kFcF32Rows * CB, xv);
    }
  }
  for (; ch < full; ++ch) {
    for (int n = 0; n < NB; ++n) xv[n] = _mm256_loadu_ps(x + n * K + ch * kLanes);
    step(0, wb + ch * kFcF32Rows * CB, xv);
  }
  if (ch < c.kchunks) {  // K tail: the packed weights are zero past K, the input is masked to 0
    const __m256i m = tail_mask(K - ch * kLanes);
    for (int n = 0; n < NB; ++n) xv[n] = _mm256_maskload_ps(x + n * K + ch * kLanes, m);
    step(0, wb + ch * kFcF32Rows * CB, xv);
  }
  for (int n = 0; n < NB; ++n) {
    __m256 h[kFcF32Rows];
    for (int r = 0; r < kFcF32Rows; ++r) {
      h[r] = acc[0][n][r];
      if constexpr (SETS == 2) h[r] = _mm256_add_ps(h[r], acc[1][n][r]);
    }
    fc_f32_finish4(c, fc_f32_hsum4(h[0], h[1], h[2], h[3]), n0 + n, o0);
  }
}

template <int BITS>
void rows(const FcF32Call& c, int64_t b0, int64_t b1) {
  const __m256i shl = shift_counts(BITS);
  const __m256 table = table2();
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* wb = c.w + b * c.block_bytes;
    const int64_t o0 = b * kFcF32Rows;
    int64_t n = 0;
    for (; n + kMaxRowsPerPass <= c.N; n += kMaxRowsPerPass) block<BITS, 2>(c, wb, c.x + n * c.K, n, o0, shl, table);
    if (n < c.N) block<BITS, 1>(c, wb, c.x + n * c.K, n, o0, shl, table);
  }
}

}  // namespace

void fc_f32_rows_avx2(const FcF32Call& c, int64_t b0, int64_t b1) {
  switch (c.bits) {
    case 8: rows<8>(c, b0, b1); break;
    case 4: rows<4>(c, b0, b1); break;
    case 2: rows<2>(c, b0, b1); break;
    default: break;  // create() admits only 2, 4, 8
  }
}

}  // namespace bbits::kernels::simd
