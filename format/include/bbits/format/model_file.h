// bbits — reading, verifying and writing .bbm model files.
//
// File layout (docs/FORMAT.md):
//   [0, 64)                      FileHeader
//   [64, 64 + fb_size)           FlatBuffers Model (identifier "BBM1")
//   [data_offset, file end)      data section; data_offset is a multiple of 64
//                                and every Buffer.offset within it too
// The header's CRC-32 covers every byte after the header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bbits/format/bbits_generated.h"

namespace bbits::format {

inline constexpr uint32_t kSchemaVersion = 1;
inline constexpr size_t kAlignment = 64;
inline constexpr char kFileMagic[8] = {'B', 'B', 'I', 'T', 'S', 'M', 'D', 'L'};

struct FileHeader {
  char magic[8];               // kFileMagic
  uint32_t schema_version;     // kSchemaVersion
  uint32_t header_size;        // 64
  uint64_t flatbuffer_offset;  // 64
  uint64_t flatbuffer_size;
  uint64_t data_offset;        // multiple of 64, >= flatbuffer end
  uint64_t data_size;          // file size == data_offset + data_size
  uint32_t checksum;           // CRC-32 (zlib) of bytes [64, file size)
  uint32_t reserved;           // 0
  uint8_t pad[8];              // 0
};
static_assert(sizeof(FileHeader) == 64, "FileHeader must be 64 bytes");

// Every rejection of a file or of a model description is a FormatError whose
// message names the problem (and the tensor or operator concerned).
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A verified model in memory. Pointers refer into the caller's bytes, which
// must outlive the view.
struct ModelView {
  const uint8_t* file = nullptr;
  size_t file_size = 0;
  const fb::Model* model = nullptr;
  const uint8_t* data = nullptr;  // start of the data section (64-byte aligned in the file)
  size_t data_size = 0;

  // Bytes of buffer `index`; throws FormatError when out of range.
  std::span<const uint8_t> buffer(int index) const;
  // Bytes of a constant tensor (its buffer); empty span for activations.
  std::span<const uint8_t> tensor_data(int tensor_index) const;
};

struct VerifyOptions {
  bool check_checksum = true;
};

// Verify a whole file held in memory: header, sizes, checksum, FlatBuffers
// Verifier, then semantic checks (legal bit widths, quant parameters, shapes
// that agree along the graph, buffer sizes that match bit widths and shapes,
// indices in range, no overflow in shape products, pruning masks). Throws
// FormatError naming the problem; never reads outside [bytes, bytes + size).
ModelView verify_model(const uint8_t* bytes, size_t size, const VerifyOptions& opts = {});

// Semantic checks alone, on a Model already passed through the Verifier.
void validate_model(const fb::Model& model, size_t data_size);

// Value checks on the constant data (after validate_model): every float32
// constant (float weights, float biases) is finite. Throws FormatError naming
// the tensor and the element index.
void check_constant_values(const fb::Model& model, const uint8_t* data, size_t data_size);

// ---- helpers about tensors --------------------------------------------------
// Product of a shape with overflow checks (FormatError on overflow or a negative dim).
int64_t shape_elements(std::span<const int64_t> shape);
// Bytes a constant tensor's buffer must hold: packed rows for Quantized
// (rows = shape[0], K = product of the rest), 4 bytes per element otherwise.
int64_t expected_constant_bytes(fb::DataType dtype, int bits, std::span<const int64_t> shape);
// "conv2d", "fully_connected", ...
const char* op_type_name(fb::OpType t);

// ---- writing ----------------------------------------------------------------
// Build a model with the FlatBuffers object API (fb::ModelT), add constant data
// with add_buffer (which sets offsets), then serialize or write. write() goes
// through a temporary file in the same directory and a rename: a failure leaves
// no file behind. Both run validate_model first and throw FormatError on a bad
// description.
class ModelWriter {
 public:
  ModelWriter();
  fb::ModelT& model() { return model_; }
  const fb::ModelT& model() const { return model_; }

  // Appends bytes as a new buffer, returns its index for Tensor.buffer.
  int add_buffer(std::vector<uint8_t> bytes);
  int add_buffer(const void* data, size_t size);

  std::vector<uint8_t> serialize() const;
  void write(const std::string& path) const;

 private:
  fb::ModelT model_;
  std::vector<std::vector<uint8_t>> payloads_;
};

// Write bytes to `path` atomically (temporary file + fsync + rename).
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);

// CRC-32 as computed by zlib.
uint32_t crc32(const uint8_t* data, size_t size);

}  // namespace bbits::format
