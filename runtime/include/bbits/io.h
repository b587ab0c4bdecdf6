// bbits runtime — small readers for input data: NumPy .npy, IDX (optionally
// gzip-compressed) and raw little-endian float32. Used by the `bbits` CLI
// and the tests; every rejection throws bbits::Error naming the file and the
// problem.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bbits/runtime.h"

namespace bbits::io {

enum class DType { U8, I8, I16, U16, I32, I64, F32, F64 };
BBITS_API const char* dtype_name(DType t);

// A dense row-major array as read from a file; values widened losslessly.
struct BBITS_API Array {
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
  std::vector<double> values;  // row-major, shape product elements
  bool has_shape = true;       // false for raw float32: a flat array whose shape the file does not say
  int64_t elements() const;
  std::vector<float> as_float() const;
  // Integers (labels). Throws when a value is not integral.
  std::vector<int64_t> as_int() const;
};

// NumPy .npy, format versions 1, 2 and 3, little-endian or byte-sized types
// (<f4 <f8 <i8 <i4 <i2 <u2 |u1 |i1), C order only.
BBITS_API Array read_npy(const std::string& path);
BBITS_API void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data);
BBITS_API void write_npy(const std::string& path, const std::vector<int64_t>& shape, const int64_t* data);

// IDX (the MNIST container): types 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
// 0x0D f32, 0x0E f64, big-endian; transparently gunzips .gz files.
BBITS_API Array read_idx(const std::string& path);

// Raw float32 (little-endian); the size must be a multiple of 4.
BBITS_API Array read_raw_f32(const std::string& path);

// Reads a file by its content: .npy magic, gzip or IDX magic, else raw float32.
BBITS_API Array read_any(const std::string& path);

}  // namespace bbits::io
