// A reference VGG7 (the reference's VGGQuantized with width multiplier
// k = 1/8, BatchNorm folded by BatchNormQScheme) converted with --arch vgg7
// and run on inputs normalised the way the reference's CIFAR-10 loader
// normalises (benchmarks/cifar/cifar10_data_loader.py): the runtime must
// predict what the reference's own evaluation of the same quantized network
// predicts, with the input NOT quantized as the reference runs it.
//
// Fixtures (tests/converter/fixtures/make_reference_fixtures.py, Debian's
// python3-torch): vgg7_reference.pth.gz, the network trained there on
// Fashion-MNIST made CIFAR-10-shaped (32x32, a black border of 2, grey in
// all three channels), and vgg7_reference_float_eval.npy.gz, the logits of
// its quantized network in the reference's eval mode on the first 2,000 test
// images. The inputs are rebuilt here from the Debian package
// dataset-fashion-mnist exactly as the script builds them (torchvision's
// ToTensor and Normalize in float32).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "bbits/contract/zoo.h"
#include "bbits/converter/convert.h"
#include "bbits/converter/input.h"
#include "bbits/converter/pth.h"
#include "bbits/runtime.h"
#include "test_util.h"

namespace bbits::converter {
namespace {

constexpr int64_t kFixtureImages = 2000;
// All of them natively, 500 under emulation.
int64_t images() { return test::images_to_evaluate(kFixtureImages, 500); }

// The normalisation of the reference's CIFAR-10 loader (transform_test).
const std::vector<float> kLoaderMean = {0.4914f, 0.4822f, 0.4465f};
const std::vector<float> kLoaderStd = {0.2023f, 0.1994f, 0.2010f};
// The CIFAR-10 std usually quoted with torchvision (the template's value before).
const std::vector<float> kTorchvisionStd = {0.2470f, 0.2435f, 0.2616f};

// Fashion-MNIST test images (pixel / 255) as the fixture script feeds them:
// 3 x 32 x 32 with a black border of 2, grey in every channel, then
// (x - mean[c]) / std[c] in float32 (torchvision's Normalize).
struct Data {
  FTensor x;  // N,3,32,32
  std::vector<int> labels;
};
const Data& reference_data() {
  static const Data d = [] {
    Data r;
    FTensor images;
    if (!test::load_fashion_mnist_test(kFixtureImages, images, r.labels)) return r;
    const int64_t n = images.shape[0];
    r.x.shape = {n, 3, 32, 32};
    r.x.data.resize(static_cast<size_t>(n * 3 * 32 * 32));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < 32; ++y)
          for (int64_t xx = 0; xx < 32; ++xx) {
            const bool inside = y >= 2 && y < 30 && xx >= 2 && xx < 30;
            const float p = inside ? images.data[static_cast<size_t>(i * 784 + (y - 2) * 28 + (xx - 2))] : 0.0f;
            r.x.data[static_cast<size_t>(((i * 3 + c) * 32 + y) * 32 + xx)] =
                (p - kLoaderMean[static_cast<size_t>(c)]) / kLoaderStd[static_cast<size_t>(c)];
          }
    return r;
  }();
  return d;
}

const std::vector<float>& reference_logits() {
  static const std::vector<float> v = [] {
    std::vector<int64_t> shape;
    std::vector<float> l = test::read_npy_f32(test::read_fixture("vgg7_reference_float_eval.npy.gz"), shape);
    if (shape != std::vector<int64_t>{kFixtureImages, 10}) throw std::runtime_error("unexpected logits shape");
    return l;
  }();
  return v;
}

Checkpoint reference_checkpoint() {
  return import_reference(read_pth(test::read_fixture("vgg7_reference.pth.gz")), "vgg7", nullptr,
                          "vgg7_reference.pth");
}

int argmax(const float* v, int64_t k) { return static_cast<int>(std::max_element(v, v + k) - v); }

struct Result {
  int64_t n = 0, agree = 0, correct = 0, correct_ref = 0;
  int64_t values = 0, clipped = 0;
  float lo = 0, hi = 0;
  std::string first_kernel;
  int first_act_bits = 0;
};

Result evaluate(const Checkpoint& ck, const ConvertOptions& opts, int64_t n) {
  const Data& d = reference_data();
  const std::vector<float>& ref = reference_logits();
  bbits::format::ModelWriter w;
  build_model(ck, w, opts);
  const auto bytes = w.serialize();
  const auto model = bbits::Model::from_memory(bytes.data(), bytes.size());
  bbits::Session session(model);
  Result r;
  r.n = std::min<int64_t>(n, d.x.shape[0]);
  r.first_kernel = model->info().layers.at(0).kernel;
  r.first_act_bits = model->info().layers.at(0).act_bits;
  bbits::Tensor in;
  in.shape = {1, 3, 32, 32};
  for (int64_t i = 0; i < r.n; ++i) {
    in.data.assign(d.x.data.begin() + i * 3072, d.x.data.begin() + (i + 1) * 3072);
    const auto out = session.run({in});
    const bbits::InputRunStats& st = session.last_run_stats().inputs.at(0);
    r.values += st.values;
    r.clipped += st.clipped;
    r.lo = st.lo;
    r.hi = st.hi;
    const int p = argmax(out.at(0).data.data(), 10), q = argmax(ref.data() + i * 10, 10);
    r.agree += p == q;
    r.correct += p == d.labels[static_cast<size_t>(i)];
    r.correct_ref += q == d.labels[static_cast<size_t>(i)];
  }
  return r;
}

void report(const char* what, const Result& r) {
  std::printf("[vgg7] %s: %lld/%lld predictions as the reference's float-input evaluation (%.2f%%), accuracy %.2f%% vs "
              "%.2f%%; %lld of %lld input values clipped to [%.4f, %.4f]; first layer %d-bit input on %s\n",
              what, static_cast<long long>(r.agree), static_cast<long long>(r.n), 100.0 * r.agree / r.n,
              100.0 * r.correct / r.n, 100.0 * r.correct_ref / r.n, static_cast<long long>(r.clipped),
              static_cast<long long>(r.values), r.lo, r.hi, r.first_act_bits, r.first_kernel.c_str());
}

#define REQUIRE_DATA()                                                                                  \
  if (reference_data().labels.empty())                                                                  \
  GTEST_SKIP() << "Fashion-MNIST test set not installed (/usr/share/datasets/fashion-mnist)"

TEST(ReferenceVgg7, TheTemplateRecordsTheReferenceLoadersNormalisation) {
  const Graph g = contract::make_graph("vgg7");
  EXPECT_EQ(g.input.shape, (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(g.input.mean, kLoaderMean);
  EXPECT_EQ(g.input.std, kLoaderStd);
  EXPECT_DOUBLE_EQ(g.input.pixel_scale, 1.0 / 255.0);
  // The input range covers what the loader produces: black (0 - 0.4914) /
  // 0.2023 = -2.429 and white (1 - 0.4465) / 0.2010 = 2.754.
  EXPECT_NEAR(default_input_x_max(g.input), (1.0f - 0.4465f) / 0.2010f, 1e-6);
}

TEST(ReferenceVgg7, ImportsWithTheCheckpointsWidths) {
  const Checkpoint ck = reference_checkpoint();
  EXPECT_EQ(ck.graph.node("features.0").out_channels, 16);  // k = 1/8 of the reference's 128
  EXPECT_EQ(ck.graph.node("features.7").out_channels, 64);
  EXPECT_EQ(ck.graph.node("classifier.0").in_features, 1024);
  EXPECT_EQ(ck.graph.node("classifier.0").out_features, 128);
  EXPECT_TRUE(ck.graph.node("features.3").bn);
  EXPECT_TRUE(ck.graph.node("classifier.0").bn);
  EXPECT_EQ(ck.input_bits, kInputBitsFromPixels);
  // (pixel / 255 - mean) / std does not land on the 8-bit grid over [-2.75, 2.75]:
  // the input gets 16 bits (docs/CONVERTER.md, "Input precision")
  EXPECT_FALSE(pixels_exact_on_grid(ck.graph.input, ck.get("input.aq.x_max").scalar(), 8));
  EXPECT_EQ(input_bits_of(ck), 16);
}

// The proof: >= 99.5% of the predictions of the reference's float-input
// evaluation, and no input value outside the input grid.
TEST(ReferenceVgg7, AgreesWithTheReferencesFloatInputEvaluation) {
  REQUIRE_DATA();
  const Result r = evaluate(reference_checkpoint(), {}, images());
  report("--arch vgg7 (default input grid)", r);
  EXPECT_EQ(r.n, images());
  EXPECT_GE(r.agree * 1000, r.n * 995);
  EXPECT_EQ(r.clipped, 0);
  EXPECT_EQ(r.first_act_bits, 16);
}

// The template's std before this fix: the input grid ends at +/-2.13, every
// black pixel (-2.43, -2.42, -2.22 in the three channels) is clipped, the
// runtime counts exactly the values beyond the range, and the predictions
// drift from the reference's.
TEST(ReferenceVgg7, TheTorchvisionCifar10StdClipsTheBackgroundAndDisagrees) {
  REQUIRE_DATA();
  Checkpoint ck = reference_checkpoint();
  InputOverrides ov;
  ov.std = kTorchvisionStd;
  apply_input_overrides(ck, ov);
  const float x_max = ck.get("input.aq.x_max").scalar();
  EXPECT_NEAR(x_max, (1.0f - 0.4822f) / 0.2435f, 1e-6);  // 2.1265
  const int64_t n = test::images_to_evaluate(1000, 500);
  const Result r = evaluate(ck, {}, n);
  report("--arch vgg7 --std 0.2470,0.2435,0.2616 (the torchvision CIFAR-10 std)", r);
  int64_t beyond = 0, black = 0;
  const auto& x = reference_data().x.data;
  for (int64_t i = 0; i < n * 3072; ++i) {
    const float v = x[static_cast<size_t>(i)];
    beyond += std::fabs(v) > x_max;
    black += v <= -(0.4465f / 0.2010f);  // a black pixel in any channel
  }
  EXPECT_EQ(r.clipped, beyond);
  EXPECT_GE(r.clipped, black);
  EXPECT_LT(r.agree * 1000, r.n * 995);
}

// The first layer runs on the kernel of the input grid the model declares,
// chosen through the kernel table. Float input is the reference exactly; an
// 8-bit grid over [-2.75, 2.75] (step 0.0216, coarser than the 0.0195 of one
// pixel level in the first channel) changes more predictions than the
// threshold allows on these images (12 of 2,000, accuracy -0.30 points when
// measured): why the default is 16 bits.
TEST(ReferenceVgg7, InputGridsOfEightSixteenAndThirtyTwoBits) {
  REQUIRE_DATA();
  const Checkpoint ck = reference_checkpoint();
  for (int bits : {8, 16, 32}) {
    ConvertOptions o;
    o.input_bits = bits;
    const Result r = evaluate(ck, o, images());
    report(("--input-bits " + std::to_string(bits)).c_str(), r);
    EXPECT_EQ(r.first_act_bits, bits);
    // the kernel the table gave the first layer takes that input width
    // (names say it: conv2d_w8a16_..., conv2d_ref_w8a32, conv2d_w32a32_f32_onednn)
    EXPECT_NE(r.first_kernel.find("a" + std::to_string(bits)), std::string::npos) << r.first_kernel;
    EXPECT_EQ(r.clipped, 0);
    if (bits == 32) EXPECT_GE(r.agree * 1000, r.n * 998);  // 2000/2000 measured (10,000/10,000 on the whole test set)
    if (bits == 16) EXPECT_GE(r.agree * 1000, r.n * 995);
    if (bits == 8) EXPECT_GE(r.agree * 1000, r.n * 990);
  }
}

}  // namespace
}  // namespace bbits::converter
