// Residual adds fused into the convolution that produces one of their inputs
// (the plan's fuse_residual_adds; the add runs on each range of rows as the
// convolution's kernel finishes it): the outputs of whole ResNet-18 and
// MobileNetV2 models are bit-identical to the unfused steps (fuse_adds =
// false, and a profiled session), on one and two threads, and to the
// reference kernels (the float classifier within float rounding).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>

#include "bbits/converter/convert.h"
#include "bbits/converter/synthetic.h"
#include "bbits/format/quant.h"
#include "bbits/runtime.h"

namespace bbits::converter {
namespace {

std::vector<uint8_t> synthetic_model(const std::string& arch, const std::string& bits) {
  const Checkpoint ck = make_synthetic(arch, parse_bit_config(bits), 7, /*calibrate=*/false);
  bbits::format::ModelWriter w;
  build_model(ck, w);
  return w.serialize();
}

std::vector<bbits::QuantizedTensor> random_input(const bbits::Model& m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<bbits::QuantizedTensor> in;
  for (size_t i = 0; i < m.num_inputs(); ++i) {
    const bbits::TensorInfo& t = m.input(i);
    bbits::QuantizedTensor q;
    q.shape = t.shape;
    q.bits = t.bits;
    q.is_signed = t.is_signed;
    q.scale = t.scale.at(0);
    std::uniform_int_distribution<int32_t> u(static_cast<int32_t>(bbits::qmin(q.bits, q.is_signed)),
                                             static_cast<int32_t>(bbits::qmax(q.bits, q.is_signed)));
    q.data.resize(static_cast<size_t>(t.elements()));
    for (auto& v : q.data) v = u(rng);
    in.push_back(std::move(q));
  }
  return in;
}

// Integer outputs equal; float outputs (the float classifier of these
// models) equal, or with `float_rel` within that share of the largest value
// (the reference kernels round float layers their own way).
void expect_same(const std::vector<bbits::QuantizedTensor>& a, const std::vector<bbits::QuantizedTensor>& b,
                 const std::string& what, double float_rel = 0.0) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].data, b[i].data) << what;
    if (float_rel == 0.0) {
      EXPECT_EQ(a[i].float_data, b[i].float_data) << what;
      continue;
    }
    ASSERT_EQ(a[i].float_data.size(), b[i].float_data.size()) << what;
    double mx = 1e-6;
    for (float v : b[i].float_data) mx = std::max(mx, static_cast<double>(std::fabs(v)));
    int64_t off = 0;
    for (size_t k = 0; k < a[i].float_data.size(); ++k)
      off += std::fabs(a[i].float_data[k] - b[i].float_data[k]) > float_rel * mx;
    EXPECT_EQ(off, 0) << what << ": float outputs differ by more than " << float_rel << " of the largest";
  }
}

int fused_adds(const bbits::Model& m) {
  int n = 0;
  for (const auto& L : m.info().layers) n += L.kernel_reason.find("runs inside operator") != std::string::npos;
  return n;
}

struct Case {
  const char* arch;
  const char* bits;
  int adds;
  bool reference;  // also against the reference kernels (slow on ResNet-18)
};

TEST(FusedResidualAdd, WholeModelsMatchTheUnfusedStepsAndTheReference) {
  for (const Case& c : {Case{"resnet18", "w8a8", 8, false}, Case{"mobilenetv2", "w8a8", 10, true},
                        Case{"mobilenetv2", "w2a8", 10, false}}) {
    const std::string what = std::string(c.arch) + " " + c.bits;
    const std::vector<uint8_t> bytes = synthetic_model(c.arch, c.bits);
    auto model = bbits::Model::from_memory(bytes.data(), bytes.size());
    if (model->isa() == "reference") GTEST_SKIP() << "no SIMD kernels on this CPU: nothing is fused";
    EXPECT_EQ(fused_adds(*model), c.adds) << what;
    std::shared_ptr<const bbits::Model> ref;
    if (c.reference) {
      ::setenv("BBITS_MAX_ISA", "reference", 1);
      ref = bbits::Model::from_memory(bytes.data(), bytes.size());
      ::unsetenv("BBITS_MAX_ISA");
      EXPECT_EQ(fused_adds(*ref), 0) << what;
    }
    for (int threads : {1, 2}) {
      bbits::Session fused(model, {.threads = threads});
      bbits::Session unfused(model, {.threads = threads, .fuse_adds = false});
      bbits::Session profiled(model, {.threads = threads, .profile = true});
      for (uint32_t seed = 1; seed <= 2; ++seed) {
        const auto x = random_input(*model, seed);
        const auto y = fused.run_quantized(x);
        expect_same(y, unfused.run_quantized(x), what + " fused vs unfused, threads " + std::to_string(threads));
        expect_same(y, profiled.run_quantized(x), what + " fused vs profiled, threads " + std::to_string(threads));
        if (ref && threads == 1 && seed == 1) {
          bbits::Session r(ref);
          expect_same(y, r.run_quantized(x), what + " vs the reference kernels", 1e-5);
        }
      }
    }
  }
}

}  // namespace
}  // namespace bbits::converter
