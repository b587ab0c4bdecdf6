// Checkpoints through the converter: every truncation and every lie in a file
// gets an error naming the tensor or field, and nothing is written (the codec
// itself: tests/contract).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "bbits/converter/convert.h"
#include "bbits/contract/safetensors.h"
#include "bbits/converter/synthetic.h"
#include "test_util.h"

namespace bbits::converter {
namespace {

using nlohmann::json;

TEST(Checkpoint, EveryTruncationOfAValidCheckpointIsAnError) {
  const Checkpoint ck = make_synthetic("lenet5", parse_bit_config("w4a8"), 3);
  std::map<std::string, std::string> meta{{"bbits.format", ck.format},
                                          {"bbits.graph", graph_to_json(ck.graph).dump()},
                                          {"bbits.training", ck.training.dump()}};
  const auto bytes = contract::serialize_safetensors(ck.tensors, meta);
  EXPECT_NO_THROW(parse_checkpoint(bytes, "x"));
  for (size_t len = 0; len < bytes.size(); len += 1 + len / 3) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(len));
    EXPECT_THROW(parse_checkpoint(cut, "x"), contract::CheckpointError) << "length " << len;
  }
}

class CheckpointValidation : public ::testing::Test {
 protected:
  Checkpoint ck = make_synthetic("lenet5", parse_bit_config("w8a8"), 5);
  std::vector<uint8_t> bytes_of(const Checkpoint& c, const std::string& graph_override = "") {
    std::map<std::string, std::string> meta{{"bbits.format", c.format},
                                            {"bbits.graph", graph_override.empty() ? graph_to_json(c.graph).dump() : graph_override},
                                            {"bbits.training", c.training.dump()}};
    return contract::serialize_safetensors(c.tensors, meta);
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
    } catch (const contract::CheckpointError& e) {
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
