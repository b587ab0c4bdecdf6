// bbits contract — the safetensors codec: a strict reader and a writer of
// float32 tensors with string metadata (docs/CHECKPOINT.md).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "bbits/contract/graph.h"

namespace bbits::contract {

struct SafetensorsFile {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;  // `__metadata__`
};

// Parses a whole safetensors file held in memory. Only F32 tensors are
// accepted. Rejects, with a CheckpointError naming the tensor or field: a
// truncated file, a header length that does not fit, JSON that does not parse,
// unknown fields, a wrong dtype, shapes that overflow, offsets that are out of
// range, reversed, overlapping, leave gaps or disagree with the shape, and
// non-finite values. Never reads outside `bytes`.
SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes);

// Serializes tensors (F32, laid out in name order) and string metadata; the
// header is padded with spaces to a multiple of 8 bytes. Throws
// CheckpointError for a tensor whose data do not match its shape.
std::vector<uint8_t> serialize_safetensors(const TensorMap& tensors,
                                           const std::map<std::string, std::string>& metadata);

// Reads a whole file (CheckpointError naming the path on failure).
std::vector<uint8_t> read_file_bytes(const std::string& path);
// Writes `bytes` to PATH.tmp, flushes it to disk and renames it to PATH.
void write_file_bytes(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace bbits::contract
