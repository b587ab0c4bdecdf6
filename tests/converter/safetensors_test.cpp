// Strict safetensors reading and checkpoint validation: every lie in a file
// gets an error naming the tensor or field, and nothing is written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "bbits/converter/convert.h"
#include "bbits/converter/safetensors.h"
#include "bbits/converter/synthetic.h"
#include "test_util.h"

namespace bbits::converter {
namespace {

using nlohmann::json;

std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  try {
    parse_safetensors(bytes);
    FAIL() << "accepted a bad file; expected an error containing '" << needle << "'";
  } catch (const ConvertError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

TEST(Safetensors, RoundTripKeepsNamesShapesValuesAndMetadata) {
  TensorMap t;
  t["a.weight"] = FTensor{{2, 3}, {1, 2, 3, 4, 5, 6}};
  t["b"] = FTensor{{1}, {-0.5f}};
  t["empty"] = FTensor{{0, 4}, {}};
  const auto bytes = serialize_safetensors(t, {{"k", "v"}});
  const SafetensorsFile f = parse_safetensors(bytes);
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors.at("a.weight").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.tensors.at("a.weight").data, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(f.tensors.at("b").data[0], -0.5f);
  EXPECT_EQ(f.tensors.at("empty").data.size(), 0u);
  EXPECT_EQ(f.metadata.at("k"), "v");
}

TEST(Safetensors, RejectsEveryLie) {
  expect_error({1, 2, 3}, "truncated");
  expect_error(std::vector<uint8_t>{100, 0, 0, 0, 0, 0, 0, 0, '{', '}'}, "runs past the end");
  expect_error(raw_file("{\"a\": ", 0), "not valid JSON");
  expect_error(raw_file("[1, 2]", 0), "JSON object");
  expect_error(raw_file(R"({"w": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}})", 2), "dtype 'F16'");
  expect_error(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4), "past the data section");
  expect_error(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8), "reversed");
  expect_error(raw_file(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8), "tensor 'w'");
  expect_error(raw_file(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4), "non-negative");
  expect_error(raw_file(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", 4),
               "overflows");
  expect_error(raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12),
               "overlaps");
  expect_error(raw_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8), "gap");
  expect_error(raw_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 8), "trailing");
  expect_error(raw_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}})", 4),
               "unknown field 'x'");
  expect_error(raw_file(R"({"a": {"dtype": "F32", "shape": [1]}})", 4), "data_offsets");
  expect_error(raw_file(R"({"__metadata__": {"k": 1}})", 0), "metadata 'k'");
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    auto f = raw_file(R"({"nan_here": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 8);
    std::memcpy(f.data() + f.size() - 4, &bad, 4);
    expect_error(f, "nan_here");
  }
}

TEST(Safetensors, EveryTruncationOfAValidCheckpointIsAnError) {
  const Checkpoint ck = make_synthetic("lenet5", parse_bit_config("w4a8"), 3);
  std::map<std::string, std::string> meta{{"bbits.format", ck.format},
                                          {"bbits.graph", graph_to_json(ck.graph).dump()},
                                          {"bbits.training", ck.training.dump()}};
  const auto bytes = serialize_safetensors(ck.tensors, meta);
  EXPECT_NO_THROW(parse_checkpoint(bytes, "x"));
  for (size_t len = 0; len < bytes.size(); len += 1 + len / 3) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(len));
    EXPECT_THROW(parse_checkpoint(cut, "x"), ConvertError) << "length " << len;
  }
}

class CheckpointValidation : public ::testing::Test {
 protected:
  Checkpoint ck = make_synthetic("lenet5", parse_bit_config("w8a8"), 5);
  std::vector<uint8_t> bytes_of(const Checkpoint& c, const std::string& graph_override = "") {
    std::map<std::string, std::string> meta{{"bbits.format", c.format},
                                            {"bbits.graph", graph_override.empty() ? graph_to_json(c.graph).dump() : graph_override},
                                            {"bbits.training", c.training.dump()}};
    return serialize_safetensors(c.tensors, meta);
  }
  void expect_ck_error(const Checkpoint& c, const std::string& needle, const std::string& graph_override = "") {
    const auto dir = test::temp_dir("val");
    const auto ck_path = (dir / "bad.safetensors").string();
    const auto out = (dir / "bad.bbm").string();
    bbits::format::write_file_atomic(ck_path, bytes_of(c, graph_override));
    try {
      const Checkpoint loaded = load_checkpoint(ck_path);
      convert_to_file(loaded, out);
      ADD_FAILURE() << "accepted a bad checkpoint; expected '" << needle << "'";
    } catch (const ConvertError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(out)) << "a failed conversion left a file behind";
    std::filesystem::remove_all(dir);
  }
};

TEST_F(CheckpointValidation, GoodCheckpointLoadsAndConverts) {
  const auto dir = test::temp_dir("good");
  save_checkpoint(ck, (dir / "ck.safetensors").string());
  const Checkpoint loaded = load_checkpoint((dir / "ck.safetensors").string());
  EXPECT_EQ(loaded.tensors.size(), ck.tensors.size());
  EXPECT_EQ(loaded.graph.nodes.size(), ck.graph.nodes.size());
  const ConvertReport r = convert_to_file(loaded, (dir / "m.bbm").string());
  EXPECT_GT(r.file_bytes, 0);
  std::filesystem::remove_all(dir);
}

TEST_F(CheckpointValidation, MissingTensor) {
  Checkpoint c = ck;
  c.tensors.erase("features.2.bias");
  expect_ck_error(c, "missing tensor 'features.2.bias'");
}

TEST_F(CheckpointValidation, ExtraTensor) {
  Checkpoint c = ck;
  c.tensors["features.9.weight"] = FTensor{{1}, {0}};
  expect_ck_error(c, "unexpected tensor 'features.9.weight'");
}

TEST_F(CheckpointValidation, WrongShape) {
  Checkpoint c = ck;
  c.tensors["classifier.0.weight"].shape = {1024, 512};
  expect_ck_error(c, "'classifier.0.weight' has shape [1024, 512]");
}

TEST_F(CheckpointValidation, NonFiniteValue) {
  Checkpoint c = ck;
  c.tensors["features.0.weight"].data[7] = NAN;
  expect_ck_error(c, "features.0.weight");
}

TEST_F(CheckpointValidation, NonPositiveRange) {
  Checkpoint c = ck;
  c.tensors["features.0.aq.x_max"].data[0] = 0.0f;
  expect_ck_error(c, "'features.0.aq.x_max' must be positive");
}

TEST_F(CheckpointValidation, GraphThatDoesNotMatchTheTensors) {
  json g = graph_to_json(ck.graph);
  g["nodes"][2]["in_channels"] = 16;  // features.2 reads 32 channels
  expect_ck_error(ck, "node 'features.2': in_channels 16", g.dump());
  json g2 = graph_to_json(ck.graph);
  g2["nodes"][5]["in_features"] = 1000;
  expect_ck_error(ck, "node 'classifier.0': in_features 1000", g2.dump());
  json g3 = graph_to_json(ck.graph);
  g3["nodes"][0]["op"] = "conv3d";
  expect_ck_error(ck, "unknown op 'conv3d'", g3.dump());
  json g4 = graph_to_json(ck.graph);
  g4["nodes"][1]["inputs"] = {"classifier.1"};
  expect_ck_error(ck, "not the input or an earlier node", g4.dump());
  expect_ck_error(ck, "'bbits.graph' is not valid JSON", "{nodes");
}

TEST_F(CheckpointValidation, MetadataFormat) {
  Checkpoint c = ck;
  c.format = "bbits-checkpoint/9";
  expect_ck_error(c, "bbits.format");
}

}  // namespace
}  // namespace bbits::converter
