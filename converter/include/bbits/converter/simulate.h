// bbits converter — a plain C++ float evaluation of a checkpoint in the
// training library's eval mode (fake quantization): BN-folded weights rounded
// onto their grid and multiplied by the keep mask, activations rounded onto
// theirs, everything else in float32. It reads the checkpoint's PyTorch
// layouts directly and shares no code with the conversion, so tests use it as
// the oracle for converted models; the synthetic generator uses its float mode
// to calibrate activation ranges.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "bbits/converter/checkpoint.h"

namespace bbits::converter {

struct SimulateOptions {
  bool quantize = true;  // false: plain float network (no weight or activation rounding, no pruning)
  // Round the biases of integer layers (integer weights and input) onto the
  // accumulator grid s_w * s_in, as the model file stores them (int32). Off:
  // the training library's eval mode (float biases); on: the integer network
  // the converter writes, evaluated in float.
  bool integer_bias = false;
  // Grid of the network input: 8 or 16, or 32 (not quantized); 0: the
  // checkpoint's own (Checkpoint::input_bits).
  int input_bits = 0;
  // When set, receives min and max of every node's output (after its activation).
  std::map<std::string, std::pair<float, float>>* ranges = nullptr;
};

// `input`: N,C,H,W, already preprocessed. Returns the graph outputs, N first.
std::vector<FTensor> simulate(const Checkpoint& ck, const FTensor& input, const SimulateOptions& opts = {});

// Round onto a grid and back to a real value, as the quantizers' eval mode does.
float fake_quant(float x, float x_max, int bits, bool is_signed);

}  // namespace bbits::converter
