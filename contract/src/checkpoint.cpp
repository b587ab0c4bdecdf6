#include "bbits/contract/checkpoint.h"

#include <cmath>

#include "bbits/contract/safetensors.h"

namespace bbits::contract {

using nlohmann::json;

const FTensor& Checkpoint::get(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw CheckpointError("checkpoint: missing tensor '" + name + "'");
  return it->second;
}

void validate_checkpoint(const Checkpoint& ck) {
  infer_shapes(ck.graph);
  const auto want = expected_tensors(ck.graph);
  for (const auto& [name, shape] : want) {
    auto it = ck.tensors.find(name);
    if (it == ck.tensors.end()) throw CheckpointError("checkpoint: missing tensor '" + name + "' (shape " + shape_str(shape) + ")");
    if (it->second.shape != shape)
      throw CheckpointError("checkpoint: tensor '" + name + "' has shape " + shape_str(it->second.shape) +
                         ", the graph needs " + shape_str(shape));
    if (static_cast<int64_t>(it->second.data.size()) != it->second.numel())
      throw CheckpointError("checkpoint: tensor '" + name + "' holds the wrong number of values");
  }
  for (const auto& [name, t] : ck.tensors) {
    if (!want.count(name)) throw CheckpointError("checkpoint: unexpected tensor '" + name + "' (not required by the graph)");
    for (size_t i = 0; i < t.data.size(); ++i)
      if (!std::isfinite(t.data[i]))
        throw CheckpointError("checkpoint: tensor '" + name + "' holds a non-finite value (" +
                           std::to_string(t.data[i]) + ") at element " + std::to_string(i));
    const bool is_range = name.size() > 6 && name.compare(name.size() - 6, 6, ".x_max") == 0;
    if (is_range && !(t.data[0] > 0.0f))
      throw CheckpointError("checkpoint: quantizer range '" + name + "' must be positive, got " + std::to_string(t.data[0]));
    const std::string var_suffix = ".bn.running_var";
    const bool is_var = name.size() > var_suffix.size() &&
                        name.compare(name.size() - var_suffix.size(), var_suffix.size(), var_suffix) == 0;
    if (is_var)
      for (float v : t.data)
        if (v < 0) throw CheckpointError("checkpoint: tensor '" + name + "' holds a negative variance");
  }
}

Checkpoint parse_checkpoint(std::span<const uint8_t> bytes, const std::string& source) {
  SafetensorsFile f = parse_safetensors(bytes);
  Checkpoint ck;
  ck.source = source;
  auto meta = [&](const char* key) -> const std::string& {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) throw CheckpointError("checkpoint: metadata '" + std::string(key) + "' is missing");
    return it->second;
  };
  ck.format = meta("bbits.format");
  if (ck.format != kCheckpointFormat)
    throw CheckpointError("checkpoint: metadata 'bbits.format' is '" + ck.format + "', expected '" + kCheckpointFormat + "'");
  json g;
  try {
    g = json::parse(meta("bbits.graph"));
  } catch (const json::exception& e) {
    throw CheckpointError("checkpoint: metadata 'bbits.graph' is not valid JSON: " + std::string(e.what()));
  }
  ck.graph = parse_graph(g);
  try {
    ck.training = json::parse(meta("bbits.training"));
  } catch (const json::exception& e) {
    throw CheckpointError("checkpoint: metadata 'bbits.training' is not valid JSON: " + std::string(e.what()));
  }
  if (!ck.training.is_object()) throw CheckpointError("checkpoint: metadata 'bbits.training' must be a JSON object");
  ck.tensors = std::move(f.tensors);
  validate_checkpoint(ck);
  return ck;
}

Checkpoint load_checkpoint(const std::string& path) {
  const auto bytes = read_file_bytes(path);
  try {
    return parse_checkpoint(bytes, path);
  } catch (const CheckpointError& e) {
    throw CheckpointError(path + ": " + e.what());
  }
}

std::vector<uint8_t> serialize_checkpoint(const Checkpoint& ck) {
  validate_checkpoint(ck);
  const std::map<std::string, std::string> meta{{"bbits.format", ck.format},
                                                {"bbits.graph", graph_to_json(ck.graph).dump()},
                                                {"bbits.training", ck.training.dump()}};
  return serialize_safetensors(ck.tensors, meta);
}

void save_checkpoint(const Checkpoint& ck, const std::string& path) {
  write_file_bytes(path, serialize_checkpoint(ck));
}

}  // namespace bbits::contract
