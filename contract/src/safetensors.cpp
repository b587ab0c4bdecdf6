#include "bbits/contract/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

#include <fcntl.h>
#include <unistd.h>

namespace bbits::contract {

using nlohmann::json;

namespace {
constexpr uint64_t kMaxHeader = uint64_t{100} << 20;  // 100 MB, as the reference implementation

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
void put_u64_le(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
}  // namespace

SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes) {
  const std::string ctx = "safetensors";
  if (bytes.size() < 8)
    throw CheckpointError(ctx + ": file truncated: " + std::to_string(bytes.size()) +
                       " bytes, the 8-byte header length is missing");
  const uint64_t n = read_u64_le(bytes.data());
  if (n < 2) throw CheckpointError(ctx + ": header length " + std::to_string(n) + " is too small");
  if (n > kMaxHeader) throw CheckpointError(ctx + ": header length " + std::to_string(n) + " exceeds 100 MB");
  if (n > bytes.size() - 8)
    throw CheckpointError(ctx + ": header length " + std::to_string(n) + " runs past the end of the file (" +
                       std::to_string(bytes.size()) + " bytes): truncated file or a header that lies");
  const char* hp = reinterpret_cast<const char*>(bytes.data() + 8);
  json header;
  try {
    header = json::parse(hp, hp + n);
  } catch (const json::exception& e) {
    throw CheckpointError(ctx + ": header is not valid JSON: " + std::string(e.what()));
  }
  if (!header.is_object()) throw CheckpointError(ctx + ": header must be a JSON object");
  const uint8_t* data = bytes.data() + 8 + n;
  const uint64_t data_size = bytes.size() - 8 - n;

  SafetensorsFile f;
  struct Range {
    uint64_t b, e;
    std::string name;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) throw CheckpointError(ctx + ": '__metadata__' must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) throw CheckpointError(ctx + ": metadata '" + m.key() + "' must be a string");
        f.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const std::string tctx = ctx + ": tensor '" + name + "'";
    const json& t = *it;
    if (!t.is_object()) throw CheckpointError(tctx + ": entry must be an object");
    for (auto k = t.begin(); k != t.end(); ++k)
      if (k.key() != "dtype" && k.key() != "shape" && k.key() != "data_offsets")
        throw CheckpointError(tctx + ": unknown field '" + k.key() + "'");
    if (!t.contains("dtype") || !t["dtype"].is_string()) throw CheckpointError(tctx + ": missing or non-string 'dtype'");
    const std::string dtype = t["dtype"].get<std::string>();
    if (dtype != "F32") throw CheckpointError(tctx + ": dtype '" + dtype + "' is not supported (checkpoints hold F32 only)");
    if (!t.contains("shape") || !t["shape"].is_array()) throw CheckpointError(tctx + ": missing or non-array 'shape'");
    FTensor ft;
    uint64_t numel = 1;
    for (const json& d : t["shape"]) {
      if (!d.is_number_unsigned()) throw CheckpointError(tctx + ": 'shape' must hold non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v > 0 && numel > (std::numeric_limits<uint64_t>::max() / 8) / v)
        throw CheckpointError(tctx + ": 'shape' " + t["shape"].dump() + " overflows");
      numel *= v;
      ft.shape.push_back(static_cast<int64_t>(v));
    }
    if (t["shape"].size() > 8) throw CheckpointError(tctx + ": more than 8 dimensions");
    if (!t.contains("data_offsets") || !t["data_offsets"].is_array() || t["data_offsets"].size() != 2 ||
        !t["data_offsets"][0].is_number_unsigned() || !t["data_offsets"][1].is_number_unsigned())
      throw CheckpointError(tctx + ": 'data_offsets' must be [begin, end] with non-negative integers");
    const uint64_t b = t["data_offsets"][0].get<uint64_t>();
    const uint64_t e = t["data_offsets"][1].get<uint64_t>();
    if (b > e) throw CheckpointError(tctx + ": data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + "] are reversed");
    if (e > data_size)
      throw CheckpointError(tctx + ": data_offsets end " + std::to_string(e) + " is past the data section (" +
                         std::to_string(data_size) + " bytes): truncated file or offsets that lie");
    if (e - b != numel * 4)
      throw CheckpointError(tctx + ": data_offsets cover " + std::to_string(e - b) + " bytes, shape " +
                         shape_str(ft.shape) + " of F32 needs " + std::to_string(numel * 4));
    ft.data.resize(numel);
    if (numel) std::memcpy(ft.data.data(), data + b, numel * 4);
    for (uint64_t i = 0; i < numel; ++i)
      if (!std::isfinite(ft.data[i]))
        throw CheckpointError(tctx + ": non-finite value " + std::to_string(ft.data[i]) + " at element " + std::to_string(i));
    ranges.push_back({b, e, name});
    f.tensors.emplace(name, std::move(ft));
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& x, const Range& y) {
    return x.b != y.b ? x.b < y.b : x.e < y.e;
  });
  uint64_t pos = 0;
  for (const Range& r : ranges) {
    if (r.b < pos)
      throw CheckpointError(ctx + ": tensor '" + r.name + "' overlaps the data of another tensor (offset " +
                         std::to_string(r.b) + " < " + std::to_string(pos) + ")");
    if (r.b > pos)
      throw CheckpointError(ctx + ": gap in the data section before tensor '" + r.name + "' (bytes " + std::to_string(pos) +
                         " to " + std::to_string(r.b) + " belong to no tensor)");
    pos = r.e;
  }
  if (pos != data_size)
    throw CheckpointError(ctx + ": data section holds " + std::to_string(data_size) + " bytes but the tensors cover " +
                       std::to_string(pos) + " (trailing bytes)");
  return f;
}

std::vector<uint8_t> serialize_safetensors(const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__") throw CheckpointError("safetensors: invalid tensor name '" + name + "'");
    if (static_cast<int64_t>(t.data.size()) != t.numel())
      throw CheckpointError("safetensors: tensor '" + name + "' has " + std::to_string(t.data.size()) +
                            " values for shape " + shape_str(t.shape));
    const uint64_t nbytes = t.data.size() * 4;
    header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {off, off + nbytes}}};
    off += nbytes;
  }
  std::string hs = header.dump();
  while (hs.size() % 8) hs.push_back(' ');  // keep the data 8-byte aligned, as safetensors does
  std::vector<uint8_t> out(8 + hs.size() + off);
  put_u64_le(out.data(), hs.size());
  std::memcpy(out.data() + 8, hs.data(), hs.size());
  uint8_t* p = out.data() + 8 + hs.size();
  for (const auto& [name, t] : tensors) {
    if (!t.data.empty()) std::memcpy(p, t.data.data(), t.data.size() * 4);
    p += t.data.size() * 4;
  }
  return out;
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError("cannot open '" + path + "': " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw CheckpointError("cannot read '" + path + "'");
  in.seekg(0, std::ios::beg);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
    throw CheckpointError("cannot read '" + path + "': short read");
  return bytes;
}

void write_file_bytes(const std::string& path, std::span<const uint8_t> bytes) {
  const std::string tmp = path + ".tmp";
  auto fail = [&](const std::string& what, int err, int fd) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw CheckpointError("cannot " + what + " '" + tmp + "': " + std::strerror(err));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError("cannot create '" + tmp + "': " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", errno, fd);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) fail("flush", errno, fd);
  if (::close(fd) != 0) fail("close", errno, -1);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw CheckpointError("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(err));
  }
}

}  // namespace bbits::contract
