// bbits SIMD kernels — 16-bit GEMM with AVX2 vpmaddwd + vpaddd (compiled with
// AVX2 flags; reached only after run-time CPU detection). Same layout and
// int32-block bound as the AVX-512 kernel (simd_internal.h, Packed16): a
// vpmaddwd lane is the same pair sum a vpdpwssd lane adds.
//
// Tile: up to 2 rows (1 in split mode) x 2 blocks of 16 output channels (4
// ymm accumulators per row and plane); the epilogue is the scalar one.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "simd_internal.h"

namespace bbits::kernels::simd {
namespace {

inline __m256i bcast_pair(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// acc64[0..8) += lo (+ 256 * hi)
inline void flush8(int64_t* acc64, __m256i lo, const __m256i* hi) {
  __m256i l0 = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(lo));
  __m256i l1 = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(lo, 1));
  if (hi != nullptr) {
    l0 = _mm256_add_epi64(l0, _mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(*hi)), 8));
    l1 = _mm256_add_epi64(l1, _mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(*hi, 1)), 8));
  }
  auto* p = reinterpret_cast<__m256i*>(acc64);
  _mm256_storeu_si256(p, _mm256_add_epi64(_mm256_loadu_si256(p), l0));
  _mm256_storeu_si256(p + 1, _mm256_add_epi64(_mm256_loadu_si256(p + 1), l1));
}

// NV ymm columns (8 channels each; NV = 2 per 16-channel block).
template <int MR, int NV, bool SPLIT>
void tile(const int16_t* A, const int16_t* Ahi, int64_t lda, const int16_t* w, int64_t bstride, int64_t pairs,
          int64_t kblock, int64_t* acc64) {
  for (int r = 0; r < MR; ++r) std::memset(acc64 + r * 32, 0, sizeof(int64_t) * 8 * NV);
  for (int64_t p0 = 0; p0 < pairs; p0 += kblock) {
    const int64_t p1 = std::min(pairs, p0 + kblock);
    __m256i lo[MR][NV], hi[SPLIT ? MR : 1][NV];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NV; ++j) {
        lo[r][j] = _mm256_setzero_si256();
        if constexpr (SPLIT) hi[r][j] = _mm256_setzero_si256();
      }
    for (int64_t p = p0; p < p1; ++p) {
      __m256i wv[NV];
      for (int j = 0; j < NV; ++j)
        wv[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + (j / 2) * bstride + p * 32 + (j % 2) * 16));
      for (int r = 0; r < MR; ++r) {
        const __m256i x = bcast_pair(A + r * lda + 2 * p);
        for (int j = 0; j < NV; ++j) lo[r][j] = _mm256_add_epi32(lo[r][j], _mm256_madd_epi16(x, wv[j]));
        if constexpr (SPLIT) {
          const __m256i xh = bcast_pair(Ahi + r * lda + 2 * p);
          for (int j = 0; j < NV; ++j) hi[r][j] = _mm256_add_epi32(hi[r][j], _mm256_madd_epi16(xh, wv[j]));
        }
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NV; ++j) flush8(acc64 + r * 32 + j * 8, lo[r][j], SPLIT ? &hi[r][j] : nullptr);
  }
}

using TileFn = void (*)(const int16_t*, const int16_t*, int64_t, const int16_t*, int64_t, int64_t, int64_t, int64_t*);

TileFn pick(bool split, int mr, int nv) {
  if (split) return nv == 2 ? tile<1, 2, true> : tile<1, 4, true>;
  if (mr == 1) return nv == 2 ? tile<1, 2, false> : tile<1, 4, false>;
  return nv == 2 ? tile<2, 2, false> : tile<2, 4, false>;
}

}  // namespace

void gemm16_avx2(const Gemm16Call& c) {
  const Packed16& B = *c.B;
  const Epilogue& E = *c.E;
  const size_t esz = out_elem_bytes(E.kind);
  const int mr_max = B.split ? 1 : 2;
  alignas(32) int64_t acc64[2 * 32];
  const int64_t bstride = B.pairs * 32;
  for (int64_t b = c.b0; b < c.b1; b += 2) {
    const int nb = static_cast<int>(std::min<int64_t>(2, c.b1 - b));
    const int64_t oc0 = b * 16;
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(nb) * 16, B.OC - oc0);
    for (int64_t m0 = 0; m0 < c.M; m0 += mr_max) {
      const int mr = static_cast<int>(std::min<int64_t>(mr_max, c.M - m0));
      pick(B.split, mr, 2 * nb)(c.A + m0 * c.lda, B.split ? c.Ahi + m0 * c.lda : nullptr, c.lda, B.block(b), bstride,
                                B.pairs, B.kblock, acc64);
      for (int r = 0; r < mr; ++r)
        epilogue16_row_scalar(acc64 + r * 32, oc0, n, B, E,
                              static_cast<uint8_t*>(c.out) + static_cast<size_t>((m0 + r) * c.ldo) * esz);
    }
  }
}

}  // namespace bbits::kernels::simd
