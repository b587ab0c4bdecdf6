// SIMD fully connected kernels with packed 2/4/8-bit weights and float32
// input (fc_w{2,4,8}a32_f32_{avx512,avx2}, kernels/simd/fc_f32*.cpp) against
// the reference kernel: float sums in another order, so float outputs within
// 1e-5 of the sum of the terms' magnitudes and quantized outputs equal except
// one step at a rounding boundary (kernel_tester.h, same_float_layer_output).
// Sweeps K tails (1..70, 127, 1280), the 4-row blocking's OC tails, batch
// 1/2/3/5, per-tensor and per-channel scales, every bias form, activations,
// float / 8-bit / 16-bit / 4-bit outputs, one and two threads; the kernel
// choice under each ISA cap; bad weights and arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../kernel_tester.h"
#include "bbits/kernels/cpu.h"
#include "bbits/kernels/kernels.h"
#include "bbits/kernels/thread_pool.h"

namespace bbits::kernels {
namespace {

using testing::TestLayer;

// Our kernels this CPU can run (every ISA level up to the machine's).
std::vector<const KernelInfo*> fc_f32_kernels() {
  std::vector<const KernelInfo*> out;
  const Isa machine = max_supported_isa(cpu_features());
  for (const auto& k : kernel_table())
    if (k.op == OpKind::FullyConnected && k.act_bits == 32 && k.isa != Isa::Reference &&
        isa_at_most(k.isa, machine) && k.name.rfind("fc_w", 0) == 0 && k.name.find("a32_f32_") != std::string::npos &&
        k.name.find("onednn") == std::string::npos)
      out.push_back(&k);
  return out;
}

enum BiasMode { kNoBias = 0, kBiasF = 1, kBiasQ = 2, kBothBias = 3 };

// A random layer for `d` with the requested bias form and scale granularity;
// the output scale recalibrated for the final biases (as make_layer does).
TestLayer make_fc_layer(const FcDesc& d, uint64_t seed, int bias_mode, bool per_tensor) {
  TestLayer L = testing::make_layer(d, seed);
  auto& w = L.weights;
  if (per_tensor) w.scales.assign(1, w.scales[0]);
  const std::vector<float> bf = w.bias_f;  // float layers: make_layer gives a float bias
  w.bias_f.clear();
  w.bias_q.clear();
  if (bias_mode & kBiasF) w.bias_f = bf;
  if (bias_mode & kBiasQ)  // a different value, so that the test sees which one the kernel uses
    for (int64_t oc = 0; oc < d.OC; ++oc) {
      const double sw = w.scales[w.scales.size() == 1 ? 0 : static_cast<size_t>(oc)];
      w.bias_q.push_back(quantize_bias(0.7 * bf[static_cast<size_t>(oc)] + 0.05, sw, 1.0));
    }
  QuantInfo& oq = testing::output_quant_ref(L.desc);
  if (!oq.is_float()) {
    double mx = 0.0;
    for (double v : testing::float_reference(L)) mx = std::max(mx, std::fabs(v));
    if (!(mx > 0.0)) mx = 1.0;
    oq.scale = static_cast<float>(mx / (0.9 * static_cast<double>(qmax(oq.bits, oq.is_signed))));
  }
  return L;
}

FcDesc fc_desc(int64_t N, int64_t K, int64_t OC, int wbits) {
  FcDesc d;
  d.N = N;
  d.K = K;
  d.OC = OC;
  d.wbits = wbits;
  d.in = {32, false, 1.0f};
  d.out = {32, false, 1.0f};
  return d;
}

TEST(SimdFcF32, KernelsRegistered) {
  const auto ks = fc_f32_kernels();
  if (max_supported_isa(cpu_features()) == Isa::Reference) GTEST_SKIP() << "no SIMD level on this CPU";
  // Every width at AVX2 (or NEON), and at AVX-512 too when the CPU has it.
  const size_t want = isa_at_most(Isa::AVX512, max_supported_isa(cpu_features())) ? 6 : 3;
  EXPECT_EQ(ks.size(), want);
  for (const auto* k : ks) {
    EXPECT_TRUE(k->weight_bits == 2 || k->weight_bits == 4 || k->weight_bits == 8) << k->name;
    EXPECT_FALSE(k->note.empty());
  }
}

// K tails 1..70 against OC tails of the 4-row blocks, batch 1 and 3; the other
// parameters rotate with the seed.
TEST(SimdFcF32, ShapeSweep) {
  const auto kernels = fc_f32_kernels();
  if (kernels.empty()) GTEST_SKIP() << "no fc_f32 SIMD kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 1;
  int checked = 0;
  const Activation acts[] = {Activation::None, Activation::Relu, Activation::Relu6};
  for (const auto* k : kernels) {
    for (int64_t K = 1; K <= 70; ++K) {
      for (int64_t OC : {1, 3, 4, 5, 6, 7, 9}) {
        if ((K + OC) % 2 == 1 && K > 20 && OC > 4) continue;  // thin the middle of the grid
        for (int64_t N : {1, 3}) {
          FcDesc d = fc_desc(N, K, OC, k->weight_bits);
          d.in.is_signed = seed % 3 != 0;
          d.activation = acts[seed % 3];
          if (seed % 4 == 1) d.out = {8, false, 1.0f};
          if (seed % 4 == 3) d.out = {8, true, 1.0f};
          const TestLayer L = make_fc_layer(d, seed, static_cast<int>(seed % 4), seed % 5 == 0);
          EXPECT_TRUE(testing::matches_reference_float_layer(*k, L, seed % 7 == 0 ? &pool : nullptr));
          ++seed;
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 1000);
}

// Long rows (127: every lane tail; 1280: MobileNetV2's classifier), larger OC
// (several parallel chunks), batch 1..5 (4 and 2 inputs per pass, and rests).
TEST(SimdFcF32, LongRowsAndBatches) {
  const auto kernels = fc_f32_kernels();
  if (kernels.empty()) GTEST_SKIP() << "no fc_f32 SIMD kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 5000;
  for (const auto* k : kernels)
    for (int64_t K : {127, 128, 1280})
      for (int64_t OC : {13, 100})
        for (int64_t N : {1, 2, 3, 5}) {
          if (K == 1280 && OC == 100 && N > 3) continue;
          FcDesc d = fc_desc(N, K, OC, k->weight_bits);
          d.activation = seed % 2 ? Activation::Relu : Activation::None;
          if (seed % 3 == 0) d.out = {8, false, 1.0f};
          const TestLayer L = make_fc_layer(d, seed, static_cast<int>(seed % 4), seed % 2 == 0);
          EXPECT_TRUE(testing::matches_reference_float_layer(*k, L, seed % 2 ? &pool : nullptr));
          ++seed;
        }
}

// Every combination of bias form, scale granularity, activation and output
// grid on a few shapes.
TEST(SimdFcF32, EpilogueCombinations) {
  const auto kernels = fc_f32_kernels();
  if (kernels.empty()) GTEST_SKIP() << "no fc_f32 SIMD kernel for this CPU";
  const QuantInfo outs[] = {{32, false, 1.0f}, {8, false, 1.0f}, {8, true, 1.0f},
                            {16, false, 1.0f}, {16, true, 1.0f}, {4, true, 1.0f}};
  uint64_t seed = 9000;
  for (const auto* k : kernels)
    for (auto [N, K, OC] : {std::tuple<int64_t, int64_t, int64_t>{3, 37, 6}, {1, 64, 11}})
      for (int bias = 0; bias < 4; ++bias)
        for (bool per_tensor : {false, true})
          for (Activation act : {Activation::None, Activation::Relu, Activation::Relu6})
            for (const QuantInfo& out : outs) {
              FcDesc d = fc_desc(N, K, OC, k->weight_bits);
              d.in.is_signed = true;
              d.activation = act;
              d.out = out;
              TestLayer L = make_fc_layer(d, seed++, bias, per_tensor);
              // Relu6 only clamps when values reach 6: scale the inputs up.
              if (act == Activation::Relu6)
                for (int64_t i = 0; i < L.inputs[0].size(); ++i) L.inputs[0].set_float(i, 8.0f * L.inputs[0].get_float(i));
              EXPECT_TRUE(testing::matches_reference_float_layer(*k, L))
                  << "bias " << bias << " per_tensor " << per_tensor;
            }
}

// Extreme weights (every value of the grid, -2^(b-1) included) and special
// inputs (zeros, huge and tiny magnitudes, infinities and NaN propagate as in
// the reference; NaN becomes 0 after an activation or on an integer grid).
TEST(SimdFcF32, ExtremeValues) {
  const auto kernels = fc_f32_kernels();
  if (kernels.empty()) GTEST_SKIP() << "no fc_f32 SIMD kernel for this CPU";
  for (const auto* k : kernels) {
    const int b = k->weight_bits;
    FcDesc d = fc_desc(2, 40, 9, b);
    TestLayer L = make_fc_layer(d, 77, kBiasF, false);
    // Cycle through the whole grid, -2^(b-1) .. 2^(b-1) - 1.
    const int lo = -(1 << (b - 1)), span = 1 << b;
    for (size_t i = 0; i < L.weights.q.size(); ++i) L.weights.q[i] = lo + static_cast<int>((i * 7) % static_cast<size_t>(span));
    L.weights.packed = testing::pack_rows(L.weights.q, d.OC, d.K, b);
    for (int64_t i = 0; i < d.K; ++i) L.inputs[0].set_float(i, (i % 3 == 0) ? 1e30f : (i % 3 == 1 ? -1e-30f : 0.0f));
    EXPECT_TRUE(testing::matches_reference_float_layer(*k, L)) << "large / tiny inputs";

    // Infinity and NaN: same non-finite pattern as the reference.
    for (Activation act : {Activation::None, Activation::Relu}) {
      FcDesc e = fc_desc(1, 20, 5, b);
      e.activation = act;
      TestLayer M = make_fc_layer(e, 78, kBiasF, true);
      if (act == Activation::None) M.inputs[0].set_float(3, std::numeric_limits<float>::infinity());
      else M.inputs[0].set_float(7, std::numeric_limits<float>::quiet_NaN());
      const testing::TestTensor want = testing::run_kernel(*reference_kernel(M.desc), M);
      const testing::TestTensor got = testing::run_kernel(*k, M);
      for (int64_t i = 0; i < got.size(); ++i) {
        const float g = got.get_float(i), w = want.get_float(i);
        EXPECT_EQ(std::isnan(g), std::isnan(w)) << k->name << " [" << i << "] " << g << " vs " << w;
        if (!std::isnan(w)) EXPECT_EQ(g, w) << k->name << " [" << i << "]";
      }
      e.out = {8, true, 0.1f};
      M.desc = e;
      const testing::TestTensor wq = testing::run_kernel(*reference_kernel(M.desc), M);
      const testing::TestTensor gq = testing::run_kernel(*k, M);
      EXPECT_TRUE(testing::same_output(gq, wq)) << k->name;
    }
  }
}

// The table prefers these kernels for the synthetic models' classifiers (float
// input after the global average pool), under each ISA cap.
TEST(SimdFcF32, ChosenForClassifiers) {
  const std::vector<Isa> caps = testing::isa_caps();
  if (caps.size() < 2) GTEST_SKIP() << "no SIMD level on this CPU";
  for (auto [K, OC] : {std::pair<int64_t, int64_t>{512, 1000}, {1280, 1000}})
    for (int b : {2, 4, 8})
      for (Isa cap : caps) {
        if (cap == Isa::Reference) continue;
        FcDesc d = fc_desc(1, K, OC, b);
        d.out = {8, false, 0.05f};
        const char* isa = cap == Isa::AVX2 ? "avx2" : isa_family(cap) == IsaFamily::Arm ? "neon" : "avx512";
        const std::string want = "fc_w" + std::to_string(b) + "a32_f32_" + isa;
        const KernelChoice c = choose_kernel(d, cap);
        ASSERT_NE(c.info, nullptr);
        EXPECT_EQ(c.info->name, want) << describe(d) << " cap " << isa_name(cap) << ": "
                                      << explain_choice(d, candidates(d, cap), cap);
      }
  // Not ours: integer input, other weight widths.
  for (const auto* k : fc_f32_kernels()) {
    FcDesc d = fc_desc(1, 64, 8, k->weight_bits);
    d.in = {8, false, 0.1f};
    EXPECT_FALSE(k->supports(d)) << k->name;
    d = fc_desc(1, 64, 8, k->weight_bits == 8 ? 4 : 8);
    EXPECT_FALSE(k->supports(d)) << k->name;
    d = fc_desc(1, 64, 8, 32);
    EXPECT_FALSE(k->supports(d)) << k->name;
    EXPECT_FALSE(k->supports(OpDesc{ConvDesc{}})) << k->name;
  }
}

template <class F>
void expect_throw_naming(F&& f, const std::string& kernel, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one about " << what;
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(kernel), std::string::npos) << m;
    EXPECT_NE(m.find(what), std::string::npos) << m;
  }
}

TEST(SimdFcF32, BadInput) {
  const auto kernels = fc_f32_kernels();
  if (kernels.empty()) GTEST_SKIP() << "no fc_f32 SIMD kernel for this CPU";
  for (const auto* k : kernels) {
    const FcDesc d = fc_desc(1, 33, 7, k->weight_bits);
    const TestLayer L = make_fc_layer(d, 3, kBothBias, false);
    const std::string& n = k->name;
    {
      Weights w = L.weights.view();
      w.size -= 1;
      expect_throw_naming([&] { k->create(d, w); }, n, "bytes");
      w = L.weights.view();
      w.data = nullptr;
      expect_throw_naming([&] { k->create(d, w); }, n, "bytes");
    }
    for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
      std::vector<float> s = L.weights.scales;
      s[4] = bad;
      Weights w = L.weights.view();
      w.scales = s;
      expect_throw_naming([&] { k->create(d, w); }, n, "scale");
      std::vector<float> one{bad};
      w.scales = one;
      expect_throw_naming([&] { k->create(d, w); }, n, "scale");
    }
    {
      Weights w = L.weights.view();
      std::vector<float> s(3, 0.1f);
      w.scales = s;
      expect_throw_naming([&] { k->create(d, w); }, n, "weight scales");
      w.scales = {};
      expect_throw_naming([&] { k->create(d, w); }, n, "weight scales");
      w = L.weights.view();
      std::vector<int32_t> bq(6, 1);
      w.bias_q = bq;
      expect_throw_naming([&] { k->create(d, w); }, n, "int32 biases");
      w = L.weights.view();
      std::vector<float> bf(8, 0.0f);
      w.bias_f = bf;
      expect_throw_naming([&] { k->create(d, w); }, n, "float biases");
    }
    {
      FcDesc e = d;
      e.in = {8, false, 0.1f};
      expect_throw_naming([&] { k->create(e, L.weights.view()); }, n, "cannot run");
      e = d;
      e.K = 0;
      EXPECT_THROW(k->create(e, L.weights.view()), std::invalid_argument);
      expect_throw_naming([&] { k->create(OpDesc{ConvDesc{}}, L.weights.view()); }, n, "not a fully connected");
    }
    {
      auto kernel = k->create(d, L.weights.view());
      testing::TestTensor out(d.out, d.OC);
      KernelArgs a;
      a.output = out.data();
      expect_throw_naming([&] { kernel->run(a, nullptr); }, n, "input");
      const void* ins[1] = {L.inputs[0].data()};
      a.inputs = ins;
      a.output = nullptr;
      expect_throw_naming([&] { kernel->run(a, nullptr); }, n, "null output");
      const void* none[1] = {nullptr};
      a.inputs = none;
      a.output = out.data();
      expect_throw_naming([&] { kernel->run(a, nullptr); }, n, "null input");
    }
  }
}

}  // namespace
}  // namespace bbits::kernels
