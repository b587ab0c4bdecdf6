// bbits contract — a checkpoint (docs/CHECKPOINT.md): one safetensors file
// holding the graph (`bbits.graph`), the training facts (`bbits.training`)
// and the tensors the graph requires, by layer name. The trainer writes it
// with save_checkpoint, the converter reads it with load_checkpoint.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bbits/contract/graph.h"

namespace bbits::contract {

inline constexpr const char* kCheckpointFormat = "bbits-checkpoint/1";  // metadata `bbits.format`

struct Checkpoint {
  Graph graph;
  TensorMap tensors;
  nlohmann::json training = nlohmann::json::object();  // `bbits.training`
  std::string source;                                   // file it came from
  std::string format = kCheckpointFormat;

  const FTensor& get(const std::string& name) const;    // throws CheckpointError when missing
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
};

// Strict check of a checkpoint against its graph: every required tensor is
// present with the exact shape, no tensor is left over, every value is finite,
// quantizer ranges are positive and batch-norm variances non-negative.
void validate_checkpoint(const Checkpoint& ck);

// parse_safetensors + the `bbits.*` metadata + validate_checkpoint.
Checkpoint parse_checkpoint(std::span<const uint8_t> bytes, const std::string& source);
// The same from a file; errors name the path.
Checkpoint load_checkpoint(const std::string& path);

// The file's bytes (validate_checkpoint first).
std::vector<uint8_t> serialize_checkpoint(const Checkpoint& ck);
// Writes the file to PATH.tmp and renames it.
void save_checkpoint(const Checkpoint& ck, const std::string& path);

}  // namespace bbits::contract
