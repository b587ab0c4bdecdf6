// bbits training — safetensors checkpoint I/O (docs/CHECKPOINT.md).
// Torch-free: tensors are plain float32 arrays with a shape.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace bbits::train {

struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;  // C-contiguous, numel(shape) values
};

struct Checkpoint {
  std::map<std::string, std::string> metadata;  // __metadata__
  std::vector<NamedTensor> tensors;             // in file order

  const NamedTensor* find(const std::string& name) const;
  const NamedTensor& at(const std::string& name) const;  // throws CheckpointError when missing
};

struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Serialise to bytes (header padded with spaces to a multiple of 8).
std::string encode_safetensors(const Checkpoint& ck);
// Parse and validate: header length, JSON, dtype F32, shapes, offsets in range,
// non-overlapping and covering the data exactly. Throws CheckpointError naming the problem.
Checkpoint decode_safetensors(const std::string& bytes, const std::string& what = "checkpoint");

// Write atomically: PATH.tmp, flush, rename to PATH.
void write_safetensors(const std::string& path, const Checkpoint& ck);
Checkpoint read_safetensors(const std::string& path);

// The contract's metadata checks (bbits.format, bbits.graph, bbits.training present and parseable).
void check_contract_metadata(const Checkpoint& ck, const std::string& what = "checkpoint");

inline constexpr const char* kCheckpointFormat = "bbits-checkpoint/1";

}  // namespace bbits::train
