// Helpers shared by the runtime's commands (inspect, run, eval).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bbits/io.h"
#include "bbits/runtime.h"

namespace bbits::commands {

std::string shape_str(const std::vector<int64_t>& s);          // "1x1x28x28"
std::string bits_str(int bits, bool is_signed);                // "8u", "4s", "f32"
std::string human_bytes(int64_t bytes);                       // "1.23 MiB"
std::string grouped(int64_t v);                               // "1,234,567"

// The input tensor of `model` built from raw pixels (one image of
// height x width x channels bytes, channels last) with the model's recorded
// preprocessing: (pixel * pixel_scale - mean[c]) / std[c], in the model's
// input layout. Throws bbits::Error when the model records no preprocessing
// or the image does not fit its input.
struct Preprocessor {
  explicit Preprocessor(const Model& model);
  int64_t batch = 1, channels = 1, height = 0, width = 0;
  // Writes one image (sample `slot` of a batch) into `dst` (the whole input tensor).
  void apply(const uint8_t* pixels, int64_t slot, float* dst) const;

 private:
  bool nhwc_ = false;
  float pixel_scale_ = 1.0f;
  std::vector<float> mean_, std_;
};

// Input values clipped onto the model's input grid, summed over runs (input 0
// of Session::last_run_stats), and the one warning the CLI prints about them.
struct ClipTally {
  int64_t values = 0, clipped = 0;
  float lo = 0.0f, hi = 0.0f;
  void add(const Session& session);
  void merge(const ClipTally& other);
  // Empty when nothing was clipped; else "warning: N of M input values (F%)
  // were outside the model's input range [lo, hi] ..." naming the model's
  // preprocessing and bbits-convert's --mean/--std.
  std::string warning(const Model& model) const;
};

// Checks an array given as the model's input tensors (`bbits eval --inputs`):
// float32 or float64, and N x the input's shape without its batch dimension
// (or one sample without N). A raw float32 file has no shape: it must hold a
// whole number of samples. Returns N. Throws bbits::Error naming the file,
// what it holds and what the model expects.
int64_t check_input_array(const io::Array& a, const Model& model, const std::string& path);

// Index of the largest of n values (first on ties).
int64_t argmax(const float* v, int64_t n);

// Top-k (index, value) pairs, largest first.
std::vector<std::pair<int64_t, float>> top_k(const float* v, int64_t n, int64_t k);

}  // namespace bbits::commands
