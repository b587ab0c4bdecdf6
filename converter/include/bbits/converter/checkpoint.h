// bbits converter — the in-memory checkpoint: graph, float tensors and
// training facts, as defined by docs/CHECKPOINT.md. Readers (safetensors,
// reference .pth) produce it; the converter, the synthetic generator and the
// fake-quantized reference evaluator consume it.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bbits::converter {

// Every rejection of an input (checkpoint, graph, option) is a ConvertError
// whose message names the tensor, node or field concerned.
class ConvertError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A dense float32 tensor in C order.
struct FTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  int64_t numel() const;
  float scalar() const { return data.at(0); }
};

using TensorMap = std::map<std::string, FTensor>;

std::string shape_str(const std::vector<int64_t>& shape);

enum class OpKind { Conv2d, Linear, MaxPool, AvgPool, GlobalAvgPool, Add, Concat, Flatten, Relu, Relu6 };
enum class Act { None, Relu, Relu6 };

const char* op_kind_name(OpKind op);
const char* act_name(Act a);
inline float apply_act(Act a, float v) {
  if (a == Act::Relu) return v > 0.0f ? v : 0.0f;
  if (a == Act::Relu6) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
  return v;
}

struct Node {
  std::string name;
  OpKind op = OpKind::Conv2d;
  std::vector<std::string> inputs;
  // conv2d
  int64_t in_channels = 0, out_channels = 0;
  int kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int dilation_h = 1, dilation_w = 1, groups = 1;
  // linear
  int64_t in_features = 0, out_features = 0;
  // conv2d / linear
  bool bias = false, bn = false;
  double bn_eps = 1e-5;
  bool weight_quant = false, prune = false;
  // conv2d / linear / add / relu / relu6
  Act activation = Act::None;
  bool act_quant = false, act_signed = false;
  // concat
  int axis = 1;
  // avgpool: PyTorch's default counts padding in the divisor
  bool count_include_pad = true;

  bool is_layer() const { return op == OpKind::Conv2d || op == OpKind::Linear; }
  bool is_depthwise() const {
    return op == OpKind::Conv2d && groups > 1 && groups == in_channels && groups == out_channels;
  }
};

struct InputSpec {
  std::string name = "input";
  std::vector<int64_t> shape;  // C, H, W (no batch)
  std::string layout = "NCHW";
  double pixel_scale = 1.0;
  std::vector<float> mean, std;
};

struct Graph {
  std::string model;
  InputSpec input;
  std::vector<Node> nodes;  // execution order
  std::vector<std::string> outputs;

  // Index of a node by name, -1 for the input, throws for an unknown name.
  int index_of(const std::string& name) const;
  const Node& node(const std::string& name) const;
};

// Per-node output shapes without the batch dimension (C,H,W or F), plus the
// input's. Throws ConvertError naming the node when shapes do not agree.
struct Shapes {
  std::vector<int64_t> input;
  std::vector<std::vector<int64_t>> node;  // parallel to Graph::nodes
  const std::vector<int64_t>& of(const Graph& g, const std::string& name) const;
};

Graph parse_graph(const nlohmann::json& j);          // the `bbits.graph` JSON
nlohmann::json graph_to_json(const Graph& g);
Shapes infer_shapes(const Graph& g);                 // also validates the graph

// The tensors a graph requires (name -> shape), as documented in CHECKPOINT.md.
std::map<std::string, std::vector<int64_t>> expected_tensors(const Graph& g);

// Checkpoint::input_bits of a reference import: 8 bits when the 8-bit grid
// holds every pixel level of the recorded preprocessing exactly (x / 255,
// LeNet-5's loader), 16 otherwise (docs/CONVERTER.md, "Input precision").
inline constexpr int kInputBitsFromPixels = 0;

struct Checkpoint {
  Graph graph;
  TensorMap tensors;
  nlohmann::json training = nlohmann::json::object();  // `bbits.training`
  std::string source;                                   // file it came from
  std::string format = "bbits-checkpoint/1";
  // Grid of the network input the checkpoint is evaluated with: 8 for bbits
  // checkpoints (the training library's input quantizer), 16 (the 16-bit
  // grid over the same range) or 32 (float32); kInputBitsFromPixels for a
  // reference import (the reference does not quantize its input): see
  // input_bits_of. Not stored in the safetensors file; bbits-convert's
  // --input-bits overrides it (ConvertOptions::input_bits).
  int input_bits = 8;

  const FTensor& get(const std::string& name) const;
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
};

// Strict check of a checkpoint against its graph: every required tensor is
// present with the exact shape, no tensor is left over, every value is finite,
// quantizer ranges are positive and batch-norm variances non-negative.
void validate_checkpoint(const Checkpoint& ck);

// Decisions by the test-time gate rule (format/quant.h).
int weight_bits_of(const Checkpoint& ck, const Node& layer);     // 2..32 (32: float)
int act_bits_of(const Checkpoint& ck, const std::string& node);  // 2..32; input_bits_of(ck) for the input
std::vector<uint8_t> keep_mask_of(const Checkpoint& ck, const Node& layer);  // all 1 when not pruned
bool input_signed(const Graph& g);
// True when quantizing every pixel level 0..255 of every channel, through
// the preprocessing (pixel * pixel_scale - mean) / std in float32, onto the
// `bits` grid over [-x_max or 0, x_max] is exact (within 1/1000 of a step).
bool pixels_exact_on_grid(const InputSpec& in, float x_max, int bits);
// The input grid's bits: ck.input_bits, with kInputBitsFromPixels resolved
// to 8 or 16 by pixels_exact_on_grid at 8 bits over `input.aq.x_max`.
int input_bits_of(const Checkpoint& ck);

// BN-folded weight (PyTorch layout) and bias of a layer.
struct FoldedLayer {
  FTensor weight;
  std::vector<float> bias;
};
FoldedLayer fold_layer(const Checkpoint& ck, const Node& layer);

}  // namespace bbits::converter
