// bbits converter — a strict safetensors reader and writer (docs/CHECKPOINT.md).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "bbits/converter/checkpoint.h"

namespace bbits::converter {

struct SafetensorsFile {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;  // `__metadata__`
};

// Parses a whole safetensors file held in memory. Only F32 tensors are
// accepted. Rejects, with a ConvertError naming the tensor or field: a
// truncated file, a header length that does not fit, JSON that does not parse,
// unknown fields, a wrong dtype, shapes that overflow, offsets that are out of
// range, reversed, overlapping, leave gaps or disagree with the shape, and
// non-finite values. Never reads outside `bytes`.
SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes);

// Serializes tensors (F32) and string metadata; tensors are laid out in name order.
std::vector<uint8_t> serialize_safetensors(const TensorMap& tensors,
                                           const std::map<std::string, std::string>& metadata);

// Reads a file into memory (ConvertError naming the path on failure).
std::vector<uint8_t> read_file_bytes(const std::string& path);

// A bbits checkpoint: parse_safetensors + the `bbits.*` metadata + validate_checkpoint.
Checkpoint parse_checkpoint(std::span<const uint8_t> bytes, const std::string& source);
Checkpoint load_checkpoint(const std::string& path);

// Writes a checkpoint (atomically: temporary file, then rename).
void save_checkpoint(const Checkpoint& ck, const std::string& path);

}  // namespace bbits::converter
