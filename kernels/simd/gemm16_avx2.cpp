// bbits SIMD kernels — 16-bit GEMM with AVX2 vpmaddwd + vpaddd (compiled with
// AVX2 flags; reached only after run-time CPU detection). Same layout and
// int32-block bound as the AVX-512 kernel (simd_internal.h, Packed16): a
// vpmaddwd lane is the same pair sum a vpdpwssd lane adds.
//
// Tile: up to 2 rows (1 in split mode) x 2 blocks of 16 output channels (4
// ymm accumulators per row and plane); epilogue16_row_avx2 below.
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

// Epilogue of one row segment from int64 sums: AVX2 lanes of 4 channels when
// every channel's shift is >= 32 (the split product of gemm16_avx512.cpp:
// (ah m + ((al m + round) >> 32)) >> (s - 32), the arithmetic shift done as
// a logical one on sign-folded values), else the scalar epilogue.
void epilogue16_row_avx2(const int64_t* acc, int64_t oc0, int64_t n, const Packed16& B, const Epilogue& E,
                         void* out_row) {
  if (E.kind == OutKind::F32 || !B.shift_ge32) {
    epilogue16_row_scalar(acc, oc0, n, B, E, out_row);
    return;
  }
  const __m256i lo = _mm256_set1_epi64x(E.lo), hi = _mm256_set1_epi64x(E.hi), s32 = _mm256_set1_epi64x(32);
  const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  int64_t c = 0;
  for (; c + 4 <= n; c += 4) {
    const int64_t oc = oc0 + c;
    auto ld = [](const int64_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); };
    __m256i a = _mm256_add_epi64(ld(acc + c), ld(B.corr.data() + oc));
    a = _mm256_add_epi64(a, ld(E.bias64.data() + oc));
    const __m256i m = ld(E.mult.get() + oc);
    const __m256i ph = _mm256_mul_epi32(_mm256_srli_epi64(a, 32), m);  // high dword read as signed
    const __m256i L = _mm256_add_epi64(_mm256_mul_epu32(a, m), ld(E.round.get() + oc));
    const __m256i t = _mm256_add_epi64(ph, _mm256_srli_epi64(L, 32));
    const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), t);
    const __m256i sh = _mm256_sub_epi64(ld(E.shift.get() + oc), s32);
    __m256i q = _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(t, sign), sh), sign);
    q = _mm256_blendv_epi8(q, hi, _mm256_cmpgt_epi64(q, hi));
    q = _mm256_blendv_epi8(q, lo, _mm256_cmpgt_epi64(lo, q));
    const __m128i v = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(q, pick));  // 4 int32
    if (E.kind == OutKind::U8 || E.kind == OutKind::S8) {
      const __m128i w = _mm_packs_epi32(v, v);
      const __m128i b = E.kind == OutKind::S8 ? _mm_packs_epi16(w, w) : _mm_packus_epi16(w, w);
      const int32_t four = _mm_cvtsi128_si32(b);
      std::memcpy(static_cast<uint8_t*>(out_row) + oc, &four, 4);
    } else {
      const __m128i w = E.kind == OutKind::S16 ? _mm_packs_epi32(v, v) : _mm_packus_epi32(v, v);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out_row) + oc), w);
    }
  }
  if (c < n) epilogue16_row_scalar(acc + c, oc0 + c, n - c, B, E, out_row);
}

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
        epilogue16_row_avx2(acc64 + r * 32, oc0, n, B, E,
                              static_cast<uint8_t*>(c.out) + static_cast<size_t>((m0 + r) * c.ldo) * esz);
    }
  }
}


namespace {

template <int KIND>
inline int32_t load1(const void* base, int64_t idx) {
  if constexpr (KIND == 0) return static_cast<const uint8_t*>(base)[idx];
  if constexpr (KIND == 1) return static_cast<const int8_t*>(base)[idx];
  if constexpr (KIND == 2) return static_cast<const uint16_t*>(base)[idx];
  return static_cast<const int16_t*>(base)[idx];
}

template <int KIND>
inline __m256i load8_widen(const void* base, int64_t idx) {
  if constexpr (KIND == 0)
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(base) + idx)));
  if constexpr (KIND == 1)
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(base) + idx)));
  if constexpr (KIND == 2)
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + idx)));
  return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const int16_t*>(base) + idx)));
}

template <int KIND>
void dw16_rows(const Dw16Geom& g, const int32_t* w, const Packed16& B, const Epilogue& E, const void* in, void* out,
               int64_t* acc, int64_t r0, int64_t r1) {
  const int64_t T = int64_t{g.KH} * g.KW;
  const size_t esz = out_elem_bytes(E.kind);
  const int64_t C8 = g.C / 8 * 8;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.OH, oh = r % g.OH;
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      for (int64_t c0 = 0; c0 < C8; c0 += 8) {
        __m256i ae = _mm256_setzero_si256(), ao = ae;
        const int32_t* wb = w + (c0 / 16) * T * 16 + (c0 % 16);
        for (int kh = 0; kh < g.KH; ++kh) {
          const int64_t ih = oh * g.sh - g.pt + int64_t{kh} * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          for (int kw = 0; kw < g.KW; ++kw) {
            const int64_t iw = ow * g.sw - g.pl + int64_t{kw} * g.dw;
            if (iw < 0 || iw >= g.W) continue;
            const __m256i x = load8_widen<KIND>(in, ((n * g.H + ih) * g.W + iw) * g.C + c0);
            const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + (kh * g.KW + kw) * 16));
            ae = _mm256_add_epi64(ae, _mm256_mul_epi32(x, wv));
            ao = _mm256_add_epi64(ao, _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(wv, 32)));
          }
        }
        alignas(32) int64_t e[4], o[4];
        _mm256_store_si256(reinterpret_cast<__m256i*>(e), ae);
        _mm256_store_si256(reinterpret_cast<__m256i*>(o), ao);
        for (int i = 0; i < 4; ++i) {
          acc[c0 + 2 * i] = e[i];
          acc[c0 + 2 * i + 1] = o[i];
        }
      }
      for (int64_t c = C8; c < g.C; ++c) {  // channel tail
        int64_t s = 0;
        const int32_t* wc = w + (c / 16) * T * 16 + (c % 16);
        for (int kh = 0; kh < g.KH; ++kh) {
          const int64_t ih = oh * g.sh - g.pt + int64_t{kh} * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          for (int kw = 0; kw < g.KW; ++kw) {
            const int64_t iw = ow * g.sw - g.pl + int64_t{kw} * g.dw;
            if (iw < 0 || iw >= g.W) continue;
            s += int64_t{load1<KIND>(in, ((n * g.H + ih) * g.W + iw) * g.C + c)} * wc[(kh * g.KW + kw) * 16];
          }
        }
        acc[c] = s;
      }
      epilogue16_row_avx2(acc, 0, g.C, B, E,
                          static_cast<uint8_t*>(out) + static_cast<size_t>(((n * g.OH + oh) * g.OW + ow) * g.C) * esz);
    }
  }
}

}  // namespace

void dwconv16_rows_avx2(const Dw16Geom& g, const int32_t* w, const Packed16& B, const Epilogue& E, const void* in,
                        void* out, int64_t* acc, int64_t r0, int64_t r1) {
  switch (g.in_kind) {
    case 0: dw16_rows<0>(g, w, B, E, in, out, acc, r0, r1); break;
    case 1: dw16_rows<1>(g, w, B, E, in, out, acc, r0, r1); break;
    case 2: dw16_rows<2>(g, w, B, E, in, out, acc, r0, r1); break;
    default: dw16_rows<3>(g, w, B, E, in, out, acc, r0, r1); break;
  }
}

}  // namespace bbits::kernels::simd
