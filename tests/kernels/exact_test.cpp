// Hand-computed integer cases for the reference kernels: every value below was
// worked out on paper from the semantics in kernels.h / docs/FORMAT.md.
#include <gtest/gtest.h>

#include "kernel_tester.h"

namespace bbits::kernels {
namespace {

using testing::TestLayer;
using testing::TestTensor;
using testing::run_kernel;

QuantInfo u8(float s) { return {8, false, s}; }
QuantInfo s8(float s) { return {8, true, s}; }
QuantInfo f32() { return {32, false, 1.0f}; }

TestTensor tensor(const QuantInfo& q, std::initializer_list<int64_t> v) {
  TestTensor t(q, static_cast<int64_t>(v.size()));
  int64_t i = 0;
  for (int64_t x : v) t.set_int(i++, x);
  return t;
}

std::vector<int64_t> ints(const TestTensor& t) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < t.size(); ++i) v.push_back(t.get_int(i));
  return v;
}

std::vector<float> floats(const TestTensor& t) {
  std::vector<float> v;
  for (int64_t i = 0; i < t.size(); ++i) v.push_back(t.get_float(i));
  return v;
}

TestLayer layer(const OpDesc& d) {
  TestLayer L;
  L.desc = d;
  return L;
}

testing::TestWeights int_weights(int bits, int64_t rows, int64_t k, std::vector<int32_t> q, std::vector<float> scales,
                                 std::vector<int32_t> bias_q = {}) {
  testing::TestWeights w;
  w.bits = bits;
  w.rows = rows;
  w.k = k;
  w.q = std::move(q);
  w.packed = testing::pack_rows(w.q, rows, k, bits);
  w.scales = std::move(scales);
  w.bias_q = std::move(bias_q);
  return w;
}

TestTensor run_ref(TestLayer& L) { return run_kernel(*reference_kernel(L.desc), L); }

// 3x3 image 1..9, 2x2 kernel [[1,-1],[2,0]]: acc = 7, 9, 13, 15; bias 2 ->
// 9, 11, 15, 17; s_out = 2 -> 4.5, 5.5, 7.5, 8.5 round half up -> 5, 6, 8, 9.
TEST(ExactConv, SmallKernelRequantRoundsHalfUp) {
  ConvDesc d;
  d.H = d.W = 3;
  d.C = d.OC = 1;
  d.KH = d.KW = 2;
  d.wbits = 8;
  d.in = u8(1.0f);
  d.out = u8(2.0f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in, {1, 2, 3, 4, 5, 6, 7, 8, 9}));
  L.weights = int_weights(8, 1, 4, {1, -1, 2, 0}, {1.0f}, {2});
  L.has_weights = true;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{5, 6, 8, 9}));
}

// Same image, weights negated, signed output: -(7,9,13,15) + 2 = -5, -7, -11, -13;
// /2 = -2.5 -> -2, -3.5 -> -3, -5.5 -> -5, -6.5 -> -6 (half towards +infinity).
// Unsigned output clamps to 0; relu on a signed output clamps to 0 too.
TEST(ExactConv, NegativeAccumulatorsAndClamps) {
  ConvDesc d;
  d.H = d.W = 3;
  d.C = d.OC = 1;
  d.KH = d.KW = 2;
  d.wbits = 4;
  d.in = u8(1.0f);
  d.out = s8(2.0f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in, {1, 2, 3, 4, 5, 6, 7, 8, 9}));
  L.weights = int_weights(4, 1, 4, {-1, 1, -2, 0}, {1.0f}, {2});
  L.has_weights = true;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{-2, -3, -5, -6}));
  std::get<ConvDesc>(L.desc).activation = Activation::Relu;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{0, 0, 0, 0}));
  std::get<ConvDesc>(L.desc).activation = Activation::None;
  std::get<ConvDesc>(L.desc).out = u8(2.0f);
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{0, 0, 0, 0}));
}

// Depthwise 3x3, pad 1, on a 2x2x2 image: channel 0 has an all-ones kernel (every
// window covers the whole image: 1+2+3+4 = 10), channel 1 only the centre tap
// (the output is the input).
TEST(ExactConv, DepthwisePadded) {
  ConvDesc d;
  d.H = d.W = 2;
  d.C = d.OC = 2;
  d.groups = 2;
  d.KH = d.KW = 3;
  d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
  d.wbits = 2;
  d.in = u8(1.0f);
  d.out = u8(1.0f);
  TestLayer L = layer(d);
  // NHWC: (h,w) = (0,0): c0=1 c1=5; (0,1): 2, 6; (1,0): 3, 7; (1,1): 4, 8
  L.inputs.push_back(tensor(d.in, {1, 5, 2, 6, 3, 7, 4, 8}));
  L.weights = int_weights(2, 2, 9, {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0}, {1.0f, 1.0f});
  L.has_weights = true;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{10, 5, 10, 6, 10, 7, 10, 8}));
}

// Stride 2 and dilation 2 on a 5x5 ramp (value = 5h + w), kernel 2x2 all ones:
// taps at (h, w), (h, w+2), (h+2, w), (h+2, w+2) -> 4*(5h+w) + 24.
// Outputs at (0,0), (0,2), (2,0), (2,2): 24, 32, 64, 72.
TEST(ExactConv, StrideAndDilation) {
  ConvDesc d;
  d.H = d.W = 5;
  d.C = d.OC = 1;
  d.KH = d.KW = 2;
  d.stride_h = d.stride_w = 2;
  d.dilation_h = d.dilation_w = 2;
  d.wbits = 8;
  d.in = u8(1.0f);
  d.out = u8(1.0f);
  ASSERT_EQ(d.out_h(), 2);
  TestLayer L = layer(d);
  L.inputs.push_back(testing::TestTensor(d.in, 25));
  for (int i = 0; i < 25; ++i) L.inputs[0].set_int(i, i);
  L.weights = int_weights(8, 1, 4, {1, 1, 1, 1}, {1.0f});
  L.has_weights = true;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{24, 32, 64, 72}));
}

// FC, 4-bit weights [[1,-2,7],[-7,0,3]], s_w = [0.25, 0.5], input [3,1,2] (s_in 0.5),
// s_out 1: acc = 15, -15; bias 1 -> 16, -14; r = 0.125, 0.25 -> 2.0 -> 2, -3.5 -> -3.
TEST(ExactFc, FourBitPerChannelScales) {
  FcDesc d;
  d.K = 3;
  d.OC = 2;
  d.wbits = 4;
  d.in = u8(0.5f);
  d.out = s8(1.0f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in, {3, 1, 2}));
  L.weights = int_weights(4, 2, 3, {1, -2, 7, -7, 0, 3}, {0.25f, 0.5f}, {1, 1});
  L.has_weights = true;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{2, -3}));
  // Relu6 on an unsigned grid of step 0.5: hi = 12; relu clamps the negative one.
  std::get<FcDesc>(L.desc).activation = Activation::Relu6;
  std::get<FcDesc>(L.desc).out = u8(0.5f);
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{4, 0}));
  // Float output: acc * s_w * s_in + bias_q * s_w * s_in = 15*0.125 + 0.125, -15*0.25 + 0.25.
  std::get<FcDesc>(L.desc).activation = Activation::None;
  std::get<FcDesc>(L.desc).out = f32();
  EXPECT_EQ(floats(run_ref(L)), (std::vector<float>{2.0f, -3.5f}));
}

// 2-bit weights [1,-1,1] (packed in one byte), input [5,6,7]: 5 - 6 + 7 = 6.
TEST(ExactFc, TwoBitWeights) {
  FcDesc d;
  d.K = 3;
  d.OC = 1;
  d.wbits = 2;
  d.in = u8(1.0f);
  d.out = u8(1.0f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in, {5, 6, 7}));
  L.weights = int_weights(2, 1, 3, {1, -1, 1}, {1.0f});
  ASSERT_EQ(L.weights.packed.size(), 1u);
  EXPECT_EQ(L.weights.packed[0], 0b01'11'01);
  L.has_weights = true;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{6}));
}

// 16 x 16 bits overflows int32: 2 * 32767 * 65535 = 4294770690.
TEST(ExactFc, SixteenBitNeedsInt64) {
  FcDesc d;
  d.K = 2;
  d.OC = 1;
  d.wbits = 16;
  d.in = {16, false, 1.0f};
  d.out = f32();
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in, {65535, 65535}));
  L.weights = int_weights(16, 1, 2, {32767, 32767}, {1.0f});
  L.has_weights = true;
  EXPECT_EQ(floats(run_ref(L)), (std::vector<float>{4294770690.0f}));
  // Integer output with s_out = 2^16: 4294770690 / 65536 = 65533.00003 -> 65533.
  std::get<FcDesc>(L.desc).out = {16, false, 65536.0f};
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{65533}));
}

// A pruned layer (0 weight bits) outputs its bias through the activation.
TEST(ExactFc, PrunedLayerOutputsBias) {
  FcDesc d;
  d.K = 4;
  d.OC = 3;
  d.wbits = 0;
  d.in = u8(1.0f);
  d.out = s8(1.0f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in, {9, 9, 9, 9}));
  L.weights.bits = 0;
  L.weights.rows = 3;
  L.weights.k = 4;
  L.weights.scales = {0.5f, 0.5f, 0.5f};
  L.weights.bias_q = {10, -7, 3};  // real 5, -3.5, 1.5 -> 5, -3, 2
  L.has_weights = true;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{5, -3, 2}));
}

// Float input with 8-bit weights: the layer runs in float; the output is
// quantized with round half to even: [0.5, 1.0] . [2, 1] * 0.5 = 1.0 -> step
// 0.4: 2.5 -> 2 (half to even).
TEST(ExactFc, FloatInputRunsInFloat) {
  FcDesc d;
  d.K = 2;
  d.OC = 1;
  d.wbits = 8;
  d.in = f32();
  d.out = u8(0.4f);
  TestLayer L = layer(d);
  L.inputs.emplace_back(d.in, 2);
  L.inputs[0].set_float(0, 0.5f);
  L.inputs[0].set_float(1, 1.0f);
  L.weights = int_weights(8, 1, 2, {2, 1}, {0.5f});
  L.has_weights = true;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{2}));
}

// Max pool 2x2 stride 2 on a 4x4 single channel keeps the grid exactly.
TEST(ExactPool, MaxPool) {
  PoolDesc d;
  d.kind = PoolKind::Max;
  d.H = d.W = 4;
  d.C = 1;
  d.KH = d.KW = 2;
  d.stride_h = d.stride_w = 2;
  d.in = d.out = s8(0.1f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in, {1, -5, 3, 2, 0, 4, -1, -2, -7, -8, 9, 9, 127, -127, 0, 1}));
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{4, 3, 127, 9}));
}

// Average pool rounds half away from zero: {1,2,3,4}/4 = 2.5 -> 3;
// {-1,-2,-3,-4}/4 -> -3; {1,1,1,2}/4 = 1.25 -> 1.
TEST(ExactPool, AvgPoolRoundsHalfAwayFromZero) {
  PoolDesc d;
  d.kind = PoolKind::Avg;
  d.H = 2;
  d.W = 6;
  d.C = 1;
  d.KH = d.KW = 2;
  d.stride_h = d.stride_w = 2;
  d.in = d.out = s8(1.0f);
  TestLayer L = layer(d);
  // rows: [1 2 | -1 -2 | 1 1], [3 4 | -3 -4 | 1 2]
  L.inputs.push_back(tensor(d.in, {1, 2, -1, -2, 1, 1, 3, 4, -3, -4, 1, 2}));
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{3, -3, 1}));
}

// Windows of 6 (3x2): ties at .5 must round away from zero exactly, though
// 1/6 has no exact fixed-point multiplier: 9/6 = 1.5 -> 2, -9/6 -> -2,
// 15/6 = 2.5 -> 3, 8/6 = 1.33 -> 1. Onto a grid of step 2 (s_in/s_out = 1/2):
// 9/12 = 0.75 -> 1, -9/12 -> -1, 15/12 = 1.25 -> 1, 18/12 = 1.5 -> 2.
TEST(ExactPool, AvgPoolTiesWithCountSix) {
  PoolDesc d;
  d.kind = PoolKind::Avg;
  d.H = 3;
  d.W = 2;
  d.C = 4;
  d.KH = 3;
  d.KW = 2;
  d.in = d.out = s8(1.0f);
  TestLayer L = layer(d);
  // channels: c0 sums to 9, c1 to -9, c2 to 15, c3 to 8
  L.inputs.push_back(tensor(d.in, {1, -1, 5, 3, 1, -1, 2, 1, 1, -1, 2, 1, 1, -1, 2, 1, 1, -1, 2, 1, 4, -4, 2, 1}));
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{2, -2, 3, 1}));
  std::get<PoolDesc>(L.desc).out = s8(2.0f);
  L.inputs[0].set_int(23, 11);  // c3 now sums to 18
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{1, -1, 1, 2}));
}

// Padding 1, kernel 2, stride 2 on a 2x2 image: every window holds one pixel.
// Excluding the padding the average is the pixel; including it, pixel / 4.
TEST(ExactPool, AvgPoolCountIncludePad) {
  PoolDesc d;
  d.kind = PoolKind::Avg;
  d.H = d.W = 2;
  d.C = 1;
  d.KH = d.KW = 2;
  d.stride_h = d.stride_w = 2;
  d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
  d.in = d.out = u8(1.0f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in, {8, 10, 2, 255}));
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{8, 10, 2, 255}));
  std::get<PoolDesc>(L.desc).count_include_pad = true;
  // 8/4 = 2, 10/4 = 2.5 -> 3, 2/4 = 0.5 -> 1, 255/4 = 63.75 -> 64
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{2, 3, 1, 64}));
}

// Global average over 2x2 with two channels, onto a grid twice as coarse:
// c0: (1+2+3+5)/4 = 2.75 -> /2 = 1.375 -> 1; c1: (4+4+4+6)/4 = 4.5 -> 2.25 -> 2.
TEST(ExactPool, GlobalAvgPoolRequantizes) {
  PoolDesc d;
  d.kind = PoolKind::GlobalAvg;
  d.H = d.W = 2;
  d.C = 2;
  d.in = u8(1.0f);
  d.out = u8(2.0f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in, {1, 4, 2, 4, 3, 4, 5, 6}));
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{1, 2}));
}

// Add: a on u8 step 0.5, b on s8 step 0.25, out on s8 step 1. The real sum
// is rounded once (half up), as the trained network's output quantizer does:
//   a=3 (1.5),   b=-2 (-0.5)   ->  1.0   -> 1
//   a=5 (2.5),   b=6  (1.5)    ->  4.0   -> 4
//   a=1 (0.5),   b=-8 (-2)     -> -1.5   -> -1 (relu: 0)
//   a=255 (127.5), b=127 (31.75) -> 159.25 -> clamp 127
//   a=1 (0.5),   b=2  (0.5)    ->  1.0   -> 1 (rounding each side first would give 2)
TEST(ExactAdd, DifferentGridsRoundOnce) {
  AddDesc d;
  d.count = 5;
  d.a = u8(0.5f);
  d.b = s8(0.25f);
  d.out = s8(1.0f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.a, {3, 5, 1, 255, 1}));
  L.inputs.push_back(tensor(d.b, {-2, 6, -8, 127, 2}));
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{1, 4, -1, 127, 1}));
  std::get<AddDesc>(L.desc).activation = Activation::Relu;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{1, 4, 0, 127, 1}));
}

// Channel concat of a 1-channel (step 1) and a 2-channel (step 0.5) tensor over
// two pixels, onto step 1: 0.5 -> 1, 1.0 -> 1, 1.5 -> 2, 2.0 -> 2.
TEST(ExactConcat, RequantizesEachInput) {
  ConcatDesc d;
  d.outer = 2;
  d.sizes = {1, 2};
  d.in = {u8(1.0f), u8(0.5f)};
  d.out = u8(1.0f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in[0], {10, 20}));
  L.inputs.push_back(tensor(d.in[1], {1, 2, 3, 4}));
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{10, 1, 1, 20, 2, 2}));
}

// Flatten NHWC (1,2,2,3) with value = (h*2+w)*3+c into C,H,W order.
TEST(ExactReshape, FlattenToChwOrder) {
  ReshapeDesc d;
  d.H = d.W = 2;
  d.C = 3;
  d.to_chw = true;
  d.in = d.out = u8(1.0f);
  TestLayer L = layer(d);
  L.inputs.emplace_back(d.in, 12);
  for (int i = 0; i < 12; ++i) L.inputs[0].set_int(i, i);
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11}));
  std::get<ReshapeDesc>(L.desc).to_chw = false;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
}

// Relu6 from s8 step 0.5 onto u8 step 0.5: hi = round(6 / 0.5) = 12.
TEST(ExactActivation, Relu6) {
  ActivationDesc d;
  d.count = 5;
  d.act = Activation::Relu6;
  d.in = s8(0.5f);
  d.out = u8(0.5f);
  TestLayer L = layer(d);
  L.inputs.push_back(tensor(d.in, {-4, 3, 12, 13, 127}));
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{0, 3, 12, 12, 12}));
  std::get<ActivationDesc>(L.desc).act = Activation::Relu;
  EXPECT_EQ(ints(run_ref(L)), (std::vector<int64_t>{0, 3, 12, 13, 127}));
}

// Softmax of [0, ln 3] is [0.25, 0.75]; of a u8 input [0, 0] on any grid is [0.5, 0.5].
TEST(ExactSoftmax, SmallRows) {
  SoftmaxDesc d;
  d.outer = 1;
  d.axis_size = 2;
  d.in = f32();
  TestLayer L = layer(d);
  L.inputs.emplace_back(d.in, 2);
  L.inputs[0].set_float(0, 0.0f);
  L.inputs[0].set_float(1, std::log(3.0f));
  const auto p = floats(run_ref(L));
  EXPECT_NEAR(p[0], 0.25f, 1e-7);
  EXPECT_NEAR(p[1], 0.75f, 1e-7);
  std::get<SoftmaxDesc>(L.desc).in = u8(0.1f);
  L.inputs.clear();
  L.inputs.push_back(tensor(u8(0.1f), {7, 7}));
  EXPECT_EQ(floats(run_ref(L)), (std::vector<float>{0.5f, 0.5f}));
}

}  // namespace
}  // namespace bbits::kernels
