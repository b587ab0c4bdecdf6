// bbits kernels — the float fc family's ISA code (layout and arithmetic in
// fc_f32.h), one template over the ISA tag. Compiled once per ISA
// (kernels/CMakeLists.txt); reached only after run-time CPU detection.
//
// Per chunk of L reduction values and per row of a 4-row block, the weights
// become L floats in registers (Ops::unpack_f32), and one FMA per input row
// of the pass: up to RPP input rows share the unpack (AVX-512 4, AVX2 and
// NEON 2); a pass of at most RPP / 2 rows keeps two accumulator sets (even /
// odd chunks) for enough independent FMA chains.
#include <algorithm>

#include "fc_f32.h"
#include "simd/ops.h"

namespace bbits::kernels::simd {
namespace {

// Software prefetch distance in the weight stream (bytes): measured on Zen 4,
// 1 KB ahead cuts a DRAM-cold 1280x1000 8-bit run from ~73 to ~60 us.
constexpr int kPrefetch = 1024;

template <class Tag>
constexpr int rows_per_pass() {
  return Ops<Tag>::kLanes == 16 ? 4 : 2;
}

// Rows o0 .. o0 + 3 of input row n from their 4 sums: scale and bias in
// double, the activation, then the store of the rows < OC (float32, or
// quantize_to_grid's rules).
template <class Tag>
void finish4(const FcF32Call& c, const float* sums, int64_t n, int64_t o0) {
  using O = Ops<Tag>;
  alignas(16) float f[4];
  O::affine4(sums, c.scale + o0, c.bias + o0, c.act, f);
  const int64_t m = std::min<int64_t>(kFcF32Rows, c.OC - o0);
  const int64_t at = n * c.OC + o0;
  if (c.out == FcF32Out::F32) {
    float* y = static_cast<float*>(c.y) + at;
    for (int64_t i = 0; i < m; ++i) y[i] = f[i];
    return;
  }
  alignas(16) int32_t q[4];
  O::quantize4(f, c.out_scale, c.lo, c.hi, q);
  for (int64_t i = 0; i < m; ++i) {
    switch (c.out) {
      case FcF32Out::U8: static_cast<uint8_t*>(c.y)[at + i] = static_cast<uint8_t>(q[i]); break;
      case FcF32Out::S8: static_cast<int8_t*>(c.y)[at + i] = static_cast<int8_t>(q[i]); break;
      case FcF32Out::U16: static_cast<uint16_t*>(c.y)[at + i] = static_cast<uint16_t>(q[i]); break;
      case FcF32Out::S16: static_cast<int16_t*>(c.y)[at + i] = static_cast<int16_t>(q[i]); break;
      case FcF32Out::F32: break;
    }
  }
}

// One block of 4 output rows against NB input rows starting at x (row stride K).
template <class Tag, int BITS, int NB>
void block(const FcF32Call& c, const uint8_t* wb, const float* x, int64_t n0, int64_t o0,
           const typename Ops<Tag>::Fields& u) {
  using O = Ops<Tag>;
  using f32 = typename O::f32;
  constexpr int L = O::kLanes;
  constexpr int CB = L * BITS / 8;  // bytes of one row's chunk
  constexpr int SETS = NB <= rows_per_pass<Tag>() / 2 ? 2 : 1;
  const int64_t K = c.K;
  f32 acc[SETS][NB][kFcF32Rows];
#pragma GCC unroll 16
  for (int s = 0; s < SETS; ++s)
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n)
#pragma GCC unroll 16
      for (int r = 0; r < kFcF32Rows; ++r) acc[s][n][r] = f32(0.0f);

  auto step = [&](int s, const uint8_t* p, const f32* xv) {
    __builtin_prefetch(p + kPrefetch, 0, 3);
#pragma GCC unroll 16
    for (int r = 0; r < kFcF32Rows; ++r) {
      const f32 w = O::template unpack_f32<BITS>(p + r * CB, u);
#pragma GCC unroll 16
      for (int n = 0; n < NB; ++n) acc[s][n][r] = xsimd::fma(w, xv[n], acc[s][n][r]);
    }
  };

  const int64_t full = K / L;
  int64_t ch = 0;
  f32 xv[NB];
  for (; ch + SETS <= full; ch += SETS) {
#pragma GCC unroll 2
    for (int s = 0; s < SETS; ++s) {
#pragma GCC unroll 16
      for (int n = 0; n < NB; ++n) xv[n] = f32::load_unaligned(x + n * K + (ch + s) * L);
      step(s, wb + (ch + s) * kFcF32Rows * CB, xv);
    }
  }
  for (; ch < full; ++ch) {
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) xv[n] = f32::load_unaligned(x + n * K + ch * L);
    step(0, wb + ch * kFcF32Rows * CB, xv);
  }
  if (ch < c.kchunks) {  // K tail: the packed weights are zero past K, the input is read as 0 there
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) xv[n] = O::load_f32(x + n * K + ch * L, K - ch * L);
    step(0, wb + ch * kFcF32Rows * CB, xv);
  }
  for (int n = 0; n < NB; ++n) {
    f32 h[kFcF32Rows];
#pragma GCC unroll 4
    for (int r = 0; r < kFcF32Rows; ++r) {
      h[r] = acc[0][n][r];
      if constexpr (SETS == 2) h[r] = h[r] + acc[1][n][r];
    }
    alignas(16) float sums[4];
    O::hsum4(h[0], h[1], h[2], h[3], sums);
    finish4<Tag>(c, sums, n0 + n, o0);
  }
}

template <class Tag, int BITS>
void rows(const FcF32Call& c, int64_t b0, int64_t b1) {
  constexpr int RPP = rows_per_pass<Tag>();
  const typename Ops<Tag>::Fields u = Ops<Tag>::fields(BITS);
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* wb = c.w + b * c.block_bytes;
    const int64_t o0 = b * kFcF32Rows;
    int64_t n = 0;
    for (; n + RPP <= c.N; n += RPP) block<Tag, BITS, RPP>(c, wb, c.x + n * c.K, n, o0, u);
    switch (c.N - n) {
      case 3:
        if constexpr (RPP > 3) block<Tag, BITS, 3>(c, wb, c.x + n * c.K, n, o0, u);
        break;
      case 2:
        if constexpr (RPP > 2) block<Tag, BITS, 2>(c, wb, c.x + n * c.K, n, o0, u);
        break;
      case 1: block<Tag, BITS, 1>(c, wb, c.x + n * c.K, n, o0, u); break;
      default: break;
    }
  }
}

}  // namespace

template <class Tag>
void fc_f32_rows(const FcF32Call& c, int64_t b0, int64_t b1) {
  switch (c.bits) {
    case 8: rows<Tag, 8>(c, b0, b1); break;
    case 4: rows<Tag, 4>(c, b0, b1); break;
    case 2: rows<Tag, 2>(c, b0, b1); break;
    default: break;  // create() admits only 2, 4, 8
  }
}

template <class Tag>
int fc_f32_field_pos(int bits, int j) {
  return Ops<Tag>::field_pos(bits, j);
}

template void fc_f32_rows<ThisIsa>(const FcF32Call&, int64_t, int64_t);
template int fc_f32_field_pos<ThisIsa>(int, int);

}  // namespace bbits::kernels::simd
