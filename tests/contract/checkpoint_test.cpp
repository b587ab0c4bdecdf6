// The checkpoint contract (docs/CHECKPOINT.md): the strict safetensors codec,
// the graph JSON field by field, and checkpoints checked against their graph.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include "bbits/contract/checkpoint.h"
#include "bbits/contract/safetensors.h"
#include "bbits/contract/zoo.h"

namespace bbits::contract {
namespace {

using nlohmann::json;

std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    FAIL() << "accepted; expected an error containing '" << needle << "'";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

void expect_parse_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  expect_error([&] { parse_safetensors(bytes); }, needle);
}

// A checkpoint of `g` with every tensor the graph requires: ones, positive
// ranges, gates open.
Checkpoint checkpoint_of(const Graph& g) {
  Checkpoint ck;
  ck.graph = g;
  ck.training = {{"method", "bayesian-bits"}, {"mu", 0.1}};
  for (const auto& [name, shape] : expected_tensors(g)) {
    FTensor t;
    t.shape = shape;
    t.data.assign(static_cast<size_t>(t.numel()), name.find("log_alpha") != std::string::npos ? 6.0f : 1.0f);
    ck.tensors[name] = t;
  }
  return ck;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()))).string();
}

TEST(Safetensors, RoundTripKeepsNamesShapesValuesAndMetadata) {
  TensorMap t;
  t["a.weight"] = FTensor{{2, 3}, {1, 2, 3, 4, 5, 6}};
  t["b"] = FTensor{{1}, {-0.5f}};
  t["empty"] = FTensor{{0, 4}, {}};
  const auto bytes = serialize_safetensors(t, {{"k", "v"}});
  uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  EXPECT_EQ(header % 8, 0u);  // data 8-byte aligned
  const SafetensorsFile f = parse_safetensors(bytes);
  EXPECT_EQ(f.tensors, t);
  EXPECT_EQ(f.metadata.at("k"), "v");
  t["bad"] = FTensor{{3}, {1, 2}};
  expect_error([&] { serialize_safetensors(t, {}); }, "tensor 'bad' has 2 values for shape [3]");
}

TEST(Safetensors, RejectsEveryLie) {
  expect_parse_error({1, 2, 3}, "truncated");
  expect_parse_error(std::vector<uint8_t>{100, 0, 0, 0, 0, 0, 0, 0, '{', '}'}, "runs past the end");
  expect_parse_error(raw_file("{\"a\": ", 0), "not valid JSON");
  expect_parse_error(raw_file("[1, 2]", 0), "JSON object");
  expect_parse_error(raw_file(R"({"w": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}})", 2), "dtype 'F16'");
  expect_parse_error(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4),
                     "past the data section");
  expect_parse_error(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8), "reversed");
  expect_parse_error(raw_file(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8), "tensor 'w'");
  expect_parse_error(raw_file(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4), "non-negative");
  expect_parse_error(
      raw_file(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", 4),
      "overflows");
  expect_parse_error(raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12),
                     "overlaps");
  expect_parse_error(raw_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8), "gap");
  expect_parse_error(raw_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 8), "trailing");
  expect_parse_error(raw_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}})", 4),
                     "unknown field 'x'");
  expect_parse_error(raw_file(R"({"a": {"dtype": "F32", "shape": [1]}})", 4), "data_offsets");
  expect_parse_error(raw_file(R"({"__metadata__": {"k": 1}})", 0), "metadata 'k'");
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    auto f = raw_file(R"({"nan_here": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 8);
    std::memcpy(f.data() + f.size() - 4, &bad, 4);
    expect_parse_error(f, "nan_here");
  }
}

TEST(Checkpoint, SaveWritesATemporaryFileAndRenamesIt) {
  const Checkpoint ck = checkpoint_of(make_graph("lenet5"));
  const std::string path = temp_path("bbits_contract.safetensors");
  save_checkpoint(ck, path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const Checkpoint back = load_checkpoint(path);
  EXPECT_EQ(back.graph, ck.graph);
  EXPECT_EQ(back.tensors, ck.tensors);
  EXPECT_EQ(back.training, ck.training);
  EXPECT_EQ(back.format, kCheckpointFormat);
  EXPECT_EQ(back.source, path);
  // An invalid checkpoint is refused before anything is written.
  Checkpoint bad = ck;
  bad.tensors.erase("features.0.wq.x_max");
  const std::string other = temp_path("bbits_contract_bad.safetensors");
  expect_error([&] { save_checkpoint(bad, other); }, "missing tensor 'features.0.wq.x_max'");
  EXPECT_FALSE(std::filesystem::exists(other));
  EXPECT_FALSE(std::filesystem::exists(other + ".tmp"));
  expect_error([&] { load_checkpoint(other); }, other);
  std::filesystem::remove(path);
}

TEST(Checkpoint, ValidationNamesTheTensor) {
  const Checkpoint good = checkpoint_of(make_graph("vgg7"));
  EXPECT_NO_THROW(validate_checkpoint(good));
  auto expect_invalid = [&](const std::function<void(Checkpoint&)>& mutate, const std::string& needle) {
    Checkpoint ck = good;
    mutate(ck);
    expect_error([&] { validate_checkpoint(ck); }, needle);
  };
  expect_invalid([](Checkpoint& c) { c.tensors["stray"] = FTensor{{1}, {0.0f}}; }, "unexpected tensor 'stray'");
  expect_invalid([](Checkpoint& c) { c.tensors["features.0.weight"].shape = {128, 3, 3, 1}; },
                 "tensor 'features.0.weight' has shape [128, 3, 3, 1], the graph needs [128, 3, 3, 3]");
  expect_invalid([](Checkpoint& c) { c.tensors["features.0.bias"] = FTensor{{128}, std::vector<float>(128, 0.0f)}; },
                 "unexpected tensor 'features.0.bias'");
  expect_invalid([](Checkpoint& c) { c.tensors["classifier.0.bn.weight"].data[3] = NAN; },
                 "'classifier.0.bn.weight' holds a non-finite value");
  expect_invalid([](Checkpoint& c) { c.tensors["input.aq.x_max"].data[0] = 0.0f; },
                 "quantizer range 'input.aq.x_max' must be positive");
  expect_invalid([](Checkpoint& c) { c.tensors["classifier.0.bn.running_var"].data[5] = -1e-3f; },
                 "'classifier.0.bn.running_var' holds a negative variance");
}

TEST(Checkpoint, MetadataIsChecked) {
  const Checkpoint ck = checkpoint_of(make_graph("lenet5"));
  auto bytes_with = [&](const std::string& key, const std::string& value) {
    std::map<std::string, std::string> meta{{"bbits.format", ck.format},
                                            {"bbits.graph", graph_to_json(ck.graph).dump()},
                                            {"bbits.training", ck.training.dump()}};
    if (value.empty()) meta.erase(key);
    else meta[key] = value;
    return serialize_safetensors(ck.tensors, meta);
  };
  EXPECT_NO_THROW(parse_checkpoint(bytes_with("x", "y"), "x"));
  expect_error([&] { parse_checkpoint(bytes_with("bbits.format", "bbits-checkpoint/9"), "x"); },
               "expected 'bbits-checkpoint/1'");
  expect_error([&] { parse_checkpoint(bytes_with("bbits.graph", ""), "x"); }, "metadata 'bbits.graph' is missing");
  expect_error([&] { parse_checkpoint(bytes_with("bbits.graph", "{"), "x"); }, "'bbits.graph' is not valid JSON");
  expect_error([&] { parse_checkpoint(bytes_with("bbits.training", "[1]"), "x"); }, "must be a JSON object");
}

TEST(Graph, AveragePoolingStatesWhetherItCountsPadding) {
  Graph g = make_graph("lenet5");
  g.nodes[1].op = OpKind::AvgPool;  // features.1
  g.nodes[1].count_include_pad = false;
  json j = graph_to_json(g);
  EXPECT_EQ(j["nodes"][1]["count_include_pad"], false);
  EXPECT_FALSE(j["nodes"][3].contains("count_include_pad"));  // max pooling: not a field
  EXPECT_EQ(parse_graph(j), g);
  j["nodes"][1].erase("count_include_pad");
  expect_error([&] { parse_graph(j); }, "node 'features.1': missing field 'count_include_pad'");
}

TEST(Graph, FieldsAreCheckedByName) {
  const json good = graph_to_json(make_graph("lenet5"));
  auto expect_bad = [&](const std::function<void(json&)>& mutate, const std::string& needle) {
    json j = good;
    mutate(j);
    expect_error([&] { infer_shapes(parse_graph(j)); }, needle);
  };
  expect_bad([](json& j) { j["nodes"][0]["op"] = "conv3d"; }, "unknown op 'conv3d'");
  expect_bad([](json& j) { j["nodes"][0]["in_channels"] = 3; }, "in_channels 3 does not match input 'input'");
  expect_bad([](json& j) { j["nodes"][2]["inputs"] = {"classifier.0"}; }, "is not the input or an earlier node");
  expect_bad([](json& j) { j["nodes"][5]["in_features"] = 1000; }, "in_features 1000 does not match");
  expect_bad([](json& j) { j["nodes"][0]["activation"] = "gelu"; }, "unknown activation 'gelu'");
  expect_bad([](json& j) { j["outputs"] = {"nowhere"}; }, "is not a node");
  expect_bad([](json& j) { j["input"]["std"] = {0.0}; }, "'std' value must be positive");
}

TEST(Graph, FeedingQuantizerWalksThroughPoolingAndFlatten) {
  const Graph g = make_graph("lenet5");
  EXPECT_EQ(feeding_quantizer(g, "features.0"), "features.0");
  EXPECT_EQ(feeding_quantizer(g, "features.1"), "features.0");
  EXPECT_EQ(feeding_quantizer(g, "flatten"), "features.2");
  EXPECT_EQ(feeding_quantizer(g, "input"), "input");
  EXPECT_EQ(feeding_quantizer(g, "classifier.1"), "");  // float logits
}

}  // namespace
}  // namespace bbits::contract
