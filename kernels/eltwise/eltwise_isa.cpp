// bbits kernels — the element-wise family's ISA code (semantics in
// eltwise.h), one template over the ISA tag. Compiled once per ISA
// (kernels/CMakeLists.txt); reached only after run-time CPU detection.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "eltwise.h"
#include "simd/requant.h"

namespace bbits::kernels::simd {
namespace {

// Bytes [i, i + n) of p (n <= kBytes) as four int32 vectors in order.
template <class Tag>
BBITS_INLINE void load_widen4(const uint8_t* p, int64_t n, bool sgn, typename Ops<Tag>::i32 (&q)[4]) {
  using O = Ops<Tag>;
  const typename O::u8 v = n >= O::kBytes ? O::u8::load_unaligned(p) : O::load_bytes(p, n);
  typename O::i16 h0, h1;
  O::widen_bytes(v, sgn, h0, h1);
  O::widen_words(h0, true, q[0], q[1]);
  O::widen_words(h1, true, q[2], q[3]);
}

}  // namespace

// apply_requant_sum on vectors: each product exact in 64 bits (|q| <= 255,
// m < 2^31), aligned by at most 15 bits (add_supports), so the sum stays
// below 2^56; multipliers <= 2^22 (add_supports) keep the result within int32.
template <class Tag>
void add8(const AddParams& p, const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t n) {
  using O = Ops<Tag>;
  using i32 = typename O::i32;
  using i64 = typename O::i64;
  constexpr int VB = O::kBytes;
  const typename O::Mult ma = O::mult(i32(static_cast<int32_t>(p.ma))), mb = O::mult(i32(static_cast<int32_t>(p.mb)));
  const auto da = static_cast<int32_t>(p.da), db = static_cast<int32_t>(p.db);
  const i64 rnd(p.round), sh(p.shift);
  const i32 lo(p.lo), hi(p.hi);
  for (int64_t i = 0; i < n; i += VB) {
    const int64_t cnt = std::min<int64_t>(VB, n - i);
    i32 va[4], vb[4], r[4];
    load_widen4<Tag>(a + i, cnt, p.a_signed, va);
    load_widen4<Tag>(b + i, cnt, p.b_signed, vb);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      i64 a0, a1, b0, b1;
      O::mul(va[j], ma, a0, a1);
      O::mul(vb[j], mb, b0, b1);
      const i64 s0 = O::sra((a0 << da) + (b0 << db) + rnd, sh);
      const i64 s1 = O::sra((a1 << da) + (b1 << db) + rnd, sh);
      r[j] = xsimd::min(xsimd::max(O::join(s0, s1), lo), hi);
    }
    O::template store_u8<4>(out + i, r[0], r[1], r[2], r[3], cnt, p.out_signed, p.lo, p.hi);
  }
}

template <class Tag>
void convert8(const Convert8Params& p, const uint8_t* in, uint8_t* out, int64_t n) {
  using O = Ops<Tag>;
  using i32 = typename O::i32;
  constexpr int VB = O::kBytes;
  if (p.identity && p.in_signed == p.out_signed && p.lo <= (p.in_signed ? -128 : 0) &&
      p.hi >= (p.in_signed ? 127 : 255)) {
    std::memcpy(out, in, static_cast<size_t>(n));
    return;
  }
  const RequantVec<Tag> rq(p.rq, 0);
  for (int64_t i = 0; i < n; i += VB) {
    const int64_t cnt = std::min<int64_t>(VB, n - i);
    i32 x[4];
    load_widen4<Tag>(in + i, cnt, p.in_signed, x);
    if (!p.identity)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) x[j] = requant<Tag>(x[j], rq);
    O::template store_u8<4>(out + i, x[0], x[1], x[2], x[3], cnt, p.out_signed, p.lo, p.hi);
  }
}

template <class Tag>
void softmax_row8(const uint8_t* in, bool in_signed, float scale, int64_t n, float* out, double* table) {
  using O = Ops<Tag>;
  using u8 = typename O::u8;
  constexpr int VB = O::kBytes;
  // Row max / min of the stored integers (dequantization is monotone: the
  // reference's max of the dequantized values is that of the largest q),
  // in the unsigned domain (signed values xor 0x80).
  const uint8_t f = in_signed ? 0x80 : 0x00;
  const u8 flip(f);
  u8 vmax(uint8_t{0}), vmin(uint8_t{255});
  int64_t i = 0;
  for (; i + VB <= n; i += VB) {
    const u8 v = u8::load_unaligned(in + i) ^ flip;
    vmax = xsimd::max(vmax, v);
    vmin = xsimd::min(vmin, v);
  }
  alignas(64) uint8_t bmax[VB], bmin[VB];
  vmax.store_aligned(bmax);
  vmin.store_aligned(bmin);
  int umx = 0, umn = 255;
  for (int j = 0; j < VB; ++j) {
    umx = std::max<int>(umx, bmax[j]);
    umn = std::min<int>(umn, bmin[j]);
  }
  for (; i < n; ++i) {
    umx = std::max<int>(umx, in[i] ^ f);
    umn = std::min<int>(umn, in[i] ^ f);
  }
  const int qmx = in_signed ? umx - 128 : umx, qmn = in_signed ? umn - 128 : umn;
  auto deq = [scale](int q) { return static_cast<double>(static_cast<float>(q) * scale); };
  const double mx = deq(qmx);
  const int range = qmx - qmn + 1;
  const bool by_value = range <= n;  // else n < 256: one exp per element
  double sum = 0.0;
  if (by_value) {
    for (int q = qmn; q <= qmx; ++q) table[q - qmn] = std::exp(deq(q) - mx);
    for (int64_t k = 0; k < n; ++k) {
      const int q = in_signed ? static_cast<int8_t>(in[k]) : in[k];
      sum += table[q - qmn];  // the reference's order of additions
    }
    for (int64_t k = 0; k < n; ++k) {
      const int q = in_signed ? static_cast<int8_t>(in[k]) : in[k];
      out[k] = static_cast<float>(table[q - qmn] / sum);
    }
  } else {
    for (int64_t k = 0; k < n; ++k) {
      const int q = in_signed ? static_cast<int8_t>(in[k]) : in[k];
      table[k] = std::exp(deq(q) - mx);
      sum += table[k];
    }
    for (int64_t k = 0; k < n; ++k) out[k] = static_cast<float>(table[k] / sum);
  }
}

template void add8<ThisIsa>(const AddParams&, const uint8_t*, const uint8_t*, uint8_t*, int64_t);
template void convert8<ThisIsa>(const Convert8Params&, const uint8_t*, uint8_t*, int64_t);
template void softmax_row8<ThisIsa>(const uint8_t*, bool, float, int64_t, float*, double*);

}  // namespace bbits::kernels::simd
