// Writes a small model that actually classifies Fashion-MNIST: a nearest-class-
// mean classifier as one fully connected layer (logit_c = x . mu_c - |mu_c|^2 / 2
// with x = pixel / 255), weights quantized to 8 bits per output channel,
// behind a flatten of the 1x1x28x28 input. Its purpose is to check the whole
// `bbits eval` path (IDX reading, preprocessing, layout, quantization, arg-max)
// against a known accuracy, which random weights cannot do.
//   bbits_make_centroid_model OUT.bbm [DATA_DIR] [--limit N] [--export-test N X.npy Y.npy]
// --export-test also writes the first N test images, preprocessed (x / 255,
// N x 1 x 28 x 28 float32), and their labels (int64) for `bbits eval --inputs`.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "bbits/format/cost.h"
#include "bbits/format/model_file.h"
#include "bbits/format/quant.h"
#include "bbits/io.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT.bbm [DATA_DIR] [--limit N]\n", argv[0]);
    return 2;
  }
  std::string dir = "/usr/share/datasets/fashion-mnist";
  long limit = 20000;
  long export_n = 0;
  std::string export_x, export_y;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
      limit = std::strtol(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--export-test") == 0 && i + 3 < argc) {
      export_n = std::strtol(argv[++i], nullptr, 10);
      export_x = argv[++i];
      export_y = argv[++i];
    } else
      dir = argv[i];
  }
  try {
    const auto images = bbits::io::read_idx(dir + "/train-images-idx3-ubyte.gz");
    const auto labels = bbits::io::read_idx(dir + "/train-labels-idx1-ubyte.gz");
    if (images.shape.size() != 3 || labels.shape.size() != 1 || labels.shape[0] != images.shape[0])
      throw std::runtime_error("unexpected IDX shapes");
    const int64_t n = std::min<int64_t>(images.shape[0], limit), hw = images.shape[1] * images.shape[2];
    const int classes = 10;
    std::vector<double> mu(static_cast<size_t>(classes * hw), 0.0);
    std::vector<int64_t> count(classes, 0);
    for (int64_t i = 0; i < n; ++i) {
      const int c = static_cast<int>(labels.values[static_cast<size_t>(i)]);
      if (c < 0 || c >= classes) throw std::runtime_error("label out of range");
      ++count[static_cast<size_t>(c)];
      for (int64_t p = 0; p < hw; ++p)
        mu[static_cast<size_t>(c * hw + p)] += images.values[static_cast<size_t>(i * hw + p)] / 255.0;
    }
    namespace fb = bbits::fb;
    bbits::format::ModelWriter w;
    fb::ModelT& m = w.model();
    std::vector<int32_t> q(static_cast<size_t>(classes * hw));
    std::vector<float> scales(classes), bias(classes);
    for (int c = 0; c < classes; ++c) {
      double mx = 0, norm2 = 0;
      for (int64_t p = 0; p < hw; ++p) {
        double& v = mu[static_cast<size_t>(c * hw + p)];
        v /= double(std::max<int64_t>(count[static_cast<size_t>(c)], 1));
        mx = std::max(mx, std::fabs(v));
        norm2 += v * v;
      }
      scales[static_cast<size_t>(c)] = static_cast<float>(std::max(mx, 1e-6) / 127.0);
      bias[static_cast<size_t>(c)] = static_cast<float>(-0.5 * norm2);
      for (int64_t p = 0; p < hw; ++p)
        q[static_cast<size_t>(c * hw + p)] =
            static_cast<int32_t>(std::lround(mu[static_cast<size_t>(c * hw + p)] / scales[static_cast<size_t>(c)]));
    }
    std::vector<uint8_t> packed(static_cast<size_t>(classes * hw));
    for (int c = 0; c < classes; ++c) bbits::pack_row(q.data() + c * hw, hw, 8, packed.data() + c * hw);

    auto tensor = [&](const std::string& name, std::vector<int64_t> shape, fb::DataType dt, int bits, bool sgn,
                      std::vector<float> scale, int axis, int buffer) {
      auto t = std::make_unique<fb::TensorT>();
      t->name = name;
      t->shape = std::move(shape);
      t->dtype = dt;
      if (dt == fb::DataType::Quantized) {
        t->quant = std::make_unique<fb::QuantT>();
        t->quant->bits = static_cast<uint8_t>(bits);
        t->quant->is_signed = sgn;
        t->quant->scale = std::move(scale);
        t->quant->axis = axis;
      }
      t->buffer = buffer;
      m.tensors.push_back(std::move(t));
      return static_cast<int>(m.tensors.size() - 1);
    };
    const float s_in = bbits::grid_scale(1.0f, 8, false);
    const int t_in = tensor("input", {1, 1, images.shape[1], images.shape[2]}, fb::DataType::Quantized, 8, false, {s_in}, -1, -1);
    m.tensors[static_cast<size_t>(t_in)]->quant->x_max = {1.0f};
    const int t_flat = tensor("flatten.out", {1, hw}, fb::DataType::Quantized, 8, false, {s_in}, -1, -1);
    const int t_w = tensor("fc.weight", {classes, hw}, fb::DataType::Quantized, 8, true, scales, 0, w.add_buffer(packed));
    const int t_b = tensor("fc.bias", {classes}, fb::DataType::Float32, 32, true, {}, -1,
                           w.add_buffer(bias.data(), bias.size() * sizeof(float)));
    const int t_out = tensor("logits", {1, classes}, fb::DataType::Float32, 32, true, {}, -1, -1);
    {
      auto op = std::make_unique<fb::OperatorT>();
      op->name = "flatten";
      op->type = fb::OpType::Reshape;
      op->inputs = {t_in};
      op->outputs = {t_flat};
      fb::ReshapeOptionsT o;
      o.shape = {1, hw};
      op->options.Set(o);
      m.operators.push_back(std::move(op));
    }
    {
      auto op = std::make_unique<fb::OperatorT>();
      op->name = "fc";
      op->type = fb::OpType::FullyConnected;
      op->inputs = {t_flat, t_w, t_b};
      op->outputs = {t_out};
      op->options.Set(fb::FullyConnectedOptionsT{});
      op->macs = op->macs_unpruned = bbits::cost::fc_macs(classes, hw);
      op->weight_bytes = bbits::cost::weight_bytes(classes, hw, 8);
      op->bops = bbits::cost::bops(op->macs, 8, 8);
      m.operators.push_back(std::move(op));
    }
    m.inputs = {t_in};
    m.outputs = {t_out};
    m.preprocess = std::make_unique<fb::PreprocessT>();
    m.preprocess->channels = 1;
    m.preprocess->height = static_cast<int32_t>(images.shape[1]);
    m.preprocess->width = static_cast<int32_t>(images.shape[2]);
    m.preprocess->pixel_scale = 1.0f / 255.0f;
    m.preprocess->mean = {0.0f};
    m.preprocess->std = {1.0f};
    m.metadata = std::make_unique<fb::MetadataT>();
    m.metadata->producer = "bbits tests (nearest class mean)";
    m.metadata->description = "nearest-class-mean classifier from " + std::to_string(n) + " training images, 8-bit weights";
    m.metadata->training = std::make_unique<fb::TrainingInfoT>();
    m.metadata->training->method = "fixed";
    m.metadata->training->dataset = "fashion-mnist";
    m.metadata->training->arch = "class-means";
    w.write(argv[1]);
    if (export_n > 0) {
      const auto ti = bbits::io::read_idx(dir + "/t10k-images-idx3-ubyte.gz");
      const auto tl = bbits::io::read_idx(dir + "/t10k-labels-idx1-ubyte.gz");
      const int64_t k = std::min<int64_t>(export_n, ti.shape[0]);
      std::vector<float> x(static_cast<size_t>(k * hw));
      for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(ti.values[i]) / 255.0f;
      std::vector<int64_t> y(static_cast<size_t>(k));
      for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<int64_t>(tl.values[i]);
      bbits::io::write_npy(export_x, {k, 1, ti.shape[1], ti.shape[2]}, x.data());
      bbits::io::write_npy(export_y, {k}, y.data());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
