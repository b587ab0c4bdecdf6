// bbits SIMD kernels — the vector requantization, exactly format's
// apply_requant (quant.h), for every kernel: one int32 lane per output
// channel,
//     r = (a * m + round) >> s           round = 2^(s-1) + bias fraction,
// the product and the sum in 64 bits (|a| < 2^31, m < 2^31, round < 2^62:
// no overflow), the shift arithmetic (floor), as apply_requant's 128-bit
// arithmetic gives for every such a. The result is returned in 32 bits, so
// the caller guarantees it fits: every real multiplier m 2^-s <= 1
// (RequantTable::pre false), or the lane is first clamped to [pre_lo, pre_hi],
// outside of which the output clamps anyway (pre_clamp_bounds() in common.h;
// the final clamp then gives the same output), and r stays within int32 for
// every a in that range.
//
// Included by ISA translation units only (ops.h).
#pragma once

#include "common.h"
#include "ops.h"

namespace bbits::kernels::simd {

// The parameters of one vector of channels, loaded from a RequantTable.
// FOLDED: the table's colterm-folded rounding and reduced shifts
// (RequantTable::folded; no pre-clamp there).
template <class Tag, bool FOLDED = false>
struct RequantVec {
  using O = Ops<Tag>;
  typename O::Mult m;
  typename O::i64 r0, r1, s0, s1;  // round and shift of the two halves mul() makes
  typename O::i32 plo, phi;        // pre-clamp bounds (when pre)
  bool pre = false;

  // Channels [oc, oc + kLanes) of t (oc a multiple of kLanes).
  BBITS_INLINE RequantVec(const RequantTable& t, int64_t oc) {
    using i32 = typename O::i32;
    using i64 = typename O::i64;
    constexpr int H = O::kLanes / 2;
    m = O::mult(i32::load_aligned(t.mult.get() + oc));
    const int64_t* rnd = FOLDED ? t.cround.get() : t.round.get();
    const int64_t* sh = FOLDED ? t.shift32.get() : t.shift.get();
    r0 = i64::load_aligned(rnd + oc);
    r1 = i64::load_aligned(rnd + oc + H);
    s0 = i64::load_aligned(sh + oc);
    s1 = i64::load_aligned(sh + oc + H);
    pre = !FOLDED && t.pre;
    if (pre) {
      plo = i32::load_aligned(t.pre_lo.get() + oc);
      phi = i32::load_aligned(t.pre_hi.get() + oc);
    }
  }
};

template <class Tag, bool FOLDED>
BBITS_INLINE typename Ops<Tag>::i32 requant(typename Ops<Tag>::i32 a, const RequantVec<Tag, FOLDED>& p) {
  using O = Ops<Tag>;
  if constexpr (!FOLDED) {
    if (p.pre) a = xsimd::min(xsimd::max(a, p.plo), p.phi);
  }
  typename O::i64 h0, h1;
  O::mul(a, p.m, h0, h1);
  h0 = O::sra(h0 + p.r0, p.s0);
  h1 = O::sra(h1 + p.r1, p.s1);
  if constexpr (FOLDED) {
    static_assert(O::kEvenOdd, "folded tables exist for even / odd layouts only");
    return O::join_hi(h0, h1);
  } else {
    return O::join(h0, h1);
  }
}

// apply_requant of int64 sums (the 16-bit family), channel order, m, round,
// shift in 64-bit lanes:
//   ge32 (every shift >= 32), any |a| < 2^62: a = ah 2^32 + al (al unsigned
//     32 bits), a m + round = (ah m) 2^32 + L with L = al m + round in
//     [0, 2^64) (round = 2^(s-1) + bias fraction >= 0 for s >= 32), so
//     (a m + round) >> s = (ah m + (L >> 32)) >> (s - 32): exact;
//   else, |a| < 2^31 (the caller checks fits_i32): a m + round stays below
//     2^63 (m < 2^31, round <= 2^61 + 2^31).
template <class Tag>
BBITS_INLINE typename Ops<Tag>::i64 requant64(typename Ops<Tag>::i64 a, typename Ops<Tag>::i64 m,
                                              typename Ops<Tag>::i64 round, typename Ops<Tag>::i64 shift,
                                              bool ge32) {
  using O = Ops<Tag>;
  using i64 = typename O::i64;
  if (ge32) {
    const i64 ph = O::mul_s32(O::srl64(a, 32), m);  // the high dword read as int32
    const i64 L = O::mul_u32(a, m) + round;
    return O::sra(ph + O::srl64(L, 32), shift - i64(int64_t{32}));
  }
  return O::sra(O::mul_s32(a, m) + round, shift);
}

// Requantization, clamp and store of one row segment: n channels from oc0 (a
// multiple of kLanes), acc[0..n) their int32 sums. a = acc + colterm -
// rowcorr (wrapping int32, as the reference's int32 sum), then requant, clamp
// to [lo, hi] and store as the output kind, four vectors at a time (one
// packed store). Float outputs and wide sums take the scalar epilogue
// (common.h).
template <class Tag>
void epilogue_row(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E, void* out_row) {
  using O = Ops<Tag>;
  using i32 = typename O::i32;
  constexpr int L = O::kLanes;
  if (E.kind == OutKind::F32 || E.wide) {
    epilogue_row_scalar(acc, oc0, n, rowcorr, E, out_row);
    return;
  }
  // Locals: the byte stores could alias E otherwise (reloads in the loop).
  const auto lo32 = static_cast<int32_t>(E.lo), hi32 = static_cast<int32_t>(E.hi);
  const i32 rc(rowcorr), lo(lo32), hi(hi32);
  const bool sgn = E.kind == OutKind::S8 || E.kind == OutKind::S16;
  const bool bytes = E.kind == OutKind::U8 || E.kind == OutKind::S8;
  alignas(64) int32_t tmp[L] = {};
  for (int64_t c = 0; c < n; c += 4 * L) {
    i32 r[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      const int64_t at = c + v * L, oc = oc0 + at, cnt = std::min<int64_t>(L, n - at);
      if (cnt <= 0) {
        r[v] = i32(0);
        continue;
      }
      i32 a;
      if (cnt == L) {
        a = i32::load_unaligned(acc + at);
      } else {
        std::memcpy(tmp, acc + at, static_cast<size_t>(cnt) * 4);
        a = i32::load_aligned(tmp);
      }
      a = a + i32::load_aligned(E.colterm.get() + oc) - rc;
      r[v] = xsimd::min(xsimd::max(requant<Tag>(a, RequantVec<Tag>(E.rq, oc)), lo), hi);
      if (!bytes) O::store_u16(static_cast<uint16_t*>(out_row) + oc, r[v], cnt);
    }
    if (bytes)
      O::template store_u8<4>(static_cast<uint8_t*>(out_row) + oc0 + c, r[0], r[1], r[2], r[3],
                              std::min<int64_t>(4 * L, n - c), sgn, lo32, hi32);
  }
}

}  // namespace bbits::kernels::simd
