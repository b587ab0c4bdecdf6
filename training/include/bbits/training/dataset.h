// bbits training — image classification data sets as raw uint8 pixels.
// Fashion-MNIST is read from the gzipped IDX files of the Debian package
// dataset-fashion-mnist. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bbits::train {

struct ImageSet {
  int64_t count = 0, channels = 1, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count x channels x rows x cols
  std::vector<uint8_t> labels;  // count
  int64_t image_size() const { return channels * rows * cols; }
};

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Reads IDX3 images / IDX1 labels (gzip or plain). Throws std::runtime_error naming the file.
ImageSet read_idx_images(const std::string& images_path, const std::string& labels_path);

// split: "train" (60,000 images) or "test" (10,000). `dir` defaults to kFashionMnistDir
// (or $BBITS_FASHION_MNIST_DIR when set).
ImageSet load_fashion_mnist(const std::string& split, const std::string& dir = "");

// The first n images (n <= count) as a new set.
ImageSet take(const ImageSet& s, int64_t n);

// Every image with `p` zero pixels added on each side (Fashion-MNIST 28x28 ->
// 32x32 with p = 2). p = 0: the set as it is; p < 0 is an error.
ImageSet pad(const ImageSet& s, int64_t p);

}  // namespace bbits::train
