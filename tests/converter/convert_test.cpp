// Conversion: gate decisions, BN folding, quantization and packing, channel
// removal (across pooling, flatten and depthwise layers; kept behind residual
// adds), synthetic models and the report.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "bbits/contract/zoo.h"
#include "bbits/converter/convert.h"
#include "bbits/converter/synthetic.h"
#include "bbits/format/quant.h"
#include "test_util.h"

namespace bbits::converter {
namespace {

using nlohmann::json;
using test::SmallNet;
namespace fb = bbits::fb;

struct Built {
  std::vector<uint8_t> bytes;
  bbits::format::ModelView view;
  ConvertReport report;
};
Built build(const Checkpoint& ck) {
  bbits::format::ModelWriter w;
  Built b;
  b.report = build_model(ck, w);
  b.bytes = w.serialize();
  b.view = bbits::format::verify_model(b.bytes.data(), b.bytes.size());
  return b;
}
const fb::Operator* op_named(const Built& b, const std::string& name) {
  for (const auto* op : *b.view.model->operators())
    if (op->name() && op->name()->str() == name) return op;
  return nullptr;
}
const fb::Tensor* tensor(const Built& b, int i) { return b.view.model->tensors()->Get(static_cast<flatbuffers::uoffset_t>(i)); }
std::vector<int64_t> shape_of(const fb::Tensor* t) { return std::vector<int64_t>(t->shape()->begin(), t->shape()->end()); }

using test::mask;
json conv(const std::string& name, const std::string& in, int cin, int cout, int k, int pad, int groups,
          const std::string& act, bool prune = true) {
  return test::conv_node(name, in, cin, cout, k, pad, groups, act, prune);
}
json head(const std::string& in, int fin) { return test::head_node(in, fin); }
json graph(const json& nodes, int c, int h) { return test::graph_json(nodes, c, h); }

TEST(Gates, TestTimeRuleAndCutoff) {
  EXPECT_EQ(bits_from_gates(20, 20, 20, 20), 32);
  EXPECT_EQ(bits_from_gates(20, 20, -20, 20), 8);
  EXPECT_EQ(bits_from_gates(-0.5, 20, 20, 20), 32);  // -0.5 > -0.9353: z4 on
  EXPECT_EQ(bits_from_gates(-1.0, 20, 20, 20), 2);            // z4 off
  EXPECT_EQ(bits_from_gates(20, -2.0, 20, 20), 4);            // cut-off
  const Checkpoint ck = make_synthetic("lenet5", parse_bit_config("w4a8"), 1);
  EXPECT_EQ(weight_bits_of(ck, ck.graph.node("features.0")), 4);
  EXPECT_EQ(act_bits_of(ck, "features.0"), 8);
  EXPECT_EQ(act_bits_of(ck, "input"), 8);
  EXPECT_EQ(act_bits_of(ck, "classifier.1"), 32);  // float logits
}

TEST(Fold, BatchNormFoldingFormula) {
  SmallNet net;
  json c = conv("c", "input", 1, 3, 3, 0, 1, "relu", false);
  c["bn"] = true;
  c["bn_eps"] = 1e-3;
  net.graph = graph({c, {{"name", "flatten"}, {"op", "flatten"}, {"inputs", {"c"}}}, head("flatten", 3 * 4 * 4)}, 1, 6);
  const Checkpoint ck = test::make_small_checkpoint(net);
  const FoldedLayer f = fold_layer(ck, ck.graph.node("c"));
  const auto& w = ck.get("c.weight").data;
  for (int o = 0; o < 3; ++o) {
    const float g = ck.get("c.bn.weight").data[o], v = ck.get("c.bn.running_var").data[o];
    const float m = ck.get("c.bn.running_mean").data[o], be = ck.get("c.bn.bias").data[o], b = ck.get("c.bias").data[o];
    const float s = std::sqrt(v + 1e-3f);
    EXPECT_FLOAT_EQ(f.weight.data[static_cast<size_t>(o * 9 + 4)], w[static_cast<size_t>(o * 9 + 4)] * g / s);
    EXPECT_FLOAT_EQ(f.bias[static_cast<size_t>(o)], be + (b - m) * g / s);
  }
}

TEST(Convert, WeightsArePackedOhwiOnTheGridWithFloatBiases) {
  for (const char* bits : {"w2a8", "w4a8", "w8a8", "w16a16"}) {
    const Checkpoint ck = make_synthetic("lenet5", parse_bit_config(bits), 11);
    const Built b = build(ck);
    const fb::Operator* op = op_named(b, "features.2");
    ASSERT_NE(op, nullptr);
    const fb::Tensor* wt = tensor(b, op->inputs()->Get(1));
    const fb::Tensor* bt = tensor(b, op->inputs()->Get(2));
    const fb::Tensor* xt = tensor(b, op->inputs()->Get(0));
    EXPECT_EQ(shape_of(wt), (std::vector<int64_t>{64, 5, 5, 32}));
    ASSERT_EQ(wt->dtype(), fb::DataType::Quantized);
    const int wb = wt->quant()->bits();
    EXPECT_EQ(wb, std::stoi(std::string(bits).substr(1)));
    const float xm = ck.get("features.2.wq.x_max").scalar();
    EXPECT_FLOAT_EQ(wt->quant()->scale()->Get(0), grid_scale(xm, wb, true));
    EXPECT_TRUE(wt->quant()->is_signed());
    const auto data = b.view.tensor_data(op->inputs()->Get(1));
    const size_t row = packed_row_bytes(5 * 5 * 32, wb);
    const FoldedLayer f = fold_layer(ck, ck.graph.node("features.2"));
    for (int o : {0, 17, 63})
      for (int kh : {0, 2, 4})
        for (int kw : {1, 3})
          for (int ci : {0, 5, 31}) {
            const int32_t got = unpack_value(data.data() + static_cast<size_t>(o) * row, (kh * 5 + kw) * 32 + ci, wb);
            const float w = f.weight.data[static_cast<size_t>(((o * 32 + ci) * 5 + kh) * 5 + kw)];
            EXPECT_EQ(got, quantize_value(w, xm, wb, true)) << bits << " o=" << o;
          }
    // Float32 biases: the runtime applies them at multiplier precision
    // (docs/FORMAT.md, bias_fraction), not rounded to the accumulator grid.
    ASSERT_EQ(bt->dtype(), fb::DataType::Float32);
    ASSERT_TRUE(xt->quant());
    const auto bias = b.view.tensor_data(op->inputs()->Get(2));
    for (int o : {0, 40}) {
      float v;
      std::memcpy(&v, bias.data() + 4 * o, 4);
      EXPECT_EQ(v, f.bias[static_cast<size_t>(o)]);
    }
    // costs
    EXPECT_EQ(op->macs(), 8 * 8 * 64 * 32 * 25);
    EXPECT_EQ(op->macs_unpruned(), op->macs());
    EXPECT_EQ(op->bops(), op->macs() * wb * tensor(b, op->inputs()->Get(0))->quant()->bits());
    EXPECT_EQ(op->weight_bytes(), static_cast<int64_t>(64 * row));
  }
}

TEST(Convert, FloatLayersKeepFloatWeightsAndBiases) {
  const Checkpoint ck = make_synthetic("lenet5", parse_bit_config("w32a32"), 2);
  const Built b = build(ck);
  const fb::Operator* op = op_named(b, "classifier.0");
  EXPECT_EQ(tensor(b, op->inputs()->Get(1))->dtype(), fb::DataType::Float32);
  EXPECT_EQ(tensor(b, op->inputs()->Get(2))->dtype(), fb::DataType::Float32);
  EXPECT_EQ(tensor(b, op->outputs()->Get(0))->dtype(), fb::DataType::Float32);
  // the network input is always 8 bits
  EXPECT_EQ(tensor(b, b.view.model->inputs()->Get(0))->quant()->bits(), 8);
}

TEST(Convert, PrunedChannelsAreRemovedAcrossPoolingAndFlatten) {
  BitConfig cfg = parse_bit_config("w4a8");
  cfg.layers["features.0"] = LayerBits{4, 8, 0.5};
  cfg.layers["features.2"] = LayerBits{4, 8, 0.25};
  cfg.layers["classifier.0"] = LayerBits{2, 8, 0.5};
  const Checkpoint ck = make_synthetic("lenet5", cfg, 4);
  const Built b = build(ck);
  const fb::Operator* c1 = op_named(b, "features.0");
  const fb::Operator* c2 = op_named(b, "features.2");
  const fb::Operator* f1 = op_named(b, "classifier.0");
  const fb::Operator* f2 = op_named(b, "classifier.1");
  auto kept = [](const fb::Operator* op) {
    return std::accumulate(op->keep_mask()->begin(), op->keep_mask()->end(), 0);
  };
  ASSERT_TRUE(c1->keep_mask() && c2->keep_mask() && f1->keep_mask());
  EXPECT_EQ(c1->keep_mask()->size(), 32u);
  EXPECT_EQ(kept(c1), 16);
  EXPECT_EQ(kept(c2), 16);
  EXPECT_EQ(kept(f1), 256);
  EXPECT_TRUE(c1->channels_removed() && c2->channels_removed() && f1->channels_removed());
  EXPECT_EQ(shape_of(tensor(b, c1->inputs()->Get(1))), (std::vector<int64_t>{16, 5, 5, 1}));
  EXPECT_EQ(shape_of(tensor(b, c2->inputs()->Get(1))), (std::vector<int64_t>{16, 5, 5, 16}));  // consumer's inputs too
  EXPECT_EQ(shape_of(tensor(b, f1->inputs()->Get(1))), (std::vector<int64_t>{256, 16 * 16}));  // across flatten
  EXPECT_EQ(shape_of(tensor(b, f2->inputs()->Get(1))), (std::vector<int64_t>{10, 256}));
  EXPECT_EQ(shape_of(tensor(b, op_named(b, "features.3")->outputs()->Get(0))), (std::vector<int64_t>{1, 16, 4, 4}));
  EXPECT_EQ(c2->macs(), 8 * 8 * 16 * 16 * 25);
  EXPECT_EQ(c2->macs_unpruned(), 8 * 8 * 64 * 32 * 25);
  EXPECT_EQ(b.report.channels_removed, 16 + 48 + 256);
  EXPECT_FALSE(f2->keep_mask() && f2->keep_mask()->size());
}

TEST(Convert, ResidualAddKeepsPrunedChannelsAsZeroRows) {
  SmallNet net;
  json add = {{"name", "add"}, {"op", "add"}, {"inputs", {"b", "a"}}, {"activation", "relu"}, {"act_quant", true},
              {"act_signed", false}};
  net.graph = graph({conv("a", "input", 3, 8, 3, 1, 1, "relu"), conv("b", "a", 8, 8, 3, 1, 1, "none"), add,
                     {{"name", "gap"}, {"op", "global_avgpool"}, {"inputs", {"add"}}},
                     {{"name", "flatten"}, {"op", "flatten"}, {"inputs", {"gap"}}}, head("flatten", 8)},
                    3, 8);
  net.keep["a"] = mask(8, {1, 5});
  net.keep["b"] = mask(8, {2});
  const Checkpoint ck = test::make_small_checkpoint(net);
  const Built b = build(ck);
  for (const char* name : {"a", "b"}) {
    const fb::Operator* op = op_named(b, name);
    ASSERT_TRUE(op->keep_mask());
    EXPECT_FALSE(op->channels_removed()) << name;
    EXPECT_EQ(tensor(b, op->inputs()->Get(1))->shape()->Get(0), 8) << name;
  }
  // pruned rows are zero
  const fb::Operator* a = op_named(b, "a");
  const auto w = b.view.tensor_data(a->inputs()->Get(1));
  const size_t row = packed_row_bytes(27, 8);
  for (size_t k = 0; k < row; ++k) EXPECT_EQ(w[row * 1 + k], 0);
  EXPECT_EQ(a->macs(), 8 * 8 * 6 * 3 * 9);
}

TEST(Convert, RemovalAcrossDepthwiseWhenTheConstantIsZero) {
  SmallNet net;
  net.graph = graph({conv("pw", "input", 3, 8, 1, 0, 1, "relu"), conv("dw", "pw", 8, 8, 3, 1, 8, "relu"),
                     conv("pl", "dw", 8, 4, 1, 0, 1, "none"), {{"name", "flatten"}, {"op", "flatten"}, {"inputs", {"pl"}}},
                     head("flatten", 4 * 6 * 6)},
                    3, 6);
  net.keep["pw"] = mask(8, {0, 3, 6});
  net.bias_shift["pw"] = -50.0f;  // ReLU of a very negative bias: the pruned channels output 0
  const Built b = build(test::make_small_checkpoint(net));
  const fb::Operator* pw = op_named(b, "pw");
  const fb::Operator* dw = op_named(b, "dw");
  EXPECT_TRUE(pw->channels_removed());
  EXPECT_EQ(tensor(b, pw->inputs()->Get(1))->shape()->Get(0), 5);
  ASSERT_TRUE(dw->keep_mask());  // the depthwise layer's channels went with them
  EXPECT_EQ(std::accumulate(dw->keep_mask()->begin(), dw->keep_mask()->end(), 0), 5);
  EXPECT_EQ(shape_of(tensor(b, dw->inputs()->Get(1))), (std::vector<int64_t>{5, 3, 3, 1}));
  EXPECT_EQ(dw->options_as_Conv2DOptions()->groups(), 5);
  EXPECT_EQ(shape_of(tensor(b, op_named(b, "pl")->inputs()->Get(1))), (std::vector<int64_t>{4, 1, 1, 5}));
}

TEST(Convert, PaddingForbidsRemovalOfANonZeroConstant) {
  SmallNet net;
  net.graph = graph({conv("a", "input", 3, 8, 3, 1, 1, "relu"), conv("b", "a", 8, 4, 3, 1, 1, "relu"),
                     {{"name", "flatten"}, {"op", "flatten"}, {"inputs", {"b"}}}, head("flatten", 4 * 6 * 6)},
                    3, 6);
  net.keep["a"] = mask(8, {2});
  net.bias_shift["a"] = 5.0f;  // ReLU(positive bias): a non-zero constant, not foldable through zero padding
  const Built b = build(test::make_small_checkpoint(net));
  EXPECT_FALSE(op_named(b, "a")->channels_removed());
  net.bias_shift["a"] = -50.0f;  // constant 0: removable
  const Built b2 = build(test::make_small_checkpoint(net));
  EXPECT_TRUE(op_named(b2, "a")->channels_removed());
  EXPECT_EQ(shape_of(tensor(b2, op_named(b2, "b")->inputs()->Get(1))), (std::vector<int64_t>{4, 3, 3, 7}));
}

TEST(Convert, MetadataPreprocessAndReport) {
  Checkpoint ck = make_synthetic("lenet5", parse_bit_config("w8a8"), 9);
  ck.training = {{"method", "bayesian-bits"}, {"mu", 0.1}, {"test_accuracy", 0.9}, {"relative_bops", 0.01},
                 {"dataset", "fashion-mnist"}, {"epochs", 3}};
  ck.source = "runs/x/final.safetensors";
  const Built b = build(ck);
  const auto* md = b.view.model->metadata();
  EXPECT_EQ(md->producer()->str(), std::string("bbits-convert ") + converter_version());
  EXPECT_EQ(md->source_checkpoint()->str(), "runs/x/final.safetensors");
  EXPECT_EQ(md->training()->method()->str(), "bayesian-bits");
  EXPECT_FLOAT_EQ(md->training()->mu(), 0.1f);
  EXPECT_FLOAT_EQ(md->training()->accuracy(), 0.9f);
  EXPECT_EQ(md->training()->epochs(), 3);
  EXPECT_EQ(md->training()->arch()->str(), "lenet5");
  const auto* pp = b.view.model->preprocess();
  EXPECT_EQ(pp->channels(), 1);
  EXPECT_EQ(pp->height(), 28);
  EXPECT_FLOAT_EQ(pp->pixel_scale(), 1.0f / 255.0f);
  EXPECT_FLOAT_EQ(pp->mean()->Get(0), 0.0f);
  // input grid: unsigned, x_max 1 → step 1/255
  const auto* in = tensor(b, b.view.model->inputs()->Get(0));
  EXPECT_FALSE(in->quant()->is_signed());
  EXPECT_FLOAT_EQ(in->quant()->scale()->Get(0), grid_scale(1.0f, 8, false));
  const json j = report_json(b.report);
  EXPECT_EQ(j["layers"].size(), ck.graph.nodes.size());
  EXPECT_NEAR(j["relative_bops"].get<double>(), static_cast<double>(b.report.bops) / b.report.bops_fp32, 1e-12);
  const std::string table = format_report(b.report);
  EXPECT_NE(table.find("classifier.0"), std::string::npos);
  EXPECT_NE(table.find("relative BOPs"), std::string::npos);
}

TEST(Synthetic, EveryArchitectureConvertsAndValidates) {
  struct Case {
    const char* arch;
    std::vector<int64_t> input;
    int64_t outputs;
  };
  for (const Case& c : {Case{"lenet5", {1, 1, 28, 28}, 10}, Case{"vgg7", {1, 3, 32, 32}, 10},
                        Case{"resnet18", {1, 3, 224, 224}, 1000}, Case{"mobilenetv2", {1, 3, 224, 224}, 1000}}) {
    const bool small = std::string(c.arch) == "lenet5";
    const Checkpoint ck = make_synthetic(c.arch, parse_bit_config("w4a8"), 1, /*calibrate=*/small);
    const Built b = build(ck);
    EXPECT_EQ(shape_of(tensor(b, b.view.model->inputs()->Get(0))), c.input) << c.arch;
    EXPECT_EQ(shape_of(tensor(b, b.view.model->outputs()->Get(0))), (std::vector<int64_t>{1, c.outputs})) << c.arch;
    EXPECT_NEAR(b.report.relative_bops, 4.0 * 8 / 1024, 0.01) << c.arch;
  }
  const Graph r18 = contract::make_graph("resnet18");
  int convs = 0, adds = 0;
  for (const Node& n : r18.nodes) {
    convs += n.op == OpKind::Conv2d;
    adds += n.op == OpKind::Add;
  }
  EXPECT_EQ(convs, 20);  // 1 + 16 + 3 downsample
  EXPECT_EQ(adds, 8);
  const Graph mb = contract::make_graph("mobilenetv2");
  int dws = 0;
  adds = 0;
  for (const Node& n : mb.nodes) {
    dws += n.is_depthwise();
    adds += n.op == OpKind::Add;
  }
  EXPECT_EQ(dws, 17);
  EXPECT_EQ(adds, 10);
}

TEST(Synthetic, PerLayerBitsAndKeepFromJson) {
  const BitConfig cfg = bit_config_from_json(json::parse(R"({"weight_bits": 8, "act_bits": 8,
      "layers": {"features.0": {"weight_bits": 2, "act_bits": 4, "keep": 0.5},
                 "features.2": {"weight_bits": 16, "act_bits": 16}}})"));
  const Checkpoint ck = make_synthetic("lenet5", cfg, 3);
  EXPECT_EQ(weight_bits_of(ck, ck.graph.node("features.0")), 2);
  EXPECT_EQ(act_bits_of(ck, "features.0"), 4);
  EXPECT_EQ(weight_bits_of(ck, ck.graph.node("features.2")), 16);
  EXPECT_EQ(weight_bits_of(ck, ck.graph.node("classifier.0")), 8);
  const auto keep = keep_mask_of(ck, ck.graph.node("features.0"));
  EXPECT_EQ(std::accumulate(keep.begin(), keep.end(), 0), 16);
  // same seed, same model; another seed, another model
  EXPECT_EQ(make_synthetic("lenet5", cfg, 3).tensors.at("features.0.weight").data, ck.tensors.at("features.0.weight").data);
  EXPECT_NE(make_synthetic("lenet5", cfg, 4).tensors.at("features.0.weight").data, ck.tensors.at("features.0.weight").data);
}

TEST(Synthetic, BadConfigurationsAreNamed) {
  auto err = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error, expected '" << needle << "'";
    } catch (const contract::CheckpointError& e) {  // ConvertError, or the zoo's
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  err([] { make_synthetic("alexnet", parse_bit_config("w8a8"), 1); }, "unknown architecture 'alexnet'");
  err([] { parse_bit_config("w3a8"); }, "w3a8");
  err([] { bit_config_from_json(json::parse(R"({"weight_bits": 5})")); }, "weight_bits 5");
  err([] { bit_config_from_json(json::parse(R"({"keep": 1.5})")); }, "keep");
  err([] { bit_config_from_json(json::parse(R"({"layers": {"x": {"bitz": 1}}})")); }, "unknown key 'bitz'");
  err([] { make_synthetic("lenet5", bit_config_from_json(json::parse(R"({"layers": {"conv9": {}}})")), 1); },
      "'conv9' is not a node");
}

}  // namespace
}  // namespace bbits::converter

namespace bbits::converter {
namespace {

TEST(Synthetic, PrunedMobileNetV2RemovesChannelsThroughDepthwiseLayers) {
  BitConfig cfg = parse_bit_config("w4a8");
  cfg.base.keep = 0.5;
  const Checkpoint ck = make_synthetic("mobilenetv2", cfg, 5, /*calibrate=*/false);
  bbits::format::ModelWriter w;
  const ConvertReport r = build_model(ck, w);
  const auto bytes = w.serialize();
  EXPECT_NO_THROW(bbits::format::verify_model(bytes.data(), bytes.size()));
  int dw_removed = 0, pw_removed = 0;
  for (const auto& row : r.rows) {
    if (row.op == "depthwise" && row.channels_removed && row.kept < row.channels) ++dw_removed;
    if (row.op == "conv2d" && row.channels_removed && row.kept < row.channels) ++pw_removed;
  }
  EXPECT_GE(dw_removed, 16);  // every block's depthwise layer but the first (fed by the stem)
  EXPECT_GT(pw_removed, 16);
  EXPECT_LT(r.macs, r.macs_unpruned * 6 / 10);
}

}  // namespace
}  // namespace bbits::converter
