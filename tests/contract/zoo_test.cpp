// The model zoo: each architecture with the reference implementation's module
// names and structure, the trainer's options, and a graph JSON that reads
// back with every field equal.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "bbits/contract/zoo.h"

namespace bbits::contract {
namespace {

const Node* find(const Graph& g, const std::string& name) {
  for (const Node& n : g.nodes)
    if (n.name == name) return &n;
  return nullptr;
}

std::vector<std::string> layer_names(const Graph& g) {
  std::vector<std::string> v;
  for (const Node& n : g.nodes)
    if (n.is_layer()) v.push_back(n.name);
  return v;
}

TEST(Zoo, EveryGraphReadsBackWithEveryFieldEqual) {
  std::vector<ZooOptions> variants(4);
  variants[1].quantize = false;
  variants[2].prune = false;
  variants[2].width = 0.5;
  variants[3].prune_depthwise = false;
  variants[3].preprocessing = Preprocessing{1.0 / 255.0, {0.5f}, {0.25f}};
  for (const std::string& arch : zoo_names())
    for (const ZooOptions& o : variants) {
      ZooOptions opt = o;
      if (arch == "mobilenetv2" || arch == "resnet18") opt.input_shape = {3, 64, 64};  // keep the test fast
      const Graph g = make_graph(arch, opt);
      const Graph back = parse_graph(nlohmann::json::parse(graph_to_json(g).dump()));
      EXPECT_EQ(back, g) << arch;
      EXPECT_NO_THROW(infer_shapes(back)) << arch;
    }
}

TEST(Zoo, LeNet5IsTheReferenceLeNet5Quantized) {
  const Graph g = make_graph("lenet5");
  EXPECT_EQ(layer_names(g), (std::vector<std::string>{"features.0", "features.2", "classifier.0", "classifier.1"}));
  EXPECT_EQ(g.input.shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_DOUBLE_EQ(g.input.pixel_scale, 1.0 / 255.0);
  const Node& fc = *find(g, "classifier.0");
  EXPECT_EQ(fc.in_features, 1024);
  EXPECT_TRUE(fc.bias);
  const Node& logits = *find(g, "classifier.1");
  EXPECT_FALSE(logits.prune);
  EXPECT_FALSE(logits.act_quant);
  EXPECT_EQ(g.outputs, std::vector<std::string>{"classifier.1"});
}

TEST(Zoo, Vgg7ClassifierHasBatchNormAsTheReference) {
  // cifar_models.py: VGGQuantized's classifier.0 is a BNQLinearReLU.
  const Graph g = make_graph("vgg7");
  const Node& c0 = *find(g, "classifier.0");
  EXPECT_EQ(c0.op, OpKind::Linear);
  EXPECT_TRUE(c0.bn);
  EXPECT_FALSE(c0.bias);
  EXPECT_EQ(c0.activation, Act::Relu);
  EXPECT_EQ(c0.in_features, 8192);
  for (int i : {2, 5, 8}) EXPECT_EQ(find(g, "features." + std::to_string(i))->op, OpKind::MaxPool);
  for (int i : {0, 1, 3, 4, 6, 7}) EXPECT_TRUE(find(g, "features." + std::to_string(i))->bn);
  EXPECT_FLOAT_EQ(g.input.std[0], 0.2023f);  // cifar10_data_loader.py's Normalize
  // On another input the flatten size follows the shapes.
  ZooOptions o;
  o.input_shape = {1, 28, 28};
  o.preprocessing = Preprocessing{};
  EXPECT_EQ(find(make_graph("vgg7", o), "classifier.0")->in_features, 512 * 3 * 3);
}

TEST(Zoo, ResNet18UsesTheReferenceBlockNames) {
  const Graph g = make_graph("resnet18");
  EXPECT_EQ(find(g, "features.0")->kernel_h, 7);
  EXPECT_EQ(find(g, "features.1")->op, OpKind::MaxPool);
  for (const char* n : {"features.2.0.features.0", "features.2.0.features.1", "features.3.0.downsample.0",
                        "features.5.1.features.1", "fc"})
    EXPECT_NE(find(g, n), nullptr) << n;
  EXPECT_EQ(find(g, "features.2.0.downsample.0"), nullptr);  // stride 1, same width: identity shortcut
  const Node& add = *find(g, "features.3.0");
  EXPECT_EQ(add.op, OpKind::Add);
  EXPECT_EQ(add.inputs, (std::vector<std::string>{"features.3.0.features.1", "features.3.0.downsample.0"}));
  EXPECT_EQ(add.activation, Act::Relu);
  EXPECT_EQ(find(g, "fc")->out_features, 1000);
  EXPECT_EQ(layer_names(g).size(), 21u);  // 1 + 16 + 3 downsamples + fc
  // The small variant: 3x3 stem, no max pooling, stages features.1-4.
  const Graph s = make_graph("resnet18-small");
  EXPECT_EQ(find(s, "features.0")->kernel_h, 3);
  EXPECT_NE(find(s, "features.1.0.features.0"), nullptr);
  EXPECT_NE(find(s, "features.4.1.features.1"), nullptr);
  EXPECT_EQ(find(s, "features.5.0.features.0"), nullptr);
  EXPECT_EQ(find(s, "fc")->out_features, 10);
}

TEST(Zoo, MobileNetV2UsesTheReferenceBlockNames) {
  const Graph g = make_graph("mobilenetv2");
  // features.1 (t = 1): depthwise conv.0 and projection conv.1; later blocks conv.0-2.
  EXPECT_EQ(find(g, "features.1.conv.0")->groups, 32);
  EXPECT_EQ(find(g, "features.1.conv.2"), nullptr);
  EXPECT_EQ(find(g, "features.2.conv.1")->groups, 96);
  EXPECT_EQ(find(g, "features.17.conv.2")->out_channels, 320);
  EXPECT_EQ(find(g, "features.18")->out_channels, 1280);
  EXPECT_EQ(find(g, "features.19")->op, OpKind::GlobalAvgPool);
  EXPECT_EQ(find(g, "classifier.1")->out_features, 1000);
  // Residual blocks: the add is the block, input first as in `x + self.conv(x)`.
  const Node& add = *find(g, "features.3");
  EXPECT_EQ(add.op, OpKind::Add);
  EXPECT_EQ(add.inputs, (std::vector<std::string>{"features.2.conv.2", "features.3.conv.2"}));
  EXPECT_EQ(find(g, "features.2"), nullptr);  // no residual: the block's output is its last convolution's
  // Depthwise pruning gates: the reference has them; the trainer can leave them out.
  EXPECT_TRUE(find(g, "features.2.conv.1")->prune);
  ZooOptions o;
  o.prune_depthwise = false;
  EXPECT_FALSE(find(make_graph("mobilenetv2", o), "features.2.conv.1")->prune);
  EXPECT_TRUE(find(make_graph("mobilenetv2", o), "features.2.conv.0")->prune);
}

TEST(Zoo, OptionsShapeTheNetwork) {
  ZooOptions o;
  o.input_shape = {1, 28, 28};
  o.num_classes = 7;
  o.width = 0.25;
  o.preprocessing = Preprocessing{};  // the default data sets have 3 channels
  const Graph r = make_graph("resnet18-small", o);
  EXPECT_EQ(find(r, "features.0")->in_channels, 1);
  EXPECT_EQ(find(r, "features.0")->out_channels, 16);
  EXPECT_EQ(find(r, "fc")->out_features, 7);
  const Graph m = make_graph("mobilenetv2", o);
  EXPECT_EQ(find(m, "features.0")->stride_h, 1);  // small inputs keep their resolution
  o.quantize = false;
  for (const Node& n : make_graph("lenet5", o).nodes) {
    EXPECT_FALSE(n.weight_quant) << n.name;
    EXPECT_FALSE(n.act_quant) << n.name;
    EXPECT_FALSE(n.prune) << n.name;
  }
  EXPECT_THROW(make_graph("alexnet"), CheckpointError);
  o.input_shape = {1, 28};
  EXPECT_THROW(make_graph("lenet5", o), CheckpointError);
}

}  // namespace
}  // namespace bbits::contract
