// SIMD depthwise conv, residual add and max pool (kernels/simd/) against the
// reference kernels: exact agreement over shape sweeps (channel tails, taps,
// stride, padding, dilation), signed / unsigned grids, requantizing and
// identity grids, fused activations, one and two threads.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../kernel_tester.h"
#include "bbits/kernels/cpu.h"
#include "bbits/kernels/kernels.h"
#include "bbits/kernels/thread_pool.h"

namespace bbits::kernels {
namespace {

std::vector<const KernelInfo*> simd_kernels(OpKind op, const std::string& prefix) {
  std::vector<const KernelInfo*> out;
  const Isa machine = max_supported_isa(cpu_features());
  for (const auto& k : kernel_table())
    if (k.op == op && k.isa != Isa::Reference && isa_at_most(k.isa, machine) && k.name.rfind(prefix, 0) == 0)
      out.push_back(&k);
  return out;
}

TEST(SimdOps, DepthwiseSweepExact) {
  const auto kernels = simd_kernels(OpKind::Conv2D, "dwconv2d_");
  if (kernels.empty()) GTEST_SKIP() << "no SIMD depthwise kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 1;
  int checked = 0;
  for (const auto* k : kernels) {
    for (int64_t C : {2, 8, 17, 64, 77, 130}) {
      for (int kk : {3, 5}) {
        for (int s : {1, 2}) {
          for (int wb : {2, 4, 8}) {
            ConvDesc d;
            d.N = (C == 17) ? 2 : 1;
            d.H = 7;
            d.W = 6;
            d.C = d.OC = C;
            d.groups = static_cast<int>(C);
            d.KH = d.KW = kk;
            d.stride_h = d.stride_w = s;
            d.pad_top = d.pad_left = kk / 2;
            d.pad_bottom = d.pad_right = (s == 2) ? 0 : kk / 2;
            if (C == 77) d.dilation_h = 2;
            d.wbits = wb;
            const bool sgn = (seed % 2) == 0;
            d.in = {8, sgn, 0.05f};
            d.out = {seed % 5 == 0 ? 16 : 8, seed % 3 == 0, 1.0f};
            if (seed % 7 == 0) d.out = {32, false, 1.0f};
            d.activation = seed % 4 == 0 ? Activation::Relu6 : (seed % 4 == 1 ? Activation::Relu : Activation::None);
            if (!k->supports(d)) {
              ADD_FAILURE() << k->name << " should support " << describe(d);
              continue;
            }
            EXPECT_TRUE(testing::matches_reference(*k, d, seed, (seed % 3 == 0) ? &pool : nullptr));
            ++seed;
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 72 * static_cast<int>(kernels.size()));  // every shape on every kernel
}

TEST(SimdOps, AddExact) {
  const auto kernels = simd_kernels(OpKind::Add, "add_");
  if (kernels.empty()) GTEST_SKIP() << "no SIMD add kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 100;
  for (const auto* k : kernels) {
    for (int64_t n : {1, 7, 15, 16, 17, 63, 64, 65, 1000, 10007}) {
      for (int v = 0; v < 6; ++v) {
        AddDesc d;
        d.count = n;
        d.a = {8, v == 1, 0.05f};
        d.b = {v == 2 ? 4 : 8, v == 3, v == 0 ? 0.05f : 0.11f};
        d.out = {8, v % 2 == 1, 0.08f};
        // Far-apart grids: the two products align over 12-13 bits before the
        // single rounding (either side the larger shift).
        if (v == 4) d.b.scale = 0.00002f;
        if (v == 5) d.a = {8, true, 0.00003f};
        d.activation = v == 0 ? Activation::Relu : Activation::None;
        ASSERT_TRUE(k->supports(d)) << describe(d);
        // Fixed scales (keep_out_scale): the requantization is what is tested.
        const auto L = testing::make_layer(d, seed++, true);
        const auto* ref = reference_kernel(L.desc);
        const auto want = testing::run_kernel(*ref, L);
        const auto got = testing::run_kernel(*k, L, n > 5000 ? &pool : nullptr);
        EXPECT_TRUE(testing::same_output(got, want)) << k->name << " " << describe(d);
      }
    }
  }
}

// Grids more than 2^15 apart do not fit the kernels' 64-bit alignment: the
// reference kernel runs them.
TEST(SimdOps, AddRefusesFarApartGrids) {
  const auto kernels = simd_kernels(OpKind::Add, "add_");
  if (kernels.empty()) GTEST_SKIP() << "no SIMD add kernel for this CPU";
  AddDesc d;
  d.count = 64;
  d.a = {8, false, 0.5f};
  d.b = {8, false, 1e-6f};
  d.out = {8, false, 0.5f};
  for (const auto* k : kernels) EXPECT_FALSE(k->supports(d)) << k->name;
}

TEST(SimdOps, MaxPoolExact) {
  const auto kernels = simd_kernels(OpKind::MaxPool2D, "max_pool2d_");
  if (kernels.empty()) GTEST_SKIP() << "no SIMD max pool kernel for this CPU";
  uint64_t seed = 300;
  for (const auto* k : kernels) {
    for (int64_t C : {1, 16, 33, 64, 100}) {
      for (int v = 0; v < 4; ++v) {
        PoolDesc d;
        d.kind = PoolKind::Max;
        d.N = 1 + v % 2;
        d.H = 9;
        d.W = 8;
        d.C = C;
        d.KH = d.KW = (v == 3) ? 2 : 3;
        d.stride_h = d.stride_w = 2;
        d.pad_top = d.pad_left = (v == 3) ? 0 : 1;
        d.pad_bottom = d.pad_right = (v == 1) ? 1 : 0;
        d.in = {8, v == 2, 0.05f};
        d.out = v == 0 ? d.in : QuantInfo{v == 1 ? 4 : 8, v == 2, 0.07f};
        ASSERT_TRUE(k->supports(d)) << describe(d);
        const auto L = testing::make_layer(d, seed++, true);
        const auto* ref = reference_kernel(L.desc);
        const auto want = testing::run_kernel(*ref, L);
        const auto got = testing::run_kernel(*k, L);
        EXPECT_TRUE(testing::same_output(got, want)) << k->name << " " << describe(d);
      }
    }
  }
}

TEST(SimdOps, ChoiceRespectsIsaCap) {
  PoolDesc d;
  d.kind = PoolKind::Max;
  d.H = d.W = 8;
  d.C = 64;
  d.KH = d.KW = 2;
  d.stride_h = d.stride_w = 2;
  d.in = d.out = {8, false, 0.1f};
  EXPECT_EQ(choose_kernel(d, Isa::Reference).info->isa, Isa::Reference);
  for (Isa cap : testing::isa_caps())
    for (const auto* k : candidates(d, cap)) EXPECT_TRUE(isa_at_most(k->isa, cap)) << k->name << " cap " << isa_name(cap);
}

}  // namespace
}  // namespace bbits::kernels
