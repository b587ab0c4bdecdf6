#include "bbits/bench/synthetic.h"

#include <fmt/format.h>

#include <cstring>
#include <random>
#include <stdexcept>

#include "bbits/format/cost.h"
#include "bbits/format/model_file.h"
#include "bbits/format/quant.h"

namespace bbits::bench {
namespace {

struct Builder {
  format::ModelWriter w;
  std::mt19937 rng;
  explicit Builder(uint32_t seed) : rng(seed) {
    auto md = std::make_unique<fb::MetadataT>();
    md->producer = "bbits bench (synthetic)";
    md->description = "random weights for benchmarking";
    md->training = std::make_unique<fb::TrainingInfoT>();
    md->training->method = "synthetic";
    md->training->arch = "bench";
    w.model().metadata = std::move(md);
  }

  int act(const std::string& name, std::vector<int64_t> shape, const kernels::QuantInfo& q) {
    auto t = std::make_unique<fb::TensorT>();
    t->name = name;
    t->shape = std::move(shape);
    if (q.is_float()) {
      t->dtype = fb::DataType::Float32;
    } else {
      t->dtype = fb::DataType::Quantized;
      t->quant = std::make_unique<fb::QuantT>();
      t->quant->bits = static_cast<uint8_t>(q.bits);
      t->quant->is_signed = q.is_signed;
      t->quant->scale = {q.scale};
    }
    w.model().tensors.push_back(std::move(t));
    return static_cast<int>(w.model().tensors.size() - 1);
  }

  // Weight of `rows` x K values at `bits` (32: float32), shape as given.
  int weight(const std::string& name, std::vector<int64_t> shape, int64_t rows, int64_t k, int bits) {
    auto t = std::make_unique<fb::TensorT>();
    t->name = name;
    t->shape = std::move(shape);
    if (bits != 2 && bits != 4 && bits != 8 && bits != 16 && bits != 32)
      throw std::invalid_argument(fmt::format("synthetic model: weight bits {} not supported", bits));
    std::vector<uint8_t> bytes;
    if (bits == 32) {
      t->dtype = fb::DataType::Float32;
      std::uniform_real_distribution<float> u(-0.1f, 0.1f);
      bytes.resize(static_cast<size_t>(rows * k) * 4);
      for (int64_t i = 0; i < rows * k; ++i) {
        const float v = u(rng);
        std::memcpy(bytes.data() + 4 * i, &v, 4);
      }
    } else {
      t->dtype = fb::DataType::Quantized;
      t->quant = std::make_unique<fb::QuantT>();
      t->quant->bits = static_cast<uint8_t>(bits);
      t->quant->is_signed = true;
      t->quant->axis = 0;
      t->quant->scale.assign(static_cast<size_t>(rows), 0.01f);
      const size_t rb = bbits::packed_row_bytes(k, bits);
      bytes.assign(static_cast<size_t>(rows) * rb, 0);
      std::uniform_int_distribution<int32_t> u(static_cast<int32_t>(bbits::qmin(bits, true)),
                                               static_cast<int32_t>(bbits::qmax(bits, true)));
      std::vector<int32_t> row(static_cast<size_t>(k));
      for (int64_t r = 0; r < rows; ++r) {
        for (auto& v : row) v = u(rng);
        bbits::pack_row(row.data(), k, bits, bytes.data() + static_cast<size_t>(r) * rb);
      }
    }
    t->buffer = w.add_buffer(std::move(bytes));
    w.model().tensors.push_back(std::move(t));
    return static_cast<int>(w.model().tensors.size() - 1);
  }

  int bias(const std::string& name, int64_t oc, bool integer) {
    auto t = std::make_unique<fb::TensorT>();
    t->name = name;
    t->shape = {oc};
    t->dtype = integer ? fb::DataType::Int32 : fb::DataType::Float32;
    std::vector<uint8_t> bytes(static_cast<size_t>(oc) * 4);
    std::uniform_int_distribution<int32_t> u(-100, 100);
    for (int64_t i = 0; i < oc; ++i) {
      if (integer) {
        const int32_t v = u(rng);
        std::memcpy(bytes.data() + 4 * i, &v, 4);
      } else {
        const float v = static_cast<float>(u(rng)) * 1e-3f;
        std::memcpy(bytes.data() + 4 * i, &v, 4);
      }
    }
    t->buffer = w.add_buffer(std::move(bytes));
    w.model().tensors.push_back(std::move(t));
    return static_cast<int>(w.model().tensors.size() - 1);
  }

  fb::OperatorT& op(const std::string& name, fb::OpType type, std::vector<int> in, std::vector<int> out) {
    auto o = std::make_unique<fb::OperatorT>();
    o->name = name;
    o->type = type;
    o->inputs = std::move(in);
    o->outputs = std::move(out);
    w.model().operators.push_back(std::move(o));
    return *w.model().operators.back();
  }

  static fb::Activation fb_act(kernels::Activation a) {
    return a == kernels::Activation::Relu ? fb::Activation::Relu
           : a == kernels::Activation::Relu6 ? fb::Activation::Relu6
                                             : fb::Activation::None;
  }

  // Adds a conv reading tensor x; returns its output tensor.
  int conv(const std::string& name, int x, const kernels::ConvDesc& d) {
    const int64_t cig = d.C / d.groups;
    const int wt = weight(name + ".weight", {d.OC, d.KH, d.KW, cig}, d.OC, d.KH * d.KW * cig, d.wbits);
    const bool integer = d.wbits != 32 && !d.in.is_float();
    const int bt = bias(name + ".bias", d.OC, integer);
    const int y = act(name + ".out", {d.N, d.OC, d.out_h(), d.out_w()}, d.out);
    auto& o = op(name, fb::OpType::Conv2D, {x, wt, bt}, {y});
    fb::Conv2DOptionsT opt;
    opt.stride_h = d.stride_h;
    opt.stride_w = d.stride_w;
    opt.pad_top = d.pad_top;
    opt.pad_left = d.pad_left;
    opt.pad_bottom = d.pad_bottom;
    opt.pad_right = d.pad_right;
    opt.dilation_h = d.dilation_h;
    opt.dilation_w = d.dilation_w;
    opt.groups = d.groups;
    opt.activation = fb_act(d.activation);
    o.options.Set(opt);
    o.macs = d.macs();
    o.macs_unpruned = d.macs();
    o.weight_bytes = cost::weight_bytes(d.OC, d.KH * d.KW * cig, d.wbits);
    o.bops = cost::bops(d.macs(), d.wbits, d.in.bits);
    return y;
  }

  int fc(const std::string& name, int x, const kernels::FcDesc& d) {
    const int wt = weight(name + ".weight", {d.OC, d.K}, d.OC, d.K, d.wbits);
    const bool integer = d.wbits != 32 && !d.in.is_float();
    const int bt = bias(name + ".bias", d.OC, integer);
    const int y = act(name + ".out", {d.N, d.OC}, d.out);
    auto& o = op(name, fb::OpType::FullyConnected, {x, wt, bt}, {y});
    fb::FullyConnectedOptionsT opt;
    opt.activation = fb_act(d.activation);
    o.options.Set(opt);
    o.macs = d.macs();
    o.macs_unpruned = d.macs();
    o.weight_bytes = cost::weight_bytes(d.OC, d.K, d.wbits);
    o.bops = cost::bops(d.macs(), d.wbits, d.in.bits);
    return y;
  }

  std::vector<uint8_t> finish(int input, int output) {
    w.model().inputs = {input};
    w.model().outputs = {output};
    return w.serialize();
  }
};

}  // namespace

std::vector<uint8_t> single_conv_model(const kernels::ConvDesc& d, uint32_t seed) {
  kernels::check_desc(d);
  Builder b(seed);
  const int x = b.act("input", {d.N, d.C, d.H, d.W}, d.in);
  const int y = b.conv("conv", x, d);
  return b.finish(x, y);
}

std::vector<uint8_t> single_fc_model(const kernels::FcDesc& d, uint32_t seed) {
  kernels::check_desc(d);
  Builder b(seed);
  const int x = b.act("input", {d.N, d.K}, d.in);
  const int y = b.fc("fc", x, d);
  return b.finish(x, y);
}

std::vector<uint8_t> single_op_model(const kernels::OpDesc& desc, uint32_t seed) {
  kernels::check_desc(desc);
  if (const auto* c = std::get_if<kernels::ConvDesc>(&desc)) return single_conv_model(*c, seed);
  if (const auto* f = std::get_if<kernels::FcDesc>(&desc)) return single_fc_model(*f, seed);
  Builder b(seed);
  if (const auto* p = std::get_if<kernels::PoolDesc>(&desc)) {
    const int x = b.act("input", {p->N, p->C, p->H, p->W}, p->in);
    const int y = b.act("pool.out", {p->N, p->C, p->out_h(), p->out_w()}, p->out);
    if (p->kind == kernels::PoolKind::GlobalAvg) {
      b.op("pool", fb::OpType::GlobalAvgPool, {x}, {y});
    } else {
      auto& o = b.op("pool", p->kind == kernels::PoolKind::Max ? fb::OpType::MaxPool2D : fb::OpType::AvgPool2D, {x}, {y});
      fb::Pool2DOptionsT po;
      po.kernel_h = p->KH;
      po.kernel_w = p->KW;
      po.stride_h = p->stride_h;
      po.stride_w = p->stride_w;
      po.pad_top = p->pad_top;
      po.pad_left = p->pad_left;
      po.pad_bottom = p->pad_bottom;
      po.pad_right = p->pad_right;
      po.count_include_pad = p->count_include_pad;
      o.options.Set(po);
    }
    return b.finish(x, y);
  }
  if (const auto* a = std::get_if<kernels::AddDesc>(&desc)) {
    const int xa = b.act("a", {1, a->count}, a->a);
    const int xb_src = b.act("b", {1, a->count}, a->b);  // both operands are model inputs
    const int y = b.act("add.out", {1, a->count}, a->out);
    auto& o = b.op("add", fb::OpType::Add, {xa, xb_src}, {y});
    fb::AddOptionsT ao;
    ao.activation = Builder::fb_act(a->activation);
    o.options.Set(ao);
    b.w.model().inputs = {xa, xb_src};
    b.w.model().outputs = {y};
    return b.w.serialize();
  }
  if (const auto* r = std::get_if<kernels::ActivationDesc>(&desc)) {
    const int x = b.act("input", {1, r->count}, r->in);
    const int y = b.act("act.out", {1, r->count}, r->out);
    b.op("act", r->act == kernels::Activation::Relu6 ? fb::OpType::Relu6 : fb::OpType::Relu, {x}, {y});
    return b.finish(x, y);
  }
  if (const auto* r = std::get_if<kernels::ReshapeDesc>(&desc)) {
    const int x = b.act("input", {r->N, r->C, r->H, r->W}, r->in);
    const int y = b.act("flatten.out", {r->N, r->C * r->H * r->W}, r->out);
    auto& o = b.op("flatten", fb::OpType::Reshape, {x}, {y});
    fb::ReshapeOptionsT ro;
    ro.shape = {r->N, r->C * r->H * r->W};
    o.options.Set(ro);
    return b.finish(x, y);
  }
  if (const auto* s = std::get_if<kernels::SoftmaxDesc>(&desc)) {
    const int x = b.act("input", {s->outer, s->axis_size}, s->in);
    const int y = b.act("softmax.out", {s->outer, s->axis_size}, s->out);
    auto& o = b.op("softmax", fb::OpType::Softmax, {x}, {y});
    fb::SoftmaxOptionsT so;
    so.axis = -1;
    o.options.Set(so);
    return b.finish(x, y);
  }
  if (const auto* c = std::get_if<kernels::ConcatDesc>(&desc)) {
    std::vector<int> ins;
    int64_t total = 0;
    for (size_t i = 0; i < c->sizes.size(); ++i) {
      ins.push_back(b.act(fmt::format("in{}", i), {1, c->sizes[i], 1, c->outer}, c->in[i]));
      total += c->sizes[i];
    }
    const int y = b.act("concat.out", {1, total, 1, c->outer}, c->out);
    auto& o = b.op("concat", fb::OpType::Concat, ins, {y});
    fb::ConcatOptionsT co;
    co.axis = 1;
    o.options.Set(co);
    b.w.model().inputs = ins;
    b.w.model().outputs = {y};
    return b.w.serialize();
  }
  throw std::invalid_argument("single_op_model: unsupported operator");
}

std::vector<uint8_t> tiny_test_model(uint32_t seed) {
  Builder b(seed);
  const kernels::QuantInfo u8{8, false, 0.02f};
  const int x = b.act("input", {1, 3, 16, 16}, u8);
  kernels::ConvDesc c1;
  c1.H = c1.W = 16;
  c1.C = 3;
  c1.OC = 8;
  c1.KH = c1.KW = 3;
  c1.pad_top = c1.pad_left = c1.pad_bottom = c1.pad_right = 1;
  c1.wbits = 8;
  c1.in = u8;
  c1.out = {8, false, 0.05f};
  c1.activation = kernels::Activation::Relu;
  const int y1 = b.conv("conv1", x, c1);

  const int y2 = b.act("pool.out", {1, 8, 8, 8}, c1.out);
  auto& pool = b.op("pool", fb::OpType::MaxPool2D, {y1}, {y2});
  fb::Pool2DOptionsT po;
  po.kernel_h = po.kernel_w = 2;
  po.stride_h = po.stride_w = 2;
  pool.options.Set(po);

  kernels::ConvDesc dw;
  dw.H = dw.W = 8;
  dw.C = dw.OC = 8;
  dw.groups = 8;
  dw.KH = dw.KW = 3;
  dw.pad_top = dw.pad_left = dw.pad_bottom = dw.pad_right = 1;
  dw.wbits = 4;
  dw.in = c1.out;
  dw.out = {8, false, 0.05f};
  dw.activation = kernels::Activation::Relu6;
  const int y3 = b.conv("dw", y2, dw);

  kernels::ConvDesc pw;
  pw.H = pw.W = 8;
  pw.C = pw.OC = 8;
  pw.wbits = 2;
  pw.in = dw.out;
  pw.out = {8, false, 0.05f};
  pw.activation = kernels::Activation::Relu;
  const int y4 = b.conv("pw", y3, pw);

  const int y5 = b.act("add.out", {1, 8, 8, 8}, {8, false, 0.1f});
  auto& add = b.op("add", fb::OpType::Add, {y4, y2}, {y5});
  fb::AddOptionsT ao;
  ao.activation = fb::Activation::Relu;
  add.options.Set(ao);

  const int y6 = b.act("gap.out", {1, 8, 1, 1}, {8, false, 0.1f});
  b.op("gap", fb::OpType::GlobalAvgPool, {y5}, {y6});

  const int y7 = b.act("flatten.out", {1, 8}, {8, false, 0.1f});
  auto& rs = b.op("flatten", fb::OpType::Reshape, {y6}, {y7});
  fb::ReshapeOptionsT ro;
  ro.shape = {1, 8};
  rs.options.Set(ro);

  kernels::FcDesc f;
  f.K = 8;
  f.OC = 10;
  f.wbits = 8;
  f.in = {8, false, 0.1f};
  f.out = {32, true, 1.0f};
  const int y8 = b.fc("fc", y7, f);

  const int y9 = b.act("softmax.out", {1, 10}, {32, true, 1.0f});
  auto& sm = b.op("softmax", fb::OpType::Softmax, {y8}, {y9});
  fb::SoftmaxOptionsT so;
  so.axis = -1;
  sm.options.Set(so);
  return b.finish(x, y9);
}

}  // namespace bbits::bench
