// bbits — the cost vocabulary: MACs, weight bytes and bit operations (BOPs).
// Header-only, no dependencies; used by the training library (regularizer
// and reporting), the converter (per-operator costs stored in the model),
// the runtime (which recomputes every layer's costs from its shapes for
// `bbits inspect`) and the benchmarks. Products saturate at the int64 range:
// absurd shapes (a corrupt file) give huge figures, never an overflow.
#pragma once

#include <cstdint>

#include "bbits/format/quant.h"

namespace bbits::cost {

// a * b, saturated to the int64 range.
constexpr int64_t mul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return (a < 0) != (b < 0) ? INT64_MIN : INT64_MAX;
  return r;
}

// MACs of a 2-D convolution producing an out_h x out_w map with `out_channels`
// kept output channels, each reading `in_channels_per_group` kept input
// channels through a kh x kw window (batch 1).
constexpr int64_t conv2d_macs(int64_t out_h, int64_t out_w, int64_t out_channels,
                              int64_t in_channels_per_group, int64_t kh, int64_t kw) {
  return mul(mul(mul(mul(mul(out_h, out_w), out_channels), in_channels_per_group), kh), kw);
}

// MACs of a fully connected layer with `out_features` kept outputs reading
// `in_features` kept inputs (batch 1).
constexpr int64_t fc_macs(int64_t out_features, int64_t in_features) {
  return mul(out_features, in_features);
}

// BOPs = MACs x weight bits x input-activation bits (pruned channels already
// removed from the MACs). Pruned layers (0 weight bits) cost nothing.
constexpr int64_t bops(int64_t macs, int weight_bits, int act_bits) {
  return mul(mul(macs, weight_bits), act_bits);
}

// The same layer at 32/32 with nothing pruned: the denominator of relative BOPs.
constexpr int64_t bops_fp32(int64_t macs_unpruned) { return mul(macs_unpruned, 32 * 32); }

// Bytes of a weight tensor of `rows` output channels of `k` values each, packed
// at `bits` bits per value with every row padded to whole bytes.
constexpr int64_t weight_bytes(int64_t rows, int64_t k, int bits) {
  return bits == 0 ? 0 : mul(rows, static_cast<int64_t>(packed_row_bytes(k, bits)));
}

}  // namespace bbits::cost
