// bbits SIMD kernels — portable AVX2 integer GEMM microkernels (no VNNI).
// vpmaddubsw (u8 x s8 -> s16 pairs, saturating) + vpmaddwd (-> s32) is exact
// here because no pair can reach the s16 limit:
//   2 and 4 bits: weights Offset-encoded in [0, 15]: 2 * 255 * 15 < 32767;
//   8 bits: the activation is split x = 2 * (x >> 1) + (x & 1):
//           2 * 127 * 127 < 32767 and 2 * 1 * 128 < 32767.
// Compiled with -mavx2 -mfma; only called when detection allows Isa::AVX2.
#include <immintrin.h>

#include <algorithm>

#include "simd_internal.h"

namespace bbits::kernels::simd {
namespace {

inline __m256i bcast32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

template <int MR, int NB, int BITS>
void gemm_tile(const uint8_t* __restrict wp, const uint8_t* __restrict A, int64_t lda, int64_t ng,
               int32_t* __restrict out) {
  constexpr int F = 8 / BITS;
  constexpr int KG = 4 * F;
  __m256i acc[MR][NB];
  #pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
    #pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) acc[m][b] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i twos = _mm256_set1_epi16(2);
  const __m256i mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  const __m256i m7f = _mm256_set1_epi8(0x7f);
  const __m256i m01 = _mm256_set1_epi8(0x01);
  for (int64_t g = 0; g < ng; ++g) {
    const uint8_t* wg = wp + g * NB * 32;
    const uint8_t* ag = A + g * KG;
    #pragma GCC unroll 16
    for (int j = 0; j < F; ++j) {
      __m256i w[NB];
      #pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + b * 32));
        if constexpr (F == 1) {
          w[b] = v;
        } else {
          w[b] = _mm256_and_si256(j == 0 ? v : _mm256_srli_epi16(v, j * BITS), mask);
        }
      }
      #pragma GCC unroll 16
      for (int m = 0; m < MR; ++m) {
        const __m256i xb = bcast32(ag + m * lda + 4 * j);
        if constexpr (BITS == 8) {
          const __m256i xh = _mm256_and_si256(_mm256_srli_epi16(xb, 1), m7f);
          const __m256i xl = _mm256_and_si256(xb, m01);
          #pragma GCC unroll 16
          for (int b = 0; b < NB; ++b) {
            const __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(xh, w[b]), twos);
            const __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(xl, w[b]), ones);
            acc[m][b] = _mm256_add_epi32(acc[m][b], _mm256_add_epi32(ph, pl));
          }
        } else {
          #pragma GCC unroll 16
          for (int b = 0; b < NB; ++b)
            acc[m][b] = _mm256_add_epi32(acc[m][b], _mm256_madd_epi16(_mm256_maddubs_epi16(xb, w[b]), ones));
        }
      }
    }
  }
  #pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
    #pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m * 32 + b * 8), acc[m][b]);
}

using TileFn = void (*)(const uint8_t*, const uint8_t*, int64_t, int64_t, int32_t*);

template <int MR, int BITS>
TileFn tile_fn_nb(int nb) {
  switch (nb) {
    case 1: return gemm_tile<MR, 1, BITS>;
    case 2: return gemm_tile<MR, 2, BITS>;
    case 3: return gemm_tile<MR, 3, BITS>;
    default: return gemm_tile<MR, 4, BITS>;
  }
}
template <int BITS>
TileFn tile_fn_mr(int mr, int nb) {
  return mr == 1 ? tile_fn_nb<1, BITS>(nb) : tile_fn_nb<2, BITS>(nb);
}
TileFn tile_fn(int bits, int mr, int nb) {
  return bits == 8 ? tile_fn_mr<8>(mr, nb) : bits == 4 ? tile_fn_mr<4>(mr, nb) : tile_fn_mr<2>(mr, nb);
}

inline __m256i sra_epi64(__m256i p, __m256i s) {
  const __m256i sgn = _mm256_cmpgt_epi64(_mm256_setzero_si256(), p);
  return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(p, sgn), s), sgn);
}

void epilogue_row(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E, void* out_row) {
  if (E.kind == OutKind::F32 || E.wide) {
    epilogue_row_scalar(acc, oc0, n, rowcorr, E, out_row);
    return;
  }
  const __m128i rc = _mm_set1_epi32(rowcorr);
  const __m256i lo = _mm256_set1_epi64x(E.lo), hi = _mm256_set1_epi64x(E.hi);
  const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  alignas(32) int32_t tmp[8];
  for (int64_t c = 0; c < n; c += 4) {
    const int64_t oc = oc0 + c;
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(acc + c));
    a = _mm_sub_epi32(_mm_add_epi32(a, _mm_loadu_si128(reinterpret_cast<const __m128i*>(E.colterm.get() + oc))), rc);
    __m256i p = _mm256_mul_epi32(_mm256_cvtepi32_epi64(a),
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(E.mult.get() + oc)));
    p = _mm256_add_epi64(p, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(E.round.get() + oc)));
    p = sra_epi64(p, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(E.shift.get() + oc)));
    p = _mm256_blendv_epi8(p, hi, _mm256_cmpgt_epi64(p, hi));
    p = _mm256_blendv_epi8(p, lo, _mm256_cmpgt_epi64(lo, p));
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), _mm256_permutevar8x32_epi32(p, pick));
    const int64_t cnt = std::min<int64_t>(4, n - c);
    switch (E.kind) {
      case OutKind::U8:
      case OutKind::S8:
        for (int64_t i = 0; i < cnt; ++i) static_cast<uint8_t*>(out_row)[oc + i] = static_cast<uint8_t>(tmp[i]);
        break;
      case OutKind::U16:
      case OutKind::S16:
        for (int64_t i = 0; i < cnt; ++i) static_cast<uint16_t*>(out_row)[oc + i] = static_cast<uint16_t>(tmp[i]);
        break;
      case OutKind::F32:
        break;
    }
  }
}

}  // namespace

void gemm_avx2(const GemmCall& c) {
  const PackedB& B = *c.B;
  const Epilogue& E = *c.E;
  const size_t esz = out_elem_bytes(E.kind);
  alignas(32) int32_t tile[2 * 32];
  const int64_t pw = static_cast<int64_t>(B.nb_max) * B.lanes;
  for (int64_t p = c.p0; p < c.p1; ++p) {
    const int nb = B.panel_blocks(p);
    const uint8_t* wp = B.panel(p);
    const int64_t oc0 = p * pw;
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(nb) * B.lanes, B.OC - oc0);
    for (int64_t m0 = 0; m0 < c.M; m0 += 2) {
      const int mr = static_cast<int>(std::min<int64_t>(2, c.M - m0));
      tile_fn(B.bits, mr, nb)(wp, c.A + m0 * c.lda, c.lda, B.ngroups, tile);
      for (int r = 0; r < mr; ++r)
        epilogue_row(tile + r * 32, oc0, n, c.rowcorr[m0 + r], E, static_cast<uint8_t*>(c.out) + (m0 + r) * c.ldo * esz);
    }
  }
}

void epilogue_row_avx2(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                       void* out_row) {
  epilogue_row(acc, oc0, n, rowcorr, E, out_row);
}

void rowcorr_avx2(const PackedB& B, const uint8_t* A, int64_t lda, int64_t M, int32_t* rowcorr) {
  const int32_t off = B.offset();
  if (off == 0) {
    std::fill(rowcorr, rowcorr + M, 0);
    return;
  }
  alignas(32) uint8_t pm[32];
  for (int i = 0; i < 32; ++i) pm[i] = B.offset_position(i) ? 0xff : 0x00;
  const __m256i posmask = _mm256_load_si256(reinterpret_cast<const __m256i*>(pm));
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t m = 0; m < M; ++m) {
    const uint8_t* a = A + m * lda;
    __m256i s = _mm256_setzero_si256();
    int64_t k = 0;
    for (; k + 32 <= B.Kp; k += 32)
      s = _mm256_add_epi64(
          s, _mm256_sad_epu8(_mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k)), posmask),
                             zero));
    alignas(8) int64_t parts[4];
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(parts), s);
    int64_t total = parts[0] + parts[1] + parts[2] + parts[3];
    for (; k < B.Kp; ++k)
      if (B.offset_position(k)) total += a[k];
    rowcorr[m] = static_cast<int32_t>(static_cast<uint32_t>(total) * static_cast<uint32_t>(off));
  }
}

}  // namespace bbits::kernels::simd
