// bbits kernels — the 16-bit family's ISA code (layout and exactness in
// gemm16.h), one template over the ISA tag. Compiled once per ISA
// (kernels/CMakeLists.txt); reached only after run-time CPU detection.
//
// GEMM tile: up to MR rows (MR / 2 in split mode) x `blocks` blocks of 16
// output channels (gemm16_tile: AVX-512 VNNI 4 x 64, AVX2 and NEON 2 x 32);
// int32 accumulators over B.kblock pairs at most, then added to int64 sums
// kept in a small local tile; the epilogue reads the int64 sums.
#include <algorithm>
#include <cstring>

#include "gemm16.h"
#include "simd/requant.h"

namespace bbits::kernels::simd {
namespace {

template <class Tag>
struct T16 {
  using O = Ops<Tag>;
  using i32 = typename O::i32;
  using i64 = typename O::i64;
  static constexpr int L = O::kLanes;
  static constexpr int V = 16 / L;  // vectors per 16-channel block
  static constexpr Gemm16Tile T = gemm16_tile(Tag::isa);
  static constexpr int NV = T.blocks * V;  // vectors of a full tile row
};

// acc64[0 .. L) += lo (+ 256 * hi), in channel order.
template <class Tag, bool SPLIT>
BBITS_INLINE void flush(int64_t* acc64, typename T16<Tag>::i32 lo, typename T16<Tag>::i32 hi) {
  using O = Ops<Tag>;
  using i64 = typename O::i64;
  constexpr int H = O::kLanes / 2;
  i64 l0, l1;
  O::widen_i32(lo, l0, l1);
  if constexpr (SPLIT) {
    i64 h0, h1;
    O::widen_i32(hi, h0, h1);
    l0 = l0 + (h0 << 8);
    l1 = l1 + (h1 << 8);
  }
  (i64::load_unaligned(acc64) + l0).store_unaligned(acc64);
  (i64::load_unaligned(acc64 + H) + l1).store_unaligned(acc64 + H);
}

// Rows [0, MR) of A from `A` / `Ahi` (row stride lda) against NBV vectors of
// blocks (block stride bstride int16, V vectors per block); int64 sums into
// acc64 (row stride NV * L).
template <class Tag, int MR, int NBV, bool SPLIT>
void tile(const int16_t* A, const int16_t* Ahi, int64_t lda, const int16_t* w, int64_t bstride, int64_t pairs,
          int64_t kblock, int64_t* acc64) {
  using Y = T16<Tag>;
  using O = typename Y::O;
  using i32 = typename Y::i32;
  constexpr int L = Y::L, V = Y::V, LD = Y::NV * L;
  for (int r = 0; r < MR; ++r) std::memset(acc64 + r * LD, 0, sizeof(int64_t) * L * NBV);
  for (int64_t p0 = 0; p0 < pairs; p0 += kblock) {
    const int64_t p1 = std::min(pairs, p0 + kblock);
    i32 lo[MR][NBV], hi[SPLIT ? MR : 1][NBV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
      for (int j = 0; j < NBV; ++j) {
        lo[r][j] = i32(0);
        if constexpr (SPLIT) hi[r][j] = i32(0);
      }
    for (int64_t p = p0; p < p1; ++p) {
      i32 wv[NBV];
#pragma GCC unroll 16
      for (int j = 0; j < NBV; ++j) wv[j] = i32::load_aligned(reinterpret_cast<const int32_t*>(w + (j / V) * bstride + p * 32 + (j % V) * 2 * L));
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const i32 x = xsimd::bitwise_cast<i32>(O::bcast4(reinterpret_cast<const uint8_t*>(A + r * lda + 2 * p)));
#pragma GCC unroll 16
        for (int j = 0; j < NBV; ++j) O::dot16(lo[r][j], x, wv[j]);
        if constexpr (SPLIT) {
          const i32 xh = xsimd::bitwise_cast<i32>(O::bcast4(reinterpret_cast<const uint8_t*>(Ahi + r * lda + 2 * p)));
#pragma GCC unroll 16
          for (int j = 0; j < NBV; ++j) O::dot16(hi[r][j], xh, wv[j]);
        }
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
      for (int j = 0; j < NBV; ++j) {
        if constexpr (SPLIT) flush<Tag, true>(acc64 + r * LD + j * L, lo[r][j], hi[r][j]);
        else flush<Tag, false>(acc64 + r * LD + j * L, lo[r][j], lo[r][j]);
      }
  }
}

using TileFn = void (*)(const int16_t*, const int16_t*, int64_t, const int16_t*, int64_t, int64_t, int64_t, int64_t*);

template <class Tag, int MR, bool SPLIT>
TileFn pick_nb(int nb) {  // nb: 16-channel blocks
  constexpr int V = T16<Tag>::V, B = T16<Tag>::T.blocks;
  switch (nb) {
    case 1: return tile<Tag, MR, V, SPLIT>;
    case 2:
      if constexpr (B >= 2) return tile<Tag, MR, 2 * V, SPLIT>;
      [[fallthrough]];
    case 3:
      if constexpr (B >= 3) return tile<Tag, MR, 3 * V, SPLIT>;
      [[fallthrough]];
    default:
      if constexpr (B >= 4) return tile<Tag, MR, 4 * V, SPLIT>;
      return tile<Tag, MR, B * V, SPLIT>;
  }
}
template <class Tag>
TileFn pick(bool split, int mr, int nb) {
  constexpr Gemm16Tile T = T16<Tag>::T;
  if (split) {
    if constexpr (T.mr_split >= 2) {
      if (mr == 2) return pick_nb<Tag, 2, true>(nb);
    }
    return pick_nb<Tag, 1, true>(nb);
  }
  switch (mr) {
    case 1: return pick_nb<Tag, 1, false>(nb);
    case 2: return pick_nb<Tag, 2, false>(nb);
    case 3:
      if constexpr (T.mr >= 3) return pick_nb<Tag, 3, false>(nb);
      [[fallthrough]];
    default:
      if constexpr (T.mr >= 4) return pick_nb<Tag, 4, false>(nb);
      return pick_nb<Tag, 2, false>(nb);
  }
}

// Epilogue of one row segment from int64 sums (see gemm16.h): + corr + bias,
// requant64, clamp, store; float outputs take the scalar epilogue.
template <class Tag>
void epilogue16_row(const int64_t* acc, int64_t oc0, int64_t n, const Packed16& B, const Epilogue& E,
                    void* out_row) {
  using O = Ops<Tag>;
  using i64 = typename O::i64;
  using i32 = typename O::i32;
  constexpr int L = O::kLanes, H = L / 2;
  if (E.kind == OutKind::F32) {
    epilogue16_row_scalar(acc, oc0, n, B, E, out_row);
    return;
  }
  const i64 lo(E.lo), hi(E.hi);
  const bool bytes = E.kind == OutKind::U8 || E.kind == OutKind::S8;
  const bool sgn = E.kind == OutKind::S8;
  alignas(64) int64_t ta[L];
  for (int64_t c = 0; c < n; c += L) {
    const int64_t oc = oc0 + c, cnt = std::min<int64_t>(L, n - c);
    i64 a0, a1;
    if (cnt == L) {
      a0 = i64::load_unaligned(acc + c) + i64::load_unaligned(B.corr.data() + oc) +
           i64::load_unaligned(E.bias64.data() + oc);
      a1 = i64::load_unaligned(acc + c + H) + i64::load_unaligned(B.corr.data() + oc + H) +
           i64::load_unaligned(E.bias64.data() + oc + H);
    } else {  // the channel tail (corr and bias64 hold OC values)
      for (int l = 0; l < L; ++l)
        ta[l] = l < cnt ? acc[c + l] + B.corr[static_cast<size_t>(oc + l)] + E.bias64[static_cast<size_t>(oc + l)] : 0;
      a0 = i64::load_aligned(ta);
      a1 = i64::load_aligned(ta + H);
    }
    const bool ge32 = B.shift_ge32;
    if (!ge32 && !(O::fits_i32(a0) && O::fits_i32(a1))) {  // the scalar 128-bit path for these channels
      epilogue16_row_scalar(acc + c, oc, cnt, B, E, out_row);
      continue;
    }
    const i64 m0 = i64::load_unaligned(E.mult.get() + oc), m1 = i64::load_unaligned(E.mult.get() + oc + H);
    const i64 r0 = i64::load_unaligned(E.round.get() + oc), r1 = i64::load_unaligned(E.round.get() + oc + H);
    const i64 s0 = i64::load_unaligned(E.shift.get() + oc), s1 = i64::load_unaligned(E.shift.get() + oc + H);
    const i64 q0 = O::clamp64(requant64<Tag>(a0, m0, r0, s0, ge32), lo, hi);
    const i64 q1 = O::clamp64(requant64<Tag>(a1, m1, r1, s1, ge32), lo, hi);
    const i32 q = O::narrow64(q0, q1);
    if (bytes) O::template store_u8<1>(static_cast<uint8_t*>(out_row) + oc, q, q, q, q, cnt, sgn, E.lo, E.hi);
    else O::store_u16(static_cast<uint16_t*>(out_row) + oc, q, cnt);
  }
}

template <class Tag, int KIND>
BBITS_INLINE typename Ops<Tag>::i32 load_lanes(const void* base, int64_t idx, int64_t n) {
  using O = Ops<Tag>;
  if constexpr (KIND <= 1) return O::load_widen(static_cast<const uint8_t*>(base) + idx, n, KIND == 1);
  else return O::load_widen16(static_cast<const int16_t*>(base) + idx, n, KIND == 3);
}

template <class Tag, int KIND>
void dw16_rows(const Dw16Geom& g, const int32_t* w, const Packed16& B, const Epilogue& E, const void* in, void* out,
               int64_t* acc, int64_t r0, int64_t r1) {
  using O = Ops<Tag>;
  using i32 = typename O::i32;
  using i64 = typename O::i64;
  constexpr int L = O::kLanes;
  // Locals: the stores to acc / out may alias the geometry otherwise.
  const int64_t H = g.H, W = g.W, C = g.C, OH = g.OH, OW = g.OW, cblocks = g.cblocks;
  const int KH = g.KH, KW = g.KW, sh = g.sh, sw = g.sw, pt = g.pt, pl = g.pl, dh = g.dh, dw = g.dw;
  const int64_t T = int64_t{KH} * KW;
  const size_t esz = out_elem_bytes(E.kind);
  // The window's in-bounds taps, listed once per pixel.
  std::vector<int64_t> offs(static_cast<size_t>(T)), widx(static_cast<size_t>(T));
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / OH, oh = r % OH;
    for (int64_t ow = 0; ow < OW; ++ow) {
      int64_t nt = 0;
      for (int kh = 0; kh < KH; ++kh) {
        const int64_t ih = oh * sh - pt + int64_t{kh} * dh;
        if (ih < 0 || ih >= H) continue;
        for (int kw = 0; kw < KW; ++kw) {
          const int64_t iw = ow * sw - pl + int64_t{kw} * dw;
          if (iw < 0 || iw >= W) continue;
          offs[static_cast<size_t>(nt)] = ((n * H + ih) * W + iw) * C;
          widx[static_cast<size_t>(nt)] = (kh * KW + kw) * L;
          ++nt;
        }
      }
      for (int64_t cb = 0; cb < cblocks; ++cb) {
        const int64_t c0 = cb * L, nc = std::min<int64_t>(L, C - c0);
        i64 e(int64_t{0}), o(int64_t{0});
        const int32_t* wb = w + cb * T * L;
        for (int64_t i = 0; i < nt; ++i) {
          const i32 x = load_lanes<Tag, KIND>(in, offs[static_cast<size_t>(i)] + c0, nc);
          i64 pe, po;
          O::mul(x, O::mult(i32::load_aligned(wb + widx[static_cast<size_t>(i)])), pe, po);
          e = e + pe;
          o = o + po;
        }
        i64 c_lo, c_hi;
        O::halves_to_order(e, o, c_lo, c_hi);
        c_lo.store_unaligned(acc + c0);
        c_hi.store_unaligned(acc + c0 + L / 2);
      }
      epilogue16_row<Tag>(acc, 0, C, B, E, static_cast<uint8_t*>(out) + static_cast<size_t>(((n * OH + oh) * OW + ow) * C) * esz);
    }
  }
}

}  // namespace

template <class Tag>
void gemm16_run(const Gemm16Call& c) {
  using Y = T16<Tag>;
  const Packed16& B = *c.B;
  const Epilogue& E = *c.E;
  const size_t esz = out_elem_bytes(E.kind);
  const int mr_max = B.split ? Y::T.mr_split : Y::T.mr;
  constexpr int LD = Y::NV * Y::L;
  alignas(64) int64_t acc64[Y::T.mr * LD];
  const int64_t bstride = B.pairs * 32;
  for (int64_t b = c.b0; b < c.b1; b += Y::T.blocks) {
    const int nb = static_cast<int>(std::min<int64_t>(Y::T.blocks, c.b1 - b));
    const int64_t oc0 = b * 16;
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(nb) * 16, B.OC - oc0);
    for (int64_t m0 = 0; m0 < c.M; m0 += mr_max) {
      const int mr = static_cast<int>(std::min<int64_t>(mr_max, c.M - m0));
      pick<Tag>(B.split, mr, nb)(c.A + m0 * c.lda, B.split ? c.Ahi + m0 * c.lda : nullptr, c.lda, B.block(b),
                                 bstride, B.pairs, B.kblock, acc64);
      for (int r = 0; r < mr; ++r)
        epilogue16_row<Tag>(acc64 + r * LD, oc0, n, B, E,
                            static_cast<uint8_t*>(c.out) + static_cast<size_t>((m0 + r) * c.ldo) * esz);
    }
  }
}

template <class Tag>
void dwconv16_rows(const Dw16Geom& g, const int32_t* w, const Packed16& B, const Epilogue& E, const void* in,
                   void* out, int64_t* acc, int64_t r0, int64_t r1) {
  switch (g.in_kind) {
    case 0: dw16_rows<Tag, 0>(g, w, B, E, in, out, acc, r0, r1); break;
    case 1: dw16_rows<Tag, 1>(g, w, B, E, in, out, acc, r0, r1); break;
    case 2: dw16_rows<Tag, 2>(g, w, B, E, in, out, acc, r0, r1); break;
    default: dw16_rows<Tag, 3>(g, w, B, E, in, out, acc, r0, r1); break;
  }
}

#if !defined(BBITS_ISA_AVX512)  // AVX-512 without VNNI: the depthwise instance only
template void gemm16_run<ThisIsa>(const Gemm16Call&);
#endif
#if !defined(BBITS_ISA_AVX512_VNNI)  // the depthwise kernels need no VNNI: their AVX-512 instance is Avx512's
template void dwconv16_rows<ThisIsa>(const Dw16Geom&, const int32_t*, const Packed16&, const Epilogue&, const void*,
                                     void*, int64_t*, int64_t, int64_t);
#endif

}  // namespace bbits::kernels::simd
