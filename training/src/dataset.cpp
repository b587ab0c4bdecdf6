#include "bbits/training/dataset.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include <zlib.h>

namespace bbits::train {

namespace {

std::vector<uint8_t> read_gz(const std::string& path) {
  if (!std::filesystem::exists(path))
    throw std::runtime_error("data file '" + path +
                             "' not found (install the Debian package dataset-fashion-mnist, or set "
                             "BBITS_FASHION_MNIST_DIR)");
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open '" + path + "'");
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  for (;;) {
    const int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      throw std::runtime_error("cannot decompress '" + path + "': " + msg);
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  gzclose(f);
  return out;
}

uint32_t be32(const std::vector<uint8_t>& b, size_t off) {
  return (uint32_t{b[off]} << 24) | (uint32_t{b[off + 1]} << 16) | (uint32_t{b[off + 2]} << 8) | b[off + 3];
}

}  // namespace

ImageSet read_idx_images(const std::string& images_path, const std::string& labels_path) {
  const auto img = read_gz(images_path);
  const auto lab = read_gz(labels_path);
  if (img.size() < 16 || be32(img, 0) != 0x00000803)
    throw std::runtime_error("'" + images_path + "' is not an IDX3 uint8 image file");
  if (lab.size() < 8 || be32(lab, 0) != 0x00000801)
    throw std::runtime_error("'" + labels_path + "' is not an IDX1 uint8 label file");
  ImageSet s;
  s.count = be32(img, 4);
  s.rows = be32(img, 8);
  s.cols = be32(img, 12);
  if (s.rows <= 0 || s.cols <= 0 || s.rows > 4096 || s.cols > 4096)
    throw std::runtime_error("'" + images_path + "' has an implausible image size");
  const size_t need = 16 + static_cast<size_t>(s.count) * s.rows * s.cols;
  if (img.size() != need)
    throw std::runtime_error("'" + images_path + "' has " + std::to_string(img.size()) + " bytes, expected " +
                             std::to_string(need) + " (truncated?)");
  const int64_t nl = be32(lab, 4);
  if (nl != s.count || lab.size() != 8 + static_cast<size_t>(nl))
    throw std::runtime_error("'" + labels_path + "' has " + std::to_string(nl) + " labels for " +
                             std::to_string(s.count) + " images");
  s.pixels.assign(img.begin() + 16, img.end());
  s.labels.assign(lab.begin() + 8, lab.end());
  for (auto l : s.labels)
    if (l > 9) throw std::runtime_error("'" + labels_path + "' has a label outside 0..9");
  return s;
}

ImageSet load_fashion_mnist(const std::string& split, const std::string& dir_in) {
  std::string dir = dir_in;
  if (dir.empty()) {
    const char* env = std::getenv("BBITS_FASHION_MNIST_DIR");
    dir = env && *env ? env : kFashionMnistDir;
  }
  std::string prefix;
  if (split == "train") prefix = "train";
  else if (split == "test") prefix = "t10k";
  else throw std::invalid_argument("fashion-mnist: split must be 'train' or 'test', not '" + split + "'");
  return read_idx_images(dir + "/" + prefix + "-images-idx3-ubyte.gz", dir + "/" + prefix + "-labels-idx1-ubyte.gz");
}

ImageSet take(const ImageSet& s, int64_t n) {
  if (n < 0 || n > s.count) n = s.count;
  ImageSet r = s;
  r.count = n;
  r.pixels.resize(static_cast<size_t>(n * s.image_size()));
  r.labels.resize(static_cast<size_t>(n));
  return r;
}

ImageSet pad(const ImageSet& s, int64_t p) {
  if (p < 0 || p > 1024) throw std::invalid_argument("--pad must be 0..1024, got " + std::to_string(p));
  if (p == 0) return s;
  ImageSet r;
  r.count = s.count;
  r.channels = s.channels;
  r.rows = s.rows + 2 * p;
  r.cols = s.cols + 2 * p;
  r.labels = s.labels;
  r.pixels.assign(static_cast<size_t>(r.count * r.image_size()), 0);
  for (int64_t i = 0; i < s.count * s.channels; ++i)
    for (int64_t y = 0; y < s.rows; ++y) {
      const uint8_t* src = s.pixels.data() + (i * s.rows + y) * s.cols;
      std::copy(src, src + s.cols, r.pixels.data() + (i * r.rows + y + p) * r.cols + p);
    }
  return r;
}

}  // namespace bbits::train
