// bbits training — the network graph: the nodes the training library builds
// and the `bbits.graph` JSON of the checkpoint contract (docs/CHECKPOINT.md).
// Torch-free: used by the model builders, the cost report, the checkpoint
// writer/reader and the tests.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace bbits::train {

enum class Op { Conv2d, Linear, MaxPool, AvgPool, GlobalAvgPool, Add, Concat, Flatten, Relu, Relu6 };

const char* op_name(Op op);
Op op_from_name(const std::string& s);  // throws std::invalid_argument

// Conv2d / Linear have weights; these are the layers that carry a weight quantizer.
inline bool has_weights(Op op) { return op == Op::Conv2d || op == Op::Linear; }

struct Node {
  std::string name;
  Op op = Op::Conv2d;
  std::vector<std::string> inputs;
  // conv2d: in/out channels; linear: in/out features.
  int64_t in_channels = 0, out_channels = 0;
  std::array<int64_t, 2> kernel{1, 1}, stride{1, 1}, padding{0, 0}, dilation{1, 1};
  int64_t groups = 1;
  bool bias = true;
  bool bn = false;
  double bn_eps = 1e-5;
  std::string activation = "none";  // none, relu, relu6
  bool weight_quant = false, prune = false, act_quant = false, act_signed = false;
  int64_t axis = 1;  // concat
};

struct InputSpec {
  std::string name = "input";
  std::vector<int64_t> shape;  // C, H, W
  std::string layout = "NCHW";
  double pixel_scale = 1.0 / 255.0;
  std::vector<double> mean{0.0}, std{1.0};
};

struct Graph {
  std::string model;
  InputSpec input;
  std::vector<Node> nodes;
  std::vector<std::string> outputs;

  const Node& node(const std::string& name) const;  // throws when missing
  int index_of(const std::string& name) const;       // -1 for the input, throws when missing

  nlohmann::json to_json() const;
  // Parses and validates (ops, fields, inputs naming earlier nodes, shapes consistent).
  static Graph from_json(const nlohmann::json& j);
  static Graph from_json_string(const std::string& s);
  std::string to_json_string() const;
};

// Output shape (without batch) of every node: C,H,W for maps, F for vectors.
// Throws when the graph is inconsistent (channel mismatch, empty map, ...).
std::map<std::string, std::vector<int64_t>> infer_shapes(const Graph& g);

// What the model builders vary.
struct ModelOptions {
  std::vector<int64_t> input_shape{1, 28, 28};
  int64_t num_classes = 10;
  bool quantize = true;  // weight_quant / act_quant flags
  bool prune = true;     // z2 gates on every weight layer except the last (and depthwise)
  double width = 1.0;    // channel multiplier (vgg7, resnet18, mobilenetv2)
  double pixel_scale = 1.0 / 255.0;
  std::vector<double> mean{0.0}, std{1.0};
};

// lenet5, vgg7, resnet18 (ImageNet stem), resnet18-small (3x3 stem, no max pool),
// mobilenetv2. Throws std::invalid_argument for an unknown name.
Graph build_model(const std::string& name, const ModelOptions& opt);
std::vector<std::string> model_names();

// Walks back from `from` through ops that keep their input's grid (pooling,
// flatten) and returns the node whose output quantizer feeds it: a node name,
// "input", or "" when the value reaching it is float (a node without act_quant).
std::string feeding_quantizer(const Graph& g, const std::string& from);

}  // namespace bbits::train
