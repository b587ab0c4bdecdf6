// bbits kernels — the 8-bit GEMM / GEMV family's ISA code, one template over
// the ISA tag (scheme in gemm8.h). Compiled once per ISA (kernels/CMakeLists.txt:
// AVX2, AVX-512 VNNI, NEON, NEON dot product); reached only after run-time
// CPU detection.
//
// Tiles: MR rows x NB = 4 blocks of L channels (L int32 lanes per vector):
// AVX-512 VNNI 4 x 64, AVX2 2 x 32, NEON dot product 4 x 16, NEON 2 x 16.
// 8-bit and 16-bit outputs are requantized straight from the accumulators
// (requant.h) and stored a row at a time; float outputs and wide sums go
// through an int32 tile and the scalar epilogue.
#include <algorithm>

#include "gemm8.h"
#include "simd/requant.h"

namespace bbits::kernels::simd {
namespace {

template <class Tag>
struct Types {
  using O = Ops<Tag>;
  using i32 = typename O::i32;
  using u8 = typename O::u8;
  using u16 = xsimd::batch<uint16_t, typename O::arch>;
  using i64 = typename O::i64;
  using Acc = typename O::Acc;
  static constexpr int L = O::kLanes;   // channels per block
  static constexpr int VB = O::kBytes;  // bytes per weight vector of a block
  static constexpr int NB = kGemm8Blocks;
  static constexpr Gemm8Traits T = gemm8_traits(Tag::isa);
  static_assert(T.lanes == L && T.signed_bytes == O::kSignedBytes, "gemm8_traits disagree with Ops");
};

// Where a tile's accumulators go: through the requantization into 8- or
// 16-bit outputs (fused), or to `tile` ([MR][NB * L] int32) for the scalar
// epilogue (float outputs, wide sums).
struct Sink {
  const Epilogue* E = nullptr;
  const int32_t* rowcorr = nullptr;  // per tile row
  int64_t oc0 = 0, n = 0;            // channels of the panel that exist
  uint8_t* out = nullptr;            // row 0 of the tile, channel 0
  int64_t ldo = 0;                   // bytes between output rows
  bool fused = false;
  int32_t* tile = nullptr;
};

// Requantization of MR rows x NBk blocks of sums in place (SUB: subtract the
// row corrections of offset-encoded weights). Lanes past OC compute zeros
// from the zero-padded tables.
template <class Tag, int MR, int NBk, bool SUB, bool FOLDED>
__attribute__((always_inline)) inline void requant_tile(typename Types<Tag>::i32 (&r)[MR][NBk], const Epilogue& E,
                                                        const int32_t* rowcorr, int64_t oc0) {
  using Y = Types<Tag>;
  using i32 = typename Y::i32;
#pragma GCC unroll 4
  for (int b = 0; b < NBk; ++b) {
    const int64_t oc = oc0 + b * Y::L;
    const RequantVec<Tag, FOLDED> rq(E.rq, oc);
    i32 ct(0);
    if constexpr (!FOLDED) ct = i32::load_aligned(E.colterm.get() + oc);
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
      i32 a = r[m][b];
      if constexpr (!FOLDED) a = a + ct;
      if constexpr (SUB) a = a - i32(rowcorr[m]);
      r[m][b] = requant<Tag>(a, rq);
    }
  }
}

// Requantization and store of MR rows x NBk blocks of sums (requant_tile),
// or the sums to the tile for the scalar epilogue.
template <class Tag, int MR, int NBk, bool SUB>
__attribute__((always_inline)) inline void finish(typename Types<Tag>::i32 (&r)[MR][NBk], const Sink& s) {
  using Y = Types<Tag>;
  using i32 = typename Y::i32;
  constexpr int L = Y::L;
  if (!s.fused) {
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
      for (int b = 0; b < NBk; ++b) r[m][b].store_aligned(s.tile + m * Y::NB * L + b * L);
    return;
  }
  const Epilogue& E = *s.E;
  if constexpr (Y::O::kEvenOdd) {
    if (E.rq.folded) requant_tile<Tag, MR, NBk, SUB, true>(r, E, s.rowcorr, s.oc0);
    else requant_tile<Tag, MR, NBk, SUB, false>(r, E, s.rowcorr, s.oc0);
  } else {
    requant_tile<Tag, MR, NBk, SUB, false>(r, E, s.rowcorr, s.oc0);
  }
  // Locals: the byte stores could alias E otherwise (reloads per row).
  const bool sgn = E.kind == OutKind::S8 || E.kind == OutKind::S16;
  const auto lo32 = static_cast<int32_t>(E.lo), hi32 = static_cast<int32_t>(E.hi);
  uint8_t* const out = s.out + s.oc0;
  const int64_t n = s.n, ldo = s.ldo;
  if (E.kind == OutKind::U8 || E.kind == OutKind::S8) {
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m)
      Y::O::template store_u8<NBk>(out + m * ldo, r[m][0], r[m][std::min(1, NBk - 1)], r[m][std::min(2, NBk - 1)],
                                   r[m][NBk - 1], n, sgn, lo32, hi32);
    return;
  }
  const i32 lo(lo32), hi(hi32);
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int b = 0; b < NBk; ++b)  // (a loop that stops at s.n would index r at run time: r would live in memory)
      if (b * L < s.n)
        Y::O::store_u16(reinterpret_cast<uint16_t*>(s.out + m * s.ldo) + s.oc0 + b * L,
                        xsimd::min(xsimd::max(r[m][b], lo), hi), std::min<int64_t>(L, s.n - b * L));
}

// GEMV over one panel, TopRaw encoding: field j of every byte is masked in
// place and accumulated separately (scale 2^(j*BITS)); no shifts in the loop.
template <class Tag, int NBk, int BITS>
void gemv_panel(const uint8_t* __restrict wp, const uint8_t* __restrict x, int64_t ng, const Sink& sink) {
  using Y = Types<Tag>;
  using O = typename Y::O;
  using u8 = typename Y::u8;
  using i32 = typename Y::i32;
  constexpr int F = 8 / BITS;
  constexpr int KG = 4 * F;
  constexpr int VB = Y::VB;
  constexpr int U = F == 1 ? 2 : F;  // accumulator sets per block (8 bits: two for latency)
  typename Y::Acc acc[NBk][U];
#pragma GCC unroll 16
  for (int b = 0; b < NBk; ++b)
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[b][u] = O::acc_zero();
  i32 res[1][NBk];
  if constexpr (F == 1) {
    int64_t g = 0;
    for (; g + 2 <= ng; g += 2) {
      const auto x0 = O::template prep<true>(O::bcast4(x + g * 4));
      const auto x1 = O::template prep<true>(O::bcast4(x + g * 4 + 4));
      const uint8_t* wg = wp + g * NBk * VB;
#pragma GCC unroll 16
      for (int b = 0; b < NBk; ++b) {
        O::template dot<true>(acc[b][0], x0, u8::load_aligned(wg + b * VB));
        O::template dot<true>(acc[b][1], x1, u8::load_aligned(wg + (NBk + b) * VB));
      }
    }
    if (g < ng) {
      const auto x0 = O::template prep<true>(O::bcast4(x + g * 4));
      const uint8_t* wg = wp + g * NBk * VB;
#pragma GCC unroll 16
      for (int b = 0; b < NBk; ++b) O::template dot<true>(acc[b][0], x0, u8::load_aligned(wg + b * VB));
    }
#pragma GCC unroll 16
    for (int b = 0; b < NBk; ++b) res[0][b] = O::acc_sum(acc[b][0]) + O::acc_sum(acc[b][1]);
  } else {
    u8 mask[F];
#pragma GCC unroll 16
    for (int j = 0; j < F; ++j) mask[j] = u8(static_cast<uint8_t>(((1 << BITS) - 1) << (j * BITS)));
    for (int64_t g = 0; g < ng; ++g) {
      // Lower fields hold u * 2^(j * BITS) <= 0x30 (small); the top field is the raw int8.
      typename O::template XP<true> xw = O::template prep<true>(O::bcast4(x + g * KG + 4 * (F - 1)));
      typename O::template XP<false> xs[F];
#pragma GCC unroll 16
      for (int j = 0; j < F - 1; ++j) xs[j] = O::template prep<false>(O::bcast4(x + g * KG + 4 * j));
      const uint8_t* wg = wp + g * NBk * VB;
#pragma GCC unroll 16
      for (int b = 0; b < NBk; ++b) {
        const u8 v = u8::load_aligned(wg + b * VB);
#pragma GCC unroll 16
        for (int j = 0; j < F - 1; ++j) O::template dot<false>(acc[b][j], xs[j], v & mask[j]);
        O::template dot<true>(acc[b][F - 1], xw, v & mask[F - 1]);
      }
    }
#pragma GCC unroll 16
    for (int b = 0; b < NBk; ++b) {
      i32 r = O::acc_sum(acc[b][0]);
      for (int j = 1; j < F; ++j) r = r + (O::acc_sum(acc[b][j]) >> (j * BITS));
      res[0][b] = r;
    }
  }
  finish<Tag, 1, NBk, BITS != 8>(res, sink);
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
template <class Tag, int P, int BITS, bool FAR>
void gemv_streams(const uint8_t* const* w, const uint8_t* __restrict x, int64_t ng, const Sink* s) {
  using Y = Types<Tag>;
  using O = typename Y::O;
  using u8 = typename Y::u8;
  using i32 = typename Y::i32;
  constexpr int F = 8 / BITS;
  constexpr int KG = 4 * F;
  constexpr int VB = Y::VB, PB = 4 * VB;  // bytes of one group of a full panel
  typename Y::Acc acc[P][4][F];
#pragma GCC unroll 16
  for (int q = 0; q < P; ++q)
#pragma GCC unroll 4
    for (int b = 0; b < 4; ++b)
#pragma GCC unroll 4
      for (int j = 0; j < F; ++j) acc[q][b][j] = O::acc_zero();
  u8 mask[F];
#pragma GCC unroll 4
  for (int j = 0; j < F; ++j) mask[j] = u8(static_cast<uint8_t>(((1 << BITS) - 1) << (j * BITS)));
  const uint8_t* wq[P];
#pragma GCC unroll 16
  for (int q = 0; q < P; ++q) wq[q] = w[q];
  for (int64_t g = 0; g < ng; ++g) {
    typename O::template XP<true> xw[F];
    typename O::template XP<false> xs[F];
#pragma GCC unroll 4
    for (int j = 0; j < F; ++j) {
      const u8 xb = O::bcast4(x + g * KG + 4 * j);
      xw[j] = O::template prep<true>(xb);
      xs[j] = O::template prep<false>(xb);
    }
    if constexpr (FAR) {
      // Weights that come from DRAM: ask for each stream's lines kFarAhead
      // bytes ahead into L2, beyond what the hardware prefetcher keeps in
      // flight for P streams.
#pragma GCC unroll 16
      for (int q = 0; q < P; ++q)
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) __builtin_prefetch(wq[q] + g * PB + kFarAhead + b * 64, 0, 2);
    }
#pragma GCC unroll 16
    for (int q = 0; q < P; ++q)
#pragma GCC unroll 4
      for (int b = 0; b < 4; ++b) {
        const u8 v = u8::load_aligned(wq[q] + g * PB + b * VB);
        if constexpr (F == 1) {
          O::template dot<true>(acc[q][b][0], xw[0], v);
        } else {
#pragma GCC unroll 4
          for (int j = 0; j < F; ++j) {
            if (j == F - 1) O::template dot<true>(acc[q][b][j], xw[j], v & mask[j]);
            else O::template dot<false>(acc[q][b][j], xs[j], v & mask[j]);
          }
        }
      }
  }
#pragma GCC unroll 16
  for (int q = 0; q < P; ++q) {
    i32 r[1][4];
#pragma GCC unroll 4
    for (int b = 0; b < 4; ++b) {
      i32 v = O::acc_sum(acc[q][b][0]);
#pragma GCC unroll 4
      for (int j = 1; j < F; ++j) v = v + (O::acc_sum(acc[q][b][j]) >> (j * BITS));
      r[0][b] = v;
    }
    finish<Tag, 1, 4, BITS != 8>(r, s[q]);
  }
}

// GEMM tile MR rows x NBk blocks, Offset encoding: fields shifted down and
// masked once per weight vector, reused by MR rows. A rows come as `nseg`
// segments of seg_groups * KG bytes each (segs[m * nseg + s]).
template <class Tag, int MR, int NBk, int BITS>
void gemm_tile(const uint8_t* __restrict wp, const uint8_t* const* segs, int nseg, int64_t seg_groups,
               const Sink& sink) {
  using Y = Types<Tag>;
  using O = typename Y::O;
  using u8 = typename Y::u8;
  using u16 = typename Y::u16;
  using i32 = typename Y::i32;
  constexpr int F = 8 / BITS;
  constexpr int KG = 4 * F;
  constexpr int VB = Y::VB;
  constexpr bool W = BITS == 8;  // raw int8 weights; else Offset fields <= 15
  typename Y::Acc acc[MR][NBk];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int b = 0; b < NBk; ++b) acc[m][b] = O::acc_zero();
  const u8 mask(static_cast<uint8_t>((1 << BITS) - 1));
  for (int sg = 0; sg < nseg; ++sg) {
    const uint8_t* p[MR];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) p[m] = segs[m * nseg + sg];
    const uint8_t* wseg = wp + sg * seg_groups * NBk * VB;
    for (int64_t g = 0; g < seg_groups; ++g) {
      const uint8_t* wg = wseg + g * NBk * VB;
#pragma GCC unroll 16
      for (int j = 0; j < F; ++j) {
        u8 w[NBk];
#pragma GCC unroll 16
        for (int b = 0; b < NBk; ++b) {
          const u8 v = u8::load_aligned(wg + b * VB);
          if constexpr (F == 1) {
            w[b] = v;
          } else {
            w[b] = (j == 0 ? v : xsimd::bitwise_cast<u8>(xsimd::bitwise_cast<u16>(v) >> (j * BITS))) & mask;
          }
        }
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) {
          const auto xb = O::template prep<W>(O::bcast4(p[m] + g * KG + 4 * j));
#pragma GCC unroll 16
          for (int b = 0; b < NBk; ++b) O::template dot<W>(acc[m][b], xb, w[b]);
        }
      }
    }
  }
  i32 r[MR][NBk];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int b = 0; b < NBk; ++b) r[m][b] = O::acc_sum(acc[m][b]);
  finish<Tag, MR, NBk, BITS != 8>(r, sink);
}

// ---- function tables --------------------------------------------------------------
using GemvFn = void (*)(const uint8_t*, const uint8_t*, int64_t, const Sink&);
using TileFn = void (*)(const uint8_t*, const uint8_t* const*, int, int64_t, const Sink&);
using StreamsFn = void (*)(const uint8_t* const*, const uint8_t*, int64_t, const Sink*);

template <class Tag, int BITS>
GemvFn gemv_fn(int nb) {
  switch (nb) {
    case 1: return gemv_panel<Tag, 1, BITS>;
    case 2: return gemv_panel<Tag, 2, BITS>;
    case 3: return gemv_panel<Tag, 3, BITS>;
    default: return gemv_panel<Tag, 4, BITS>;
  }
}
template <class Tag>
GemvFn gemv_fn(int bits, int nb) {
  return bits == 8 ? gemv_fn<Tag, 8>(nb) : bits == 4 ? gemv_fn<Tag, 4>(nb) : gemv_fn<Tag, 2>(nb);
}

template <class Tag, int BITS, bool FAR>
StreamsFn streams_fn(int P) {
  return P == 4 ? gemv_streams<Tag, 4, BITS, FAR> : P == 3 ? gemv_streams<Tag, 3, BITS, FAR>
                                                            : gemv_streams<Tag, 2, BITS, FAR>;
}
template <class Tag>
StreamsFn streams_fn(int bits, int P, bool far) {
  if (bits == 4) return far ? streams_fn<Tag, 4, true>(P) : streams_fn<Tag, 4, false>(P);
  return far ? streams_fn<Tag, 8, true>(P) : streams_fn<Tag, 8, false>(P);
}

template <class Tag, int MR, int BITS>
TileFn tile_fn_nb(int nb) {
  switch (nb) {
    case 1: return gemm_tile<Tag, MR, 1, BITS>;
    case 2: return gemm_tile<Tag, MR, 2, BITS>;
    case 3: return gemm_tile<Tag, MR, 3, BITS>;
    default: return gemm_tile<Tag, MR, 4, BITS>;
  }
}
template <class Tag, int BITS>
TileFn tile_fn_mr(int mr, int nb) {
  constexpr int MRmax = Types<Tag>::T.mr;
  switch (mr) {
    case 1: return tile_fn_nb<Tag, 1, BITS>(nb);
    case 2: return tile_fn_nb<Tag, 2, BITS>(nb);
    case 3:
      if constexpr (MRmax >= 3) return tile_fn_nb<Tag, 3, BITS>(nb);
      [[fallthrough]];
    default:
      if constexpr (MRmax >= 4) return tile_fn_nb<Tag, 4, BITS>(nb);
      return tile_fn_nb<Tag, 2, BITS>(nb);
  }
}
template <class Tag>
TileFn tile_fn(int bits, int mr, int nb) {
  return bits == 8 ? tile_fn_mr<Tag, 8>(mr, nb) : bits == 4 ? tile_fn_mr<Tag, 4>(mr, nb) : tile_fn_mr<Tag, 2>(mr, nb);
}

// ---- im2col -------------------------------------------------------------------------
// dst[0, n) = src[0, n) xor flip. The loads never pass `end` (partial near
// it); the stores are whole vectors: up to VB - 1 bytes past dst + n are
// clobbered, which the next run, the next row or the slack after the block
// overwrite / absorb.
template <class Tag>
inline void copy_run(uint8_t* dst, const uint8_t* src, int64_t n, typename Types<Tag>::u8 flip, const uint8_t* end) {
  using Y = Types<Tag>;
  using u8 = typename Y::u8;
  for (int64_t i = 0; i < n; i += Y::VB) {
    const u8 v = src + i + Y::VB <= end ? u8::load_unaligned(src + i)
                                        : Y::O::load_bytes(src + i, std::min<int64_t>(n - i, end - (src + i)));
    (v ^ flip).store_unaligned(dst + i);
  }
}
template <class Tag>
inline void fill_run(uint8_t* dst, int64_t n, typename Types<Tag>::u8 v) {
  for (int64_t i = 0; i < n; i += Types<Tag>::VB) v.store_unaligned(dst + i);
}

}  // namespace

template <class Tag>
void gemm8_im2col(const Im2col& g, const uint8_t* in, int64_t m0, int64_t mb, uint8_t* A) {
  using u8 = typename Types<Tag>::u8;
  const u8 flip(g.flip), zero(uint8_t{0});
  const u8 pad = flip;  // the value 0 in the stored domain
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
        fill_run<Tag>(dst + k, g.KW * C, pad);
        k += g.KW * C;
        continue;
      }
      const uint8_t* rowp = in + (n * g.H + ih) * g.W * C;
      if (w_inside) {
        copy_run<Tag>(dst + k, rowp + iw0 * C, g.KW * C, flip, end);
        k += g.KW * C;
        continue;
      }
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t iw = iw0 + kw * g.dw;
        if (iw < 0 || iw >= g.W) fill_run<Tag>(dst + k, C, pad);
        else copy_run<Tag>(dst + k, rowp + iw * C, C, flip, end);
        k += C;
      }
    }
    fill_run<Tag>(dst + k, g.Kp - k, zero);
    if (++ow == g.OW) {
      ow = 0;
      if (++oh == g.OH) {
        oh = 0;
        ++n;
      }
    }
  }
}

template <class Tag>
void gemm8_rowcorr(const PackedB& B, const uint8_t* const* segs, int nseg, int64_t seg_bytes, int64_t M,
                   int32_t* rowcorr) {
  using Y = Types<Tag>;
  using O = typename Y::O;
  using u8 = typename Y::u8;
  using i64 = typename Y::i64;
  const int32_t off = B.offset();
  if (off == 0) {
    std::fill(rowcorr, rowcorr + M, 0);
    return;
  }
  // Byte mask of the offset positions within a vector (kgroup divides VB;
  // segments start at whole groups).
  alignas(64) uint8_t pm[Y::VB];
  for (int i = 0; i < Y::VB; ++i) pm[i] = B.offset_position(i) ? 0xff : 0x00;
  const u8 posmask = u8::load_aligned(pm);
  for (int64_t m = 0; m < M; ++m) {
    i64 s(int64_t{0});
    for (int sg = 0; sg < nseg; ++sg) {
      const uint8_t* a = segs[m * nseg + sg];
      int64_t k = 0;
      for (; k + Y::VB <= seg_bytes; k += Y::VB) s = s + O::byte_sums(u8::load_unaligned(a + k) & posmask);
      if (k < seg_bytes) s = s + O::byte_sums(O::load_bytes(a + k, seg_bytes - k) & posmask);
    }
    rowcorr[m] = static_cast<int32_t>(static_cast<uint32_t>(O::sum_i64(s)) * static_cast<uint32_t>(off));
  }
}

template <class Tag>
void gemm8_run(const GemmCall& c) {
  using Y = Types<Tag>;
  constexpr Gemm8Traits T = Y::T;
  const PackedB& B = *c.B;
  const Epilogue& E = *c.E;
  const size_t esz = out_elem_bytes(E.kind);
  alignas(64) int32_t tile[T.mr * Y::NB * Y::L];
  const int64_t pw = static_cast<int64_t>(B.nb_max) * B.lanes;
  Sink s;
  s.E = &E;
  s.fused = !E.wide && E.kind != OutKind::F32;
  s.tile = tile;
  s.ldo = c.ldo * static_cast<int64_t>(esz);
  auto* out = static_cast<uint8_t*>(c.out);
  for (int64_t p = c.p0; p < c.p1; ++p) {
    const int nb = B.panel_blocks(p);
    const uint8_t* wp = B.panel(p);
    const int64_t oc0 = p * pw;
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(nb) * B.lanes, B.OC - oc0);
    s.oc0 = oc0;
    s.n = n;
    if (B.enc == WEnc::TopRaw) {
      // Full panels run together as parallel weight streams (8 and 4 bits; the
      // 2-bit GEMV is bound by the dot products, not by the read rate).
      if constexpr (T.streams) {
        int P = 1;
        if (s.fused && nb == 4 && B.bits >= 4)
          while (P < 4 && p + P < c.p1 && B.panel_blocks(p + P) == 4) ++P;
        if (P > 1) {
          Sink ss[4];
          const uint8_t* ws[4];
          for (int q = 0; q < P; ++q) {
            ss[q] = s;
            ss[q].oc0 = oc0 + q * pw;
            ss[q].n = std::min<int64_t>(pw, B.OC - ss[q].oc0);
            ws[q] = B.panel(p + q);
          }
          const StreamsFn fn = streams_fn<Tag>(B.bits, P, B.bytes > kFarBytes);
          for (int64_t m = 0; m < c.M; ++m) {
            for (int q = 0; q < P; ++q) {
              ss[q].rowcorr = c.rowcorr + m;
              ss[q].out = out + m * s.ldo;
            }
            fn(ws, c.segs[m], B.ngroups, ss);
          }
          p += P - 1;
          continue;
        }
      }
      const GemvFn fn = gemv_fn<Tag>(B.bits, nb);
      for (int64_t m = 0; m < c.M; ++m) {
        s.rowcorr = c.rowcorr + m;
        s.out = out + m * s.ldo;
        fn(wp, c.segs[m], B.ngroups, s);
        if (!s.fused) epilogue_row_scalar(tile, oc0, n, c.rowcorr[m], E, s.out);
      }
      continue;
    }
    for (int64_t m0 = 0; m0 < c.M; m0 += T.mr) {
      const int mr = static_cast<int>(std::min<int64_t>(T.mr, c.M - m0));
      s.rowcorr = c.rowcorr + m0;
      s.out = out + m0 * s.ldo;
      tile_fn<Tag>(B.bits, mr, nb)(wp, c.segs + m0 * c.nseg, c.nseg, c.seg_groups, s);
      if (!s.fused)
        for (int r = 0; r < mr; ++r)
          epilogue_row_scalar(tile + r * Y::NB * Y::L, oc0, n, c.rowcorr[m0 + r], E, s.out + r * s.ldo);
    }
  }
}

template void gemm8_run<ThisIsa>(const GemmCall&);
template void gemm8_im2col<ThisIsa>(const Im2col&, const uint8_t*, int64_t, int64_t, uint8_t*);
template void gemm8_rowcorr<ThisIsa>(const PackedB&, const uint8_t* const*, int, int64_t, int64_t, int32_t*);

}  // namespace bbits::kernels::simd
