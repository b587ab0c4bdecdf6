#include "lenet_builder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>

#include "bbits/format/cost.h"
#include "bbits/format/model_file.h"
#include "bbits/format/quant.h"

namespace bbits::testing {

namespace {

using Vec = std::vector<int64_t>;

// acc[o][y][x] (no bias) of a valid k x k convolution, stride 1, NCHW input.
Vec conv_acc(const Vec& in, int64_t C, int64_t H, int64_t W, const LenetLayer& L, int64_t k) {
  const int64_t OH = H - k + 1, OW = W - k + 1;
  Vec out(static_cast<size_t>(L.rows * OH * OW), 0);
  for (int64_t o = 0; o < L.rows; ++o)
    for (int64_t y = 0; y < OH; ++y)
      for (int64_t x = 0; x < OW; ++x) {
        int64_t acc = 0;
        for (int64_t kh = 0; kh < k; ++kh)
          for (int64_t kw = 0; kw < k; ++kw)
            for (int64_t c = 0; c < C; ++c)
              acc += int64_t{L.w[static_cast<size_t>(o * L.k + (kh * k + kw) * C + c)]} *
                     in[static_cast<size_t>((c * H + y + kh) * W + x + kw)];
        out[static_cast<size_t>((o * OH + y) * OW + x)] = acc;
      }
  return out;
}

Vec fc_acc(const Vec& in, const LenetLayer& L) {
  Vec out(static_cast<size_t>(L.rows), 0);
  for (int64_t o = 0; o < L.rows; ++o) {
    int64_t acc = 0;
    for (int64_t i = 0; i < L.k; ++i) acc += int64_t{L.w[static_cast<size_t>(o * L.k + i)]} * in[static_cast<size_t>(i)];
    out[static_cast<size_t>(o)] = acc;
  }
  return out;
}

// Requantize accumulators (per output channel, `plane` values each) onto an
// unsigned `bits` grid with ReLU: round half up of the exact real ratio.
Vec requant_relu(const Vec& acc, int64_t plane, const LenetLayer& L, float s_in, float s_out, int bits) {
  Vec out(acc.size());
  const int64_t hi = qmax(bits, false);
  for (size_t i = 0; i < acc.size(); ++i) {
    const size_t o = i / static_cast<size_t>(plane);
    const double real = static_cast<double>(acc[i] + L.bias_q[o]) * (double(L.s_w[o]) * double(s_in) / double(s_out));
    const int64_t q = static_cast<int64_t>(std::floor(real + 0.5));
    out[i] = std::clamp<int64_t>(q, 0, hi);
  }
  return out;
}

Vec maxpool2(const Vec& in, int64_t C, int64_t H, int64_t W) {
  const int64_t OH = H / 2, OW = W / 2;
  Vec out(static_cast<size_t>(C * OH * OW));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < OH; ++y)
      for (int64_t x = 0; x < OW; ++x) {
        int64_t m = INT64_MIN;
        for (int dy = 0; dy < 2; ++dy)
          for (int dx = 0; dx < 2; ++dx) m = std::max(m, in[static_cast<size_t>((c * H + 2 * y + dy) * W + 2 * x + dx)]);
        out[static_cast<size_t>((c * OH + y) * OW + x)] = m;
      }
  return out;
}

float pow2_round(double v) { return static_cast<float>(std::exp2(std::round(std::log2(v)))); }

// Step of the output grid so that the 95th percentile of the positive real
// pre-activation values lands at 70% of the grid.
float calibrate_out_scale(const Vec& acc, int64_t plane, const LenetLayer& L, float s_in, int bits, bool pow2) {
  std::vector<double> pos;
  for (size_t i = 0; i < acc.size(); ++i) {
    const size_t o = i / static_cast<size_t>(plane);
    const double real = double(acc[i] + L.bias_q[o]) * double(L.s_w[o]) * double(s_in);
    if (real > 0) pos.push_back(real);
  }
  double p = 1.0;
  if (!pos.empty()) {
    std::sort(pos.begin(), pos.end());
    p = pos[static_cast<size_t>(0.95 * double(pos.size() - 1))];
  }
  const double s = p / (0.7 * double(qmax(bits, false)));
  return pow2 ? pow2_round(s) : static_cast<float>(s);
}

void init_layer(LenetLayer& L, int64_t rows, int64_t k, int wbits, bool pow2, std::mt19937& rng) {
  L.rows = rows;
  L.k = k;
  L.wbits = wbits;
  const int64_t hi = qmax(wbits, true);
  std::uniform_int_distribution<int64_t> wd(-hi, hi);
  L.w.resize(static_cast<size_t>(rows * k));
  for (auto& v : L.w) v = static_cast<int32_t>(wd(rng));
  L.s_w.resize(static_cast<size_t>(rows));
  std::uniform_int_distribution<int> ed(4, 7);
  std::uniform_real_distribution<float> sd(0.004f, 0.05f);
  // Keep the real weight magnitude comparable across bit widths.
  const float per_bit = 1.0f / static_cast<float>(hi);
  for (auto& s : L.s_w) s = pow2 ? std::exp2(-static_cast<float>(ed(rng))) * pow2_round(per_bit * 8) : sd(rng) * per_bit * 8;
}

void set_bias(LenetLayer& L, const Vec& acc, int64_t plane, std::mt19937& rng) {
  double sum2 = 0;
  for (int64_t v : acc) sum2 += double(v) * double(v);
  const double rms = std::sqrt(sum2 / double(std::max<size_t>(acc.size(), 1)));
  std::uniform_real_distribution<double> bd(-0.3 * rms, 0.6 * rms);
  L.bias_q.resize(static_cast<size_t>(L.rows));
  for (auto& b : L.bias_q) b = static_cast<int32_t>(std::llround(bd(rng)));
  (void)plane;
}

std::vector<uint8_t> keep_mask(int64_t total, int64_t keep, std::mt19937& rng) {
  std::vector<uint8_t> m(static_cast<size_t>(total), 1);
  std::vector<int64_t> idx(static_cast<size_t>(total));
  for (int64_t i = 0; i < total; ++i) idx[static_cast<size_t>(i)] = i;
  std::shuffle(idx.begin(), idx.end(), rng);
  for (int64_t i = 0; i < total - keep; ++i) m[static_cast<size_t>(idx[static_cast<size_t>(i)])] = 0;
  return m;
}

std::unique_ptr<fb::QuantT> make_quant(int bits, bool is_signed, std::vector<float> scales, int axis,
                                       std::vector<float> x_max = {}) {
  auto q = std::make_unique<fb::QuantT>();
  q->bits = static_cast<uint8_t>(bits);
  q->is_signed = is_signed;
  q->scale = std::move(scales);
  q->axis = axis;
  q->x_max = std::move(x_max);
  return q;
}

}  // namespace

std::vector<int32_t> lenet_random_input(const LenetModel& m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, 255);
  const int64_t plane = m.spec.in_h * m.spec.in_w;
  std::vector<int32_t> x(static_cast<size_t>(m.spec.in_c * plane));
  // Smooth blobs plus noise, so that convolutions see structure.
  const double cx = d(rng) / 255.0 * double(m.spec.in_w), cy = d(rng) / 255.0 * double(m.spec.in_h);
  for (int64_t y = 0; y < m.spec.in_h; ++y)
    for (int64_t xx = 0; xx < m.spec.in_w; ++xx) {
      const double r2 = (double(y) - cy) * (double(y) - cy) + (double(xx) - cx) * (double(xx) - cx);
      const double v = 255.0 * std::exp(-r2 / (2.0 * 36.0)) + (d(rng) - 127) * 0.3;
      for (int64_t c = 0; c < m.spec.in_c; ++c) {
        const double vc = c == 0 ? v : (c % 2 ? 255.0 - v : v * 0.5) + (d(rng) - 127) * 0.2;
        x[static_cast<size_t>(c * plane + y * m.spec.in_w + xx)] = static_cast<int32_t>(std::clamp(std::lround(vc), 0l, 255l));
      }
    }
  return x;
}

std::vector<float> lenet_reference(const LenetModel& m, const std::vector<int32_t>& input_q) {
  const LenetSpec& s = m.spec;
  Vec x(input_q.begin(), input_q.end());
  Vec a1 = conv_acc(x, s.in_c, s.in_h, s.in_w, m.conv1, s.k);
  Vec q1 = requant_relu(a1, m.h1 * m.w1o, m.conv1, m.s_in, m.s1, s.a1);
  Vec p1 = maxpool2(q1, m.conv1.rows, m.h1, m.w1o);
  Vec a2 = conv_acc(p1, m.conv1.rows, m.h1 / 2, m.w1o / 2, m.conv2, s.k);
  Vec q2 = requant_relu(a2, m.h2 * m.w2o, m.conv2, m.s1, m.s2, s.a2);
  Vec p2 = maxpool2(q2, m.conv2.rows, m.h2, m.w2o);  // N,C,H,W order = flatten order
  Vec a3 = fc_acc(p2, m.fc1);
  Vec q3 = requant_relu(a3, 1, m.fc1, m.s2, m.s3, s.a3);
  Vec a4 = fc_acc(q3, m.fc2);
  std::vector<float> out(static_cast<size_t>(m.fc2.rows));
  for (int64_t o = 0; o < m.fc2.rows; ++o)
    out[static_cast<size_t>(o)] = static_cast<float>(double(a4[static_cast<size_t>(o)]) * double(m.fc2.s_w[static_cast<size_t>(o)]) *
                                                         double(m.s3) +
                                                     double(m.fc2.bias_f[static_cast<size_t>(o)]));
  return out;
}

LenetModel build_lenet(const LenetSpec& spec) {
  LenetModel m;
  m.spec = spec;
  std::mt19937 rng(spec.seed);
  const bool p2 = spec.pow2_scales;
  m.s_in = p2 ? std::exp2(-8.0f) : grid_scale(1.0f, 8, false);
  m.h1 = spec.in_h - spec.k + 1;
  m.w1o = spec.in_w - spec.k + 1;
  const int64_t ph1 = m.h1 / 2, pw1 = m.w1o / 2;
  m.h2 = ph1 - spec.k + 1;
  m.w2o = pw1 - spec.k + 1;
  const int64_t ph2 = m.h2 / 2, pw2 = m.w2o / 2;
  if (m.h2 < 1 || m.w2o < 1 || ph2 < 1 || pw2 < 1) throw std::invalid_argument("build_lenet: input too small");

  // Calibration input.
  const Vec calib = [&] {
    auto v = lenet_random_input(m, spec.seed + 1000);
    return Vec(v.begin(), v.end());
  }();

  init_layer(m.conv1, spec.keep_c1, spec.k * spec.k * spec.in_c, spec.w1, p2, rng);
  Vec a1 = conv_acc(calib, spec.in_c, spec.in_h, spec.in_w, m.conv1, spec.k);
  set_bias(m.conv1, a1, m.h1 * m.w1o, rng);
  m.s1 = calibrate_out_scale(a1, m.h1 * m.w1o, m.conv1, m.s_in, spec.a1, p2);
  Vec p1 = maxpool2(requant_relu(a1, m.h1 * m.w1o, m.conv1, m.s_in, m.s1, spec.a1), m.conv1.rows, m.h1, m.w1o);

  init_layer(m.conv2, spec.keep_c2, spec.k * spec.k * spec.keep_c1, spec.w2, p2, rng);
  Vec a2 = conv_acc(p1, spec.keep_c1, ph1, pw1, m.conv2, spec.k);
  set_bias(m.conv2, a2, m.h2 * m.w2o, rng);
  m.s2 = calibrate_out_scale(a2, m.h2 * m.w2o, m.conv2, m.s1, spec.a2, p2);
  Vec pool2 = maxpool2(requant_relu(a2, m.h2 * m.w2o, m.conv2, m.s1, m.s2, spec.a2), m.conv2.rows, m.h2, m.w2o);

  const int64_t K = spec.keep_c2 * ph2 * pw2;
  init_layer(m.fc1, spec.keep_fc1, K, spec.w3, p2, rng);
  Vec a3 = fc_acc(pool2, m.fc1);
  set_bias(m.fc1, a3, 1, rng);
  m.s3 = calibrate_out_scale(a3, 1, m.fc1, m.s2, spec.a3, p2);

  init_layer(m.fc2, spec.classes, spec.keep_fc1, spec.w4, p2, rng);
  m.fc2.bias_f.resize(static_cast<size_t>(spec.classes));
  std::uniform_real_distribution<float> bf(-0.5f, 0.5f);
  for (auto& b : m.fc2.bias_f) b = p2 ? std::round(bf(rng) * 64.0f) / 64.0f : bf(rng);

  // ---- the model file ----
  format::ModelWriter writer;
  fb::ModelT& mt = writer.model();
  auto add_tensor = [&](const std::string& name, std::vector<int64_t> shape, fb::DataType dt,
                        std::unique_ptr<fb::QuantT> q, int buffer = -1) {
    auto t = std::make_unique<fb::TensorT>();
    t->name = name;
    t->shape = std::move(shape);
    t->dtype = dt;
    t->quant = std::move(q);
    t->buffer = buffer;
    mt.tensors.push_back(std::move(t));
    return static_cast<int>(mt.tensors.size() - 1);
  };
  auto act = [&](const std::string& name, std::vector<int64_t> shape, int bits, float scale) {
    return add_tensor(name, std::move(shape), fb::DataType::Quantized,
                      make_quant(bits, false, {scale}, -1, {scale * float(qmax(bits, false))}));
  };
  auto weight = [&](const std::string& name, const LenetLayer& L, std::vector<int64_t> shape) {
    std::vector<uint8_t> bytes(static_cast<size_t>(L.rows) * packed_row_bytes(L.k, L.wbits));
    const size_t rb = packed_row_bytes(L.k, L.wbits);
    for (int64_t r = 0; r < L.rows; ++r) pack_row(L.w.data() + r * L.k, L.k, L.wbits, bytes.data() + size_t(r) * rb);
    std::vector<float> xm;
    for (float s : L.s_w) xm.push_back(s * float(qmax(L.wbits, true)));
    return add_tensor(name, std::move(shape), fb::DataType::Quantized, make_quant(L.wbits, true, L.s_w, 0, xm),
                      writer.add_buffer(std::move(bytes)));
  };
  auto bias_q = [&](const std::string& name, const LenetLayer& L) {
    return add_tensor(name, {L.rows}, fb::DataType::Int32, nullptr,
                      writer.add_buffer(L.bias_q.data(), L.bias_q.size() * sizeof(int32_t)));
  };
  auto add_op = [&](const std::string& name, fb::OpType type, std::vector<int32_t> in, std::vector<int32_t> out) {
    auto op = std::make_unique<fb::OperatorT>();
    op->name = name;
    op->type = type;
    op->inputs = std::move(in);
    op->outputs = std::move(out);
    mt.operators.push_back(std::move(op));
    return mt.operators.back().get();
  };
  auto set_costs = [&](fb::OperatorT* op, int64_t macs, int64_t macs_unpruned, const LenetLayer& L, int in_bits) {
    op->macs = macs;
    op->macs_unpruned = macs_unpruned;
    op->weight_bytes = cost::weight_bytes(L.rows, L.k, L.wbits);
    op->bops = cost::bops(macs, L.wbits, in_bits);
  };

  const int t_in = act("input", {1, spec.in_c, spec.in_h, spec.in_w}, 8, m.s_in);
  if (!p2) mt.tensors[static_cast<size_t>(t_in)]->quant->x_max = {1.0f};
  const int t_w1 = weight("conv1.weight", m.conv1, {spec.keep_c1, spec.k, spec.k, spec.in_c});
  const int t_b1 = bias_q("conv1.bias", m.conv1);
  const int t_c1 = act("conv1.out", {1, spec.keep_c1, m.h1, m.w1o}, spec.a1, m.s1);
  const int t_p1 = act("pool1.out", {1, spec.keep_c1, ph1, pw1}, spec.a1, m.s1);
  const int t_w2 = weight("conv2.weight", m.conv2, {spec.keep_c2, spec.k, spec.k, spec.keep_c1});
  const int t_b2 = bias_q("conv2.bias", m.conv2);
  const int t_c2 = act("conv2.out", {1, spec.keep_c2, m.h2, m.w2o}, spec.a2, m.s2);
  const int t_p2 = act("pool2.out", {1, spec.keep_c2, ph2, pw2}, spec.a2, m.s2);
  const int t_fl = act("flatten.out", {1, K}, spec.a2, m.s2);
  const int t_w3 = weight("fc1.weight", m.fc1, {spec.keep_fc1, K});
  const int t_b3 = bias_q("fc1.bias", m.fc1);
  const int t_f1 = act("fc1.out", {1, spec.keep_fc1}, spec.a3, m.s3);
  const int t_w4 = weight("fc2.weight", m.fc2, {spec.classes, spec.keep_fc1});
  const int t_b4 = add_tensor("fc2.bias", {spec.classes}, fb::DataType::Float32, nullptr,
                              writer.add_buffer(m.fc2.bias_f.data(), m.fc2.bias_f.size() * sizeof(float)));
  const int t_out = add_tensor("logits", {1, spec.classes}, fb::DataType::Float32, nullptr);

  {
    fb::Conv2DOptionsT o;
    o.activation = fb::Activation::Relu;
    auto* op = add_op("conv1", fb::OpType::Conv2D, {t_in, t_w1, t_b1}, {t_c1});
    op->options.Set(o);
    op->keep_mask = keep_mask(spec.c1, spec.keep_c1, rng);
    set_costs(op, cost::conv2d_macs(m.h1, m.w1o, spec.keep_c1, spec.in_c, spec.k, spec.k),
              cost::conv2d_macs(m.h1, m.w1o, spec.c1, spec.in_c, spec.k, spec.k), m.conv1, 8);
  }
  fb::Pool2DOptionsT pool;
  pool.kernel_h = pool.kernel_w = 2;
  pool.stride_h = pool.stride_w = 2;
  add_op("pool1", fb::OpType::MaxPool2D, {t_c1}, {t_p1})->options.Set(pool);
  {
    fb::Conv2DOptionsT o;
    o.activation = fb::Activation::Relu;
    auto* op = add_op("conv2", fb::OpType::Conv2D, {t_p1, t_w2, t_b2}, {t_c2});
    op->options.Set(o);
    op->keep_mask = keep_mask(spec.c2, spec.keep_c2, rng);
    set_costs(op, cost::conv2d_macs(m.h2, m.w2o, spec.keep_c2, spec.keep_c1, spec.k, spec.k),
              cost::conv2d_macs(m.h2, m.w2o, spec.c2, spec.c1, spec.k, spec.k), m.conv2, spec.a1);
  }
  add_op("pool2", fb::OpType::MaxPool2D, {t_c2}, {t_p2})->options.Set(pool);
  {
    fb::ReshapeOptionsT o;
    o.shape = {1, K};
    add_op("flatten", fb::OpType::Reshape, {t_p2}, {t_fl})->options.Set(o);
  }
  {
    fb::FullyConnectedOptionsT o;
    o.activation = fb::Activation::Relu;
    auto* op = add_op("fc1", fb::OpType::FullyConnected, {t_fl, t_w3, t_b3}, {t_f1});
    op->options.Set(o);
    op->keep_mask = keep_mask(spec.fc1, spec.keep_fc1, rng);
    set_costs(op, cost::fc_macs(spec.keep_fc1, K), cost::fc_macs(spec.fc1, spec.c2 * ph2 * pw2), m.fc1, spec.a2);
  }
  {
    fb::FullyConnectedOptionsT o;
    auto* op = add_op("fc2", fb::OpType::FullyConnected, {t_f1, t_w4, t_b4}, {t_out});
    op->options.Set(o);
    set_costs(op, cost::fc_macs(spec.classes, spec.keep_fc1), cost::fc_macs(spec.classes, spec.fc1), m.fc2, spec.a3);
  }
  mt.inputs = {t_in};
  mt.outputs = {t_out};
  mt.preprocess = std::make_unique<fb::PreprocessT>();
  mt.preprocess->layout = fb::Layout::NCHW;
  mt.preprocess->channels = static_cast<int32_t>(spec.in_c);
  mt.preprocess->height = static_cast<int32_t>(spec.in_h);
  mt.preprocess->width = static_cast<int32_t>(spec.in_w);
  mt.preprocess->pixel_scale = 1.0f / 255.0f;
  mt.preprocess->mean.assign(static_cast<size_t>(spec.in_c), 0.0f);
  mt.preprocess->std.assign(static_cast<size_t>(spec.in_c), 1.0f);
  mt.metadata = std::make_unique<fb::MetadataT>();
  mt.metadata->producer = "bbits tests (hand-built LeNet-5)";
  mt.metadata->description = "hand-built LeNet-5-shaped model with random weights";
  mt.metadata->training = std::make_unique<fb::TrainingInfoT>();
  mt.metadata->training->method = "synthetic";
  mt.metadata->training->arch = "lenet5";
  mt.metadata->training->dataset = "fashion-mnist";
  m.bytes = writer.serialize();
  return m;
}

}  // namespace bbits::testing

namespace bbits::testing {

std::vector<uint8_t> repack_model(const std::vector<uint8_t>& good, const std::function<void(fb::ModelT&)>& mutate) {
  format::FileHeader h;
  std::memcpy(&h, good.data(), sizeof h);
  std::unique_ptr<fb::ModelT> m(fb::GetModel(good.data() + 64)->UnPack());
  mutate(*m);
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(fb::Model::Pack(fbb, m.get()), fb::ModelIdentifier());
  const size_t fb_size = fbb.GetSize();
  const size_t data_offset = (64 + fb_size + 63) / 64 * 64;
  std::vector<uint8_t> out(data_offset + h.data_size, 0);
  std::memcpy(out.data() + 64, fbb.GetBufferPointer(), fb_size);
  std::memcpy(out.data() + data_offset, good.data() + h.data_offset, h.data_size);
  h.flatbuffer_size = fb_size;
  h.data_offset = data_offset;
  h.checksum = format::crc32(out.data() + sizeof h, out.size() - sizeof h);
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

}  // namespace bbits::testing
