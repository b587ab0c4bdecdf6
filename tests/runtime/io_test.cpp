// The .npy / IDX / raw float32 readers behind `bbits run` and `bbits eval`.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "bbits/io.h"

namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path dir = fs::temp_directory_path() / ("bbits_io_test_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(dir); }
  ~TempDir() { fs::remove_all(dir); }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

std::vector<uint8_t> idx_u8(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    b.push_back(static_cast<uint8_t>(d >> 24));
    b.push_back(static_cast<uint8_t>(d >> 16));
    b.push_back(static_cast<uint8_t>(d >> 8));
    b.push_back(static_cast<uint8_t>(d));
  }
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const bbits::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Io, NpyRoundTripFloatAndInt) {
  TempDir t;
  const std::vector<float> x = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.5f};
  bbits::io::write_npy(t.file("x.npy"), {2, 3}, x.data());
  const auto a = bbits::io::read_npy(t.file("x.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.dtype, bbits::io::DType::F32);
  EXPECT_EQ(a.as_float(), x);
  const std::vector<int64_t> y = {3, 1, 4};
  bbits::io::write_npy(t.file("y.npy"), {3}, y.data());
  const auto b = bbits::io::read_any(t.file("y.npy"));
  EXPECT_EQ(b.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(b.as_int(), y);
}

TEST(Io, IdxPlainAndGzip) {
  TempDir t;
  const std::vector<uint8_t> pix = {0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255};
  const auto bytes = idx_u8({3, 2, 2}, pix);
  write_bytes(t.file("a.idx"), bytes);
  gzFile gz = gzopen(t.file("a.idx.gz").c_str(), "wb");
  ASSERT_NE(gz, nullptr);
  gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(gz);
  for (const char* name : {"a.idx", "a.idx.gz"}) {
    const auto a = bbits::io::read_idx(t.file(name));
    EXPECT_EQ(a.shape, (std::vector<int64_t>{3, 2, 2})) << name;
    EXPECT_EQ(a.dtype, bbits::io::DType::U8);
    ASSERT_EQ(a.values.size(), pix.size());
    for (size_t i = 0; i < pix.size(); ++i) EXPECT_EQ(a.values[i], pix[i]);
    EXPECT_EQ(bbits::io::read_any(t.file(name)).shape, a.shape) << name;
  }
}

TEST(Io, RawFloat32) {
  TempDir t;
  const float v[3] = {1.0f, 2.0f, -3.0f};
  std::vector<uint8_t> b(reinterpret_cast<const uint8_t*>(v), reinterpret_cast<const uint8_t*>(v) + 12);
  write_bytes(t.file("x.f32"), b);
  const auto a = bbits::io::read_any(t.file("x.f32"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(a.as_float(), (std::vector<float>{1.0f, 2.0f, -3.0f}));
  b.push_back(0);
  write_bytes(t.file("odd.f32"), b);
  EXPECT_NE(error_of([&] { bbits::io::read_any(t.file("odd.f32")); }).find("not a multiple of 4"), std::string::npos);
}

TEST(Io, ErrorsNameTheFileAndProblem) {
  TempDir t;
  EXPECT_NE(error_of([&] { bbits::io::read_npy(t.file("missing.npy")); }).find("missing.npy: cannot open"),
            std::string::npos);
  // Truncated IDX data.
  auto bytes = idx_u8({10, 28, 28}, std::vector<uint8_t>(100, 1));
  write_bytes(t.file("short.idx"), bytes);
  EXPECT_NE(error_of([&] { bbits::io::read_idx(t.file("short.idx")); }).find("truncated"), std::string::npos);
  // Truncated gzip stream.
  gzFile gz = gzopen(t.file("cut.gz").c_str(), "wb");
  const auto full = idx_u8({64, 64}, std::vector<uint8_t>(4096, 7));
  gzwrite(gz, full.data(), static_cast<unsigned>(full.size()));
  gzclose(gz);
  std::ifstream in(t.file("cut.gz"), std::ios::binary);
  std::vector<uint8_t> gzb((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  gzb.resize(gzb.size() / 2);
  write_bytes(t.file("cut.gz"), gzb);
  EXPECT_NE(error_of([&] { bbits::io::read_idx(t.file("cut.gz")); }), "");
  // npy: Fortran order, bad dtype, truncated data.
  const std::string hdr = "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }";
  std::vector<uint8_t> npy = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<uint8_t>(hdr.size()), 0};
  npy.insert(npy.end(), hdr.begin(), hdr.end());
  npy.resize(npy.size() + 8);
  write_bytes(t.file("f.npy"), npy);
  EXPECT_NE(error_of([&] { bbits::io::read_npy(t.file("f.npy")); }).find("Fortran"), std::string::npos);
  const std::string hdr2 = "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }";
  std::vector<uint8_t> npy2 = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<uint8_t>(hdr2.size()), 0};
  npy2.insert(npy2.end(), hdr2.begin(), hdr2.end());
  write_bytes(t.file("c.npy"), npy2);
  EXPECT_NE(error_of([&] { bbits::io::read_npy(t.file("c.npy")); }).find("unsupported npy dtype '<c8'"), std::string::npos);
  const std::string hdr3 = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 1000), }";
  std::vector<uint8_t> npy3 = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<uint8_t>(hdr3.size()), 0};
  npy3.insert(npy3.end(), hdr3.begin(), hdr3.end());
  npy3.resize(npy3.size() + 40);
  write_bytes(t.file("t.npy"), npy3);
  EXPECT_NE(error_of([&] { bbits::io::read_npy(t.file("t.npy")); }).find("truncated"), std::string::npos);
  // Labels that are not integers.
  const float half[2] = {0.5f, 1.0f};
  bbits::io::write_npy(t.file("h.npy"), {2}, half);
  EXPECT_NE(error_of([&] { bbits::io::read_npy(t.file("h.npy")).as_int(); }).find("not an integer"), std::string::npos);
}

}  // namespace
