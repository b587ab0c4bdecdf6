#include "bbits/training/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace bbits::train {

using nlohmann::json;

const NamedTensor* Checkpoint::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const NamedTensor& Checkpoint::at(const std::string& name) const {
  const NamedTensor* t = find(name);
  if (!t) throw CheckpointError("checkpoint: missing tensor '" + name + "'");
  return *t;
}

namespace {
int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}
static_assert(sizeof(float) == 4);
}  // namespace

std::string encode_safetensors(const Checkpoint& ck) {
  json header = json::object();
  json meta = json::object();
  for (const auto& [k, v] : ck.metadata) meta[k] = v;
  header["__metadata__"] = meta;
  uint64_t off = 0;
  for (const auto& t : ck.tensors) {
    if (t.name.empty() || t.name == "__metadata__") throw CheckpointError("checkpoint: invalid tensor name '" + t.name + "'");
    if (header.contains(t.name)) throw CheckpointError("checkpoint: duplicate tensor '" + t.name + "'");
    for (auto d : t.shape)
      if (d < 0) throw CheckpointError("checkpoint: negative dimension in '" + t.name + "'");
    if (static_cast<int64_t>(t.data.size()) != numel(t.shape))
      throw CheckpointError("checkpoint: tensor '" + t.name + "' has " + std::to_string(t.data.size()) +
                            " values for its shape");
    const uint64_t bytes = t.data.size() * 4;
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {off, off + bytes}}};
    off += bytes;
  }
  std::string h = header.dump();
  while (h.size() % 8) h.push_back(' ');
  std::string out;
  out.reserve(8 + h.size() + off);
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += h;
  for (const auto& t : ck.tensors) {
    const size_t pos = out.size();
    out.resize(pos + t.data.size() * 4);
    // little-endian host (x86-64): bytes as they are
    if (!t.data.empty()) std::memcpy(out.data() + pos, t.data.data(), t.data.size() * 4);
  }
  return out;
}

Checkpoint decode_safetensors(const std::string& bytes, const std::string& what) {
  auto fail = [&](const std::string& why) -> void { throw CheckpointError(what + ": " + why); };
  if (bytes.size() < 8) fail("file is too short for a safetensors header (" + std::to_string(bytes.size()) + " bytes)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (n > bytes.size() - 8) fail("header length " + std::to_string(n) + " exceeds the file size (truncated file?)");
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const json::exception& e) {
    fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail("header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;
  Checkpoint ck;
  struct Span {
    uint64_t b, e;
    std::string name;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) fail("__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) fail("metadata value '" + m.key() + "' is not a string");
        ck.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const json& d = it.value();
    const std::string& name = it.key();
    if (!d.is_object() || !d.contains("dtype") || !d.contains("shape") || !d.contains("data_offsets"))
      fail("tensor '" + name + "' lacks dtype/shape/data_offsets");
    if (!d["dtype"].is_string() || d["dtype"].get<std::string>() != "F32")
      fail("tensor '" + name + "' has dtype " + d["dtype"].dump() + ", only F32 is supported");
    NamedTensor t;
    t.name = name;
    std::vector<uint64_t> offs;
    try {
      t.shape = d["shape"].get<std::vector<int64_t>>();
      offs = d["data_offsets"].get<std::vector<uint64_t>>();
    } catch (const json::exception&) {
      fail("tensor '" + name + "' has a malformed shape or data_offsets");
    }
    if (offs.size() != 2 || offs[0] > offs[1]) fail("tensor '" + name + "' has invalid data_offsets");
    if (offs[1] > data_size)
      fail("tensor '" + name + "' data ends at " + std::to_string(offs[1]) + " but only " + std::to_string(data_size) +
           " data bytes are present (truncated file?)");
    uint64_t count = 1;
    for (auto s : t.shape) {
      if (s < 0 || s > (int64_t{1} << 40)) fail("tensor '" + name + "' has an invalid dimension");
      count *= static_cast<uint64_t>(s);
    }
    if (count * 4 != offs[1] - offs[0])
      fail("tensor '" + name + "' shape needs " + std::to_string(count * 4) + " bytes but data_offsets span " +
           std::to_string(offs[1] - offs[0]));
    t.data.resize(count);
    if (count) std::memcpy(t.data.data(), data + offs[0], count * 4);
    spans.push_back({offs[0], offs[1], name});
    ck.tensors.push_back(std::move(t));
  }
  // Order tensors by offset; the spans must tile [0, data_size) exactly.
  std::vector<size_t> order(spans.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return spans[a].b < spans[b].b; });
  uint64_t pos = 0;
  for (size_t i : order) {
    if (spans[i].b < pos) fail("tensor '" + spans[i].name + "' overlaps another tensor");
    if (spans[i].b > pos) fail("gap in the data before tensor '" + spans[i].name + "'");
    pos = spans[i].e;
  }
  if (pos != data_size)
    fail("data section has " + std::to_string(data_size - pos) + " trailing bytes not covered by any tensor");
  std::vector<NamedTensor> sorted;
  sorted.reserve(order.size());
  for (size_t i : order) sorted.push_back(std::move(ck.tensors[i]));
  ck.tensors = std::move(sorted);
  return ck;
}

void write_safetensors(const std::string& path, const Checkpoint& ck) {
  const std::string bytes = encode_safetensors(ck);
  const std::string tmp = path + ".tmp";
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw CheckpointError("cannot open '" + tmp + "' for writing: " + std::strerror(errno));
    const size_t w = std::fwrite(bytes.data(), 1, bytes.size(), f);
    const bool ok = w == bytes.size() && std::fflush(f) == 0;
    std::fclose(f);
    if (!ok) {
      std::remove(tmp.c_str());
      throw CheckpointError("cannot write '" + tmp + "' (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw CheckpointError("cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
  }
}

Checkpoint read_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw CheckpointError("cannot open checkpoint '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  return decode_safetensors(ss.str(), "checkpoint '" + path + "'");
}

void check_contract_metadata(const Checkpoint& ck, const std::string& what) {
  for (const char* key : {"bbits.format", "bbits.graph", "bbits.training"})
    if (!ck.metadata.count(key)) throw CheckpointError(what + ": metadata lacks '" + key + "'");
  if (ck.metadata.at("bbits.format") != kCheckpointFormat)
    throw CheckpointError(what + ": bbits.format is '" + ck.metadata.at("bbits.format") + "', expected '" +
                          kCheckpointFormat + "'");
  for (const char* key : {"bbits.graph", "bbits.training"}) {
    json j;
    try {
      j = json::parse(ck.metadata.at(key));
    } catch (const json::exception& e) {
      throw CheckpointError(what + ": " + key + " is not valid JSON");
    }
    if (!j.is_object()) throw CheckpointError(what + ": " + key + " is not a JSON object");
  }
}

}  // namespace bbits::train
