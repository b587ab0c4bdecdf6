// The checkpoint contract (docs/CHECKPOINT.md) from the training side: the
// names, shapes and metadata keys it lists, the byte layout, a round trip,
// tensors that do not fit the network rejected by name, the file loader that
// --resume and --eval use, and every zoo architecture written by the trainer
// and read by the converter with every field equal.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cstring>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "bbits/contract/checkpoint.h"
#include "bbits/contract/safetensors.h"
#include "bbits/contract/zoo.h"
#include "bbits/converter/checkpoint.h"
#include "bbits/converter/convert.h"
#include "bbits/training/network.h"
#include "bbits/training/trainer.h"

using namespace bbits::train;
using nlohmann::json;

namespace {

// The checkpoint the trainer writes for `net`.
Checkpoint net_checkpoint(Net& net, const std::string& method) {
  return net.checkpoint(json{{"method", method}, {"mu", 0.1}, {"epochs", 1}, {"dataset", "fashion-mnist"},
                             {"test_accuracy", 0.5}, {"relative_bops", 0.01}, {"seed", 1}});
}

Graph lenet5() { return bbits::contract::make_graph("lenet5"); }

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()))).string();
}

}  // namespace

TEST(CheckpointContract, LeNet5NamesShapesAndMetadata) {
  at::manual_seed(1);
  Net net(lenet5(), QuantSetup{});
  net.calibrate(at::rand({8, 1, 28, 28}));
  const std::vector<uint8_t> bytes = bbits::contract::serialize_checkpoint(net_checkpoint(net, "bayesian-bits"));

  // Byte layout: u64 LE header length, JSON header, data tiled by the offsets.
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const json h = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
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
      {"linear", {"in_features", "out_features", "bias", "bn", "bn_eps", "activation", "weight_quant", "prune",
                  "act_quant"}},
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
  const Graph g = lenet5();
  QuantSetup prune_only;
  prune_only.learn_bit_gates = false;
  prune_only.weight_bits = prune_only.act_bits = 8;
  Net p(g, prune_only);
  for (const auto& [name, t] : p.export_tensors()) {
    if (name.find("log_alpha_4") != std::string::npos || name.find("log_alpha_8") != std::string::npos)
      EXPECT_EQ(t.data[0], 20.0f) << name;
    if (name.find("log_alpha_16") != std::string::npos || name.find("log_alpha_32") != std::string::npos)
      EXPECT_EQ(t.data[0], -20.0f) << name;
  }
  bbits::contract::ZooOptions nop;
  nop.prune = false;
  QuantSetup fl;
  fl.enabled = false;
  fl.learn_bit_gates = false;
  fl.weight_bits = fl.act_bits = 32;
  Net f(bbits::contract::make_graph("lenet5", nop), fl);
  for (const auto& [name, t] : f.export_tensors()) {
    EXPECT_EQ(name.find("log_alpha_2"), std::string::npos);
    if (name.find("log_alpha") != std::string::npos) EXPECT_EQ(t.data[0], 20.0f) << name;
  }
}

TEST(CheckpointContract, RoundTripThroughAFileIsExact) {
  at::manual_seed(2);
  Net a(lenet5(), QuantSetup{});
  const auto x = at::rand({8, 1, 28, 28});
  a.calibrate(x);
  {
    at::NoGradGuard ng;
    a.layer("features.2")->wq->log_alpha_2.normal_(0.0, 2.0);  // some channels pruned
    a.layer("features.0")->aq->log_alpha_8.fill_(-3.0);        // 4-bit activations
  }
  const std::string path = temp_path("bbits_ck") + ".safetensors";
  bbits::contract::save_checkpoint(net_checkpoint(a, "bayesian-bits"), path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const Checkpoint ck = bbits::contract::load_checkpoint(path);
  Net b(ck.graph, QuantSetup{});
  b.import_tensors(ck);
  a.eval();
  b.eval();
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(a.forward(x), b.forward(x)));
  EXPECT_EQ(b.act_bits().at("features.0"), 4);
  EXPECT_EQ(a.keep_masks(), b.keep_masks());
  std::filesystem::remove(path);
}

TEST(CheckpointContract, TensorsThatDoNotFitTheNetworkAreRejected) {
  at::manual_seed(3);
  Net net(lenet5(), QuantSetup{});
  net.calibrate(at::rand({4, 1, 28, 28}));
  const Checkpoint ck = net_checkpoint(net, "bayesian-bits");
  Net other(lenet5(), QuantSetup{});
  EXPECT_NO_THROW(other.import_tensors(ck));
  Checkpoint missing = ck;
  missing.tensors.erase("features.2.wq.x_max");
  EXPECT_THROW(other.import_tensors(missing), CheckpointError);
  Checkpoint wrong = ck;
  wrong.tensors["features.0.wq.log_alpha_2"] = bbits::contract::FTensor{{31}, std::vector<float>(31, 1.0f)};
  try {
    other.import_tensors(wrong);
    FAIL() << "wrong shape accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("features.0.wq.log_alpha_2"), std::string::npos);
  }
  Checkpoint nan = ck;
  nan.tensors.at("features.0.weight").data[0] = std::nanf("");
  EXPECT_THROW(other.import_tensors(nan), CheckpointError);
  Checkpoint unknown = ck;
  unknown.tensors["features.9.weight"] = bbits::contract::FTensor{{1}, {0.0f}};
  EXPECT_THROW(other.import_tensors(unknown), CheckpointError);

  // The file loader used by --resume, --init and --eval names the file.
  const std::string path = temp_path("bbits_trunc") + ".safetensors";
  const std::vector<uint8_t> good = bbits::contract::serialize_checkpoint(ck);
  {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(good.data()), static_cast<std::streamsize>(good.size() - 100));
  }
  try {
    bbits::contract::load_checkpoint(path);
    FAIL() << "truncated file accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
  EXPECT_THROW(bbits::contract::load_checkpoint(path), CheckpointError);  // missing file
}

// Before fine-tuning the trainer folds batch norm into the weights (the
// reference's static_fold_bn). The folded network computes the same eval-mode
// output to the bit, and its checkpoint is a contract checkpoint like any
// other: the nodes say bn false and bias true, every folded layer has its
// bias, no BN tensors remain, and a fresh network built from the written
// graph reproduces the output.
TEST(CheckpointContract, BatchNormFoldedCheckpoint) {
  at::manual_seed(4);
  const bbits::contract::ZooOptions o = model_options({1, 28, 28}, 0.0625);
  Net net(bbits::contract::make_graph("vgg7", o), QuantSetup{});
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
  EXPECT_EQ(net.graph(), without_batch_norm(bbits::contract::make_graph("vgg7", o)));

  const std::vector<uint8_t> bytes = bbits::contract::serialize_checkpoint(net_checkpoint(net, "bayesian-bits"));
  const Checkpoint ck = bbits::contract::parse_checkpoint(bytes, "folded");
  const Graph& g = ck.graph;
  for (const auto& n : g.nodes) {
    EXPECT_FALSE(n.bn) << n.name;
    if (n.is_layer()) {
      EXPECT_TRUE(n.bias) << n.name;
      ASSERT_TRUE(ck.has(n.name + ".bias")) << n.name;
      EXPECT_EQ(ck.get(n.name + ".bias").shape, (std::vector<int64_t>{n.outputs()}));
    }
  }
  for (const auto& [name, t] : ck.tensors) EXPECT_EQ(name.find(".bn."), std::string::npos) << name;
  Net fresh(g, QuantSetup{});
  fresh.import_tensors(ck);
  fresh.eval();
  EXPECT_TRUE(at::equal(fresh.forward(x), before));
}

// The round trip of the contract: every zoo architecture, built as the
// trainer builds it, written by the trainer's checkpoint writer and read by
// the converter's reader with every graph field and every tensor equal; the
// converter then converts it.
TEST(CheckpointContract, EveryZooGraphWrittenByTheTrainerIsReadByTheConverter) {
  struct Case {
    std::vector<int64_t> shape;
    double width;
  };
  const std::map<std::string, Case> cases = {{"lenet5", {{1, 28, 28}, 1.0}},
                                             {"vgg7", {{1, 28, 28}, 0.0625}},
                                             {"resnet18", {{1, 32, 32}, 0.125}},
                                             {"resnet18-small", {{1, 16, 16}, 0.125}},
                                             {"mobilenetv2", {{1, 32, 32}, 0.25}}};
  ASSERT_EQ(cases.size(), bbits::contract::zoo_names().size());
  for (const std::string& arch : bbits::contract::zoo_names()) {
    ASSERT_TRUE(cases.count(arch)) << arch;
    const Case& c = cases.at(arch);
    at::manual_seed(5);
    Net net(bbits::contract::make_graph(arch, model_options(c.shape, c.width)), QuantSetup{});
    net.calibrate(at::rand({2, c.shape[0], c.shape[1], c.shape[2]}));
    const Checkpoint written = net_checkpoint(net, "bayesian-bits");
    const std::string path = temp_path("bbits_zoo_" + arch) + ".safetensors";
    bbits::contract::save_checkpoint(written, path);
    const bbits::converter::Checkpoint read = bbits::converter::load_checkpoint(path);
    EXPECT_EQ(read.graph, net.graph()) << arch;
    EXPECT_EQ(bbits::contract::graph_to_json(read.graph), bbits::contract::graph_to_json(net.graph())) << arch;
    EXPECT_EQ(read.tensors, written.tensors) << arch;
    EXPECT_EQ(read.training, written.training) << arch;
    bbits::format::ModelWriter w;
    const bbits::converter::ConvertReport r = bbits::converter::build_model(read, w);
    EXPECT_EQ(r.model, arch);
    EXPECT_NO_THROW((void)w.serialize()) << arch;
    std::filesystem::remove(path);
  }
}
