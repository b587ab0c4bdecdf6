// A hand-built LeNet-5-shaped model written through bbits::format::ModelWriter
// (the writer the converter uses), and a float reference of the same quantized
// network computed independently of the runtime:
//
//   input 1 x in_c x H x W (8-bit unsigned)
//   conv1 1->c1 k5 + relu (weights w1 bits, some channels pruned), out a1 bits
//   max pool 2
//   conv2 ->c2 k5 + relu (w2 bits, pruned), out a2 bits
//   max pool 2
//   flatten (C,H,W order)
//   fc1 ->fc1 + relu (w3 bits, pruned), out a3 bits
//   fc2 ->classes (w4 bits), float32 output (float bias)
//
// Shared by the runtime tests, the fuzz seed generator and the install test.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bbits/format/model_file.h"

namespace bbits::testing {

struct LenetSpec {
  int64_t in_c = 1, in_h = 28, in_w = 28;
  int64_t c1 = 32, c2 = 64, fc1 = 512, classes = 10, k = 5;
  int64_t keep_c1 = 28, keep_c2 = 60, keep_fc1 = 500;  // kept output channels
  int w1 = 4, w2 = 2, w3 = 8, w4 = 8;                   // weight bits
  int a1 = 4, a2 = 8, a3 = 16;                          // activation bits after conv1, conv2, fc1
  bool pow2_scales = true;  // every scale a power of two: the float reference is exact
  uint32_t seed = 1;
};

struct LenetLayer {
  int64_t rows = 0, k = 0;       // kept output channels, values per row
  int wbits = 8;
  std::vector<int32_t> w;        // rows x k integers, conv rows in (kh, kw, ci) order
  std::vector<float> s_w;        // one per row
  std::vector<int32_t> bias_q;   // integer layers
  std::vector<float> bias_f;     // the float-output layer
};

struct LenetModel {
  LenetSpec spec;
  std::vector<uint8_t> bytes;    // the serialized .bbm
  LenetLayer conv1, conv2, fc1, fc2;
  float s_in = 0, s1 = 0, s2 = 0, s3 = 0;  // activation steps: input, conv1, conv2, fc1 outputs
  int64_t h1 = 0, w1o = 0, h2 = 0, w2o = 0; // conv output sizes
};

LenetModel build_lenet(const LenetSpec& spec);

// Reference: integer input (1 x in_c x H x W, N,C,H,W order, on the 8-bit unsigned grid) ->
// logits, computed layer by layer in double precision: every integer layer is
// real-valued sum * (s_w s_in / s_out) + bias, rounded half up onto the next
// grid and clamped; the last layer stays in float.
std::vector<float> lenet_reference(const LenetModel& m, const std::vector<int32_t>& input_q);

// A deterministic pseudo-random input on the 8-bit unsigned grid (N,C,H,W order).
std::vector<int32_t> lenet_random_input(const LenetModel& m, uint32_t seed);

// Re-packs a mutated copy of a model's table with the original data section,
// bypassing the writer's validation (for bad-file tests and layout variants);
// the header and checksum are rewritten to match.
std::vector<uint8_t> repack_model(const std::vector<uint8_t>& good, const std::function<void(fb::ModelT&)>& mutate);

}  // namespace bbits::testing
