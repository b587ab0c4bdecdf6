// Reading, verifying and writing .bbm files: header, checksum, FlatBuffers
// verification and atomic writes. Semantic checks live in validate.cpp.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>

#include "bbits/format/model_file.h"

namespace bbits::format {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// The FlatBuffers verifier checks only the 4-byte alignment of a vector's
// length prefix: in a corrupt table a vector of 8-byte elements (tensor shapes,
// buffers, reshape shapes) can be misaligned, and reading it would be
// undefined behaviour.
template <typename V>
void check_aligned8(const V* v, const std::string& what) {
  if (v && v->size() > 0 && reinterpret_cast<uintptr_t>(v->Data()) % 8 != 0)
    throw FormatError(what + ": misaligned vector of 8-byte values (corrupt model table)");
}

void check_vector_alignment(const fb::Model& m) {
  check_aligned8(m.buffers(), "buffers");
  if (m.tensors())
    for (flatbuffers::uoffset_t i = 0; i < m.tensors()->size(); ++i)
      check_aligned8(m.tensors()->Get(i)->shape(), "tensor " + std::to_string(i) + " shape");
  if (m.operators())
    for (flatbuffers::uoffset_t i = 0; i < m.operators()->size(); ++i)
      if (const auto* r = m.operators()->Get(i)->options_as_ReshapeOptions())
        check_aligned8(r->shape(), "operator " + std::to_string(i) + " reshape shape");
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed in chunks.
  while (size > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = ::crc32(crc, data, chunk);
    data += chunk;
    size -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

std::span<const uint8_t> ModelView::buffer(int index) const {
  const auto* bufs = model ? model->buffers() : nullptr;
  if (!bufs || index < 0 || static_cast<size_t>(index) >= bufs->size())
    throw FormatError("buffer index " + std::to_string(index) + " out of range");
  const fb::Buffer* b = bufs->Get(static_cast<flatbuffers::uoffset_t>(index));
  // validate_model guarantees offset + size <= data_size.
  return {data + b->offset(), static_cast<size_t>(b->size())};
}

std::span<const uint8_t> ModelView::tensor_data(int tensor_index) const {
  const auto* ts = model ? model->tensors() : nullptr;
  if (!ts || tensor_index < 0 || static_cast<size_t>(tensor_index) >= ts->size())
    throw FormatError("tensor index " + std::to_string(tensor_index) + " out of range");
  const fb::Tensor* t = ts->Get(static_cast<flatbuffers::uoffset_t>(tensor_index));
  if (t->buffer() < 0) return {};
  return buffer(t->buffer());
}

ModelView verify_model(const uint8_t* bytes, size_t size, const VerifyOptions& opts) {
  if (bytes == nullptr) throw FormatError("model file: no data");
  if (size < sizeof(FileHeader))
    throw FormatError("model file truncated: " + std::to_string(size) +
                      " bytes, smaller than the 64-byte header");
  FileHeader h;
  std::memcpy(&h, bytes, sizeof h);
  if (std::memcmp(h.magic, kFileMagic, sizeof h.magic) != 0)
    throw FormatError("not a bbits model file (bad magic; expected \"BBITSMDL\")");
  if (h.schema_version != kSchemaVersion)
    throw FormatError("unsupported model schema version " + std::to_string(h.schema_version) +
                      " (this build reads version " + std::to_string(kSchemaVersion) + ")");
  if (h.header_size != sizeof(FileHeader))
    throw FormatError("bad header size " + std::to_string(h.header_size) + " (expected 64)");
  if (h.flatbuffer_offset != sizeof(FileHeader))
    throw FormatError("bad model table offset " + std::to_string(h.flatbuffer_offset) +
                      " (expected 64)");
  if (h.reserved != 0) throw FormatError("header reserved field is not zero");
  for (uint8_t b : h.pad)
    if (b != 0) throw FormatError("header padding is not zero");
  if (h.flatbuffer_size < 8 || h.flatbuffer_size > size - sizeof(FileHeader))
    throw FormatError("model table size " + std::to_string(h.flatbuffer_size) +
                      " does not fit in a file of " + std::to_string(size) + " bytes (truncated?)");
  const uint64_t fb_end = sizeof(FileHeader) + h.flatbuffer_size;
  if (h.data_offset % kAlignment != 0)
    throw FormatError("data section offset " + std::to_string(h.data_offset) +
                      " is not 64-byte aligned");
  if (h.data_offset != (fb_end + kAlignment - 1) / kAlignment * kAlignment)
    throw FormatError("data section offset " + std::to_string(h.data_offset) +
                      " does not follow the model table (expected the first 64-byte boundary after it)");
  if (h.data_offset < fb_end)
    throw FormatError("data section offset " + std::to_string(h.data_offset) +
                      " overlaps the model table");
  if (h.data_offset > size || h.data_size != size - h.data_offset)
    throw FormatError("file size " + std::to_string(size) + " does not match the header (data at " +
                      std::to_string(h.data_offset) + ", " + std::to_string(h.data_size) +
                      " bytes): truncated or padded file");
  if (opts.check_checksum) {
    const uint32_t crc = crc32(bytes + sizeof(FileHeader), size - sizeof(FileHeader));
    if (crc != h.checksum) {
      char buf[128];
      std::snprintf(buf, sizeof buf, "checksum mismatch (header 0x%08x, payload 0x%08x): file is corrupt",
                    h.checksum, crc);
      throw FormatError(buf);
    }
  }
  const uint8_t* fbp = bytes + sizeof(FileHeader);
  if (!flatbuffers::BufferHasIdentifier(fbp, fb::ModelIdentifier()))
    throw FormatError(std::string("model table has the wrong file identifier (expected \"") +
                      fb::ModelIdentifier() + "\")");
  flatbuffers::Verifier::Options vo;
  vo.max_depth = 64;
  vo.max_tables = 10'000'000;
  flatbuffers::Verifier verifier(fbp, static_cast<size_t>(h.flatbuffer_size), vo);
  if (!fb::VerifyModelBuffer(verifier))
    throw FormatError("model table failed FlatBuffers verification (corrupt or truncated)");
  const fb::Model* m = fb::GetModel(fbp);
  check_vector_alignment(*m);
  validate_model(*m, static_cast<size_t>(h.data_size));
  check_constant_values(*m, bytes + h.data_offset, static_cast<size_t>(h.data_size));
  ModelView v;
  v.file = bytes;
  v.file_size = size;
  v.model = m;
  v.data = bytes + h.data_offset;
  v.data_size = static_cast<size_t>(h.data_size);
  return v;
}

// ---- writer -----------------------------------------------------------------

ModelWriter::ModelWriter() { model_.schema_version = kSchemaVersion; }

int ModelWriter::add_buffer(std::vector<uint8_t> bytes) {
  payloads_.push_back(std::move(bytes));
  return static_cast<int>(payloads_.size() - 1);
}

int ModelWriter::add_buffer(const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  return add_buffer(std::vector<uint8_t>(p, p + size));
}

std::vector<uint8_t> ModelWriter::serialize() const {
  fb::ModelT m = model_;  // copy: buffers are laid out here
  m.schema_version = kSchemaVersion;
  m.buffers.clear();
  uint64_t off = 0;
  for (const auto& p : payloads_) {
    off = align_up(off, kAlignment);
    m.buffers.emplace_back(off, static_cast<uint64_t>(p.size()));
    off += p.size();
  }
  const uint64_t data_size = off;

  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  fbb.Finish(fb::Model::Pack(fbb, &m), fb::ModelIdentifier());
  const uint64_t fb_size = fbb.GetSize();
  const uint64_t data_offset = align_up(sizeof(FileHeader) + fb_size, kAlignment);

  std::vector<uint8_t> out(static_cast<size_t>(data_offset + data_size), 0);
  std::memcpy(out.data() + sizeof(FileHeader), fbb.GetBufferPointer(), fb_size);
  for (size_t i = 0; i < payloads_.size(); ++i) {
    if (!payloads_[i].empty())
      std::memcpy(out.data() + data_offset + m.buffers[i].offset(), payloads_[i].data(),
                  payloads_[i].size());
  }
  FileHeader h{};
  std::memcpy(h.magic, kFileMagic, sizeof h.magic);
  h.schema_version = kSchemaVersion;
  h.header_size = sizeof(FileHeader);
  h.flatbuffer_offset = sizeof(FileHeader);
  h.flatbuffer_size = fb_size;
  h.data_offset = data_offset;
  h.data_size = data_size;
  h.checksum = crc32(out.data() + sizeof(FileHeader), out.size() - sizeof(FileHeader));
  std::memcpy(out.data(), &h, sizeof h);

  // Never produce a file the loader would reject.
  verify_model(out.data(), out.size());
  return out;
}

void ModelWriter::write(const std::string& path) const {
  const std::vector<uint8_t> bytes = serialize();
  write_file_atomic(path, bytes);
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0)
    throw std::runtime_error("cannot create a temporary file in " + dir.string() + ": " +
                             errno_text(errno));
  const std::string tmp(name.data());
  auto fail = [&](const std::string& what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw std::runtime_error(what + " " + tmp + ": " + errno_text(err));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0) fail("cannot chmod");
  if (::fsync(fd) != 0) fail("cannot fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot close " + tmp + ": " + errno_text(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + errno_text(err));
  }
}

}  // namespace bbits::format
