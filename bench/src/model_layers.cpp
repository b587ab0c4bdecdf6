#include "bbits/bench/model_layers.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "bbits/bench/report.h"
#include "bbits/format/cost.h"

namespace bbits::bench {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

std::vector<int64_t> shape_of(const fb::Tensor* t) {
  std::vector<int64_t> s;
  if (t && t->shape()) s.assign(t->shape()->begin(), t->shape()->end());
  return s;
}

kernels::Activation to_act(fb::Activation a) {
  switch (a) {
    case fb::Activation::Relu: return kernels::Activation::Relu;
    case fb::Activation::Relu6: return kernels::Activation::Relu6;
    default: return kernels::Activation::None;
  }
}

// (outer, axis size, inner) of an axis of an N,C,H,W / N,F tensor held as N,H,W,C.
void split_axis(const std::vector<int64_t>& s, int axis, int64_t& outer, int64_t& size, int64_t& inner) {
  const int rank = static_cast<int>(s.size());
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) fail(fmt::format("axis {} out of range for a {}-D tensor", axis, rank));
  std::vector<int64_t> stored = s;
  int a = axis;
  if (rank == 4) {
    stored = {s[0], s[2], s[3], s[1]};
    static constexpr int kMap[4] = {0, 3, 1, 2};
    a = kMap[axis];
  }
  outer = 1;
  inner = 1;
  for (int i = 0; i < a; ++i) outer *= stored[static_cast<size_t>(i)];
  for (int i = a + 1; i < rank; ++i) inner *= stored[static_cast<size_t>(i)];
  size = stored[static_cast<size_t>(a)];
}

void need_rank(const std::vector<int64_t>& s, size_t rank, const char* what) {
  if (s.size() != rank) fail(fmt::format("{} must be {}-D, is {}-D", what, rank, s.size()));
}

}  // namespace

kernels::QuantInfo quant_of(const fb::Tensor& t) {
  kernels::QuantInfo q;
  if (t.dtype() == fb::DataType::Quantized && t.quant()) {
    q.bits = t.quant()->bits();
    q.is_signed = t.quant()->is_signed();
    q.scale = (t.quant()->scale() && t.quant()->scale()->size() > 0) ? t.quant()->scale()->Get(0) : 1.0f;
  } else {
    q.bits = 32;
    q.is_signed = true;
    q.scale = 1.0f;
  }
  return q;
}

kernels::Weights ModelLayer::weights() const {
  kernels::Weights w;
  w.data = weight_data.data();
  w.size = weight_data.size();
  w.scales = w_scales;
  w.bias_q = bias_q;
  w.bias_f = bias_f;
  return w;
}

LayerCost ModelLayer::cost() const {
  LayerCost c;
  const kernels::OpKind k = kernels::op_kind(desc);
  if (k == kernels::OpKind::Conv2D || k == kernels::OpKind::FullyConnected) {
    c.macs = kernels::op_work(desc);
    c.wbits = kernels::weight_bits(desc);
    c.weight_bytes = static_cast<int64_t>(weight_data.size() + 4 * std::max(bias_q.size(), bias_f.size()));
  }
  c.work = kernels::op_work(desc);
  c.macs_unpruned = macs_unpruned > 0 ? macs_unpruned : c.macs;
  c.abits = kernels::input_bits(desc);
  for (int i = 0; i < kernels::num_inputs(desc); ++i)
    c.input_bytes += kernels::input_elements(desc, i) *
                     static_cast<int64_t>(kernels::element_bytes(kernels::input_quant(desc, i).bits));
  c.output_bytes = kernels::output_elements(desc) *
                   static_cast<int64_t>(kernels::element_bytes(kernels::output_quant(desc).bits));
  return c;
}

std::string ModelLayer::family() const {
  if (const auto* c = std::get_if<kernels::ConvDesc>(&desc)) {
    if (c->is_depthwise()) return "depthwise";
    if (c->KH == 1 && c->KW == 1 && c->groups == 1) return "pointwise";
    return "conv2d";
  }
  return op;
}

std::unique_ptr<ModelLayers> ModelLayers::load(const std::string& path) {
  const std::string bytes = read_text(path);
  return from_memory(bytes.data(), bytes.size(), path);
}

std::unique_ptr<ModelLayers> ModelLayers::from_memory(const void* data, size_t size, const std::string& label) {
  if (!data || size == 0) fail(label + ": empty model file");
  std::unique_ptr<ModelLayers> m(new ModelLayers());
  m->label_ = label;
  m->size_ = size;
  m->bytes_ = static_cast<uint8_t*>(std::aligned_alloc(64, (size + 63) / 64 * 64));
  if (!m->bytes_) fail(label + ": out of memory");
  std::memcpy(m->bytes_, data, size);
  try {
    m->view_ = format::verify_model(m->bytes_, size);
    m->build();
  } catch (const std::exception& e) {
    fail(fmt::format("{}: {}", label, e.what()));
  }
  return m;
}

ModelLayers::~ModelLayers() { std::free(bytes_); }

std::vector<int64_t> ModelLayers::tensor_shape(int t) const {
  return shape_of(view_.model->tensors()->Get(static_cast<flatbuffers::uoffset_t>(t)));
}

kernels::QuantInfo ModelLayers::tensor_quant(int t) const {
  return quant_of(*view_.model->tensors()->Get(static_cast<flatbuffers::uoffset_t>(t)));
}

void ModelLayers::build() {
  const fb::Model& m = *view_.model;
  auto tensor = [&](int i) { return m.tensors()->Get(static_cast<flatbuffers::uoffset_t>(i)); };
  for (flatbuffers::uoffset_t oi = 0; oi < m.operators()->size(); ++oi) {
    const fb::Operator& op = *m.operators()->Get(oi);
    ModelLayer L;
    L.index = static_cast<int>(oi);
    L.name = op.name() ? op.name()->str() : fmt::format("op{}", oi);
    L.op = format::op_type_name(op.type());
    try {
      const std::vector<int> in(op.inputs()->begin(), op.inputs()->end());
      const std::vector<int> out(op.outputs()->begin(), op.outputs()->end());
      if (in.empty() || out.empty()) fail("operator has no input or no output");
      const fb::Tensor* x = tensor(in[0]);
      const std::vector<int64_t> xs = shape_of(x), ys = shape_of(tensor(out[0]));
      const kernels::QuantInfo qin = quant_of(*x), qout = quant_of(*tensor(out[0]));
      L.output_tensor = out[0];
      L.input_tensors = {in[0]};
      auto constants = [&](int64_t oc) {
        const fb::Tensor* w = tensor(in[1]);
        L.weight_tensor = in[1];
        L.weight_data = view_.tensor_data(in[1]);
        if (w->dtype() == fb::DataType::Quantized && w->quant() && w->quant()->scale())
          L.w_scales.assign(w->quant()->scale()->begin(), w->quant()->scale()->end());
        if (in.size() > 2 && in[2] >= 0) {
          const auto b = view_.tensor_data(in[2]);
          if (static_cast<int64_t>(b.size()) != oc * 4) fail("bias size does not match the output channels");
          if (tensor(in[2])->dtype() == fb::DataType::Int32) {
            L.bias_q.resize(static_cast<size_t>(oc));
            std::memcpy(L.bias_q.data(), b.data(), b.size());
          } else {
            L.bias_f.resize(static_cast<size_t>(oc));
            std::memcpy(L.bias_f.data(), b.data(), b.size());
          }
        }
        L.macs_unpruned = op.macs_unpruned();
      };
      auto wbits = [&](const fb::Tensor* w) {
        if (w->dtype() == fb::DataType::Float32) return 32;
        return w->quant() ? static_cast<int>(w->quant()->bits()) : 8;
      };
      switch (op.type()) {
        case fb::OpType::Conv2D: {
          const auto* o = op.options_as_Conv2DOptions();
          if (!o || in.size() < 2) fail("convolution without options or weights");
          need_rank(xs, 4, "convolution input");
          const fb::Tensor* w = tensor(in[1]);
          const std::vector<int64_t> ws = shape_of(w);
          need_rank(ws, 4, "convolution weights");
          kernels::ConvDesc d;
          d.N = xs[0];
          d.C = xs[1];
          d.H = xs[2];
          d.W = xs[3];
          d.OC = ws[0];
          d.KH = ws[1];
          d.KW = ws[2];
          d.stride_h = o->stride_h();
          d.stride_w = o->stride_w();
          d.pad_top = o->pad_top();
          d.pad_left = o->pad_left();
          d.pad_bottom = o->pad_bottom();
          d.pad_right = o->pad_right();
          d.dilation_h = o->dilation_h();
          d.dilation_w = o->dilation_w();
          d.groups = o->groups();
          d.wbits = wbits(w);
          d.in = qin;
          d.out = qout;
          d.activation = to_act(o->activation());
          L.depthwise = d.is_depthwise();
          constants(d.OC);
          L.desc = d;
          break;
        }
        case fb::OpType::FullyConnected: {
          const auto* o = op.options_as_FullyConnectedOptions();
          if (in.size() < 2) fail("fully connected layer without weights");
          need_rank(xs, 2, "fully connected input");
          const fb::Tensor* w = tensor(in[1]);
          const std::vector<int64_t> ws = shape_of(w);
          need_rank(ws, 2, "fully connected weights");
          kernels::FcDesc d;
          d.N = xs[0];
          d.K = xs[1];
          d.OC = ws[0];
          d.wbits = wbits(w);
          d.in = qin;
          d.out = qout;
          d.activation = o ? to_act(o->activation()) : kernels::Activation::None;
          constants(d.OC);
          L.desc = d;
          break;
        }
        case fb::OpType::Relu:
        case fb::OpType::Relu6: {
          kernels::ActivationDesc d;
          d.count = format::shape_elements(xs);
          d.act = op.type() == fb::OpType::Relu ? kernels::Activation::Relu : kernels::Activation::Relu6;
          d.in = qin;
          d.out = qout;
          L.desc = d;
          break;
        }
        case fb::OpType::MaxPool2D:
        case fb::OpType::AvgPool2D:
        case fb::OpType::GlobalAvgPool: {
          need_rank(xs, 4, "pooling input");
          kernels::PoolDesc d;
          d.N = xs[0];
          d.C = xs[1];
          d.H = xs[2];
          d.W = xs[3];
          if (op.type() == fb::OpType::GlobalAvgPool) {
            d.kind = kernels::PoolKind::GlobalAvg;
            d.KH = static_cast<int>(d.H);
            d.KW = static_cast<int>(d.W);
          } else {
            const auto* o = op.options_as_Pool2DOptions();
            if (!o) fail("pooling without options");
            d.kind = op.type() == fb::OpType::MaxPool2D ? kernels::PoolKind::Max : kernels::PoolKind::Avg;
            d.KH = o->kernel_h();
            d.KW = o->kernel_w();
            d.stride_h = o->stride_h();
            d.stride_w = o->stride_w();
            d.pad_top = o->pad_top();
            d.pad_left = o->pad_left();
            d.pad_bottom = o->pad_bottom();
            d.pad_right = o->pad_right();
            d.count_include_pad = o->count_include_pad();
          }
          d.in = qin;
          d.out = qout;
          L.desc = d;
          break;
        }
        case fb::OpType::Add: {
          if (in.size() != 2) fail("add needs two inputs");
          const auto* o = op.options_as_AddOptions();
          kernels::AddDesc d;
          d.count = format::shape_elements(xs);
          d.a = qin;
          d.b = quant_of(*tensor(in[1]));
          d.out = qout;
          d.activation = o ? to_act(o->activation()) : kernels::Activation::None;
          L.input_tensors = in;
          L.desc = d;
          break;
        }
        case fb::OpType::Concat: {
          const auto* o = op.options_as_ConcatOptions();
          kernels::ConcatDesc d;
          for (int t : in) {
            int64_t outer = 1, size = 0, inner = 1;
            split_axis(shape_of(tensor(t)), o ? o->axis() : 1, outer, size, inner);
            d.outer = outer;
            d.inner = inner;
            d.sizes.push_back(size);
            d.in.push_back(quant_of(*tensor(t)));
          }
          d.out = qout;
          L.input_tensors = in;
          L.desc = d;
          break;
        }
        case fb::OpType::Reshape: {
          kernels::ReshapeDesc d;
          d.in = qin;
          d.out = qout;
          if (xs.size() == 4) {
            d.N = xs[0];
            d.C = xs[1];
            d.H = xs[2];
            d.W = xs[3];
            d.to_chw = ys.size() != 4;
          } else {
            d.C = format::shape_elements(xs);
          }
          L.desc = d;
          break;
        }
        case fb::OpType::Softmax: {
          const auto* o = op.options_as_SoftmaxOptions();
          kernels::SoftmaxDesc d;
          split_axis(xs, o ? o->axis() : -1, d.outer, d.axis_size, d.inner);
          d.in = qin;
          d.out = qout;
          L.desc = d;
          break;
        }
        default:
          fail("unknown operator type");
      }
      kernels::check_desc(L.desc);
    } catch (const std::exception& e) {
      fail(fmt::format("operator {} '{}' ({}): {}", oi, L.name, L.op, e.what()));
    }
    layers_.push_back(std::move(L));
  }
}

int64_t ModelLayers::total_macs() const {
  int64_t s = 0;
  for (const auto& l : layers_) s += l.cost().macs;
  return s;
}

int64_t ModelLayers::total_bops() const {
  int64_t s = 0;
  for (const auto& l : layers_) s += layer_bops(l.cost());
  return s;
}

int64_t ModelLayers::total_bops_fp32() const {
  int64_t s = 0;
  for (const auto& l : layers_) {
    const auto c = l.cost();
    if (c.macs > 0) s += cost::bops_fp32(c.macs_unpruned);
  }
  return s;
}

std::string ModelLayers::arch() const {
  const auto* md = view_.model->metadata();
  return md && md->training() && md->training()->arch() ? md->training()->arch()->str() : "";
}

std::string ModelLayers::method() const {
  const auto* md = view_.model->metadata();
  return md && md->training() && md->training()->method() ? md->training()->method()->str() : "";
}

double ModelLayers::accuracy() const {
  const auto* md = view_.model->metadata();
  return md && md->training() ? md->training()->accuracy() : -1.0;
}

}  // namespace bbits::bench
