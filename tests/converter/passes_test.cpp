// The conversion passes one by one (bbits/converter/passes.h): each is run on
// the result of the passes before it and checked on what it fills in.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "bbits/converter/passes.h"
#include "bbits/converter/simulate.h"
#include "bbits/format/quant.h"
#include "test_util.h"

namespace bbits::converter {
namespace {

using nlohmann::json;
using test::SmallNet;
using namespace passes;

json conv(const std::string& name, const std::string& in, int cin, int cout, int k, int pad, const std::string& act,
          bool bn = false) {
  json n = test::conv_node(name, in, cin, cout, k, pad, 1, act);
  n["bn"] = bn;
  return n;
}
json node(const std::string& name, const std::string& op, std::vector<std::string> inputs) {
  return {{"name", name}, {"op", op}, {"inputs", inputs}};
}
json fc(const std::string& in, int fin) { return test::head_node(in, fin); }
json graph(const json& nodes, int c, int h) { return test::graph_json(nodes, c, h); }
using test::mask;
size_t index_of(const Conversion& c, const std::string& name) { return static_cast<size_t>(c.graph().index_of(name)); }

// conv a (3 -> 8, relu) -> maxpool -> flatten -> fc, channels 1 and 5 of a pruned.
SmallNet pooled_net() {
  SmallNet net;
  net.graph = graph({conv("a", "input", 3, 8, 3, 0, "relu"), {{"name", "pool"}, {"op", "maxpool"}, {"inputs", {"a"}},
                     {"kernel", {2, 2}}, {"stride", {2, 2}}, {"padding", {0, 0}}},
                     node("flatten", "flatten", {"pool"}), fc("flatten", 8 * 3 * 3)},
                    3, 8);
  net.weight_bits = 4;
  net.keep["a"] = mask(8, {1, 5});
  return net;
}

// Every pass up to `last` (in build_model's order).
Conversion run_until(const Checkpoint& ck, const std::string& last, const ConvertOptions& opts = {}) {
  Conversion c = check_graph(ck, opts);
  if (last == "check_graph") return c;
  decide_gates(c);
  if (last == "decide_gates") return c;
  fold_batch_norm(c);
  if (last == "fold_batch_norm") return c;
  quantize_weights(c);
  if (last == "quantize_weights") return c;
  find_constant_channels(c);
  if (last == "find_constant_channels") return c;
  choose_removed_channels(c);
  return c;
}

TEST(Passes, CheckGraphValidatesAndRecordsShapesConsumersAndOutputs) {
  SmallNet net;
  json add = {{"name", "add"}, {"op", "add"}, {"inputs", {"b", "a"}}, {"activation", "relu"}, {"act_quant", true},
              {"act_signed", false}};
  net.graph = graph({conv("a", "input", 3, 8, 3, 1, "relu"), conv("b", "a", 8, 8, 3, 1, "none"), add,
                     node("gap", "global_avgpool", {"add"}), node("flatten", "flatten", {"gap"}), fc("flatten", 8)},
                    3, 8);
  const Checkpoint ck = test::make_small_checkpoint(net);
  const Conversion c = check_graph(ck);
  ASSERT_EQ(c.slots.size(), 7u);
  EXPECT_EQ(c.slots[0].shape, (std::vector<int64_t>{3, 8, 8}));
  EXPECT_EQ(c.slot_of("a").shape, (std::vector<int64_t>{8, 8, 8}));
  EXPECT_EQ(c.slot_of("gap").shape, (std::vector<int64_t>{8, 1, 1}));
  EXPECT_EQ(c.slot_of("fc").shape, (std::vector<int64_t>{5}));
  // a feeds b (input 0) and the add (input 1)
  const auto& ca = c.consumers[c.slot_index("a")];
  ASSERT_EQ(ca.size(), 2u);
  EXPECT_EQ(ca[0], (std::pair<size_t, size_t>{index_of(c, "b"), 0}));
  EXPECT_EQ(ca[1], (std::pair<size_t, size_t>{index_of(c, "add"), 1}));
  EXPECT_TRUE(c.consumers[c.slot_index("fc")].empty());
  for (size_t s = 0; s < c.slots.size(); ++s) EXPECT_EQ(c.is_output[s] != 0, s == c.slot_index("fc")) << s;
  EXPECT_EQ(c.input_bits, 8);
  EXPECT_EQ(c.layout, "NCHW");
  EXPECT_EQ(check_graph(ck, {.input_bits = 16, .layout = "NHWC"}).layout, "NHWC");

  // the checkpoint is checked against its graph, and the options
  Checkpoint missing = ck;
  missing.tensors.erase("b.wq.x_max");
  try {
    check_graph(missing);
    ADD_FAILURE() << "a missing tensor was accepted";
  } catch (const contract::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("b.wq.x_max"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_graph(ck, {.input_bits = 12}), ConvertError);
  EXPECT_THROW(check_graph(ck, {.layout = "CHWN"}), ConvertError);
}

TEST(Passes, DecideGatesGivesEveryTensorItsGridAndEveryLayerItsBitsAndChannels) {
  Checkpoint ck = test::make_small_checkpoint(pooled_net());
  for (const char* g : {"fc.wq.log_alpha_8", "fc.wq.log_alpha_16"}) ck.tensors.at(g).data = {20.0f};  // fc: 16 bits
  const Conversion c = run_until(ck, "decide_gates", {.input_bits = 16});
  const Grid& in = c.slots[0].grid;
  EXPECT_TRUE(in.quant);
  EXPECT_EQ(in.bits, 16);
  EXPECT_FALSE(in.is_signed);
  EXPECT_EQ(in.scale, grid_scale(ck.get("input.aq.x_max").scalar(), 16, false));
  const Grid& a = c.slot_of("a").grid;
  EXPECT_TRUE(a.quant);
  EXPECT_EQ(a.bits, 8);
  EXPECT_FALSE(a.is_signed);  // after ReLU
  EXPECT_EQ(a.scale, grid_scale(ck.get("a.aq.x_max").scalar(), 8, false));
  EXPECT_TRUE(c.slot_of("pool").grid == a);     // max pooling and flatten keep the grid
  EXPECT_TRUE(c.slot_of("flatten").grid == a);
  EXPECT_FALSE(c.slot_of("fc").grid.quant);     // float logits
  const Layer& la = c.layers[index_of(c, "a")];
  EXPECT_EQ(la.wbits, 4);
  EXPECT_EQ(std::vector<int>(la.keep.begin(), la.keep.end()), mask(8, {1, 5}));
  EXPECT_EQ(c.layers[index_of(c, "fc")].wbits, 16);
  EXPECT_EQ(c.layers[index_of(c, "fc")].keep, std::vector<uint8_t>(5, 1));
  EXPECT_TRUE(la.f.weight.data.empty());  // folding is the next pass

  // Average pooling of an integer tensor is float32; a concat needs one grid.
  SmallNet cat;
  cat.graph = graph({conv("a", "input", 3, 4, 1, 0, "relu"), conv("b", "input", 3, 4, 1, 0, "relu"),
                     {{"name", "cat"}, {"op", "concat"}, {"inputs", {"a", "b"}}, {"axis", 1}},
                     {{"name", "avg"}, {"op", "avgpool"}, {"inputs", {"cat"}}, {"kernel", {2, 2}},
                      {"stride", {2, 2}}, {"padding", {0, 0}}, {"count_include_pad", true}},
                     node("flatten", "flatten", {"avg"}), fc("flatten", 8 * 2 * 2)},
                    3, 4);
  Checkpoint ckc = test::make_small_checkpoint(cat);
  ckc.tensors.at("b.aq.x_max").data = {ckc.get("a.aq.x_max").scalar()};
  const Conversion cc = run_until(ckc, "decide_gates");
  EXPECT_TRUE(cc.slot_of("cat").grid == cc.slot_of("a").grid);
  EXPECT_FALSE(cc.slot_of("avg").grid.quant);
  ckc.tensors.at("b.aq.log_alpha_8").data = {-20.0f};  // b: 4-bit activations
  Conversion bad = check_graph(ckc);
  try {
    decide_gates(bad);
    ADD_FAILURE() << "a concat of two grids was accepted";
  } catch (const ConvertError& e) {
    EXPECT_NE(std::string(e.what()).find("concat of tensors on different grids"), std::string::npos) << e.what();
  }
}

TEST(Passes, FoldBatchNormFoldsEveryWeightLayer) {
  SmallNet net;
  net.graph = graph({conv("a", "input", 1, 3, 3, 0, "relu", true), node("flatten", "flatten", {"a"}),
                     fc("flatten", 3 * 4 * 4)},
                    1, 6);
  const Checkpoint ck = test::make_small_checkpoint(net);
  Conversion c = run_until(ck, "decide_gates");
  fold_batch_norm(c);
  const FoldedLayer& a = c.layers[index_of(c, "a")].f;
  const FoldedLayer want = fold_layer(ck, ck.graph.node("a"));
  EXPECT_EQ(a.weight, want.weight);
  EXPECT_EQ(a.bias, want.bias);
  EXPECT_NE(a.weight.data, ck.get("a.weight").data);  // batch norm changed the weights
  const FoldedLayer& f = c.layers[index_of(c, "fc")].f;
  EXPECT_EQ(f.weight, ck.get("fc.weight"));  // no batch norm: the weights as they are
  EXPECT_EQ(f.bias, ck.get("fc.bias").data);
  EXPECT_TRUE(c.layers[index_of(c, "flatten")].f.weight.data.empty());
}

TEST(Passes, QuantizeWeightsRoundsOntoTheGridAndZeroesPrunedRows) {
  Checkpoint ck = test::make_small_checkpoint(pooled_net());
  for (const char* g : {"fc.wq.log_alpha_8", "fc.wq.log_alpha_16", "fc.wq.log_alpha_32"})
    ck.tensors.at(g).data = {20.0f};  // float fc
  const Conversion c = run_until(ck, "quantize_weights");
  const Layer& a = c.layers[index_of(c, "a")];
  const float x_max = ck.get("a.wq.x_max").scalar();
  EXPECT_EQ(a.x_max, x_max);
  EXPECT_EQ(a.scale, grid_scale(x_max, 4, true));
  const int64_t K = 3 * 3 * 3;
  ASSERT_EQ(a.q.size(), static_cast<size_t>(8 * K));
  for (int64_t o = 0; o < 8; ++o)
    for (int64_t k = 0; k < K; ++k) {
      const size_t u = static_cast<size_t>(o * K + k);
      const bool pruned = o == 1 || o == 5;
      EXPECT_EQ(a.q[u], pruned ? 0 : quantize_value(a.f.weight.data[u], x_max, 4, true)) << o << " " << k;
      EXPECT_LE(std::abs(a.q[u]), 7);
      EXPECT_EQ(a.wreal[u], a.scale * static_cast<float>(a.q[u]));
    }
  const Layer& f = c.layers[index_of(c, "fc")];
  EXPECT_EQ(f.wbits, 32);
  EXPECT_TRUE(f.q.empty());
  EXPECT_EQ(f.wreal, f.f.weight.data);  // float32 weights stay as they are
}

TEST(Passes, ConstantChannelsArePrunedBiasesCarriedThroughPoolingAndFlatten) {
  const Checkpoint ck = test::make_small_checkpoint(pooled_net());
  const Conversion c = run_until(ck, "find_constant_channels");
  const Slot& a = c.slot_of("a");
  const Grid& g = a.grid;
  const std::vector<float>& bias = c.layers[index_of(c, "a")].f.bias;
  for (size_t o = 0; o < 8; ++o) {
    const bool pruned = o == 1 || o == 5;
    EXPECT_EQ(a.is_const[o] != 0, pruned) << o;
    if (pruned) EXPECT_EQ(a.cval[o], fake_quant(std::max(bias[o], 0.0f), g.x_max, g.bits, g.is_signed)) << o;
  }
  EXPECT_EQ(c.slot_of("pool").is_const, a.is_const);
  EXPECT_EQ(c.slot_of("pool").cval, a.cval);
  const Slot& fl = c.slot_of("flatten");
  ASSERT_EQ(fl.is_const.size(), 72u);
  for (size_t f = 0; f < 72; ++f) {
    EXPECT_EQ(fl.is_const[f], a.is_const[f / 9]) << f;
    EXPECT_EQ(fl.cval[f], a.cval[f / 9]) << f;
  }
  EXPECT_EQ(std::count(c.slots[0].is_const.begin(), c.slots[0].is_const.end(), 1), 0);
  EXPECT_TRUE(c.slot_of("a").removed.empty());  // removal is the next pass
}

TEST(Passes, RemovalNeedsEveryConsumerToAbsorbTheConstant) {
  // pooling and flatten pass the question on; the linear layer absorbs it
  {
    const Checkpoint ck = test::make_small_checkpoint(pooled_net());
    const Conversion c = run_until(ck, "choose_removed_channels");
    const std::vector<char> want = {0, 1, 0, 0, 0, 1, 0, 0};
    EXPECT_EQ(c.slot_of("a").removed, want);
    EXPECT_EQ(c.slot_of("pool").removed, want);
    for (size_t f = 0; f < 72; ++f) EXPECT_EQ(c.slot_of("flatten").removed[f], want[f / 9]) << f;
    EXPECT_EQ(std::count(c.slot_of("fc").removed.begin(), c.slot_of("fc").removed.end(), 1), 0);
  }
  // a residual add keeps the channels
  {
    SmallNet net;
    json add = {{"name", "add"}, {"op", "add"}, {"inputs", {"b", "a"}}, {"activation", "relu"},
                {"act_quant", true}, {"act_signed", false}};
    net.graph = graph({conv("a", "input", 3, 8, 3, 1, "relu"), conv("b", "a", 8, 8, 3, 1, "none"), add,
                       node("gap", "global_avgpool", {"add"}), node("flatten", "flatten", {"gap"}), fc("flatten", 8)},
                      3, 8);
    net.keep["a"] = mask(8, {1, 5});
    const Checkpoint ck = test::make_small_checkpoint(net);
    const Conversion c = run_until(ck, "choose_removed_channels");
    EXPECT_TRUE(c.slot_of("a").is_const[1]);
    EXPECT_EQ(std::count(c.slot_of("a").removed.begin(), c.slot_of("a").removed.end(), 1), 0);
    EXPECT_EQ(c.slot_of("a").cand[1], 0);
  }
  // zero padding: a non-zero constant stays, a zero one goes
  for (const float shift : {5.0f, -50.0f}) {
    SmallNet net;
    net.graph = graph({conv("a", "input", 3, 8, 3, 1, "relu"), conv("b", "a", 8, 4, 3, 1, "relu"),
                       node("flatten", "flatten", {"b"}), fc("flatten", 4 * 6 * 6)},
                      3, 6);
    net.keep["a"] = mask(8, {2});
    net.bias_shift["a"] = shift;
    const Checkpoint ck = test::make_small_checkpoint(net);
    const Conversion c = run_until(ck, "choose_removed_channels");
    EXPECT_TRUE(c.slot_of("a").is_const[2]) << shift;
    EXPECT_EQ(c.slot_of("a").cval[2] == 0.0f, shift < 0) << shift;
    EXPECT_EQ(c.slot_of("a").removed[2] != 0, shift < 0) << shift;
  }
}

TEST(Passes, WriteModelWritesWhatThePassesDecided) {
  const Checkpoint ck = test::make_small_checkpoint(pooled_net());
  Conversion c = run_until(ck, "choose_removed_channels");
  bbits::format::ModelWriter w;
  const ConvertReport r = write_model(c, w);
  const std::vector<uint8_t> bytes = w.serialize();
  // the passes run one by one write the same file as build_model
  bbits::format::ModelWriter w2;
  build_model(ck, w2);
  EXPECT_EQ(bytes, w2.serialize());

  const bbits::format::ModelView v = bbits::format::verify_model(bytes.data(), bytes.size());
  const auto* ops = v.model->operators();
  ASSERT_EQ(ops->size(), 4u);
  const auto* a = ops->Get(0);
  const auto* wt = v.model->tensors()->Get(static_cast<flatbuffers::uoffset_t>(a->inputs()->Get(1)));
  EXPECT_EQ(wt->shape()->Get(0), 6);  // the two removed channels are gone
  EXPECT_EQ(wt->quant()->bits(), 4);
  EXPECT_EQ(wt->quant()->scale()->Get(0), c.layers[0].scale);
  EXPECT_TRUE(a->channels_removed());
  const auto* fcw = v.model->tensors()->Get(static_cast<flatbuffers::uoffset_t>(ops->Get(3)->inputs()->Get(1)));
  EXPECT_EQ(fcw->shape()->Get(1), 6 * 9);  // and the linear layer's inputs with them
  EXPECT_EQ(r.channels_removed, 2);
  ASSERT_EQ(r.rows.size(), 4u);
  EXPECT_EQ(r.rows[0].kept, 6);
  EXPECT_EQ(r.rows[0].weight_bits, 4);
  EXPECT_EQ(c.slot_of("a").tensor, a->outputs()->Get(0));
}

}  // namespace
}  // namespace bbits::converter
