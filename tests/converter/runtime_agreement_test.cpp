// Converted models run in the bbits runtime predict what a float evaluation
// of the same quantized network predicts (simulate(): the checkpoint in
// PyTorch layout, fake quantization, no channel removal) — for a reference
// .pth LeNet-5 and for small networks whose pruned channels are removed
// across pooling, flatten and depthwise layers or kept behind a residual add;
// and the costs the converter stores are the ones the runtime computes from
// the model's shapes for every one of them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "bbits/converter/convert.h"
#include "bbits/converter/pth.h"
#include "bbits/converter/simulate.h"
#include "bbits/converter/synthetic.h"
#include "bbits/runtime.h"
#include "test_util.h"

namespace bbits::converter {
namespace {

using nlohmann::json;
using test::SmallNet;

struct Agreement {
  int64_t n = 0, same = 0, clear = 0, clear_same = 0;
  double max_diff = 0.0, max_logit = 0.0;
};

int argmax(const float* v, int64_t k) { return static_cast<int>(std::max_element(v, v + k) - v); }

// integer_bias: biases rounded onto the accumulator grid s_w * s_in; otherwise
// float biases, the training library's eval mode and what the runtime applies
// (docs/FORMAT.md: a float bias keeps its sub-step part).
Agreement compare(const Checkpoint& ck, const FTensor& x, bool integer_bias = false) {
  bbits::format::ModelWriter w;
  build_model(ck, w);
  const auto bytes = w.serialize();
  auto model = bbits::Model::from_memory(bytes.data(), bytes.size());
  for (const auto& L : model->info().layers)
    EXPECT_TRUE(L.stored_costs_agree()) << ck.graph.model << " " << L.name << ": stored MACs " << L.stored_macs
                                        << " computed " << L.macs << ", stored unpruned " << L.stored_macs_unpruned
                                        << " computed " << L.macs_unpruned;
  bbits::Session session(model);
  SimulateOptions so;
  so.integer_bias = integer_bias;
  const FTensor ref = simulate(ck, x, so).at(0);
  const int64_t n = x.shape[0], per = x.numel() / n, k = ref.numel() / n;
  Agreement a;
  a.n = n;
  for (int64_t i = 0; i < n; ++i) {
    bbits::Tensor in;
    in.shape = {1, x.shape[1], x.shape[2], x.shape[3]};
    in.data.assign(x.data.begin() + i * per, x.data.begin() + (i + 1) * per);
    const auto out = session.run({in});
    EXPECT_EQ(out.at(0).elements(), k);
    const float* r = ref.data.data() + i * k;
    const float* g = out[0].data.data();
    std::vector<float> sorted(r, r + k);
    std::sort(sorted.rbegin(), sorted.rend());
    double range = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      a.max_diff = std::max(a.max_diff, static_cast<double>(std::fabs(r[j] - g[j])));
      a.max_logit = std::max(a.max_logit, static_cast<double>(std::fabs(r[j])));
      range = std::max(range, static_cast<double>(std::fabs(r[j])));
    }
    const bool same = argmax(r, k) == argmax(g, k);
    a.same += same;
    if (sorted[0] - sorted[1] > 1e-3 * std::max(range, 1.0)) {
      ++a.clear;
      a.clear_same += same;
    }
  }
  return a;
}

void report(const char* what, const Agreement& a) {
  std::printf("[agreement] %s: %lld/%lld same predictions (%lld/%lld with a clear margin), max |logit diff| %.4g, "
              "max |logit| %.4g\n",
              what, static_cast<long long>(a.same), static_cast<long long>(a.n), static_cast<long long>(a.clear_same),
              static_cast<long long>(a.clear), a.max_diff, a.max_logit);
}

TEST(RuntimeAgreement, ReferenceLeNet5PthMatchesTheFloatEvaluationOfTheQuantizedNetwork) {
  const TensorMap sd = read_pth(test::read_fixture("lenet5_reference.pth.gz"));
  const Checkpoint ck = import_reference(sd, "lenet5", nullptr, "lenet5_reference.pth");
  FTensor x;
  std::vector<int> labels;
  if (!test::load_fashion_mnist_test(300, x, labels)) x = test::random_inputs(ck.graph, 300, 5);
  const Agreement a = compare(ck, x);
  report("reference LeNet-5 .pth (float evaluation of the quantized network)", a);
  EXPECT_EQ(a.same, a.n);
  EXPECT_LT(a.max_diff, 1e-3 * std::max(1.0, a.max_logit));
  // Rounding the biases onto the accumulator grid instead (the int32-bias
  // rule) would change predictions: this fixture's classifier.0 has 2-bit
  // weights on 4-bit inputs, where one accumulator step is about five output
  // steps. Shown for the record.
  const Agreement e = compare(ck, x, true);
  report("reference LeNet-5 .pth (biases rounded to the accumulator grid)", e);
  EXPECT_GE(e.same, e.n * 90 / 100);
}

TEST(RuntimeAgreement, LegacyPthConvertsToTheSameNetwork) {
  const Checkpoint a = import_reference(read_pth(test::read_fixture("lenet5_reference.pth.gz")), "lenet5", nullptr, "x");
  const Checkpoint b =
      import_reference(read_pth(test::read_fixture("lenet5_reference_legacy.pth.gz")), "lenet5", nullptr, "x");
  bbits::format::ModelWriter wa, wb;
  build_model(a, wa);
  build_model(b, wb);
  EXPECT_EQ(wa.serialize(), wb.serialize());
}

TEST(RuntimeAgreement, SyntheticLeNet5WithPruningAcrossPoolingAndFlatten) {
  for (const char* bits : {"w8a8", "w4a8", "w2a8", "w16a16", "w32a32"}) {
    BitConfig cfg = parse_bit_config(bits);
    cfg.layers["features.0"] = cfg.base;
    cfg.layers["features.0"].keep = 0.6;
    cfg.layers["features.2"] = cfg.base;
    cfg.layers["features.2"].keep = 0.4;
    cfg.layers["classifier.0"] = cfg.base;
    cfg.layers["classifier.0"].keep = 0.3;
    const Checkpoint ck = make_synthetic("lenet5", cfg, 21);
    const Agreement a = compare(ck, test::random_inputs(ck.graph, 64, 3));
    report(bits, a);
    EXPECT_EQ(a.same, a.n) << bits;
    // float32 sums in the evaluation can land on the other side of a rounding
    // boundary than the exact integer sum: one output step now and then.
    EXPECT_LT(a.max_diff, 1e-2 * std::max(1.0, a.max_logit)) << bits;
  }
}

json conv(const std::string& name, const std::string& in, int cin, int cout, int k, int stride, int pad, int groups,
          const std::string& act, bool bn = true) {
  return {{"name", name}, {"op", "conv2d"}, {"inputs", {in}}, {"in_channels", cin}, {"out_channels", cout},
          {"kernel", {k, k}}, {"stride", {stride, stride}}, {"padding", {pad, pad}}, {"dilation", {1, 1}},
          {"groups", groups}, {"bias", !bn}, {"bn", bn}, {"activation", act}, {"weight_quant", true}, {"prune", true},
          {"act_quant", true}, {"act_signed", act == "none"}};
}

// A small ResNet: stem, two basic blocks (one with a 1x1 downsample), global
// average pooling, classifier. Pruning in the blocks' first convolutions is
// removed; pruning of convolutions that feed an add stays as zero rows.
SmallNet small_resnet() {
  SmallNet net;
  json nodes = json::array();
  nodes.push_back(conv("stem", "input", 3, 16, 3, 1, 1, 1, "relu"));
  nodes.push_back({{"name", "pool"}, {"op", "maxpool"}, {"inputs", {"stem"}}, {"kernel", {2, 2}}, {"stride", {2, 2}},
                   {"padding", {0, 0}}});
  nodes.push_back(conv("b1.c1", "pool", 16, 16, 3, 1, 1, 1, "relu"));
  nodes.push_back(conv("b1.c2", "b1.c1", 16, 16, 3, 1, 1, 1, "none"));
  nodes.push_back({{"name", "b1"}, {"op", "add"}, {"inputs", {"b1.c2", "pool"}}, {"activation", "relu"},
                   {"act_quant", true}, {"act_signed", false}});
  nodes.push_back(conv("b2.c1", "b1", 16, 32, 3, 2, 1, 1, "relu"));
  nodes.push_back(conv("b2.c2", "b2.c1", 32, 32, 3, 1, 1, 1, "none"));
  nodes.push_back(conv("b2.ds", "b1", 16, 32, 1, 2, 0, 1, "none"));
  nodes.push_back({{"name", "b2"}, {"op", "add"}, {"inputs", {"b2.c2", "b2.ds"}}, {"activation", "relu"},
                   {"act_quant", true}, {"act_signed", false}});
  nodes.push_back({{"name", "gap"}, {"op", "global_avgpool"}, {"inputs", {"b2"}}});
  nodes.push_back({{"name", "flatten"}, {"op", "flatten"}, {"inputs", {"gap"}}});
  nodes.push_back({{"name", "fc"}, {"op", "linear"}, {"inputs", {"flatten"}}, {"in_features", 32}, {"out_features", 10},
                   {"bias", true}, {"activation", "none"}, {"weight_quant", true}, {"prune", false}, {"act_quant", false}});
  net.graph = {{"model", "small-resnet"},
               {"input", {{"shape", {3, 16, 16}}, {"pixel_scale", 1.0 / 255}, {"mean", {0.5, 0.5, 0.5}}, {"std", {0.25, 0.25, 0.25}}}},
               {"nodes", nodes},
               {"outputs", {"fc"}}};
  auto m = [](int n, std::initializer_list<int> p) {
    std::vector<int> v(static_cast<size_t>(n), 1);
    for (int i : p) v[static_cast<size_t>(i)] = 0;
    return v;
  };
  net.keep["b1.c1"] = m(16, {1, 4, 9});
  net.keep["b2.c1"] = m(32, {0, 7, 8, 30});
  net.keep["b1.c2"] = m(16, {3});
  net.keep["b2.ds"] = m(32, {5});
  net.bias_shift["b1.c1"] = -20.0f;  // constant 0 after ReLU: removable through the padded b1.c2
  net.bias_shift["b2.c1"] = -20.0f;
  return net;
}

TEST(RuntimeAgreement, SmallResNetWithResidualAdds) {
  for (int bits : {8, 4}) {
    SmallNet net = small_resnet();
    net.weight_bits = bits;
    net.act_bits = 8;
    const Checkpoint ck = test::make_small_checkpoint(net);
    bbits::format::ModelWriter w;
    const ConvertReport r = build_model(ck, w);
    int removed = 0, zero_rows = 0;
    for (const auto& row : r.rows) {
      if (row.weight_bits == 0 || row.kept == row.channels) continue;
      (row.channels_removed ? removed : zero_rows)++;
    }
    EXPECT_EQ(removed, 2);    // b1.c1, b2.c1
    EXPECT_EQ(zero_rows, 2);  // b1.c2, b2.ds feed adds
    const Agreement a = compare(ck, test::random_inputs(ck.graph, 200, 8));
    report(bits == 8 ? "small ResNet w8a8" : "small ResNet w4a8", a);
    // The add rounds the real sum once, as the float evaluation does.
    EXPECT_EQ(a.same, a.n);
    EXPECT_LT(a.max_diff, 1e-4 * std::max(1.0, a.max_logit));
  }
}

TEST(RuntimeAgreement, DepthwiseChainWithRemovedChannels) {
  SmallNet net;
  json nodes = json::array();
  nodes.push_back(conv("stem", "input", 3, 8, 3, 2, 1, 1, "relu6"));
  nodes.push_back(conv("b.pw", "stem", 8, 24, 1, 1, 0, 1, "relu6"));
  nodes.push_back(conv("b.dw", "b.pw", 24, 24, 3, 1, 1, 24, "relu6"));
  nodes.push_back(conv("b.pl", "b.dw", 24, 8, 1, 1, 0, 1, "none"));
  nodes.push_back({{"name", "b"}, {"op", "add"}, {"inputs", {"stem", "b.pl"}}, {"activation", "none"},
                   {"act_quant", true}, {"act_signed", true}});
  nodes.push_back({{"name", "gap"}, {"op", "global_avgpool"}, {"inputs", {"b"}}});
  nodes.push_back({{"name", "flatten"}, {"op", "flatten"}, {"inputs", {"gap"}}});
  nodes.push_back({{"name", "fc"}, {"op", "linear"}, {"inputs", {"flatten"}}, {"in_features", 8}, {"out_features", 10},
                   {"bias", true}, {"activation", "none"}, {"weight_quant", true}, {"prune", false}, {"act_quant", false}});
  net.graph = {{"model", "small-mbv2"},
               {"input", {{"shape", {3, 16, 16}}, {"pixel_scale", 1.0 / 255}, {"mean", {0.5, 0.5, 0.5}}, {"std", {0.25, 0.25, 0.25}}}},
               {"nodes", nodes},
               {"outputs", {"fc"}}};
  std::vector<int> keep(24, 1);
  for (int c : {2, 3, 11, 17, 20}) keep[static_cast<size_t>(c)] = 0;
  net.keep["b.pw"] = keep;
  net.bias_shift["b.pw"] = -20.0f;
  const Checkpoint ck = test::make_small_checkpoint(net);
  bbits::format::ModelWriter w;
  const ConvertReport r = build_model(ck, w);
  for (const auto& row : r.rows)
    if (row.name == "b.dw") EXPECT_EQ(row.out_shape[1], 19);
  const Agreement a = compare(ck, test::random_inputs(ck.graph, 100, 9));
  report("depthwise chain", a);
  EXPECT_EQ(a.clear_same, a.clear);
  EXPECT_EQ(a.same, a.n);
  EXPECT_LT(a.max_diff, 1e-4 * std::max(1.0, a.max_logit));
}

}  // namespace
}  // namespace bbits::converter

namespace bbits::converter {
namespace {

// Removal is per channel: a pruned channel with a zero constant goes, one with
// a non-zero constant before a zero-padded convolution stays as a zero row.
TEST(RuntimeAgreement, PartialRemovalKeepsOnlyTheChannelsPaddingNeeds) {
  SmallNet net;
  net.graph = {{"model", "partial"},
               {"input", {{"shape", {3, 10, 10}}, {"pixel_scale", 1.0 / 255}, {"mean", {0.0}}, {"std", {1.0}}}},
               {"nodes",
                {conv("a", "input", 3, 8, 3, 1, 1, 1, "relu", false), conv("b", "a", 8, 6, 3, 1, 1, 1, "relu", false),
                 {{"name", "flatten"}, {"op", "flatten"}, {"inputs", {"b"}}},
                 {{"name", "fc"}, {"op", "linear"}, {"inputs", {"flatten"}}, {"in_features", 600}, {"out_features", 10},
                  {"bias", true}, {"activation", "none"}, {"weight_quant", true}, {"prune", false}, {"act_quant", false}}}},
               {"outputs", {"fc"}}};
  net.keep["a"] = {1, 1, 0, 1, 1, 0, 1, 0};
  Checkpoint ck = test::make_small_checkpoint(net);
  ck.tensors["a.bias"].data[2] = 0.5f;   // ReLU(0.5): a non-zero constant
  ck.tensors["a.bias"].data[5] = -3.0f;  // ReLU(-3) = 0
  ck.tensors["a.bias"].data[7] = -3.0f;
  bbits::format::ModelWriter w;
  const ConvertReport r = build_model(ck, w);
  const auto bytes = w.serialize();
  const auto view = bbits::format::verify_model(bytes.data(), bytes.size());
  const auto* a = view.model->operators()->Get(0);
  ASSERT_TRUE(a->keep_mask());
  EXPECT_TRUE(a->channels_removed());
  EXPECT_EQ(std::vector<uint8_t>(a->keep_mask()->begin(), a->keep_mask()->end()),
            (std::vector<uint8_t>{1, 1, 1, 1, 1, 0, 1, 0}));
  EXPECT_EQ(view.model->tensors()->Get(a->inputs()->Get(1))->shape()->Get(0), 6);
  ASSERT_TRUE(a->pruned_rows());  // stored channels 0, 1, 2, 3, 4, 6: channel 2 is row 2
  EXPECT_EQ(std::vector<int32_t>(a->pruned_rows()->begin(), a->pruned_rows()->end()), std::vector<int32_t>{2});
  EXPECT_EQ(r.rows[0].zero_rows, 1);
  EXPECT_EQ(r.rows[0].kept, 5);
  const Agreement g = compare(ck, test::random_inputs(ck.graph, 50, 4));
  report("partial removal", g);
  EXPECT_EQ(g.same, g.n);
  EXPECT_LT(g.max_diff, 1e-4 * std::max(1.0, g.max_logit));
}

// A zero-padded depthwise layer reading constant channels: a zero constant
// goes with its depthwise channel, a non-zero one stays (the padding makes the
// depthwise output position-dependent) and is counted as work by both sides.
TEST(RuntimeAgreement, DepthwiseReadsConstantChannels) {
  SmallNet net;
  json nodes = json::array();
  nodes.push_back(conv("pw", "input", 3, 12, 1, 1, 0, 1, "relu6", false));
  nodes.push_back(conv("dw", "pw", 12, 12, 3, 1, 1, 12, "relu6"));
  nodes.push_back(conv("pl", "dw", 12, 8, 1, 1, 0, 1, "none"));
  nodes.push_back({{"name", "gap"}, {"op", "global_avgpool"}, {"inputs", {"pl"}}});
  nodes.push_back({{"name", "flatten"}, {"op", "flatten"}, {"inputs", {"gap"}}});
  nodes.push_back({{"name", "fc"}, {"op", "linear"}, {"inputs", {"flatten"}}, {"in_features", 8}, {"out_features", 10},
                   {"bias", true}, {"activation", "none"}, {"weight_quant", true}, {"prune", false}, {"act_quant", false}});
  net.graph = {{"model", "dw-constants"},
               {"input", {{"shape", {3, 12, 12}}, {"pixel_scale", 1.0 / 255}, {"mean", {0.0}}, {"std", {1.0}}}},
               {"nodes", nodes},
               {"outputs", {"fc"}}};
  net.keep["pw"] = {1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1};
  Checkpoint ck = test::make_small_checkpoint(net);
  ck.tensors["pw.bias"].data[1] = -4.0f;  // ReLU6(-4) = 0: removed with dw's channel 1
  ck.tensors["pw.bias"].data[4] = 0.75f;  // non-zero constants: stay, as do dw's channels 4 and 10
  ck.tensors["pw.bias"].data[6] = -1.0f;
  ck.tensors["pw.bias"].data[10] = 2.5f;
  bbits::format::ModelWriter w;
  const ConvertReport r = build_model(ck, w);
  const auto bytes = w.serialize();
  const auto view = bbits::format::verify_model(bytes.data(), bytes.size());
  const auto* pw = view.model->operators()->Get(0);
  ASSERT_TRUE(pw->pruned_rows());
  // stored pw channels 0, 2, 3, 4, 5, 7, 8, 9, 10, 11: channels 4 and 10 are rows 3 and 8
  EXPECT_EQ(std::vector<int32_t>(pw->pruned_rows()->begin(), pw->pruned_rows()->end()), (std::vector<int32_t>{3, 8}));
  EXPECT_EQ(r.rows[1].out_shape[1], 10);
  const Agreement a = compare(ck, test::random_inputs(ck.graph, 50, 5));
  report("depthwise reading constants", a);
  EXPECT_EQ(a.same, a.n);
  EXPECT_LT(a.max_diff, 1e-4 * std::max(1.0, a.max_logit));
}

}  // namespace
}  // namespace bbits::converter
