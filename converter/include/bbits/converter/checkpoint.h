// bbits converter — the checkpoint as the converter takes it: the contract's
// checkpoint (bbits/contract/checkpoint.h: graph, float tensors, training
// facts, docs/CHECKPOINT.md) plus the input grid it is evaluated with, and
// the decisions the converter reads off it (gates, BN folding). Readers
// (safetensors, reference .pth) produce it; the converter, the synthetic
// generator and the fake-quantized reference evaluator consume it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bbits/contract/checkpoint.h"
#include "bbits/contract/graph.h"

namespace bbits::converter {

// Every rejection of an input (checkpoint, graph, option) is a ConvertError
// or, from the contract's readers, a contract::CheckpointError; the message
// names the tensor, node or field concerned.
class ConvertError : public contract::CheckpointError {
 public:
  using contract::CheckpointError::CheckpointError;
};

using contract::Act;
using contract::act_name;
using contract::apply_act;
using contract::expected_tensors;
using contract::FTensor;
using contract::Graph;
using contract::graph_to_json;
using contract::infer_shapes;
using contract::InputSpec;
using contract::Node;
using contract::op_kind_name;
using contract::OpKind;
using contract::parse_graph;
using contract::save_checkpoint;
using contract::shape_str;
using contract::Shapes;
using contract::TensorMap;
using contract::validate_checkpoint;

// Checkpoint::input_bits of a reference import: 8 bits when the 8-bit grid
// holds every pixel level of the recorded preprocessing exactly (x / 255,
// LeNet-5's loader), 16 otherwise (docs/CONVERTER.md, "Input precision").
inline constexpr int kInputBitsFromPixels = 0;

// A checkpoint (the contract's) as the converter takes it.
struct Checkpoint : contract::Checkpoint {
  Checkpoint() = default;
  explicit Checkpoint(contract::Checkpoint ck) : contract::Checkpoint(std::move(ck)) {}
  // Grid of the network input the checkpoint is evaluated with: 8 for bbits
  // checkpoints (the training library's input quantizer), 16 (the 16-bit
  // grid over the same range) or 32 (float32); kInputBitsFromPixels for a
  // reference import (the reference does not quantize its input): see
  // input_bits_of. Not stored in the safetensors file; bbits-convert's
  // --input-bits overrides it (ConvertOptions::input_bits).
  int input_bits = 8;
};

// A bbits checkpoint read with the contract's reader (contract::parse_checkpoint,
// load_checkpoint): input_bits 8.
Checkpoint parse_checkpoint(std::span<const uint8_t> bytes, const std::string& source);
Checkpoint load_checkpoint(const std::string& path);

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
