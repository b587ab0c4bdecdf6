// bbits bench — small model files built in memory with format::ModelWriter:
// one-layer models for calibrating kernel peaks on representative shapes,
// and a tiny network for smoke tests. Weights are random values on their grid.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bbits/kernels/kernels.h"

namespace bbits::bench {

// A model of one convolution (input N,C,H,W) with the desc's shapes, bits,
// grids and fused activation. Throws std::invalid_argument on a bad desc.
std::vector<uint8_t> single_conv_model(const kernels::ConvDesc& d, uint32_t seed = 1);
// A model of one fully connected layer.
std::vector<uint8_t> single_fc_model(const kernels::FcDesc& d, uint32_t seed = 1);

// A model of any one operator (conv, fc, pooling, add, relu/relu6, reshape
// from N,C,H,W to N,C*H*W, softmax over N,F, channel concat).
std::vector<uint8_t> single_op_model(const kernels::OpDesc& d, uint32_t seed = 1);

// A tiny network covering every common operator kind: conv 3x3 (w8a8, relu)
// -> max pool 2x2 -> depthwise conv 3x3 (w4) -> conv 1x1 (w2, relu) -> add
// (residual) -> global average pool -> reshape -> fully connected (w8, float
// output) -> softmax. Input 1x3x16x16, unsigned 8-bit.
std::vector<uint8_t> tiny_test_model(uint32_t seed = 1);

}  // namespace bbits::bench
