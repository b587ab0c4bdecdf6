// End-to-end runs of the hand-built LeNet-5-shaped model against a float
// reference of the same quantized network, session threading, the plan.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "bbits/runtime.h"
#include "lenet_builder.h"

namespace {

using bbits::testing::build_lenet;
using bbits::testing::lenet_random_input;
using bbits::testing::lenet_reference;
using bbits::testing::LenetModel;
using bbits::testing::LenetSpec;

std::shared_ptr<const bbits::Model> load(const LenetModel& m) {
  return bbits::Model::from_memory(m.bytes.data(), m.bytes.size());
}

bbits::Tensor float_input(const LenetModel& m, const std::vector<int32_t>& q) {
  bbits::Tensor t;
  t.shape = {1, 1, m.spec.in_h, m.spec.in_w};
  for (int32_t v : q) t.data.push_back(static_cast<float>(v) * m.s_in);
  return t;
}

bbits::QuantizedTensor quant_input(const LenetModel& m, const std::vector<int32_t>& q) {
  bbits::QuantizedTensor t;
  t.shape = {1, 1, m.spec.in_h, m.spec.in_w};
  t.bits = 8;
  t.is_signed = false;
  t.scale = m.s_in;
  t.data = q;
  return t;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rel) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 1e-6;
  for (float w : want) scale = std::max(scale, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], rel * scale) << "output " << i;
}

const LenetModel& lenet() {
  static const LenetModel m = build_lenet(LenetSpec{});
  return m;
}

TEST(Session, LenetMatchesFloatReferenceExactly) {
  const LenetModel& m = lenet();
  auto model = load(m);
  bbits::Session session(model);
  for (uint32_t seed = 1; seed <= 4; ++seed) {
    const auto x = lenet_random_input(m, seed);
    const std::vector<float> ref = lenet_reference(m, x);
    // Sanity: the reference is not degenerate (the layers are not saturated or dead).
    float lo = ref[0], hi = ref[0];
    for (float v : ref) lo = std::min(lo, v), hi = std::max(hi, v);
    EXPECT_GT(hi - lo, 1e-3f);

    const auto q = session.run_quantized({quant_input(m, x)});
    ASSERT_EQ(q.size(), 1u);
    EXPECT_EQ(q[0].bits, 32);
    EXPECT_EQ(q[0].shape, (std::vector<int64_t>{1, 10}));
    // Power-of-two scales: the reference is exact, so only float rounding of
    // the last layer may differ.
    expect_close(q[0].float_data, ref, 1e-5);

    const auto f = session.run({float_input(m, x)});
    ASSERT_EQ(f.size(), 1u);
    EXPECT_EQ(f[0].shape, (std::vector<int64_t>{1, 10}));
    expect_close(f[0].data, ref, 1e-5);
  }
}

TEST(Session, RandomScalesCloseToFloatReference) {
  LenetSpec spec;
  spec.pow2_scales = false;
  spec.seed = 7;
  const LenetModel m = build_lenet(spec);
  auto model = load(m);
  bbits::Session session(model);
  int argmax_agree = 0;
  const int n = 6;
  for (uint32_t seed = 1; seed <= n; ++seed) {
    const auto x = lenet_random_input(m, seed);
    const std::vector<float> ref = lenet_reference(m, x);
    const auto out = session.run_quantized({quant_input(m, x)});
    // Arbitrary scales: the requantization multiplier has 31 bits, so an
    // activation may land one step away from the double-precision reference
    // near a rounding tie; the logits stay within a few percent.
    expect_close(out[0].float_data, ref, 0.05);
    const auto am = [](const std::vector<float>& v) { return std::max_element(v.begin(), v.end()) - v.begin(); };
    argmax_agree += am(out[0].float_data) == am(ref);
  }
  EXPECT_GE(argmax_agree, n - 1);
}

// Every weight and activation bit width on a small LeNet.
struct Bits {
  int w1, w2, w3, w4, a1, a2, a3;
};
class SessionBits : public ::testing::TestWithParam<Bits> {};

TEST_P(SessionBits, SmallLenetMatchesReference) {
  const Bits b = GetParam();
  LenetSpec spec;
  spec.in_h = spec.in_w = 16;
  spec.c1 = 6, spec.keep_c1 = 5, spec.c2 = 8, spec.keep_c2 = 7, spec.fc1 = 24, spec.keep_fc1 = 20;
  spec.k = 3;
  spec.w1 = b.w1, spec.w2 = b.w2, spec.w3 = b.w3, spec.w4 = b.w4;
  spec.a1 = b.a1, spec.a2 = b.a2, spec.a3 = b.a3;
  spec.seed = static_cast<uint32_t>(b.w1 * 1000 + b.w2 * 100 + b.a1 * 10 + b.a3);
  const LenetModel m = build_lenet(spec);
  auto model = load(m);
  bbits::Session session(model);
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    const auto x = lenet_random_input(m, seed);
    const auto out = session.run_quantized({quant_input(m, x)});
    expect_close(out[0].float_data, lenet_reference(m, x), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Widths, SessionBits,
                         ::testing::Values(Bits{2, 2, 2, 2, 2, 2, 2}, Bits{4, 4, 4, 4, 4, 4, 4},
                                           Bits{8, 8, 8, 8, 8, 8, 8}, Bits{16, 16, 16, 16, 16, 16, 16},
                                           Bits{2, 4, 8, 16, 16, 8, 4}, Bits{16, 8, 4, 2, 2, 16, 8},
                                           Bits{8, 2, 16, 4, 4, 2, 16}));

// A small LeNet on a 3-channel 14x14 input.
LenetModel three_channel_lenet() {
  LenetSpec spec;
  spec.in_c = 3;
  spec.in_h = spec.in_w = 14;
  spec.c1 = 6, spec.keep_c1 = 5, spec.c2 = 8, spec.keep_c2 = 7, spec.fc1 = 16, spec.keep_fc1 = 12;
  spec.k = 3;
  return build_lenet(spec);
}

TEST(Session, MultiChannelInputInEitherDeclaredLayout) {
  const LenetModel m = three_channel_lenet();
  auto nchw = load(m);
  const std::vector<uint8_t> nhwc_bytes = bbits::testing::repack_model(
      m.bytes, [](bbits::fb::ModelT& t) { t.preprocess->layout = bbits::fb::Layout::NHWC; });
  auto nhwc = bbits::Model::from_memory(nhwc_bytes.data(), nhwc_bytes.size());
  EXPECT_EQ(nchw->input(0).shape, (std::vector<int64_t>{1, 3, 14, 14}));
  EXPECT_EQ(nhwc->input(0).shape, (std::vector<int64_t>{1, 14, 14, 3}));
  bbits::Session a(nchw), b(nhwc);
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    const auto x = lenet_random_input(m, seed);  // N,C,H,W
    const std::vector<float> ref = lenet_reference(m, x);
    bbits::Tensor t1;
    t1.shape = {1, 3, 14, 14};
    for (int32_t v : x) t1.data.push_back(static_cast<float>(v) * m.s_in);
    bbits::Tensor t2;
    t2.shape = {1, 14, 14, 3};
    t2.data.resize(t1.data.size());
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < 14 * 14; ++i) t2.data[size_t(i * 3 + c)] = t1.data[size_t(c * 196 + i)];
    expect_close(a.run({t1})[0].data, ref, 1e-5);
    expect_close(b.run({t2})[0].data, ref, 1e-5);
  }
}

TEST(Session, ThreadsOptionGivesIdenticalResults) {
  const LenetModel& m = lenet();
  auto model = load(m);
  bbits::Session one(model, {1});
  bbits::Session two(model, {2});
  bbits::Session all(model, {0});
  for (uint32_t seed = 10; seed < 13; ++seed) {
    const auto x = quant_input(m, lenet_random_input(m, seed));
    const auto a = one.run_quantized({x});
    EXPECT_EQ(a[0].float_data, two.run_quantized({x})[0].float_data);
    EXPECT_EQ(a[0].float_data, all.run_quantized({x})[0].float_data);
  }
}

TEST(Session, SessionsShareOneModelAcrossThreads) {
  const LenetModel& m = lenet();
  auto model = load(m);
  const int nthreads = 4, runs = 6;
  std::vector<std::vector<float>> expected(static_cast<size_t>(nthreads * runs));
  for (int i = 0; i < nthreads * runs; ++i)
    expected[static_cast<size_t>(i)] = lenet_reference(m, lenet_random_input(m, 100 + static_cast<uint32_t>(i)));
  std::vector<std::vector<std::vector<float>>> got(static_cast<size_t>(nthreads));
  std::vector<std::thread> threads;
  for (int t = 0; t < nthreads; ++t)
    threads.emplace_back([&, t] {
      bbits::Session s(model, {t % 2 + 1});
      for (int r = 0; r < runs; ++r) {
        const int i = t * runs + r;
        got[static_cast<size_t>(t)].push_back(
            s.run({float_input(m, lenet_random_input(m, 100 + static_cast<uint32_t>(i)))})[0].data);
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < nthreads; ++t)
    for (int r = 0; r < runs; ++r) expect_close(got[size_t(t)][size_t(r)], expected[size_t(t * runs + r)], 1e-5);
}

TEST(Session, ProfileTimesEveryLayer) {
  const LenetModel& m = lenet();
  auto model = load(m);
  bbits::Session plain(model);
  EXPECT_TRUE(plain.layer_ns().empty());
  bbits::SessionOptions opt;
  opt.profile = true;
  bbits::Session s(model, opt);
  const auto x = float_input(m, lenet_random_input(m, 2));
  EXPECT_EQ(s.run({x})[0].data, plain.run({x})[0].data);
  ASSERT_EQ(s.layer_ns().size(), model->info().layers.size());
  double sum = 0.0;
  for (double ns : s.layer_ns()) {
    EXPECT_GT(ns, 0.0);
    sum += ns;
  }
  // The whole call: the layers plus what the session does outside them.
  EXPECT_GT(s.run_ns(), sum);
  EXPECT_EQ(plain.run_ns(), 0.0);
  s.run_quantized({quant_input(m, lenet_random_input(m, 2))});
  sum = 0.0;
  for (double ns : s.layer_ns()) sum += ns;
  EXPECT_GT(s.run_ns(), sum);
}

// A 3-channel N,C,H,W input through both paths: integers (run_quantized) and
// their float values (run) land in the same N,H,W,C storage and give the
// reference's outputs; a value off the grid is named with its index.
TEST(Session, MultiChannelInputOnBothPaths) {
  const LenetModel m = three_channel_lenet();
  bbits::Session s(load(m));
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    const auto x = lenet_random_input(m, seed);  // N,C,H,W
    const std::vector<float> ref = lenet_reference(m, x);
    bbits::QuantizedTensor q = quant_input(m, x);
    q.shape = {1, 3, 14, 14};
    const auto yq = s.run_quantized({q});
    expect_close(yq[0].float_data, ref, 1e-5);
    bbits::Tensor f;
    f.shape = {1, 3, 14, 14};
    for (int32_t v : x) f.data.push_back(static_cast<float>(v) * m.s_in);
    EXPECT_EQ(s.run({f})[0].data, yq[0].float_data);
    q.data[400] = -1;
    try {
      s.run_quantized({q});
      ADD_FAILURE() << "no error for a value off the grid";
    } catch (const bbits::Error& e) {
      EXPECT_NE(std::string(e.what()).find("value -1 at 400 outside the grid [0, 255]"), std::string::npos) << e.what();
    }
  }
}

TEST(Session, SessionOutlivesCallerModelReference) {
  const LenetModel& m = lenet();
  auto model = load(m);
  bbits::Session s(model);
  model.reset();
  const auto x = lenet_random_input(m, 3);
  expect_close(s.run({float_input(m, x)})[0].data, lenet_reference(m, x), 1e-5);
}

// The float path counts the input values it has to clip onto the grid:
// those more than half a step beyond the grid's ends (rounding alone would
// not bring them onto it), NaN included. run_quantized() records nothing.
TEST(Session, CountsClippedInputValuesExactly) {
  // x_max = 1 on the 8-bit unsigned grid (step 1/255): range [0, 1], values
  // in [-1/510, 1 + 1/510] round onto it.
  LenetSpec spec;
  spec.pow2_scales = false;
  const LenetModel m = build_lenet(spec);
  bbits::Session session(load(m));
  EXPECT_TRUE(session.last_run_stats().inputs.empty());
  bbits::Tensor t = float_input(m, lenet_random_input(m, 5));
  const float half = 0.5f / 255.0f;
  const std::vector<float> outside = {1.5f, -0.25f, 1.0f + 2 * half, -2 * half, std::nanf(""), INFINITY, -INFINITY};
  const std::vector<float> inside = {0.0f, 1.0f, 1.0f + 0.9f * half, -0.9f * half, 0.5f};
  size_t k = 0;
  for (float v : outside) t.data[k++ * 13] = v;
  for (float v : inside) t.data[k++ * 13] = v;
  session.run({t});
  ASSERT_EQ(session.last_run_stats().inputs.size(), 1u);
  const bbits::InputRunStats& st = session.last_run_stats().inputs[0];
  EXPECT_TRUE(st.quantized);
  EXPECT_EQ(st.values, 784);
  EXPECT_EQ(st.clipped, static_cast<int64_t>(outside.size()));
  EXPECT_EQ(st.lo, 0.0f);
  EXPECT_EQ(st.hi, 1.0f);
  // A clean input: nothing clipped (the stats are per run, not cumulative).
  session.run({float_input(m, lenet_random_input(m, 6))});
  EXPECT_EQ(session.last_run_stats().inputs[0].clipped, 0);
  // The raw integer path takes integers as they are and counts nothing.
  session.run_quantized({quant_input(m, lenet_random_input(m, 6))});
  EXPECT_TRUE(session.last_run_stats().inputs.empty());

  // Without a recorded x_max (power-of-two scales, step 2^-8): the grid
  // [0, 255/256]; 1.0 lies more than half a step above its top.
  bbits::Session s2(load(lenet()));
  bbits::Tensor u = float_input(lenet(), lenet_random_input(lenet(), 7));
  u.data[0] = 1.0f;
  u.data[1] = 255.4f / 256.0f;
  s2.run({u});
  EXPECT_EQ(s2.last_run_stats().inputs[0].clipped, 1);
  EXPECT_EQ(s2.last_run_stats().inputs[0].hi, 255.0f / 256.0f);
}

TEST(Session, RejectsBadInputs) {
  const LenetModel& m = lenet();
  auto model = load(m);
  bbits::Session s(model);
  auto expect_error = [&](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error, expected one containing '" << needle << "'";
    } catch (const bbits::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { s.run({}); }, "0 inputs given, model has 1");
  bbits::Tensor wrong;
  wrong.shape = {1, 28, 28, 1};
  wrong.data.assign(784, 0.0f);
  expect_error([&] { s.run({wrong}); }, "model expects 1x1x28x28");
  bbits::Tensor short_data;
  short_data.shape = {1, 1, 28, 28};
  short_data.data.assign(100, 0.0f);
  expect_error([&] { s.run({short_data}); }, "100 values");
  auto q = quant_input(m, lenet_random_input(m, 1));
  q.data[5] = 300;
  expect_error([&] { s.run_quantized({q}); }, "outside the grid");
  q = quant_input(m, lenet_random_input(m, 1));
  q.bits = 4;
  expect_error([&] { s.run_quantized({q}); }, "model expects 8-bit unsigned");
  expect_error([&] { bbits::Session bad(model, {-1}); }, "threads");
}

TEST(Model, DescribesLayersCostsAndPlan) {
  const LenetModel& m = lenet();
  auto model = load(m);
  const bbits::ModelInfo& info = model->info();
  ASSERT_EQ(info.layers.size(), 7u);
  const bbits::LayerInfo& c1 = info.layers[0];
  EXPECT_EQ(c1.op, "conv2d");
  EXPECT_EQ(c1.activation, "relu");
  EXPECT_EQ(c1.weight_bits, 4);
  EXPECT_EQ(c1.act_bits, 8);
  EXPECT_EQ(c1.out_bits, 4);
  EXPECT_EQ(c1.channels_kept, 28);
  EXPECT_EQ(c1.channels_total, 32);
  EXPECT_EQ(c1.keep_mask.size(), 32u);
  EXPECT_EQ(c1.input_shape, (std::vector<int64_t>{1, 1, 28, 28}));
  EXPECT_EQ(c1.output_shape, (std::vector<int64_t>{1, 28, 24, 24}));
  EXPECT_EQ(c1.macs, 24 * 24 * 28 * 25);
  EXPECT_EQ(c1.macs_unpruned, 24 * 24 * 32 * 25);
  EXPECT_EQ(c1.bops, c1.macs * 4 * 8);
  EXPECT_EQ(c1.weight_bytes, 28 * 13);  // 25 values x 4 bits = 12.5 -> 13 bytes per row
  EXPECT_FALSE(c1.kernel.empty());
  EXPECT_FALSE(c1.kernel_reason.empty());
  const bbits::LayerInfo& c2 = info.layers[2];
  EXPECT_EQ(c2.weight_bits, 2);
  EXPECT_EQ(c2.channels_kept, 60);
  EXPECT_EQ(c2.input_shape, (std::vector<int64_t>{1, 28, 12, 12}));
  EXPECT_EQ(info.layers[4].op, "reshape");
  EXPECT_EQ(info.layers[4].weight_bits, -1);
  EXPECT_EQ(info.layers[5].input_shape, (std::vector<int64_t>{1, 960}));
  EXPECT_EQ(info.layers[5].channels_kept, 500);
  EXPECT_EQ(info.layers[6].out_bits, 32);
  int64_t bops = 0, fp = 0;
  for (const auto& L : info.layers) bops += L.bops, fp += L.bops_fp32;
  EXPECT_EQ(info.bops, bops);
  EXPECT_EQ(info.bops_fp32, fp);
  EXPECT_GT(info.relative_bops(), 0.0);
  EXPECT_LT(info.relative_bops(), 0.05);
  // Float32 weights + biases of the unpruned net: 32*25+32 + 64*800+64 + 512*1024+512 + 10*512+10.
  EXPECT_EQ(info.float32_bytes, 4 * (32 * 25 + 32 + 64 * 800 + 64 + 512 * 1024 + 512 + 10 * 512 + 10));
  EXPECT_LT(info.relative_size(), 0.3);
  EXPECT_TRUE(info.preprocess.present);
  EXPECT_EQ(info.preprocess.layout, "NCHW");
  EXPECT_FLOAT_EQ(info.preprocess.pixel_scale, 1.0f / 255.0f);
  EXPECT_EQ(info.metadata.arch, "lenet5");
  EXPECT_EQ(model->num_inputs(), 1u);
  EXPECT_EQ(model->input(0).shape, (std::vector<int64_t>{1, 1, 28, 28}));
  EXPECT_EQ(model->output(0).name, "logits");
  EXPECT_THROW(model->input(1), bbits::Error);
  // Liveness: conv1's output (28x24x24 bytes) and the flatten/fc tensors never
  // coexist, so the arena is smaller than the sum of all activations.
  EXPECT_GT(model->arena_bytes(), 0u);
  EXPECT_LT(model->arena_bytes(), model->arena_bytes_unshared());
  EXPECT_GE(model->arena_bytes(), size_t{28 * 24 * 24 + 28 * 12 * 12});  // conv1 out + pool1 out live together
  EXPECT_FALSE(model->isa().empty());
}

TEST(Model, LoadMapsAFileAndMatchesFromMemory) {
  const LenetModel& m = lenet();
  const auto path = std::filesystem::temp_directory_path() / ("bbits_session_test_" + std::to_string(::getpid()) + ".bbm");
  {
    FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(m.bytes.data(), 1, m.bytes.size(), f);
    std::fclose(f);
  }
  auto a = bbits::Model::load(path.string());
  std::filesystem::remove(path);  // the mapping stays valid
  auto b = load(m);
  EXPECT_EQ(a->info().file_size, m.bytes.size());
  bbits::Session sa(a), sb(b);
  const auto x = float_input(m, lenet_random_input(m, 5));
  EXPECT_EQ(sa.run({x})[0].data, sb.run({x})[0].data);
}

TEST(Model, VerboseSaysWhichKernelRunsAndWhy) {
  const LenetModel& m = lenet();
  ::setenv("BBITS_VERBOSE", "1", 1);
  ::testing::internal::CaptureStderr();
  auto model = load(m);
  const std::string err = ::testing::internal::GetCapturedStderr();
  ::unsetenv("BBITS_VERBOSE");
  EXPECT_NE(err.find("conv1"), std::string::npos) << err;
  EXPECT_NE(err.find("kernel"), std::string::npos) << err;
  EXPECT_NE(err.find(model->info().layers[0].kernel), std::string::npos) << err;
  EXPECT_NE(err.find("arena"), std::string::npos) << err;
}

TEST(Model, IsaCapIsHonouredAndBadCapIsAnError) {
  const LenetModel& m = lenet();
  ::setenv("BBITS_MAX_ISA", "reference", 1);
  auto model = load(m);
  EXPECT_EQ(model->isa(), "reference");
  for (const auto& L : model->info().layers) EXPECT_NE(L.kernel.find("ref"), std::string::npos) << L.kernel;
  ::setenv("BBITS_MAX_ISA", "pentium", 1);
  try {
    load(m);
    ADD_FAILURE() << "a bad BBITS_MAX_ISA was accepted";
  } catch (const bbits::Error& e) {
    EXPECT_NE(std::string(e.what()).find("BBITS_MAX_ISA"), std::string::npos) << e.what();
  }
  ::unsetenv("BBITS_MAX_ISA");
}

}  // namespace
