// Readers for .npy, IDX (optionally gzipped) and raw float32 files.
#include "bbits/io.h"

#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <string>

namespace bbits::io {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(path + ": " + what);
}

// Whole file into memory; gunzips when the content starts with the gzip magic.
std::vector<uint8_t> read_file_bytes(const std::string& path, bool allow_gzip) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
  unsigned char magic[2] = {0, 0};
  const size_t got = std::fread(magic, 1, 2, f);
  std::fclose(f);
  std::vector<uint8_t> out;
  if (allow_gzip && got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    gzFile gz = gzopen(path.c_str(), "rb");
    if (!gz) fail(path, "cannot open gzip stream");
    std::vector<uint8_t> chunk(1 << 16);
    for (;;) {
      const int n = gzread(gz, chunk.data(), static_cast<unsigned>(chunk.size()));
      if (n < 0) {
        int errnum = 0;
        const char* msg = gzerror(gz, &errnum);
        const std::string m = msg ? msg : "unknown error";
        gzclose(gz);
        fail(path, "corrupt gzip data: " + m);
      }
      if (n == 0) break;
      out.insert(out.end(), chunk.begin(), chunk.begin() + n);
      if (out.size() > (size_t{1} << 34)) {
        gzclose(gz);
        fail(path, "decompressed data larger than 16 GiB");
      }
    }
    // gzread returns 0 both at the end and on a truncated stream; gzclose tells.
    const int rc = gzclose(gz);
    if (rc != Z_OK) fail(path, "truncated or corrupt gzip data");
    return out;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff sz = in.tellg();
  if (sz < 0) fail(path, "cannot determine the file size");
  in.seekg(0);
  out.resize(static_cast<size_t>(sz));
  if (sz > 0 && !in.read(reinterpret_cast<char*>(out.data()), sz)) fail(path, "read error");
  return out;
}

int64_t checked_product(const std::string& path, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(path, "negative dimension");
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) fail(path, "dimensions overflow");
    n *= d;
  }
  return n;
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::U8:
    case DType::I8: return 1;
    case DType::I16:
    case DType::U16: return 2;
    case DType::I32:
    case DType::F32: return 4;
    case DType::I64:
    case DType::F64: return 8;
  }
  return 1;
}

template <typename T>
T load_as(const uint8_t* p, bool big_endian) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, p, sizeof(T));
  if (big_endian)
    for (size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
  T v;
  std::memcpy(&v, b, sizeof(T));
  return v;
}

void decode(const uint8_t* p, int64_t n, DType t, bool big_endian, std::vector<double>& out) {
  out.resize(static_cast<size_t>(n));
  const size_t es = dtype_size(t);
  for (int64_t i = 0; i < n; ++i, p += es) {
    double v = 0;
    switch (t) {
      case DType::U8: v = *p; break;
      case DType::I8: v = static_cast<int8_t>(*p); break;
      case DType::I16: v = load_as<int16_t>(p, big_endian); break;
      case DType::U16: v = load_as<uint16_t>(p, big_endian); break;
      case DType::I32: v = load_as<int32_t>(p, big_endian); break;
      case DType::I64: v = static_cast<double>(load_as<int64_t>(p, big_endian)); break;
      case DType::F32: v = load_as<float>(p, big_endian); break;
      case DType::F64: v = load_as<double>(p, big_endian); break;
    }
    out[static_cast<size_t>(i)] = v;
  }
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t')) ++a;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) --b;
  return s.substr(a, b - a);
}

// Value of key `key` in a Python dict literal header (string value, bool or tuple).
std::string npy_field(const std::string& path, const std::string& header, const std::string& key) {
  const std::string k1 = "'" + key + "'";
  size_t pos = header.find(k1);
  if (pos == std::string::npos) fail(path, "npy header has no '" + key + "' field");
  pos = header.find(':', pos + k1.size());
  if (pos == std::string::npos) fail(path, "malformed npy header");
  ++pos;
  while (pos < header.size() && header[pos] == ' ') ++pos;
  if (pos >= header.size()) fail(path, "malformed npy header");
  if (header[pos] == '\'') {
    const size_t end = header.find('\'', pos + 1);
    if (end == std::string::npos) fail(path, "malformed npy header");
    return header.substr(pos + 1, end - pos - 1);
  }
  if (header[pos] == '(') {
    const size_t end = header.find(')', pos);
    if (end == std::string::npos) fail(path, "malformed npy header");
    return header.substr(pos, end - pos + 1);
  }
  size_t end = pos;
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  return trim(header.substr(pos, end - pos));
}

void write_npy_impl(const std::string& path, const std::vector<int64_t>& shape, const char* descr,
                    const void* data, size_t elem_size) {
  std::string shp = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    shp += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) shp += ",";
    if (i + 1 < shape.size()) shp += " ";
  }
  shp += ")";
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shp + ", }";
  const size_t unpadded = 10 + header.size() + 1;
  const size_t total = (unpadded + 63) / 64 * 64;
  header.append(total - unpadded, ' ');
  header.push_back('\n');
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, std::string("cannot create: ") + std::strerror(errno));
    const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
    out.write(magic, 8);
    const uint16_t hl = static_cast<uint16_t>(header.size());
    const char hlb[2] = {static_cast<char>(hl & 0xff), static_cast<char>(hl >> 8)};
    out.write(hlb, 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(static_cast<size_t>(n) * elem_size));
    if (!out) fail(path, "write error");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail(path, std::string("cannot rename: ") + std::strerror(errno));
  }
}

Array parse_npy(const std::string& path, const std::vector<uint8_t>& b) {
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0) fail(path, "not a .npy file (bad magic)");
  const int major = b[6];
  size_t hlen = 0, hstart = 0;
  if (major == 1) {
    hlen = b[8] | (size_t{b[9]} << 8);
    hstart = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) fail(path, "truncated npy header");
    hlen = b[8] | (size_t{b[9]} << 8) | (size_t{b[10]} << 16) | (size_t{b[11]} << 24);
    hstart = 12;
  } else {
    fail(path, "unsupported npy format version " + std::to_string(major));
  }
  if (hlen > b.size() - hstart) fail(path, "truncated npy header");
  const std::string header(reinterpret_cast<const char*>(b.data() + hstart), hlen);
  const std::string descr = npy_field(path, header, "descr");
  const std::string fortran = npy_field(path, header, "fortran_order");
  const std::string shape_s = npy_field(path, header, "shape");
  if (fortran != "False") fail(path, "Fortran-order arrays are not supported (save C-contiguous)");
  Array a;
  struct D { const char* name; DType t; };
  static const D table[] = {{"<f4", DType::F32}, {"<f8", DType::F64}, {"<i8", DType::I64},
                            {"<i4", DType::I32}, {"<i2", DType::I16}, {"<u2", DType::U16},
                            {"|u1", DType::U8},  {"|i1", DType::I8},  {"<u1", DType::U8},
                            {"<i1", DType::I8}};
  bool found = false;
  for (const D& d : table)
    if (descr == d.name) {
      a.dtype = d.t;
      found = true;
    }
  if (!found) fail(path, "unsupported npy dtype '" + descr + "' (use float32, float64, int64, int32, int16, uint16, uint8, int8)");
  // shape tuple "(a, b, c)" / "(a,)" / "()"
  if (shape_s.size() < 2 || shape_s.front() != '(' || shape_s.back() != ')') fail(path, "malformed npy shape");
  std::string inner = shape_s.substr(1, shape_s.size() - 2);
  size_t p = 0;
  while (p < inner.size()) {
    size_t q = inner.find(',', p);
    if (q == std::string::npos) q = inner.size();
    std::string tok = trim(inner.substr(p, q - p));
    if (!tok.empty()) {
      if (tok.back() == 'L') tok.pop_back();
      if (tok.empty() || tok.size() > 18 || tok.find_first_not_of("0123456789") != std::string::npos)
        fail(path, "malformed npy shape '" + shape_s + "'");
      a.shape.push_back(std::stoll(tok));
    }
    p = q + 1;
  }
  const int64_t n = checked_product(path, a.shape);
  const size_t data_start = hstart + hlen;
  const size_t es = dtype_size(a.dtype);
  if (static_cast<uint64_t>(n) > (b.size() - data_start) / es)
    fail(path, "npy data truncated: shape needs " + std::to_string(n) + " elements, file has " +
                   std::to_string((b.size() - data_start) / es));
  decode(b.data() + data_start, n, a.dtype, false, a.values);
  return a;
}

Array parse_idx(const std::string& path, const std::vector<uint8_t>& b) {
  if (b.size() < 4 || b[0] != 0 || b[1] != 0) fail(path, "not an IDX file (bad magic)");
  Array a;
  switch (b[2]) {
    case 0x08: a.dtype = DType::U8; break;
    case 0x09: a.dtype = DType::I8; break;
    case 0x0B: a.dtype = DType::I16; break;
    case 0x0C: a.dtype = DType::I32; break;
    case 0x0D: a.dtype = DType::F32; break;
    case 0x0E: a.dtype = DType::F64; break;
    default: fail(path, "unknown IDX element type 0x" + std::to_string(b[2]));
  }
  const int ndim = b[3];
  if (ndim == 0) fail(path, "IDX file with zero dimensions");
  if (b.size() < 4 + 4 * size_t(ndim)) fail(path, "truncated IDX header");
  for (int i = 0; i < ndim; ++i) {
    const uint8_t* p = b.data() + 4 + 4 * i;
    const uint32_t d = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    a.shape.push_back(d);
  }
  const int64_t n = checked_product(path, a.shape);
  const size_t start = 4 + 4 * size_t(ndim);
  const size_t es = dtype_size(a.dtype);
  if (static_cast<uint64_t>(n) > (b.size() - start) / es)
    fail(path, "IDX data truncated: header declares " + std::to_string(n) + " elements, file has " +
                   std::to_string((b.size() - start) / es));
  decode(b.data() + start, n, a.dtype, true, a.values);
  return a;
}

}  // namespace

const char* dtype_name(DType t) {
  switch (t) {
    case DType::U8: return "uint8";
    case DType::I8: return "int8";
    case DType::I16: return "int16";
    case DType::U16: return "uint16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::F32: return "float32";
    case DType::F64: return "float64";
  }
  return "?";
}

int64_t Array::elements() const { return static_cast<int64_t>(values.size()); }

std::vector<float> Array::as_float() const {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = static_cast<float>(values[i]);
  return out;
}

std::vector<int64_t> Array::as_int() const {
  std::vector<int64_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) > 9.0e15)
      throw Error("array element " + std::to_string(i) + " is not an integer (" + std::to_string(v) + ")");
    out[i] = static_cast<int64_t>(v);
  }
  return out;
}

Array read_npy(const std::string& path) { return parse_npy(path, read_file_bytes(path, false)); }

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  write_npy_impl(path, shape, "<f4", data, 4);
}
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const int64_t* data) {
  write_npy_impl(path, shape, "<i8", data, 8);
}

Array read_idx(const std::string& path) { return parse_idx(path, read_file_bytes(path, true)); }

Array read_raw_f32(const std::string& path) {
  const std::vector<uint8_t> b = read_file_bytes(path, false);
  if (b.empty()) fail(path, "empty file");
  if (b.size() % 4 != 0)
    fail(path, "raw float32 file size " + std::to_string(b.size()) + " is not a multiple of 4");
  Array a;
  a.dtype = DType::F32;
  a.has_shape = false;
  a.shape = {static_cast<int64_t>(b.size() / 4)};
  decode(b.data(), static_cast<int64_t>(b.size() / 4), DType::F32, false, a.values);
  return a;
}

Array read_any(const std::string& path) {
  const std::vector<uint8_t> b = read_file_bytes(path, true);
  if (b.size() >= 6 && std::memcmp(b.data(), "\x93NUMPY", 6) == 0) return parse_npy(path, b);
  if (b.size() >= 4 && b[0] == 0 && b[1] == 0 && (b[2] == 0x08 || b[2] == 0x09 || b[2] == 0x0B ||
                                                    b[2] == 0x0C || b[2] == 0x0D || b[2] == 0x0E) &&
      b[3] >= 1 && b[3] <= 8) {
    // An IDX header whose dimensions account for the size exactly.
    try {
      Array a = parse_idx(path, b);
      size_t es = dtype_size(a.dtype);
      if (4 + 4 * a.shape.size() + a.values.size() * es == b.size()) return a;
    } catch (const Error&) {
    }
  }
  if (b.empty()) fail(path, "empty file");
  if (b.size() % 4 != 0)
    fail(path, "not .npy or IDX, and the size " + std::to_string(b.size()) + " is not a multiple of 4 (raw float32)");
  Array a;
  a.dtype = DType::F32;
  a.has_shape = false;
  a.shape = {static_cast<int64_t>(b.size() / 4)};
  decode(b.data(), static_cast<int64_t>(b.size() / 4), DType::F32, false, a.values);
  return a;
}

}  // namespace bbits::io
