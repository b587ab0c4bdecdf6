// bbits converter — the passes of a conversion (build_model runs them in this
// order; docs/CONVERTER.md):
//
//   check_graph            the checkpoint against its graph, shapes, consumers,
//                          the network input's grid and layout
//   decide_gates           every tensor's grid and every layer's weight bits and
//                          kept channels, from the gates (test-time rule)
//   fold_batch_norm        batch norm folded into the layers' weights and biases
//   quantize_weights       weights onto their grid, pruned rows zero
//   find_constant_channels channels whose output is a constant (pruned, or
//                          computed from constants), and that constant
//   choose_removed_channels which constant channels are removed from the file
//                          (every consumer absorbs them), to a fixed point
//   write_model            operators, packed weights, biases with the removed
//                          channels' constants folded in, costs, preprocessing
//                          and metadata, into a format::ModelWriter
//
// Each pass reads what the passes before it filled in a Conversion and fills
// its own part; each can be run and checked on its own (tests/converter/
// passes_test.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bbits/converter/checkpoint.h"
#include "bbits/converter/convert.h"
#include "bbits/format/model_file.h"

namespace bbits::converter::passes {

// The grid of an activation tensor: an integer grid, or float32.
struct Grid {
  bool quant = false;  // integer grid, else float32
  int bits = 32;
  bool is_signed = false;
  float scale = 0.0f;
  float x_max = 0.0f;
  bool operator==(const Grid& o) const {
    return quant == o.quant && (!quant || (bits == o.bits && is_signed == o.is_signed && scale == o.scale));
  }
};

// What the converter knows about one tensor of the graph.
struct Slot {
  std::vector<int64_t> shape;  // C,H,W or F (no batch)
  Grid grid;                   // decide_gates
  std::vector<char> is_const;  // find_constant_channels: per channel (dim 0), the output is a constant
  std::vector<float> cval;     // ... that constant, as the consumers see it (on the tensor's grid)
  std::vector<char> cand;      // choose_removed_channels: constant and every consumer can absorb it
  std::vector<char> removed;   // ... physically removed
  int tensor = -1;             // write_model: index in the model's tensors
  int64_t channels() const { return shape[0]; }
  int64_t spatial() const { return shape.size() == 3 ? shape[1] * shape[2] : 1; }
};

// What the converter knows about one weight layer (conv2d, linear).
struct Layer {
  int wbits = 32;              // decide_gates: 2..16 integer, 32 float
  std::vector<uint8_t> keep;   // decide_gates: per output channel
  FoldedLayer f;               // fold_batch_norm: weights and biases with batch norm folded in
  float x_max = 0.0f;          // quantize_weights: the weight grid (integer bits only)
  float scale = 0.0f;
  std::vector<int32_t> q;      // ... grid integers (integer bits only), pruned rows zero
  std::vector<float> wreal;    // ... the weights as real values, pruned rows zero (PyTorch layout)
};

struct Conversion {
  const Checkpoint* ck = nullptr;
  int input_bits = 8;           // the network input's grid: 8, 16 or 32 (float32)
  std::string layout = "NCHW";  // the layout callers pass the input in
  Shapes shapes;
  // Slot 0 is the network input, slot i + 1 the output of node i.
  std::vector<Slot> slots;
  std::vector<Layer> layers;  // parallel to the graph's nodes (used for weight layers)
  // Readers of every slot: (node index, input position).
  std::vector<std::vector<std::pair<size_t, size_t>>> consumers;
  std::vector<char> is_output;  // per slot: a graph output

  const Graph& graph() const { return ck->graph; }
  size_t slot_index(const std::string& name) const { return static_cast<size_t>(graph().index_of(name) + 1); }
  Slot& slot_of(const std::string& name) { return slots[slot_index(name)]; }
  const Slot& slot_of(const std::string& name) const { return slots[slot_index(name)]; }
};

// The checkpoint validated against its graph (validate_checkpoint), the
// shapes, the consumers and outputs of every tensor, and the input's grid
// (opts.input_bits, else the checkpoint's) and layout checked. `ck` must
// outlive the Conversion.
Conversion check_graph(const Checkpoint& ck, const ConvertOptions& opts = {});
Conversion check_graph(const Checkpoint&& ck, const ConvertOptions& opts = {}) = delete;  // would dangle
// Every tensor's grid: the input's, each quantizer's bits from its gates,
// pooling and flatten keep their input's (average pooling of an integer
// tensor is float32); a concat of tensors on different grids is an error.
// Every weight layer's bits and kept channels from its gates.
void decide_gates(Conversion& c);
// Each weight layer's weights and bias with its batch norm folded in.
void fold_batch_norm(Conversion& c);
// Each weight layer's weights rounded onto its grid (integer bits), pruned
// output channels zero.
void quantize_weights(Conversion& c);
// Forward: the channels whose output is a constant, and its value: pruned
// channels (the activation of their bias), depthwise channels of a constant
// input, and what pooling, flatten, activations, adds and concats make of
// constants.
void find_constant_channels(Conversion& c);
// Backward, to a fixed point: a constant channel is removed when every
// consumer can absorb it (a convolution without padding, or a zero
// constant, or a linear layer folds it into its bias; pooling, flatten and
// activations pass the question on; a depthwise layer drops the same
// channel). Adds, concats, grouped convolutions and graph outputs keep it. A
// layer removes all its removable channels or none, never every channel.
void choose_removed_channels(Conversion& c);
// The model into `writer`; returns the per-layer report.
ConvertReport write_model(Conversion& c, bbits::format::ModelWriter& writer, const ConvertOptions& opts = {});

}  // namespace bbits::converter::passes
