// Shared by the trainer tests: a tiny Fashion-MNIST-shaped data set (gzipped
// IDX files) so the tests need neither the Debian package nor the time to
// decompress 60,000 images, a training config on it, and a bitwise
// comparison of two checkpoints.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <zlib.h>

#include "bbits/contract/checkpoint.h"
#include "bbits/contract/safetensors.h"
#include "bbits/training/trainer.h"

namespace bbits::train::testing {

inline void write_idx(const std::filesystem::path& dir, const std::string& prefix, int n, unsigned seed) {
  std::vector<uint8_t> img = {0, 0, 8, 3, 0, 0, static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n & 0xff), 0, 0, 0, 28, 0, 0, 0, 28};
  std::vector<uint8_t> lab = {0, 0, 8, 1, 0, 0, static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n & 0xff)};
  uint32_t state = seed;
  for (int i = 0; i < n; ++i) {
    const int label = i % 10;
    lab.push_back(static_cast<uint8_t>(label));
    for (int p = 0; p < 28 * 28; ++p) {
      state = state * 1664525u + 1013904223u;
      // a class-dependent bright band plus noise
      const bool band = (p / 28) / 3 == label;
      img.push_back(static_cast<uint8_t>((band ? 160 : 0) + (state >> 26)));
    }
  }
  for (auto [name, bytes] : {std::pair{prefix + "-images-idx3-ubyte.gz", &img}, std::pair{prefix + "-labels-idx1-ubyte.gz", &lab}}) {
    gzFile f = gzopen((dir / name).c_str(), "wb");
    ASSERT_NE(f, nullptr);
    gzwrite(f, bytes->data(), static_cast<unsigned>(bytes->size()));
    gzclose(f);
  }
}

// A tiny IDX data set in `data` (train images, test images, seeds).
inline void write_tiny_data(const std::filesystem::path& data, int train, int test, unsigned seed) {
  std::filesystem::create_directories(data);
  write_idx(data, "train", train, seed);
  write_idx(data, "t10k", test, seed + 1);
}

// A fresh folder `out` with a tiny IDX data set in out/data, and a training
// config on it writing to out.
inline TrainConfig tiny_run(const std::filesystem::path& out, int train, int test, unsigned seed) {
  std::filesystem::remove_all(out);
  const auto data = out / "data";
  write_tiny_data(data, train, test, seed);
  TrainConfig c;
  c.data_dir = data.string();
  c.out = out.string();
  c.train_limit = train;
  c.test_limit = test;
  c.progress = false;
  return c;
}

// A safetensors file's tensors in name order (the order the contract writes).
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
  bool operator==(const NamedTensor&) const = default;
};
struct TensorFile {
  std::vector<NamedTensor> tensors;
};

inline TensorFile read_tensors(const std::string& path) {
  const auto bytes = bbits::contract::read_file_bytes(path);
  const auto file = bbits::contract::parse_safetensors(bytes);
  TensorFile r;
  for (const auto& [name, t] : file.tensors) r.tensors.push_back({name, t.shape, t.data});
  return r;
}

inline void write_tensors(const std::string& path, const bbits::contract::TensorMap& tensors) {
  const auto bytes = bbits::contract::serialize_safetensors(tensors, {});
  bbits::contract::write_file_bytes(path, bytes);
}

// Every tensor of two checkpoints bit-identical.
inline void expect_same_tensors(const std::filesystem::path& a, const std::filesystem::path& b) {
  const auto ca = read_tensors(a.string()), cb = read_tensors(b.string());
  ASSERT_EQ(ca.tensors.size(), cb.tensors.size());
  for (size_t i = 0; i < ca.tensors.size(); ++i) {
    ASSERT_EQ(ca.tensors[i].name, cb.tensors[i].name);
    EXPECT_EQ(ca.tensors[i].data, cb.tensors[i].data) << ca.tensors[i].name;
  }
}

}  // namespace bbits::train::testing
