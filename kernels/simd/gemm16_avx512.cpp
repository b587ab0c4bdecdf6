// bbits SIMD kernels — 16-bit GEMM with AVX-512 VNNI vpdpwssd (compiled with
// AVX-512 flags; reached only after run-time CPU detection). Layout and the
// exactness argument: simd_internal.h (Packed16).
//
// Tile: up to 4 rows (2 in split mode) x 4 blocks of 16 output channels; int32
// accumulators over B.kblock pairs at most, then added to int64 sums kept in
// a small local tile; the epilogue reads the int64 sums.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "simd_internal.h"

namespace bbits::kernels::simd {
namespace {
inline __mmask8 mask8(int64_t n) { return n >= 8 ? static_cast<__mmask8>(0xff) : static_cast<__mmask8>((1u << n) - 1u); }
// Stores the lanes `k` of p (int64 values already clamped to the output grid)
// as the integer output kind at out_row[oc...].
inline void store_clamped_i64(OutKind kind, void* out_row, int64_t oc, __mmask8 k, __m512i p) {
  if (kind == OutKind::U8 || kind == OutKind::S8) _mm512_mask_cvtepi64_storeu_epi8(static_cast<uint8_t*>(out_row) + oc, k, p);
  else if (kind != OutKind::F32) _mm512_mask_cvtepi64_storeu_epi16(static_cast<uint16_t*>(out_row) + oc, k, p);
}
}  // namespace
}  // namespace bbits::kernels::simd

namespace bbits::kernels::simd {
namespace {

inline __m512i bcast_pair(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// acc64[0..16) += lo (+ 256 * hi)
inline void flush16(int64_t* acc64, __m512i lo, const __m512i* hi) {
  __m512i l0 = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(lo));
  __m512i l1 = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(lo, 1));
  if (hi != nullptr) {
    l0 = _mm512_add_epi64(l0, _mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(*hi)), 8));
    l1 = _mm512_add_epi64(l1, _mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(*hi, 1)), 8));
  }
  _mm512_storeu_si512(acc64, _mm512_add_epi64(_mm512_loadu_si512(acc64), l0));
  _mm512_storeu_si512(acc64 + 8, _mm512_add_epi64(_mm512_loadu_si512(acc64 + 8), l1));
}

// Rows [0, MR) of A from `A`/`Ahi` (row stride lda) against blocks w[0..NB)
// (each `pairs` x 32 int16, block stride bstride); int64 sums into acc64
// (row stride 64).
template <int MR, int NB, bool SPLIT>
void tile(const int16_t* A, const int16_t* Ahi, int64_t lda, const int16_t* w, int64_t bstride, int64_t pairs,
          int64_t kblock, int64_t* acc64) {
  for (int r = 0; r < MR; ++r) std::memset(acc64 + r * 64, 0, sizeof(int64_t) * 16 * NB);
  for (int64_t p0 = 0; p0 < pairs; p0 += kblock) {
    const int64_t p1 = std::min(pairs, p0 + kblock);
    __m512i lo[MR][NB], hi[SPLIT ? MR : 1][NB];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NB; ++j) {
        lo[r][j] = _mm512_setzero_si512();
        if constexpr (SPLIT) hi[r][j] = _mm512_setzero_si512();
      }
    for (int64_t p = p0; p < p1; ++p) {
      __m512i wv[NB];
      for (int j = 0; j < NB; ++j) wv[j] = _mm512_load_si512(w + j * bstride + p * 32);
      for (int r = 0; r < MR; ++r) {
        const __m512i x = bcast_pair(A + r * lda + 2 * p);
        for (int j = 0; j < NB; ++j) lo[r][j] = _mm512_dpwssd_epi32(lo[r][j], x, wv[j]);
        if constexpr (SPLIT) {
          const __m512i xh = bcast_pair(Ahi + r * lda + 2 * p);
          for (int j = 0; j < NB; ++j) hi[r][j] = _mm512_dpwssd_epi32(hi[r][j], xh, wv[j]);
        }
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NB; ++j) flush16(acc64 + r * 64 + j * 16, lo[r][j], SPLIT ? &hi[r][j] : nullptr);
  }
}

using TileFn = void (*)(const int16_t*, const int16_t*, int64_t, const int16_t*, int64_t, int64_t, int64_t, int64_t*);

template <bool SPLIT>
TileFn pick(int mr, int nb) {
  switch (mr * 8 + nb) {
    case 9: return tile<1, 1, SPLIT>;
    case 10: return tile<1, 2, SPLIT>;
    case 11: return tile<1, 3, SPLIT>;
    case 12: return tile<1, 4, SPLIT>;
    case 17: return tile<2, 1, SPLIT>;
    case 18: return tile<2, 2, SPLIT>;
    case 19: return tile<2, 3, SPLIT>;
    case 20: return tile<2, 4, SPLIT>;
    default: break;
  }
  if constexpr (!SPLIT) {
    switch (mr * 8 + nb) {
      case 25: return tile<3, 1, false>;
      case 26: return tile<3, 2, false>;
      case 27: return tile<3, 3, false>;
      case 28: return tile<3, 4, false>;
      case 33: return tile<4, 1, false>;
      case 34: return tile<4, 2, false>;
      case 35: return tile<4, 3, false>;
      case 36: return tile<4, 4, false>;
      default: break;
    }
  }
  return nullptr;
}


}  // namespace

void epilogue16_row_avx512(const int64_t* acc, int64_t oc0, int64_t n, const Packed16& B, const Epilogue& E,
                           void* out_row) {
  if (E.kind == OutKind::F32) {
    const __m512d zero = _mm512_setzero_pd();
    const __m256 zf = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
    for (int64_t c = 0; c < n; c += 8) {
      const int64_t oc = oc0 + c;
      const __mmask8 k = mask8(n - c);
      const __m512i a = _mm512_add_epi64(_mm512_maskz_loadu_epi64(k, acc + c), _mm512_maskz_loadu_epi64(k, B.corr.data() + oc));
      // |a| < 2^53: the conversion is exact, as the reference's double(acc).
      const __m512d v = _mm512_add_pd(_mm512_mul_pd(_mm512_cvtepi64_pd(a), _mm512_mask_loadu_pd(zero, k, E.mul.data() + oc)),
                                      _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, E.bias_f.data() + oc)));
      __m256 f = _mm512_cvtpd_ps(v);
      if (E.act != Activation::None) {
        f = _mm256_and_ps(f, _mm256_cmp_ps(f, zf, _CMP_GT_OQ));  // !(v > 0) -> 0, NaN included
        if (E.act == Activation::Relu6) f = _mm256_blendv_ps(f, six, _mm256_cmp_ps(f, six, _CMP_GT_OQ));
      }
      _mm256_mask_storeu_ps(static_cast<float*>(out_row) + oc, k, f);
    }
    return;
  }
  const __m512i lo = _mm512_set1_epi64(E.lo), hi = _mm512_set1_epi64(E.hi);
  const __m512i lim = _mm512_set1_epi64(int64_t{1} << 31), nlim = _mm512_set1_epi64(-(int64_t{1} << 31));
  const __m512i s32 = _mm512_set1_epi64(32);
  for (int64_t c = 0; c < n; c += 8) {
    const int64_t oc = oc0 + c;
    const int64_t cnt = std::min<int64_t>(8, n - c);
    const __mmask8 k = mask8(cnt);
    __m512i a = _mm512_add_epi64(_mm512_maskz_loadu_epi64(k, acc + c), _mm512_maskz_loadu_epi64(k, B.corr.data() + oc));
    a = _mm512_add_epi64(a, _mm512_maskz_loadu_epi64(k, E.bias64.data() + oc));
    const __m512i m = _mm512_maskz_loadu_epi64(k, E.mult.get() + oc);
    const __m512i rnd = _mm512_maskz_loadu_epi64(k, E.round.get() + oc);
    const __m512i sh = _mm512_maskz_loadu_epi64(k, E.shift.get() + oc);
    __m512i p;
    if (B.shift_ge32) {
      // Any |a| < 2^62 with s >= 32: a = ah 2^32 + al (al unsigned 32 bits),
      // a m + round = (ah m) 2^32 + L with L = al m + round in [0, 2^64)
      // (round = 2^(s-1) + bias fraction >= 0 for s >= 32), so
      // (a m + round) >> s = (ah m + (L >> 32)) >> (s - 32): exact.
      const __m512i ph = _mm512_mul_epi32(_mm512_srai_epi64(a, 32), m);
      const __m512i L = _mm512_add_epi64(_mm512_mul_epu32(a, m), rnd);
      p = _mm512_srav_epi64(_mm512_add_epi64(ph, _mm512_srli_epi64(L, 32)), _mm512_sub_epi64(sh, s32));
    } else {
      // |a| < 2^31: a * m + round stays below 2^63 (m < 2^31, round <= 2^61 +
      // 2^31), so 64-bit lanes give apply_requant exactly; else scalar.
      const __mmask8 big = _mm512_cmpge_epi64_mask(a, lim) | _mm512_cmplt_epi64_mask(a, nlim);
      if ((big & k) != 0) {  // the scalar 128-bit path for these channels
        epilogue16_row_scalar(acc + c, oc, cnt, B, E, out_row);
        continue;
      }
      p = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mullo_epi64(a, m), rnd), sh);
    }
    p = _mm512_min_epi64(_mm512_max_epi64(p, lo), hi);
    store_clamped_i64(E.kind, out_row, oc, k, p);
  }
}

void gemm16_avx512vnni(const Gemm16Call& c) {
  const Packed16& B = *c.B;
  const Epilogue& E = *c.E;
  const size_t esz = out_elem_bytes(E.kind);
  const int mr_max = B.split ? 2 : 4;
  alignas(64) int64_t acc64[4 * 64];
  const int64_t bstride = B.pairs * 32;
  for (int64_t b = c.b0; b < c.b1; b += 4) {
    const int nb = static_cast<int>(std::min<int64_t>(4, c.b1 - b));
    const int64_t oc0 = b * 16;
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(nb) * 16, B.OC - oc0);
    for (int64_t m0 = 0; m0 < c.M; m0 += mr_max) {
      const int mr = static_cast<int>(std::min<int64_t>(mr_max, c.M - m0));
      const TileFn fn = B.split ? pick<true>(mr, nb) : pick<false>(mr, nb);
      fn(c.A + m0 * c.lda, B.split ? c.Ahi + m0 * c.lda : nullptr, c.lda, B.block(b), bstride, B.pairs, B.kblock,
         acc64);
      for (int r = 0; r < mr; ++r)
        epilogue16_row_avx512(acc64 + r * 64, oc0, n, B, E,
                              static_cast<uint8_t*>(c.out) + static_cast<size_t>((m0 + r) * c.ldo) * esz);
    }
  }
}


namespace {

template <int KIND>
inline __m512i load16_widen(const void* base, int64_t idx, __mmask16 k) {
  if constexpr (KIND == 0) return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, static_cast<const uint8_t*>(base) + idx));
  if constexpr (KIND == 1) return _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, static_cast<const int8_t*>(base) + idx));
  if constexpr (KIND == 2)
    return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(base) + idx));
  return _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(k, static_cast<const int16_t*>(base) + idx));
}

template <int KIND>
void dw16_rows(const Dw16Geom& g, const int32_t* w, const int32_t* wodd, const Packed16& B, const Epilogue& E,
               const void* in, void* out, int64_t* acc, int64_t r0, int64_t r1) {
  // Locals: the stores to acc / out may alias the geometry otherwise.
  const int64_t H = g.H, W = g.W, C = g.C, OH = g.OH, OW = g.OW, cblocks = g.cblocks;
  const int KH = g.KH, KW = g.KW, sh = g.sh, sw = g.sw, pt = g.pt, pl = g.pl, dh = g.dh, dw = g.dw;
  const int64_t T = int64_t{KH} * KW;
  const size_t esz = out_elem_bytes(E.kind);
  const __m512i lo_idx = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), hi_idx = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  constexpr int kMaxTaps = 64;  // the window's in-bounds taps, listed once per pixel
  int64_t offs[kMaxTaps];
  int64_t widx[kMaxTaps];
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / OH, oh = r % OH;
    for (int64_t ow = 0; ow < OW; ++ow) {
      int nt = 0;
      for (int kh = 0; kh < KH; ++kh) {
        const int64_t ih = oh * sh - pt + int64_t{kh} * dh;
        if (ih < 0 || ih >= H) continue;
        for (int kw = 0; kw < KW; ++kw) {
          const int64_t iw = ow * sw - pl + int64_t{kw} * dw;
          if (iw < 0 || iw >= W) continue;
          offs[nt] = ((n * H + ih) * W + iw) * C;
          widx[nt] = (kh * KW + kw) * 16;
          ++nt;
        }
      }
      for (int64_t cb = 0; cb < cblocks; ++cb) {
        const int64_t c0 = cb * 16;
        const __mmask16 k = C - c0 >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (C - c0)) - 1u);
        __m512i ae = _mm512_setzero_si512(), ao = ae;
        const int32_t* we = w + cb * T * 16;
        const int32_t* wo = wodd + cb * T * 16;
        for (int i = 0; i < nt; ++i) {
          const __m512i x = load16_widen<KIND>(in, offs[i] + c0, k);
          ae = _mm512_add_epi64(ae, _mm512_mul_epi32(x, _mm512_load_si512(we + widx[i])));
          ao = _mm512_add_epi64(ao, _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_load_si512(wo + widx[i])));
        }
        _mm512_storeu_si512(acc + c0, _mm512_permutex2var_epi64(ae, lo_idx, ao));
        _mm512_storeu_si512(acc + c0 + 8, _mm512_permutex2var_epi64(ae, hi_idx, ao));
      }
      epilogue16_row_avx512(acc, 0, C, B, E, static_cast<uint8_t*>(out) + static_cast<size_t>(((n * OH + oh) * OW + ow) * C) * esz);
    }
  }
}

}  // namespace

void dwconv16_rows_avx512(const Dw16Geom& g, const int32_t* w, const int32_t* wodd, const Packed16& B,
                          const Epilogue& E, const void* in, void* out, int64_t* acc, int64_t r0, int64_t r1) {
  switch (g.in_kind) {
    case 0: dw16_rows<0>(g, w, wodd, B, E, in, out, acc, r0, r1); break;
    case 1: dw16_rows<1>(g, w, wodd, B, E, in, out, acc, r0, r1); break;
    case 2: dw16_rows<2>(g, w, wodd, B, E, in, out, acc, r0, r1); break;
    default: dw16_rows<3>(g, w, wodd, B, E, in, out, acc, r0, r1); break;
  }
}

}  // namespace bbits::kernels::simd
