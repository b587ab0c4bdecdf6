// The checkpoint contract (docs/CHECKPOINT.md) from the training side: the
// names, shapes and metadata keys it lists, the byte layout, a round trip,
// and corrupt or truncated files rejected with a clear error by the loader
// that --resume and --eval use.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cstring>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "bbits/training/network.h"
#include "bbits/training/safetensors.h"

using namespace bbits::train;
using nlohmann::json;

namespace {

Checkpoint lenet_checkpoint(Net& net, const std::string& method) {
  Checkpoint ck;
  ck.metadata["bbits.format"] = kCheckpointFormat;
  ck.metadata["bbits.graph"] = net.graph().to_json_string();
  ck.metadata["bbits.training"] = json{{"method", method}, {"mu", 0.1}, {"epochs", 1}, {"dataset", "fashion-mnist"},
                                       {"test_accuracy", 0.5}, {"relative_bops", 0.01}, {"seed", 1}}
                                      .dump();
  ck.tensors = net.export_tensors();
  return ck;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()))).string();
}

void expect_rejected(const std::string& bytes, const std::string& phrase) {
  try {
    decode_safetensors(bytes, "test checkpoint");
    FAIL() << "accepted a corrupt checkpoint (expected: " << phrase << ")";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(CheckpointContract, LeNet5NamesShapesAndMetadata) {
  at::manual_seed(1);
  Net net(build_model("lenet5", ModelOptions{}), QuantSetup{});
  net.calibrate(at::rand({8, 1, 28, 28}));
  const std::string bytes = encode_safetensors(lenet_checkpoint(net, "bayesian-bits"));

  // Byte layout: u64 LE header length, JSON header, data tiled by the offsets.
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const json h = json::parse(bytes.substr(8, n));
  const uint64_t data = bytes.size() - 8 - n;
  std::map<std::string, std::vector<int64_t>> shapes;
  uint64_t covered = 0;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    EXPECT_EQ(it.value()["dtype"], "F32");
    shapes[it.key()] = it.value()["shape"].get<std::vector<int64_t>>();
    const auto off = it.value()["data_offsets"].get<std::vector<uint64_t>>();
    covered += off[1] - off[0];
    EXPECT_LE(off[1], data);
  }
  EXPECT_EQ(covered, data);

  using S = std::vector<int64_t>;
  std::map<std::string, S> want = {{"input.aq.x_max", {1}}};
  auto layer = [&](const std::string& L, S w, int64_t o, bool prune) {
    want[L + ".weight"] = w;
    want[L + ".bias"] = {o};
    want[L + ".wq.x_max"] = {1};
    if (prune) want[L + ".wq.log_alpha_2"] = {o};
    for (const char* b : {"4", "8", "16", "32"}) want[L + ".wq.log_alpha_" + b] = {1};
  };
  auto act = [&](const std::string& N) {
    want[N + ".aq.x_max"] = {1};
    for (const char* b : {"4", "8", "16", "32"}) want[N + ".aq.log_alpha_" + b] = {1};
  };
  layer("features.0", {32, 1, 5, 5}, 32, true);
  act("features.0");
  layer("features.2", {64, 32, 5, 5}, 64, true);
  act("features.2");
  layer("classifier.0", {512, 1024}, 512, true);
  act("classifier.0");
  layer("classifier.1", {10, 512}, 10, false);
  EXPECT_EQ(shapes, want);

  const json meta = h["__metadata__"];
  EXPECT_EQ(meta["bbits.format"], "bbits-checkpoint/1");
  const json g = json::parse(meta["bbits.graph"].get<std::string>());
  EXPECT_EQ(g["model"], "lenet5");
  EXPECT_EQ(g["input"]["name"], "input");
  EXPECT_EQ(g["input"]["shape"], json::array({1, 28, 28}));
  EXPECT_EQ(g["input"]["layout"], "NCHW");
  EXPECT_DOUBLE_EQ(g["input"]["pixel_scale"].get<double>(), 1.0 / 255.0);
  EXPECT_EQ(g["input"]["mean"], json::array({0.0}));
  EXPECT_EQ(g["input"]["std"], json::array({1.0}));
  EXPECT_EQ(g["outputs"], json::array({"classifier.1"}));
  const std::map<std::string, std::set<std::string>> fields = {
      {"conv2d", {"in_channels", "out_channels", "kernel", "stride", "padding", "dilation", "groups", "bias", "bn",
                  "bn_eps", "activation", "weight_quant", "prune", "act_quant", "act_signed"}},
      {"linear", {"in_features", "out_features", "bias", "activation", "weight_quant", "prune", "act_quant"}},
      {"maxpool", {"kernel", "stride", "padding"}},
      {"flatten", {}}};
  std::vector<std::string> order;
  for (const auto& node : g["nodes"]) {
    order.push_back(node["name"]);
    for (const auto& f : fields.at(node["op"].get<std::string>()))
      EXPECT_TRUE(node.contains(f)) << node["name"] << " lacks " << f;
    EXPECT_TRUE(node["inputs"].is_array());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"features.0", "features.1", "features.2", "features.3", "flatten",
                                             "classifier.0", "classifier.1"}));
  EXPECT_EQ(g["nodes"][0]["activation"], "relu");
  EXPECT_EQ(g["nodes"][0]["inputs"], json::array({"input"}));
  EXPECT_EQ(g["nodes"][4]["inputs"], json::array({"features.3"}));
  EXPECT_EQ(g["nodes"][6]["prune"], false);
  EXPECT_EQ(g["nodes"][6]["act_quant"], false);
  EXPECT_EQ(g["nodes"][5]["act_signed"], false);
  const json t = json::parse(meta["bbits.training"].get<std::string>());
  for (const char* k : {"method", "mu", "epochs", "dataset", "test_accuracy", "relative_bops", "seed"})
    EXPECT_TRUE(t.contains(k)) << k;
}

TEST(CheckpointContract, FixedModesWriteForcedGates) {
  const Graph g = build_model("lenet5", ModelOptions{});
  QuantSetup prune_only;
  prune_only.learn_bit_gates = false;
  prune_only.weight_bits = prune_only.act_bits = 8;
  Net p(g, prune_only);
  for (const auto& t : p.export_tensors()) {
    if (t.name.find("log_alpha_4") != std::string::npos || t.name.find("log_alpha_8") != std::string::npos)
      EXPECT_EQ(t.data[0], 20.0f) << t.name;
    if (t.name.find("log_alpha_16") != std::string::npos || t.name.find("log_alpha_32") != std::string::npos)
      EXPECT_EQ(t.data[0], -20.0f) << t.name;
  }
  ModelOptions nop;
  nop.prune = false;
  QuantSetup fl;
  fl.enabled = false;
  fl.learn_bit_gates = false;
  fl.weight_bits = fl.act_bits = 32;
  Net f(build_model("lenet5", nop), fl);
  for (const auto& t : f.export_tensors()) {
    EXPECT_EQ(t.name.find("log_alpha_2"), std::string::npos);
    if (t.name.find("log_alpha") != std::string::npos) EXPECT_EQ(t.data[0], 20.0f) << t.name;
  }
}

TEST(CheckpointContract, RoundTripThroughAFileIsExact) {
  at::manual_seed(2);
  Net a(build_model("lenet5", ModelOptions{}), QuantSetup{});
  const auto x = at::rand({8, 1, 28, 28});
  a.calibrate(x);
  {
    at::NoGradGuard ng;
    a.layer("features.2")->wq->log_alpha_2.normal_(0.0, 2.0);  // some channels pruned
    a.layer("features.0")->aq->log_alpha_8.fill_(-3.0);        // 4-bit activations
  }
  const std::string path = temp_path("bbits_ck") + ".safetensors";
  write_safetensors(path, lenet_checkpoint(a, "bayesian-bits"));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const Checkpoint ck = read_safetensors(path);
  check_contract_metadata(ck);
  Net b(Graph::from_json_string(ck.metadata.at("bbits.graph")), QuantSetup{});
  b.import_tensors(ck);
  a.eval();
  b.eval();
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(a.forward(x), b.forward(x)));
  EXPECT_EQ(b.act_bits().at("features.0"), 4);
  EXPECT_EQ(a.keep_masks(), b.keep_masks());
  std::filesystem::remove(path);
}

TEST(CheckpointContract, CorruptOrTruncatedCheckpointsAreRejected) {
  at::manual_seed(3);
  Net net(build_model("lenet5", ModelOptions{}), QuantSetup{});
  net.calibrate(at::rand({4, 1, 28, 28}));
  const Checkpoint ck = lenet_checkpoint(net, "bayesian-bits");
  const std::string good = encode_safetensors(ck);
  EXPECT_NO_THROW(decode_safetensors(good));

  expect_rejected(good.substr(0, 5), "too short");
  expect_rejected(good.substr(0, good.size() / 2), "truncated");
  expect_rejected(good.substr(0, good.size() - 4), "");
  std::string big = good;
  big[7] = 0x7f;  // header length beyond the file
  expect_rejected(big, "exceeds the file size");
  std::string badjson = good;
  badjson[8] = '[';
  badjson[9] = '[';
  expect_rejected(badjson, "");
  std::string extra = good + "abcd";
  expect_rejected(extra, "trailing bytes");

  // Hand-made headers: wrong dtype, overlap, bad shape.
  auto make = [](const json& header, size_t data_bytes) {
    std::string h = header.dump();
    std::string out(8, '\0');
    const uint64_t n = h.size();
    std::memcpy(out.data(), &n, 8);
    return out + h + std::string(data_bytes, '\0');
  };
  expect_rejected(make({{"a", {{"dtype", "F16"}, {"shape", {2}}, {"data_offsets", {0, 4}}}}}, 4), "only F32");
  expect_rejected(make({{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                        {"b", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {4, 8}}}}},
                       8),
                  "");
  expect_rejected(make({{"a", {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, 8}}}}}, 8), "shape needs");

  // Structurally valid files that break the contract: missing metadata, missing
  // tensor, wrong shape, non-finite value.
  Checkpoint m = ck;
  m.metadata.erase("bbits.graph");
  EXPECT_THROW(check_contract_metadata(m), CheckpointError);
  m = ck;
  m.metadata["bbits.format"] = "bbits-checkpoint/0";
  EXPECT_THROW(check_contract_metadata(m), CheckpointError);
  Net other(build_model("lenet5", ModelOptions{}), QuantSetup{});
  Checkpoint missing = ck;
  missing.tensors.erase(missing.tensors.begin() + 3);
  EXPECT_THROW(other.import_tensors(missing), CheckpointError);
  Checkpoint wrong = ck;
  for (auto& t : wrong.tensors)
    if (t.name == "features.0.wq.log_alpha_2") {
      t.shape = {31};
      t.data.resize(31);
    }
  try {
    other.import_tensors(wrong);
    FAIL() << "wrong shape accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("features.0.wq.log_alpha_2"), std::string::npos);
  }
  Checkpoint nan = ck;
  nan.tensors[0].data[0] = std::nanf("");
  EXPECT_THROW(other.import_tensors(nan), CheckpointError);
  Checkpoint unknown = ck;
  unknown.tensors.push_back({"features.9.weight", {1}, {0.0f}});
  EXPECT_THROW(other.import_tensors(unknown), CheckpointError);

  // The file reader used by --resume and --eval.
  const std::string path = temp_path("bbits_trunc") + ".safetensors";
  {
    std::ofstream f(path, std::ios::binary);
    f << good.substr(0, good.size() - 100);
  }
  try {
    read_safetensors(path);
    FAIL() << "truncated file accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
  EXPECT_THROW(read_safetensors(path), CheckpointError);  // missing file
}

// Before fine-tuning the trainer folds batch norm into the weights (the
// reference's static_fold_bn). The folded network computes the same eval-mode
// output to the bit, and its checkpoint is a contract checkpoint like any
// other: the nodes say bn false and bias true, every folded layer has its
// bias, no BN tensors remain, and a fresh network built from the written
// graph reproduces the output.
TEST(CheckpointContract, BatchNormFoldedCheckpoint) {
  at::manual_seed(4);
  ModelOptions o;
  o.width = 0.0625;
  Net net(build_model("vgg7", o), QuantSetup{});
  const auto x = at::rand({6, 1, 28, 28});
  net.calibrate(x);
  net.train();
  {
    at::NoGradGuard ng;
    net.forward(x);  // running statistics away from their initial 0 / 1
  }
  net.eval();
  at::Tensor before;
  {
    at::NoGradGuard ng;
    before = net.forward(x);
  }
  int bn_layers = 0;
  for (const auto& n : net.graph().nodes) bn_layers += n.bn;
  ASSERT_GT(bn_layers, 0);
  EXPECT_EQ(net.fold_batch_norm(), bn_layers);
  EXPECT_EQ(net.fold_batch_norm(), 0);  // nothing left to fold
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(net.forward(x), before));
  EXPECT_EQ(net.graph().to_json(), without_batch_norm(build_model("vgg7", o)).to_json());

  const std::string bytes = encode_safetensors(lenet_checkpoint(net, "bayesian-bits"));
  const Checkpoint ck = decode_safetensors(bytes);
  check_contract_metadata(ck);
  const Graph g = Graph::from_json_string(ck.metadata.at("bbits.graph"));
  for (const auto& n : g.nodes) {
    EXPECT_FALSE(n.bn) << n.name;
    if (has_weights(n.op)) {
      EXPECT_TRUE(n.bias) << n.name;
      ASSERT_NE(ck.find(n.name + ".bias"), nullptr) << n.name;
      EXPECT_EQ(ck.at(n.name + ".bias").shape, (std::vector<int64_t>{n.out_channels}));
    }
  }
  for (const auto& t : ck.tensors) EXPECT_EQ(t.name.find(".bn."), std::string::npos) << t.name;
  Net fresh(g, QuantSetup{});
  fresh.import_tensors(ck);
  fresh.eval();
  EXPECT_TRUE(at::equal(fresh.forward(x), before));
}
