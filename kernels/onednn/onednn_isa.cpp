// bbits kernels — the oneDNN family's ISA code: the requantization of the
// int32 results (onednn.h), one template over the ISA tag. Compiled for
// AVX-512 (kernels/CMakeLists.txt); reached only on CPUs with AVX-512 VNNI.
#include <algorithm>

#include "onednn.h"
#include "simd/requant.h"

namespace bbits::kernels::simd {
namespace {

// Column order: for each pair of parameter vectors (held in registers),
// every block; two vectors of results stored at once.
template <class Tag, bool FOLDED, bool SIGNED, bool CLAMP>
void flat_loop(const int32_t* acc, int64_t b0, int64_t b1, int64_t total, const FlatRequant& F, uint8_t* out) {
  using O = Ops<Tag>;
  using i32 = typename O::i32;
  constexpr int L = O::kLanes;
  // Locals: the byte stores could alias F otherwise (reloads in the loop).
  const int64_t P = F.period;
  const int32_t lo = F.lo, hi = F.hi;
  alignas(64) int32_t tmp[2 * L];
  for (int64_t v = 0; v < P / L; v += 2) {
    const RequantVec<Tag, FOLDED> q0(F.rq, v * L), q1(F.rq, (v + 1) * L);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t i = blk * P + v * L;
      if (i >= total) break;
      const int64_t n = std::min<int64_t>(2 * L, total - i);
      i32 a0, a1;
      if (n == 2 * L) {
        a0 = i32::load_unaligned(acc + i);
        a1 = i32::load_unaligned(acc + i + L);
      } else {
        std::fill(tmp, tmp + 2 * L, 0);
        std::copy(acc + i, acc + i + n, tmp);
        a0 = i32::load_aligned(tmp);
        a1 = i32::load_aligned(tmp + L);
      }
      const i32 r0 = requant<Tag>(a0, q0), r1 = requant<Tag>(a1, q1);
      O::template store_u8<2, CLAMP>(out + i, r0, r1, r1, r1, n, SIGNED, lo, hi);
    }
  }
}

template <class Tag, bool FOLDED, bool SIGNED>
void flat_dispatch(const int32_t* acc, int64_t b0, int64_t b1, int64_t total, const FlatRequant& F, uint8_t* out) {
  if (F.clamp) flat_loop<Tag, FOLDED, SIGNED, true>(acc, b0, b1, total, F, out);
  else flat_loop<Tag, FOLDED, SIGNED, false>(acc, b0, b1, total, F, out);
}
template <class Tag, bool FOLDED>
void flat_dispatch(const int32_t* acc, int64_t b0, int64_t b1, int64_t total, const FlatRequant& F, uint8_t* out) {
  if (F.is_signed) flat_dispatch<Tag, FOLDED, true>(acc, b0, b1, total, F, out);
  else flat_dispatch<Tag, FOLDED, false>(acc, b0, b1, total, F, out);
}

}  // namespace

template <class Tag>
void flat_requant(const int32_t* acc, int64_t b0, int64_t b1, int64_t total, const FlatRequant& F, uint8_t* out) {
  if constexpr (Ops<Tag>::kEvenOdd) {
    if (F.rq.folded) {
      flat_dispatch<Tag, true>(acc, b0, b1, total, F, out);
      return;
    }
  }
  flat_dispatch<Tag, false>(acc, b0, b1, total, F, out);
}

template <class Tag>
void onednn_epilogue_rows(const int32_t* acc, int64_t r0, int64_t r1, const Epilogue& E, void* out) {
  const size_t esz = out_elem_bytes(E.kind);
  const int64_t OC = E.OC;
  for (int64_t m = r0; m < r1; ++m)
    epilogue_row<Tag>(acc + m * OC, 0, OC, 0, E, static_cast<uint8_t*>(out) + m * OC * static_cast<int64_t>(esz));
}

template void flat_requant<ThisIsa>(const int32_t*, int64_t, int64_t, int64_t, const FlatRequant&, uint8_t*);
template void onednn_epilogue_rows<ThisIsa>(const int32_t*, int64_t, int64_t, const Epilogue&, void*);

}  // namespace bbits::kernels::simd
