// bbits kernels — the depthwise family's ISA code (scheme in dw8.h), one
// template over the ISA tag. Compiled once per ISA (kernels/CMakeLists.txt);
// reached only after run-time CPU detection.
#include <algorithm>

#include "dw8.h"
#include "simd/requant.h"

namespace bbits::kernels::simd {

template <class Tag>
void dwconv8_rows(const DwGeom& g, const DwPacked& P, const Epilogue& E, const uint8_t* in, void* out, int64_t r0,
                  int64_t r1) {
  using O = Ops<Tag>;
  using u8 = typename O::u8;
  using i32 = typename O::i32;
  constexpr int L = O::kLanes, VB = O::kBytes;
  const size_t esz = out_elem_bytes(E.kind);
  const u8 flip(g.flip), zero(uint8_t{0});
  const u8 padv = flip;  // the value 0 in the stored domain
  const bool flipped = g.flip != 0;
  alignas(64) int32_t tmp[VB];
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.OH, oh = r % g.OH;
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      uint8_t* orow = static_cast<uint8_t*>(out) + ((n * g.OH + oh) * g.OW + ow) * g.C * static_cast<int64_t>(esz);
      // Input offsets of the taps (-1: padding), padded to whole groups of 4.
      int64_t toff[256];
      int64_t t = 0;
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        const int64_t ih = oh * g.sh - g.pt + kh * g.dh;
        const bool hin = ih >= 0 && ih < g.H;
        const int64_t rowoff = (n * g.H + ih) * g.W;
        int64_t iw = ow * g.sw - g.pl;
        for (int64_t kw = 0; kw < g.KW; ++kw, iw += g.dw)
          toff[t++] = (hin && iw >= 0 && iw < g.W) ? (rowoff + iw) * g.C : -1;
      }
      for (; t < P.tgroups * 4; ++t) toff[t] = -2;  // past the last tap: weight 0
      for (int64_t cb = 0; cb < P.cblocks; ++cb) {
        const int64_t c0 = cb * VB;
        const int64_t nc = std::min<int64_t>(VB, g.C - c0);
        // The weights are int8 of any value (8-bit layers): the dot products' wide form.
        typename O::Acc acc[4] = {O::acc_zero(), O::acc_zero(), O::acc_zero(), O::acc_zero()};
        const int8_t* wb = P.w8.get() + cb * P.tgroups * 4 * VB;
        for (int64_t tg = 0; tg < P.tgroups; ++tg) {
          u8 x[4];
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) {
            const int64_t o = toff[tg * 4 + i];
            if (o < 0) {
              x[i] = o == -1 ? padv : zero;
            } else {
              x[i] = nc == VB ? u8::load_unaligned(in + o + c0) : O::load_bytes(in + o + c0, nc);
              if (flipped) x[i] = x[i] ^ flip;
            }
          }
          const u8 a01l = O::unpacklo8(x[0], x[1]), a01h = O::unpackhi8(x[0], x[1]);
          const u8 a23l = O::unpacklo8(x[2], x[3]), a23h = O::unpackhi8(x[2], x[3]);
          const uint8_t* w = reinterpret_cast<const uint8_t*>(wb + tg * 4 * VB);
          O::template dot<true>(acc[0], O::template prep<true>(O::unpacklo16(a01l, a23l)), u8::load_aligned(w));
          O::template dot<true>(acc[1], O::template prep<true>(O::unpackhi16(a01l, a23l)), u8::load_aligned(w + VB));
          O::template dot<true>(acc[2], O::template prep<true>(O::unpacklo16(a01h, a23h)), u8::load_aligned(w + 2 * VB));
          O::template dot<true>(acc[3], O::template prep<true>(O::unpackhi16(a01h, a23h)), u8::load_aligned(w + 3 * VB));
        }
        const i32 s[4] = {O::acc_sum(acc[0]), O::acc_sum(acc[1]), O::acc_sum(acc[2]), O::acc_sum(acc[3])};
        i32 ordered[4];
        O::to_channel_order(s, ordered);
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) ordered[j].store_aligned(tmp + j * L);
        epilogue_row<Tag>(tmp, c0, nc, 0, E, orow);
      }
    }
  }
}

template void dwconv8_rows<ThisIsa>(const DwGeom&, const DwPacked&, const Epilogue&, const uint8_t*, void*, int64_t,
                                    int64_t);

}  // namespace bbits::kernels::simd
