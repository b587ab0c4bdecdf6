// bbits kernels — the pooling family: max, average and global average pool
// on 2/4/8-bit NHWC data, one template (pool_isa.cpp) over the ISA: AVX2,
// AVX-512, NEON. Channels across the lanes: kBytes channels per block.
#pragma once

#include <cstdint>
#include <vector>

#include "simd/common.h"

namespace bbits::kernels::simd {

// The window geometry, output rows [r0, r1) of N*OH.
struct PoolGeom {
  int64_t N = 1, H = 0, W = 0, C = 0, OH = 0, OW = 0;
  int KH = 1, KW = 1, sh = 1, sw = 1, pt = 0, pl = 0;
  bool in_signed = false, out_signed = false;
  int32_t lo = 0, hi = 0;  // integer output: the clamp range
};

// Max pool: the max in the unsigned domain (signed values xor 0x80), then the
// output grid: the identity copy (identity) or clamp(apply_requant(max, r)).
struct MaxPoolParams : PoolGeom {
  bool identity = true;
  RequantTable rq;  // single_requant(make_requant(s_in / s_out), lo, hi)
};

// Average / global average pool (global: KH = H, KW = W, stride 1, no
// padding). Window sums in 16-bit lanes (<= 256 taps of bytes), flushed into
// int32, then the exact avg_pool_divide of kernels.h, q = sign(sum) *
// floor(N / (count 2^(s+1))) with N = 2 |sum| m + count 2^s, computed in
// double as floor(fl(N / count) * 2^-(s+1)) and corrected once by the exact
// remainder. Exact whenever N < 2^53: N and count 2^s are then exact doubles,
// and a quotient x = N / D that is not an integer lies at least 1/D below the
// next integer k, while rounding moves it by at most x 2^-53 < 1/D, so
// fl(x) < k and floor(fl(x)) = floor(x). The kernel's supports() checks N <
// 2^53 for the largest sum and count. On one grid (m = 2^30, s = 30) and
// windows of <= 2^14 positions the same runs in float32 (N < 2^23).
struct AvgPoolParams : PoolGeom {
  bool count_include_pad = false;
  Requant r{};
  // Float output (the reference's float path): out = float(sum / count),
  // sum the double sum of float(q) * in_scale. Every term is a float multiple
  // of ulp(float(1 * in_scale)) below 2^9 times that value's binade, so for
  // windows of <= 2^20 positions the double sum is exact in any order.
  bool out_float = false;
  float in_scale = 1.0f;
};

template <class Tag>
void maxpool_rows(const MaxPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1);
template <class Tag>
void avgpool_rows(const AvgPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1);
template <class Tag>
void avgpool_rows_f32(const AvgPoolParams& p, const uint8_t* in, float* out, int64_t r0, int64_t r1);

void register_pool_kernels(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::simd
