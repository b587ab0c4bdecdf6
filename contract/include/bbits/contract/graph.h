// bbits contract — the network graph of a checkpoint (`bbits.graph`,
// docs/CHECKPOINT.md): node and input types, their JSON, shape inference, and
// the tensors a graph requires. One definition for the trainer (which writes
// it) and the converter (which reads it).
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bbits::contract {

// Every rejection of a checkpoint, a graph or a zoo request; the message
// names the tensor, node or field concerned.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A dense float32 tensor in C order.
struct FTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  int64_t numel() const;
  float scalar() const { return data.at(0); }
  bool operator==(const FTensor&) const = default;
};

using TensorMap = std::map<std::string, FTensor>;

std::string shape_str(const std::vector<int64_t>& shape);  // "[1, 28, 28]"

enum class OpKind { Conv2d, Linear, MaxPool, AvgPool, GlobalAvgPool, Add, Concat, Flatten, Relu, Relu6 };
enum class Act { None, Relu, Relu6 };

const char* op_kind_name(OpKind op);  // the JSON names: "conv2d", "linear", "maxpool", ...
const char* act_name(Act a);          // "none", "relu", "relu6"
inline float apply_act(Act a, float v) {
  if (a == Act::Relu) return v > 0.0f ? v : 0.0f;
  if (a == Act::Relu6) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
  return v;
}

// One node; which fields an op uses is listed in docs/CHECKPOINT.md.
struct Node {
  std::string name;
  OpKind op = OpKind::Conv2d;
  std::vector<std::string> inputs;
  // conv2d (kernel, stride, padding also for pooling)
  int64_t in_channels = 0, out_channels = 0;
  int kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int dilation_h = 1, dilation_w = 1, groups = 1;
  // linear
  int64_t in_features = 0, out_features = 0;
  // conv2d / linear
  bool bias = false, bn = false;
  double bn_eps = 1e-5;
  bool weight_quant = false, prune = false;
  // conv2d / linear / add (relu / relu6 nodes are their own activation)
  Act activation = Act::None;
  // conv2d / linear / add / relu / relu6
  bool act_quant = false, act_signed = false;
  // concat
  int axis = 1;
  // avgpool: whether the divisor counts zero padding (PyTorch's default: true)
  bool count_include_pad = true;

  bool is_layer() const { return op == OpKind::Conv2d || op == OpKind::Linear; }
  bool is_depthwise() const {
    return op == OpKind::Conv2d && groups > 1 && groups == in_channels && groups == out_channels;
  }
  int64_t outputs() const { return op == OpKind::Conv2d ? out_channels : out_features; }  // layers only
  bool operator==(const Node&) const = default;
};

struct InputSpec {
  std::string name = "input";
  std::vector<int64_t> shape;  // C, H, W (no batch)
  std::string layout = "NCHW";
  double pixel_scale = 1.0;    // input = (pixel * pixel_scale - mean[c]) / std[c]
  std::vector<float> mean, std;
  bool operator==(const InputSpec&) const = default;
};

struct Graph {
  std::string model;
  InputSpec input;
  std::vector<Node> nodes;  // execution order
  std::vector<std::string> outputs;

  // Index of a node by name, -1 for the input; throws for an unknown name.
  int index_of(const std::string& name) const;
  const Node& node(const std::string& name) const;
  bool operator==(const Graph&) const = default;
};

// Per-node output shapes without the batch dimension (C,H,W or F), plus the
// input's. Throws CheckpointError naming the node when shapes do not agree.
struct Shapes {
  std::vector<int64_t> input;
  std::vector<std::vector<int64_t>> node;  // parallel to Graph::nodes
  const std::vector<int64_t>& of(const Graph& g, const std::string& name) const;
};

Graph parse_graph(const nlohmann::json& j);  // the `bbits.graph` JSON, validated field by field
nlohmann::json graph_to_json(const Graph& g);
Shapes infer_shapes(const Graph& g);         // also checks that the shapes agree

// The tensors a graph requires (name -> shape), as docs/CHECKPOINT.md lists them.
std::map<std::string, std::vector<int64_t>> expected_tensors(const Graph& g);

// Walks back from `from` through nodes that keep their input's grid (pooling,
// flatten, activations without a quantizer) and returns the node whose output
// quantizer feeds it: a node name, the input's name, or "" when the value
// reaching it is float.
std::string feeding_quantizer(const Graph& g, const std::string& from);

}  // namespace bbits::contract
