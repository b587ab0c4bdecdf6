// bbits — the cost vocabulary: MACs, weight bytes and bit operations (BOPs).
// Header-only, no dependencies; used by the training library (regularizer
// and reporting), the converter (per-operator costs stored in the model),
// the runtime (`bbits inspect`) and the benchmarks.
#pragma once

#include <cstdint>

#include "bbits/format/quant.h"

namespace bbits::cost {

// MACs of a 2-D convolution producing an out_h x out_w map with `out_channels`
// kept output channels, each reading `in_channels_per_group` kept input
// channels through a kh x kw window (batch 1).
constexpr int64_t conv2d_macs(int64_t out_h, int64_t out_w, int64_t out_channels,
                              int64_t in_channels_per_group, int64_t kh, int64_t kw) {
  return out_h * out_w * out_channels * in_channels_per_group * kh * kw;
}

// MACs of a fully connected layer with `out_features` kept outputs reading
// `in_features` kept inputs (batch 1).
constexpr int64_t fc_macs(int64_t out_features, int64_t in_features) {
  return out_features * in_features;
}

// BOPs = MACs x weight bits x input-activation bits (pruned channels already
// removed from the MACs). Pruned layers (0 weight bits) cost nothing.
constexpr int64_t bops(int64_t macs, int weight_bits, int act_bits) {
  return macs * weight_bits * act_bits;
}

// The same layer at 32/32 with nothing pruned: the denominator of relative BOPs.
constexpr int64_t bops_fp32(int64_t macs_unpruned) { return macs_unpruned * 32 * 32; }

// Bytes of a weight tensor of `rows` output channels of `k` values each, packed
// at `bits` bits per value with every row padded to whole bytes.
constexpr int64_t weight_bytes(int64_t rows, int64_t k, int bits) {
  return bits == 0 ? 0 : rows * static_cast<int64_t>(packed_row_bytes(k, bits == 32 ? 32 : bits));
}

}  // namespace bbits::cost
