// bbits SIMD kernels — AVX-512 VNNI integer GEMM / GEMV microkernels
// (vpdpbusd: u8 activations x s8 weights -> s32), weights at 8, 4 or 2 bits.
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni; only
// called when run-time detection allows Isa::AVX512_VNNI.
#include <immintrin.h>

#include <algorithm>

#include "bbits/kernels/thread_pool.h"
#include "avx512_store.h"
#include "simd_internal.h"

namespace bbits::kernels::simd {
namespace {

// acc + dot4(u8 a, s8 b) per 32-bit lane (vpdpbusd). Written as inline asm
// tied to the accumulator: with the intrinsic GCC 12 copies (and spills) the
// accumulators of an unrolled tile around every dot product.
inline __m512i dp(__m512i acc, __m512i a, __m512i b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

inline __m512i bcast32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// The 16-lane requantization of the 8-bit epilogues for channels [oc, oc + 16):
// a (int32, corrections applied) times m in 64 bits, even lanes and odd
// lanes (moved down) apart, + round, >> shift (Epilogue's eo layout), blended
// back to 32 bits. With multipliers above 1 (Epilogue::small_mult false) a
// 64-bit lane may not fit int32, so a is first clamped in 32 bits to the
// range outside of which the output clamps anyway (Epilogue::pre_lo /
// pre_hi; exact: the final clamp gives the same bytes).
struct Requant16 {
  __m512i mu, muo, re, ro, se, so;
  bool pre;  // multipliers above 1: a clamped to [plo, phi] first (Epilogue::pre_lo / pre_hi)
  __m512i plo, phi;
  __attribute__((always_inline)) Requant16(const Epilogue& E, int64_t oc)
      : mu(_mm512_loadu_si512(E.mult32.get() + oc)),
        muo(_mm512_srli_epi64(mu, 32)),
        re(_mm512_loadu_si512(E.round_eo.get() + oc)),
        ro(_mm512_loadu_si512(E.round_eo.get() + oc + 8)),
        se(_mm512_loadu_si512(E.shift_eo.get() + oc)),
        so(_mm512_loadu_si512(E.shift_eo.get() + oc + 8)),
        pre(!E.small_mult),
        plo(pre ? _mm512_loadu_si512(E.pre_lo.get() + oc) : _mm512_setzero_si512()),
        phi(pre ? _mm512_loadu_si512(E.pre_hi.get() + oc) : _mm512_setzero_si512()) {}
  __attribute__((always_inline)) __m512i operator()(__m512i a) const {
    if (pre) a = _mm512_min_epi32(_mm512_max_epi32(a, plo), phi);
    __m512i pe = _mm512_mul_epi32(a, mu);
    __m512i po = _mm512_mul_epi32(_mm512_shuffle_epi32(a, _MM_PERM_DDBB), muo);
    pe = _mm512_srav_epi64(_mm512_add_epi64(pe, re), se);
    po = _mm512_srav_epi64(_mm512_add_epi64(po, ro), so);
    return _mm512_mask_blend_epi32(static_cast<__mmask16>(0xAAAA), pe, _mm512_slli_epi64(po, 32));
  }
};

// Where a tile's accumulators go: straight through the fused 16-lane
// requantization into 8-bit outputs (the common case), or to `tile` for the
// generic epilogue (16-bit / float outputs, wide sums).
struct Sink {
  const Epilogue* E = nullptr;
  const int32_t* rowcorr = nullptr;  // per tile row
  int64_t oc0 = 0, n = 0;            // channels of the panel that exist
  uint8_t* out = nullptr;            // row 0 of the tile, channel 0
  int64_t ldo = 0;                   // bytes between output rows
  bool fused = false;
  int32_t* tile = nullptr;           // [4][64] when !fused
};

template <int MR, int NB>
__attribute__((always_inline)) inline void finish(__m512i (&acc)[MR][NB], const Sink& s) {
  if (!s.fused) {
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) _mm512_store_si512(s.tile + m * 64 + b * 16, acc[m][b]);
    return;
  }
  const Epilogue& E = *s.E;
  const __m512i lo = _mm512_set1_epi32(static_cast<int32_t>(E.lo)), hi = _mm512_set1_epi32(static_cast<int32_t>(E.hi));
#pragma GCC unroll 16
  for (int b = 0; b < NB; ++b) {
    const int64_t oc = s.oc0 + b * 16;
    const int64_t left = s.n - b * 16;
    if (left <= 0) break;
    const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
    const __m512i ct = _mm512_load_si512(E.colterm.get() + oc);
    const Requant16 rq(E, oc);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512i a = _mm512_sub_epi32(_mm512_add_epi32(acc[m][b], ct), _mm512_set1_epi32(s.rowcorr[m]));
      __m512i r = rq(a);
      r = _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
      _mm512_mask_cvtepi32_storeu_epi8(s.out + m * s.ldo + oc, k, r);
    }
  }
}

// finish() for the GEMM tiles (conv / batched fc) with 8-bit fused outputs:
// requantize every accumulator in place (parameters loaded once per block;
// lanes past OC compute zeros from the zero-padded tables), then per row pack
// the blocks to bytes (saturating packs = clamp to the 8-bit type, then clamp
// to [lo, hi] on bytes) and store the row's 16..64 bytes at once (whole
// stores for 16 / 32 / 48 / 64 channels, else one masked store): the masked per-vector byte stores
// of finish() are slow on Zen 4, and a short reduction (K = 64) spends as much
// time there as in the dot products. 8-bit weights have no row correction.
template <int MR, int NB, int BITS>
__attribute__((always_inline)) inline void finish_tile(__m512i (&acc)[MR][NB], const Sink& s) {
  {
    if (!s.fused) {
      finish<MR, NB>(acc, s);
      return;
    }
    const Epilogue& E = *s.E;
    if (E.cround_eo && E.shift_ge32) {
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) {
        const int64_t oc = s.oc0 + b * 16;
        const __m512i mu = _mm512_load_si512(E.mult32.get() + oc);
        const __m512i muo = _mm512_srli_epi64(mu, 32);
        const __m512i re = _mm512_load_si512(E.cround_eo.get() + oc);
        const __m512i ro = _mm512_load_si512(E.cround_eo.get() + oc + 8);
        const __m512i se = _mm512_load_si512(E.shift_eo32.get() + oc);
        const __m512i so = _mm512_load_si512(E.shift_eo32.get() + oc + 8);
#pragma GCC unroll 4
        for (int m = 0; m < MR; ++m) {
          __m512i a = acc[m][b];
          if constexpr (BITS != 8) a = _mm512_sub_epi32(a, _mm512_set1_epi32(s.rowcorr[m]));
          __m512i pe = _mm512_mul_epi32(a, mu);
          __m512i po = _mm512_mul_epi32(_mm512_shuffle_epi32(a, _MM_PERM_DDBB), muo);
          pe = _mm512_srav_epi64(_mm512_add_epi64(pe, re), se);
          po = _mm512_srav_epi64(_mm512_add_epi64(po, ro), so);
          acc[m][b] = _mm512_mask_blend_epi32(static_cast<__mmask16>(0xAAAA), pe, po);
        }
      }
    } else {
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) {
        const int64_t oc = s.oc0 + b * 16;
        const __m512i ct = _mm512_load_si512(E.colterm.get() + oc);
        const Requant16 rq(E, oc);
#pragma GCC unroll 4
        for (int m = 0; m < MR; ++m) {
          __m512i a = _mm512_add_epi32(acc[m][b], ct);
          if constexpr (BITS != 8) a = _mm512_sub_epi32(a, _mm512_set1_epi32(s.rowcorr[m]));
          acc[m][b] = rq(a);
        }
      }
    }
    const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const bool sgn = E.kind == OutKind::S8;
    const auto lo8 = static_cast<char>(E.lo), hi8 = static_cast<char>(E.hi);
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
      uint8_t* o = s.out + m * s.ldo + s.oc0;
      if constexpr (NB >= 3) {
        const __m512i p01 = _mm512_packs_epi32(acc[m][0], acc[m][1]);
        const __m512i p23 = _mm512_packs_epi32(acc[m][2], NB == 4 ? acc[m][NB - 1] : _mm512_setzero_si512());
        __m512i v;
        if (sgn) {
          v = _mm512_permutexvar_epi32(perm, _mm512_packs_epi16(p01, p23));
          v = _mm512_min_epi8(_mm512_max_epi8(v, _mm512_set1_epi8(lo8)), _mm512_set1_epi8(hi8));
        } else {
          v = _mm512_permutexvar_epi32(perm, _mm512_packus_epi16(p01, p23));
          v = _mm512_min_epu8(_mm512_max_epu8(v, _mm512_set1_epi8(lo8)), _mm512_set1_epi8(hi8));
        }
        if (s.n == 64) {
          _mm512_storeu_si512(o, v);
        } else if (s.n == 48) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm512_castsi512_si256(v));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 32), _mm512_extracti32x4_epi32(v, 2));
        } else {
          _mm512_mask_storeu_epi8(o, (__mmask64{1} << s.n) - 1, v);  // one masked store per row
        }
      } else {
        const __m512i p = _mm512_packs_epi32(acc[m][0], NB == 2 ? acc[m][NB - 1] : _mm512_setzero_si512());
        __m256i v;
        if (sgn) {
          v = _mm512_castsi512_si256(_mm512_permutexvar_epi32(perm, _mm512_packs_epi16(p, p)));
          v = _mm256_min_epi8(_mm256_max_epi8(v, _mm256_set1_epi8(lo8)), _mm256_set1_epi8(hi8));
        } else {
          v = _mm512_castsi512_si256(_mm512_permutexvar_epi32(perm, _mm512_packus_epi16(p, p)));
          v = _mm256_min_epu8(_mm256_max_epu8(v, _mm256_set1_epi8(lo8)), _mm256_set1_epi8(hi8));
        }
        if (s.n == 32) _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), v);
        else if (s.n == 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm256_castsi256_si128(v));
        else _mm256_mask_storeu_epi8(o, (__mmask32{1} << s.n) - 1, v);
      }
    }
  }
}

// GEMV over one panel, TopRaw encoding: field j of every byte is masked in
// place and accumulated separately (scale 2^(j*BITS)); no shifts in the loop.
template <int NB, int BITS>
void gemv_panel(const uint8_t* __restrict wp, const uint8_t* __restrict x, int64_t ng, const Sink& sink) {
  constexpr int F = 8 / BITS;
  constexpr int KG = 4 * F;
  constexpr int U = F == 1 ? 2 : F;  // accumulator sets per block (W8: two for latency)
  __m512i acc[NB][U];
  #pragma GCC unroll 16
  for (int b = 0; b < NB; ++b)
    #pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[b][u] = _mm512_setzero_si512();
  if constexpr (F == 1) {
    int64_t g = 0;
    for (; g + 2 <= ng; g += 2) {
      const __m512i x0 = bcast32(x + g * 4);
      const __m512i x1 = bcast32(x + g * 4 + 4);
      const uint8_t* wg = wp + g * NB * 64;
      #pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) {
        acc[b][0] = dp(acc[b][0], x0, _mm512_load_si512(wg + b * 64));
        acc[b][1] = dp(acc[b][1], x1, _mm512_load_si512(wg + (NB + b) * 64));
      }
    }
    if (g < ng) {
      const __m512i x0 = bcast32(x + g * 4);
      const uint8_t* wg = wp + g * NB * 64;
      #pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) acc[b][0] = dp(acc[b][0], x0, _mm512_load_si512(wg + b * 64));
    }
    __m512i res[1][NB];
#pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) res[0][b] = _mm512_add_epi32(acc[b][0], acc[b][1]);
    finish<1, NB>(res, sink);
  } else {
    __m512i mask[F];
    #pragma GCC unroll 16
    for (int j = 0; j < F; ++j) mask[j] = _mm512_set1_epi8(static_cast<char>(((1 << BITS) - 1) << (j * BITS)));
    for (int64_t g = 0; g < ng; ++g) {
      __m512i xb[F];
      #pragma GCC unroll 16
      for (int j = 0; j < F; ++j) xb[j] = bcast32(x + g * KG + 4 * j);
      const uint8_t* wg = wp + g * NB * 64;
      #pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) {
        const __m512i v = _mm512_load_si512(wg + b * 64);
        #pragma GCC unroll 16
        for (int j = 0; j < F; ++j) acc[b][j] = dp(acc[b][j], xb[j], _mm512_and_si512(v, mask[j]));
      }
    }
    __m512i res[1][NB];
#pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) {
      __m512i r = acc[b][0];
      for (int j = 1; j < F; ++j) r = _mm512_add_epi32(r, _mm512_srai_epi32(acc[b][j], j * BITS));
      res[0][b] = r;
    }
    finish<1, NB>(res, sink);
  }
}

// GEMV over P full panels (NB = 4) at once, TopRaw encoding as gemv_panel: P
// independent weight streams. One core's L3 / memory read rate grows with the
// streams in flight (single-stream reads reach ~70% of it on Zen 4). P * 4 *
// fields accumulators: up to 4 streams at 8 and at 4 bits (32 accumulators at
// 4 bits with P = 4: measured 70 to 78% of the 4-stream read rate at 11008x4096
// against 63 to 66% with 2 streams, and the same speed at 4096x4096).
//
// FAR: the layer's weights are too large to stay in this core's share of the
// L3 between runs (kFarBytes), so they stream from DRAM, and software
// prefetches into L2 help: 4-bit 11008x4096 (22.5 MB) measured 73 to 105%
// (median 81%) of the 4-stream read rate over seven runs with them, 55 to 83%
// (median 70%) without; 8-bit 11008x4096 the same either way; on L3-resident
// weights (4-bit 4096x4096, 8.4 MB) they cost 13%, hence the threshold.
constexpr size_t kFarBytes = size_t{12} << 20;
constexpr int64_t kFarAhead = 8192;
template <int P, int BITS, bool FAR>
void gemv_streams(const uint8_t* const* w, const uint8_t* __restrict x, int64_t ng, const Sink* s) {
  constexpr int F = 8 / BITS;
  constexpr int KG = 4 * F;
  __m512i acc[P][4][F];
#pragma GCC unroll 16
  for (int q = 0; q < P; ++q)
#pragma GCC unroll 4
    for (int b = 0; b < 4; ++b)
#pragma GCC unroll 4
      for (int j = 0; j < F; ++j) acc[q][b][j] = _mm512_setzero_si512();
  __m512i mask[F];
#pragma GCC unroll 4
  for (int j = 0; j < F; ++j) mask[j] = _mm512_set1_epi8(static_cast<char>(((1 << BITS) - 1) << (j * BITS)));
  const uint8_t* wq[P];
#pragma GCC unroll 16
  for (int q = 0; q < P; ++q) wq[q] = w[q];
  for (int64_t g = 0; g < ng; ++g) {
    __m512i xb[F];
#pragma GCC unroll 4
    for (int j = 0; j < F; ++j) xb[j] = bcast32(x + g * KG + 4 * j);
    if constexpr (FAR) {
      // Weights that come from DRAM: ask for each stream's lines kFarAhead
      // bytes ahead into L2, beyond what the hardware prefetcher keeps in
      // flight for P streams.
#pragma GCC unroll 16
      for (int q = 0; q < P; ++q)
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b)
          _mm_prefetch(reinterpret_cast<const char*>(wq[q] + g * 256 + kFarAhead + b * 64), _MM_HINT_T1);
    }
#pragma GCC unroll 16
    for (int q = 0; q < P; ++q)
#pragma GCC unroll 4
      for (int b = 0; b < 4; ++b) {
        const __m512i v = _mm512_load_si512(wq[q] + g * 256 + b * 64);
        if constexpr (F == 1) {
          acc[q][b][0] = dp(acc[q][b][0], xb[0], v);
        } else {
#pragma GCC unroll 4
          for (int j = 0; j < F; ++j) acc[q][b][j] = dp(acc[q][b][j], xb[j], _mm512_and_si512(v, mask[j]));
        }
      }
  }
#pragma GCC unroll 16
  for (int q = 0; q < P; ++q) {
    __m512i r[1][4];
#pragma GCC unroll 4
    for (int b = 0; b < 4; ++b) {
      __m512i v = acc[q][b][0];
#pragma GCC unroll 4
      for (int j = 1; j < F; ++j) v = _mm512_add_epi32(v, _mm512_srai_epi32(acc[q][b][j], j * BITS));
      r[0][b] = v;
    }
    finish<1, 4>(r, s[q]);
  }
}

// GEMM tile MR rows x NB blocks, Offset encoding: fields shifted down and masked
// once per weight vector, reused by MR rows.
// A rows come as `nseg` segments of seg_groups * KG bytes each (segs[m * nseg
// + s]): one segment per row for an im2col / direct A, one per kernel row for
// the implicit (no im2col) convolution, where a segment points into the input.
template <int MR, int NB, int BITS>
void gemm_tile(const uint8_t* __restrict wp, const uint8_t* const* segs, int nseg, int64_t seg_groups,
               const Sink& sink) {
  constexpr int F = 8 / BITS;
  constexpr int KG = 4 * F;
  __m512i acc[MR][NB];
  #pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
    #pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) acc[m][b] = _mm512_setzero_si512();
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1));
  for (int sg = 0; sg < nseg; ++sg) {
    const uint8_t* p[MR];
    #pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) p[m] = segs[m * nseg + sg];
    const uint8_t* wseg = wp + sg * seg_groups * NB * 64;
    for (int64_t g = 0; g < seg_groups; ++g) {
      const uint8_t* wg = wseg + g * NB * 64;
      #pragma GCC unroll 16
      for (int j = 0; j < F; ++j) {
        __m512i w[NB];
        #pragma GCC unroll 16
        for (int b = 0; b < NB; ++b) {
          const __m512i v = _mm512_load_si512(wg + b * 64);
          if constexpr (F == 1) {
            w[b] = v;
          } else {
            w[b] = _mm512_and_si512(j == 0 ? v : _mm512_srli_epi16(v, j * BITS), mask);
          }
        }
        #pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) {
          const __m512i xb = bcast32(p[m] + g * KG + 4 * j);
          #pragma GCC unroll 16
          for (int b = 0; b < NB; ++b) acc[m][b] = dp(acc[m][b], xb, w[b]);
        }
      }
    }
  }
  finish_tile<MR, NB, BITS>(acc, sink);
}

using GemvFn = void (*)(const uint8_t*, const uint8_t*, int64_t, const Sink&);
using TileFn = void (*)(const uint8_t*, const uint8_t* const*, int, int64_t, const Sink&);

template <int BITS>
GemvFn gemv_fn(int nb) {
  switch (nb) {
    case 1: return gemv_panel<1, BITS>;
    case 2: return gemv_panel<2, BITS>;
    case 3: return gemv_panel<3, BITS>;
    default: return gemv_panel<4, BITS>;
  }
}
GemvFn gemv_fn(int bits, int nb) {
  return bits == 8 ? gemv_fn<8>(nb) : bits == 4 ? gemv_fn<4>(nb) : gemv_fn<2>(nb);
}

using StreamsFn = void (*)(const uint8_t* const*, const uint8_t*, int64_t, const Sink*);
template <int BITS, bool FAR>
StreamsFn streams_fn(int P) {
  return P == 4 ? gemv_streams<4, BITS, FAR> : P == 3 ? gemv_streams<3, BITS, FAR> : gemv_streams<2, BITS, FAR>;
}
StreamsFn streams_fn(int bits, int P, bool far) {
  if (bits == 4) return far ? streams_fn<4, true>(P) : streams_fn<4, false>(P);
  return far ? streams_fn<8, true>(P) : streams_fn<8, false>(P);
}

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
  switch (mr) {
    case 1: return tile_fn_nb<1, BITS>(nb);
    case 2: return tile_fn_nb<2, BITS>(nb);
    case 3: return tile_fn_nb<3, BITS>(nb);
    default: return tile_fn_nb<4, BITS>(nb);
  }
}
TileFn tile_fn(int bits, int mr, int nb) {
  return bits == 8 ? tile_fn_mr<8>(mr, nb) : bits == 4 ? tile_fn_mr<4>(mr, nb) : tile_fn_mr<2>(mr, nb);
}

// Corrections, bias, requantization, clamp and store of one row segment of n
// channels starting at oc0 (n <= 64).
void epilogue_row(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E, void* out_row) {
  if (E.kind == OutKind::F32 || E.wide) {
    epilogue_row_scalar(acc, oc0, n, rowcorr, E, out_row);
    return;
  }
  if (E.kind == OutKind::U8 || E.kind == OutKind::S8) {
    // 16 lanes at a time: vpmuldq on even and odd 32-bit lanes, 64-bit round
    // and shift, blend back, clamp in 32 bits (values fit: multipliers <= 1,
    // or the sum clamped to [pre_lo, pre_hi] first, see Requant16).
    const __m512i rc = _mm512_set1_epi32(rowcorr);
    const __m512i lo = _mm512_set1_epi32(static_cast<int32_t>(E.lo)), hi = _mm512_set1_epi32(static_cast<int32_t>(E.hi));
    for (int64_t c = 0; c < n; c += 16) {
      const int64_t oc = oc0 + c;
      const __mmask16 k = n - c >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - c)) - 1u);
      __m512i a = _mm512_loadu_si512(acc + c);
      a = _mm512_sub_epi32(_mm512_add_epi32(a, _mm512_loadu_si512(E.colterm.get() + oc)), rc);
      __m512i r = Requant16(E, oc)(a);
      r = _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
      _mm512_mask_cvtepi32_storeu_epi8(static_cast<uint8_t*>(out_row) + oc, k, r);
    }
    return;
  }
  const __m256i rc = _mm256_set1_epi32(rowcorr);
  const __m512i lo = _mm512_set1_epi64(E.lo), hi = _mm512_set1_epi64(E.hi);
  for (int64_t c = 0; c < n; c += 8) {
    const int64_t oc = oc0 + c;
    const __mmask8 k = mask8(n - c);
    __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + c));
    a = _mm256_sub_epi32(_mm256_add_epi32(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(E.colterm.get() + oc))),
                         rc);
    __m512i p = _mm512_mul_epi32(_mm512_cvtepi32_epi64(a), _mm512_loadu_si512(E.mult.get() + oc));
    p = _mm512_add_epi64(p, _mm512_loadu_si512(E.round.get() + oc));
    p = _mm512_srav_epi64(p, _mm512_loadu_si512(E.shift.get() + oc));
    p = _mm512_min_epi64(_mm512_max_epi64(p, lo), hi);
    store_clamped_i64(E.kind, out_row, oc, k, p);
  }
}

}  // namespace

void gemm_avx512vnni(const GemmCall& c) {
  const PackedB& B = *c.B;
  const Epilogue& E = *c.E;
  const size_t esz = out_elem_bytes(E.kind);
  alignas(64) int32_t tile[4 * 64];
  const int64_t pw = static_cast<int64_t>(B.nb_max) * B.lanes;
  Sink s;
  s.E = &E;
  s.fused = !E.wide && (E.kind == OutKind::U8 || E.kind == OutKind::S8);
  s.tile = tile;
  s.ldo = c.ldo * static_cast<int64_t>(esz);
  for (int64_t p = c.p0; p < c.p1; ++p) {
    const int nb = B.panel_blocks(p);
    const uint8_t* wp = B.panel(p);
    const int64_t oc0 = p * pw;
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(nb) * B.lanes, B.OC - oc0);
    s.oc0 = oc0;
    s.n = n;
    // Full panels run together as parallel weight streams (8 and 4 bits; the
    // 2-bit GEMV is bound by vpdpbusd, not by the read rate).
    int P = 1;
    if (B.enc == WEnc::TopRaw && s.fused && nb == 4 && B.bits >= 4) {
      while (P < 4 && p + P < c.p1 && B.panel_blocks(p + P) == 4) ++P;
    }
    if (P > 1) {
      Sink ss[4];
      const uint8_t* ws[4];
      for (int q = 0; q < P; ++q) {
        ss[q] = s;
        ss[q].oc0 = oc0 + q * pw;
        ss[q].n = std::min<int64_t>(pw, B.OC - ss[q].oc0);
        ws[q] = B.panel(p + q);
      }
      for (int64_t m = 0; m < c.M; ++m) {
        for (int q = 0; q < P; ++q) {
          ss[q].rowcorr = c.rowcorr + m;
          ss[q].out = static_cast<uint8_t*>(c.out) + m * s.ldo;
        }
        const uint8_t* x = c.A + m * c.lda;
        streams_fn(B.bits, P, B.bytes > kFarBytes)(ws, x, B.ngroups, ss);
      }
      p += P - 1;
    } else if (B.enc == WEnc::TopRaw) {
      const GemvFn fn = gemv_fn(B.bits, nb);
      for (int64_t m = 0; m < c.M; ++m) {
        s.rowcorr = c.rowcorr + m;
        s.out = static_cast<uint8_t*>(c.out) + m * s.ldo;
        fn(wp, c.A + m * c.lda, B.ngroups, s);
        if (!s.fused) epilogue_row(tile, oc0, n, c.rowcorr[m], E, s.out);
      }
    } else {
      const uint8_t* rows[4];
      for (int64_t m0 = 0; m0 < c.M; m0 += 4) {
        const int mr = static_cast<int>(std::min<int64_t>(4, c.M - m0));
        s.rowcorr = c.rowcorr + m0;
        s.out = static_cast<uint8_t*>(c.out) + m0 * s.ldo;
        if (c.segs != nullptr) {
          tile_fn(B.bits, mr, nb)(wp, c.segs + m0 * c.nseg, c.nseg, c.seg_groups, s);
        } else {
          for (int r = 0; r < mr; ++r) rows[r] = c.A + (m0 + r) * c.lda;
          tile_fn(B.bits, mr, nb)(wp, rows, 1, B.ngroups, s);
        }
        if (!s.fused)
          for (int r = 0; r < mr; ++r) epilogue_row(tile + r * 64, oc0, n, c.rowcorr[m0 + r], E, s.out + r * s.ldo);
      }
    }
  }
}

void epilogue_rows_avx512(const int32_t* acc, int64_t M, const Epilogue& E, void* out, ThreadPool* pool) {
  const size_t esz = out_elem_bytes(E.kind);
  const int64_t OC = E.OC;
  parallel_for(
      pool, M,
      [&](int64_t b, int64_t e, int) {
        for (int64_t m = b; m < e; ++m)
          for (int64_t oc0 = 0; oc0 < OC; oc0 += 64)
            epilogue_row(acc + m * OC + oc0, oc0, std::min<int64_t>(64, OC - oc0), 0, E,
                         static_cast<uint8_t*>(out) + m * OC * esz);
      },
      16);
}

void epilogue_row_avx512(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                         void* out_row) {
  epilogue_row(acc, oc0, n, rowcorr, E, out_row);
}

namespace {
inline __mmask64 bytes_mask(int64_t n) { return n >= 64 ? ~__mmask64{0} : ((__mmask64{1} << n) - 1); }

// dst[0, n) = src[0, n) (xor 0x80 when flip). The loads are masked (never
// past the input); the stores are whole 64-byte vectors (masked stores are
// slow on Zen 4): up to 63 bytes past dst + n are clobbered, which the next
// run, the next row or the 64-byte slack after the block overwrite / absorb.
// Loads are whole vectors while 64 bytes remain before `end` (masked loads
// that cross a cache line stall on Zen 4), masked only near the end.
inline void copy_run(uint8_t* dst, const uint8_t* src, int64_t n, __m512i flip, const uint8_t* end) {
  for (int64_t i = 0; i < n; i += 64) {
    const __m512i v = src + i + 64 <= end ? _mm512_loadu_si512(src + i)
                                          : _mm512_maskz_loadu_epi8(bytes_mask(std::min<int64_t>(n - i, end - (src + i))), src + i);
    _mm512_storeu_si512(dst + i, _mm512_xor_si512(v, flip));
  }
}
inline void fill_run(uint8_t* dst, int64_t n, __m512i v) {
  for (int64_t i = 0; i < n; i += 64) _mm512_storeu_si512(dst + i, v);
}
}  // namespace

void im2col_avx512(const Im2col& g, const uint8_t* in, int64_t m0, int64_t mb, uint8_t* A) {
  const __m512i flip = g.sgn ? _mm512_set1_epi8(static_cast<char>(0x80)) : _mm512_setzero_si512();
  const __m512i pad = flip;  // the value 0 in the +128 domain
  const __m512i zero = _mm512_setzero_si512();
  const int64_t C = g.C;
  const uint8_t* end = in + g.N * g.H * g.W * C;
  int64_t n = m0 / (g.OH * g.OW), rem = m0 % (g.OH * g.OW);
  int64_t oh = rem / g.OW, ow = rem % g.OW;
  for (int64_t r = 0; r < mb; ++r) {
    uint8_t* dst = A + r * g.Kp;
    int64_t k = 0;
    const int64_t iw0 = ow * g.sw - g.pl;
    const int64_t iw_last = iw0 + (g.KW - 1) * g.dw;
    const bool w_inside = g.dw == 1 && iw0 >= 0 && iw_last < g.W;
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      const int64_t ih = oh * g.sh - g.pt + kh * g.dh;
      if (ih < 0 || ih >= g.H) {
        fill_run(dst + k, g.KW * C, pad);
        k += g.KW * C;
        continue;
      }
      const uint8_t* rowp = in + (n * g.H + ih) * g.W * C;
      if (w_inside) {
        copy_run(dst + k, rowp + iw0 * C, g.KW * C, flip, end);
        k += g.KW * C;
        continue;
      }
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t iw = iw0 + kw * g.dw;
        if (iw < 0 || iw >= g.W) fill_run(dst + k, C, pad);
        else copy_run(dst + k, rowp + iw * C, C, flip, end);
        k += C;
      }
    }
    fill_run(dst + k, g.Kp - k, zero);
    if (++ow == g.OW) {
      ow = 0;
      if (++oh == g.OH) {
        oh = 0;
        ++n;
      }
    }
  }
}

void rowcorr_segs_avx512(const PackedB& B, const uint8_t* const* segs, int nseg, int64_t seg_bytes, int64_t M,
                         int32_t* rowcorr) {
  const int32_t off = B.offset();
  if (off == 0 || B.enc != WEnc::Offset) {
    std::fill(rowcorr, rowcorr + M, 0);
    return;
  }
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t m = 0; m < M; ++m) {
    __m512i sum = _mm512_setzero_si512();
    for (int sg = 0; sg < nseg; ++sg) {
      const uint8_t* a = segs[m * nseg + sg];
      for (int64_t k = 0; k < seg_bytes; k += 64) {
        const int64_t left = seg_bytes - k;
        const __mmask64 km = left >= 64 ? ~__mmask64{0} : ((__mmask64{1} << left) - 1);
        sum = _mm512_add_epi64(sum, _mm512_sad_epu8(_mm512_maskz_loadu_epi8(km, a + k), zero));
      }
    }
    rowcorr[m] = static_cast<int32_t>(static_cast<uint32_t>(_mm512_reduce_add_epi64(sum)) * static_cast<uint32_t>(off));
  }
}

void rowcorr_avx512(const PackedB& B, const uint8_t* A, int64_t lda, int64_t M, int32_t* rowcorr) {
  const int32_t off = B.offset();
  if (off == 0) {
    std::fill(rowcorr, rowcorr + M, 0);
    return;
  }
  // Byte mask of the offset positions within 64 bytes (kgroup divides 64).
  alignas(64) uint8_t pm[64];
  for (int i = 0; i < 64; ++i) pm[i] = B.offset_position(i) ? 0xff : 0x00;
  const __m512i posmask = _mm512_load_si512(pm);
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t m = 0; m < M; ++m) {
    const uint8_t* a = A + m * lda;
    __m512i s = _mm512_setzero_si512();
    int64_t k = 0;
    for (; k + 64 <= B.Kp; k += 64)
      s = _mm512_add_epi64(s, _mm512_sad_epu8(_mm512_and_si512(_mm512_loadu_si512(a + k), posmask), zero));
    if (k < B.Kp) {
      const __mmask64 km = _cvtu64_mask64((~uint64_t{0}) >> (64 - (B.Kp - k)));
      s = _mm512_add_epi64(s, _mm512_sad_epu8(_mm512_and_si512(_mm512_maskz_loadu_epi8(km, a + k), posmask), zero));
    }
    rowcorr[m] = static_cast<int32_t>(static_cast<uint32_t>(_mm512_reduce_add_epi64(s)) * static_cast<uint32_t>(off));
  }
}

}  // namespace bbits::kernels::simd
