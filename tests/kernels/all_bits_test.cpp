// Every operator at every legal bit-width combination (weights 0/2/4/8/16/32,
// activations 2/4/8/16/32 on signed and unsigned grids, every output grid)
// against a float computation on the dequantized values: integer outputs must
// be within one output step, float outputs within 1e-4 relative.
#include <gtest/gtest.h>

#include <tuple>

#include "kernel_tester.h"

namespace bbits::kernels {
namespace {

using testing::make_layer;
using testing::run_kernel;
using testing::within_float_tolerance;

std::vector<QuantInfo> grids(int bits) {
  if (bits == 32) return {{32, false, 1.0f}, {32, true, 1.0f}};  // signedness: sign of the random floats
  return {{bits, false, 0.05f}, {bits, true, 0.03f}};
}

std::vector<QuantInfo> all_grids() {
  std::vector<QuantInfo> v;
  for (int b : kActBits)
    for (const auto& q : grids(b)) v.push_back(q);
  return v;
}

const Activation kActs[] = {Activation::None, Activation::Relu, Activation::Relu6};

// Runs the reference kernel for the desc on a random layer and checks it.
void check(const OpDesc& desc, uint64_t seed, double steps = 1.0) {
  const auto L = make_layer(desc, seed);
  const KernelInfo* k = reference_kernel(L.desc);
  ASSERT_NE(k, nullptr);
  const auto out = run_kernel(*k, L);
  EXPECT_TRUE(within_float_tolerance(L, out, steps)) << k->name;
}

class ConvFcBits : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(ConvFcBits, ConvMatchesFloat) {
  const auto [wb, ab] = GetParam();
  std::vector<ConvDesc> shapes;
  {
    ConvDesc d;  // strided, asymmetric padding, batch 2
    d.N = 2, d.H = 5, d.W = 4, d.C = 3, d.OC = 4, d.KH = 3, d.KW = 3;
    d.stride_h = 2, d.stride_w = 1, d.pad_top = 1, d.pad_left = 1, d.pad_bottom = 0, d.pad_right = 1;
    shapes.push_back(d);
  }
  {
    ConvDesc d;  // depthwise, dilated along W
    d.H = 4, d.W = 5, d.C = d.OC = 3, d.groups = 3, d.KH = d.KW = 3;
    d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1, d.dilation_w = 2;
    shapes.push_back(d);
  }
  {
    ConvDesc d;  // grouped 2x1
    d.H = 3, d.W = 3, d.C = 4, d.OC = 6, d.groups = 2, d.KH = 2, d.KW = 1;
    shapes.push_back(d);
  }
  uint64_t seed = 1000u * static_cast<uint64_t>(wb) + static_cast<uint64_t>(ab);
  for (const auto& in : grids(ab))
    for (const auto& out : all_grids())
      for (Activation act : kActs)
        for (ConvDesc d : shapes) {
          d.wbits = wb;
          d.in = in;
          d.out = out;
          d.activation = act;
          SCOPED_TRACE(describe(d));
          check(d, ++seed);
        }
}

TEST_P(ConvFcBits, FcMatchesFloat) {
  const auto [wb, ab] = GetParam();
  uint64_t seed = 7000u * static_cast<uint64_t>(wb) + static_cast<uint64_t>(ab);
  for (const auto& in : grids(ab))
    for (const auto& out : all_grids())
      for (Activation act : kActs)
        for (int64_t k : {1, 7, 33}) {
          FcDesc d;
          d.N = 2, d.K = k, d.OC = 5;
          d.wbits = wb;
          d.in = in;
          d.out = out;
          d.activation = act;
          SCOPED_TRACE(describe(d));
          check(d, ++seed);
          // Float biases instead of int32 ones on integer layers too.
          const auto L = make_layer(d, seed, false, /*float_bias=*/true);
          EXPECT_TRUE(within_float_tolerance(L, run_kernel(*reference_kernel(L.desc), L)));
        }
}

INSTANTIATE_TEST_SUITE_P(AllWidths, ConvFcBits,
                         ::testing::Combine(::testing::Values(0, 2, 4, 8, 16, 32), ::testing::Values(2, 4, 8, 16, 32)),
                         [](const auto& info) {
                           return "w" + std::to_string(std::get<0>(info.param)) + "a" +
                                  std::to_string(std::get<1>(info.param));
                         });

class ActBits : public ::testing::TestWithParam<int> {};

TEST_P(ActBits, ReluRelu6MatchFloat) {
  uint64_t seed = 100u * static_cast<uint64_t>(GetParam());
  for (const auto& in : grids(GetParam()))
    for (const auto& out : all_grids())
      for (Activation act : {Activation::Relu, Activation::Relu6}) {
        ActivationDesc d;
        d.count = 37;
        d.act = act;
        d.in = in;
        d.out = out;
        SCOPED_TRACE(describe(d));
        check(d, ++seed);
      }
}

TEST_P(ActBits, PoolsMatchFloat) {
  uint64_t seed = 200u * static_cast<uint64_t>(GetParam());
  for (const auto& in : grids(GetParam()))
    for (const auto& out : all_grids()) {
      for (PoolKind kind : {PoolKind::Max, PoolKind::Avg}) {
        for (bool include_pad : {false, true}) {
          PoolDesc d;
          d.kind = kind;
          d.N = 2, d.H = 5, d.W = 6, d.C = 3, d.KH = 3, d.KW = 3, d.stride_h = 2, d.stride_w = 2;
          d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
          d.count_include_pad = include_pad;
          d.in = in;
          d.out = out;
          SCOPED_TRACE(describe(d));
          check(d, ++seed);
          d.KH = 2, d.KW = 3, d.stride_h = 1, d.stride_w = 3, d.pad_top = d.pad_bottom = 0, d.pad_left = d.pad_right = 0;
          SCOPED_TRACE(describe(d));
          check(d, ++seed);
        }
      }
      PoolDesc g;
      g.kind = PoolKind::GlobalAvg;
      g.N = 2, g.H = 3, g.W = 5, g.C = 4;
      g.in = in;
      g.out = out;
      SCOPED_TRACE(describe(g));
      check(g, ++seed);
    }
}

TEST_P(ActBits, AddMatchesFloat) {
  uint64_t seed = 300u * static_cast<uint64_t>(GetParam());
  for (const auto& a : grids(GetParam()))
    for (const auto& b : all_grids())
      for (const auto& out : all_grids())
        for (Activation act : kActs) {
          AddDesc d;
          d.count = 29;
          d.a = a;
          d.b = b;
          d.b.scale *= 1.7f;  // different steps on the two sides
          d.out = out;
          d.activation = act;
          SCOPED_TRACE(describe(d));
          check(d, ++seed, 1.0);  // two roundings of half a step each
        }
}

TEST_P(ActBits, ConcatMatchesFloat) {
  uint64_t seed = 400u * static_cast<uint64_t>(GetParam());
  for (const auto& a : grids(GetParam()))
    for (const auto& out : all_grids())
      for (int other : kActBits) {
        ConcatDesc d;
        d.outer = 6;
        d.inner = 2;
        d.sizes = {3, 1, 4};
        QuantInfo b = grids(other)[0], c = grids(other)[1];
        b.scale *= 0.6f;
        d.in = {a, b, c};
        d.out = out;
        SCOPED_TRACE(describe(d));
        check(d, ++seed, 0.5);
      }
}

TEST_P(ActBits, ReshapeMatchesFloat) {
  uint64_t seed = 500u * static_cast<uint64_t>(GetParam());
  for (const auto& in : grids(GetParam()))
    for (const auto& out : all_grids())
      for (bool chw : {false, true}) {
        ReshapeDesc d;
        d.N = 2, d.H = 3, d.W = 2, d.C = 5;
        d.to_chw = chw;
        d.in = in;
        d.out = out;
        SCOPED_TRACE(describe(d));
        check(d, ++seed, 0.5);
        // Same grid in and out (the format's reshape): an exact permutation.
        d.out = d.in;
        const auto L = make_layer(d, ++seed, /*keep_out_scale=*/true);
        const auto got = run_kernel(*reference_kernel(L.desc), L);
        EXPECT_TRUE(within_float_tolerance(L, got, 0.0, 0.0));
      }
}

TEST_P(ActBits, SoftmaxMatchesFloat) {
  uint64_t seed = 600u * static_cast<uint64_t>(GetParam());
  for (const auto& in : grids(GetParam()))
    for (const QuantInfo out : {QuantInfo{32, false, 1.0f}, QuantInfo{8, false, 1.0f / 255}, QuantInfo{16, false, 1.0f / 65535}}) {
      SoftmaxDesc d;
      d.outer = 3, d.axis_size = 10, d.inner = 2;
      d.in = in;
      d.out = out;
      SCOPED_TRACE(describe(d));
      const auto L = make_layer(d, ++seed, /*keep_out_scale=*/true);
      const auto got = run_kernel(*reference_kernel(L.desc), L);
      EXPECT_TRUE(within_float_tolerance(L, got, 0.5, 1e-6));
    }
}

INSTANTIATE_TEST_SUITE_P(AllWidths, ActBits, ::testing::Values(2, 4, 8, 16, 32),
                         [](const auto& info) { return "a" + std::to_string(info.param); });

}  // namespace
}  // namespace bbits::kernels
