// Semantic validation of a model table that already passed the FlatBuffers
// Verifier: every check names the tensor or operator it rejects.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "bbits/format/model_file.h"
#include "bbits/format/quant.h"

namespace bbits::format {

namespace {

// Largest element count we accept for one tensor (2^40): far above any real
// network, far below where byte counts could overflow 64 bits.
constexpr int64_t kMaxElements = int64_t{1} << 40;
constexpr int64_t kMaxDim = int64_t{1} << 31;

[[noreturn]] void fail(const std::string& msg) { throw FormatError(msg); }

std::string shape_str(std::span<const int64_t> s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

template <typename T>
size_t vsize(const flatbuffers::Vector<T>* v) {
  return v ? v->size() : 0;
}

struct Ctx {
  const fb::Model& m;
  size_t data_size;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<bool> is_const;

  const fb::Tensor* tensor(int idx) const { return m.tensors()->Get(static_cast<flatbuffers::uoffset_t>(idx)); }
  std::string tname(int idx) const {
    const auto* t = tensor(idx);
    return "tensor " + std::to_string(idx) + " '" + (t->name() ? t->name()->str() : "") + "'";
  }
};

void check_quant(const Ctx& c, int idx, const std::vector<int64_t>& shape) {
  const fb::Tensor* t = c.tensor(idx);
  const fb::Quant* q = t->quant();
  const std::string who = c.tname(idx);
  if (t->dtype() == fb::DataType::Quantized) {
    if (!q) fail(who + ": quantized tensor without quantization parameters");
    if (!is_integer_bits(q->bits()))
      fail(who + ": illegal bit width " + std::to_string(q->bits()) + " (quantized tensors use 2, 4, 8 or 16)");
  }
  if (!q) return;
  if (t->dtype() != fb::DataType::Quantized) {
    // Float/int32 tensors may record x_max (and, for int32 biases, the scale).
    if (q->bits() != 0 && q->bits() != 32)
      fail(who + ": non-quantized tensor declares bit width " + std::to_string(q->bits()));
  }
  const size_t ns = vsize(q->scale());
  if (t->dtype() == fb::DataType::Quantized && ns == 0) fail(who + ": quantized tensor has no scale");
  if (q->axis() < -1 || q->axis() >= static_cast<int>(shape.size()))
    fail(who + ": quantization axis " + std::to_string(q->axis()) + " out of range for shape " +
         shape_str(shape));
  if (ns > 0) {
    const size_t want = q->axis() < 0 ? 1 : static_cast<size_t>(shape[static_cast<size_t>(q->axis())]);
    if (ns != want)
      fail(who + ": " + std::to_string(ns) + " scales for " + std::to_string(want) +
           (q->axis() < 0 ? " (per-tensor)" : " channels along axis " + std::to_string(q->axis())));
    for (size_t i = 0; i < ns; ++i) {
      const float s = q->scale()->Get(static_cast<flatbuffers::uoffset_t>(i));
      if (!std::isfinite(s) || !(s > 0.0f)) fail(who + ": scale " + std::to_string(i) + " is not a positive finite number");
    }
  }
  for (size_t i = 0; i < vsize(q->zero_point()); ++i)
    if (q->zero_point()->Get(static_cast<flatbuffers::uoffset_t>(i)) != 0)
      fail(who + ": non-zero zero point (bbits grids are symmetric or start at zero)");
  if (vsize(q->zero_point()) > 1 && vsize(q->zero_point()) != ns)
    fail(who + ": zero point count does not match scale count");
  for (size_t i = 0; i < vsize(q->x_max()); ++i) {
    const float x = q->x_max()->Get(static_cast<flatbuffers::uoffset_t>(i));
    if (!std::isfinite(x) || x < 0.0f) fail(who + ": x_max is not a finite non-negative number");
  }
}

int64_t out_dim(int64_t in, int64_t k, int64_t stride, int64_t pad0, int64_t pad1, int64_t dil) {
  const int64_t eff = dil * (k - 1) + 1;
  const int64_t span = in + pad0 + pad1 - eff;
  if (span < 0) return -1;
  return span / stride + 1;
}

void expect_shape(const Ctx& c, const std::string& op, int t, const std::vector<int64_t>& want) {
  if (c.shapes[static_cast<size_t>(t)] != want)
    fail(op + ": " + c.tname(t) + " has shape " + shape_str(c.shapes[static_cast<size_t>(t)]) +
         ", expected " + shape_str(want));
}

void check_activation_dtype(const Ctx& c, const std::string& op, int t) {
  const auto dt = c.tensor(t)->dtype();
  if (dt != fb::DataType::Quantized && dt != fb::DataType::Float32)
    fail(op + ": " + c.tname(t) + " must be quantized or float32");
}

void check_keep_mask(const Ctx& c, const fb::Operator* o, const std::string& who, int64_t rows) {
  const auto* km = o->keep_mask();
  if (!km || km->size() == 0) return;
  int64_t kept = 0;
  for (auto v : *km) {
    if (v > 1) fail(who + ": keep_mask entries must be 0 or 1");
    kept += v;
  }
  if (o->channels_removed()) {
    if (kept != rows)
      fail(who + ": keep_mask keeps " + std::to_string(kept) + " channels but the weight has " +
           std::to_string(rows) + " rows");
  } else if (static_cast<int64_t>(km->size()) != rows) {
    fail(who + ": keep_mask has " + std::to_string(km->size()) + " entries for " + std::to_string(rows) +
         " weight rows (channels kept in place)");
  }
  (void)c;
}

void check_pruned_rows(const fb::Operator* o, const std::string& who, int64_t rows) {
  const auto* pr = o->pruned_rows();
  if (!pr || pr->size() == 0) return;
  if (!o->channels_removed() || !o->keep_mask() || o->keep_mask()->size() == 0)
    fail(who + ": pruned_rows needs channels_removed and a keep_mask");
  int64_t last = -1;
  for (int32_t r : *pr) {
    if (r <= last || r >= rows)
      fail(who + ": pruned_rows must be ascending weight rows below " + std::to_string(rows) + ", has " +
           std::to_string(r));
    last = r;
  }
}

void check_weight_bias(const Ctx& c, const std::string& who, int w, int b, int64_t rows) {
  if (!c.is_const[static_cast<size_t>(w)]) fail(who + ": weight " + c.tname(w) + " has no data buffer");
  const auto wdt = c.tensor(w)->dtype();
  if (wdt != fb::DataType::Quantized && wdt != fb::DataType::Float32)
    fail(who + ": weight " + c.tname(w) + " must be quantized or float32");
  if (wdt == fb::DataType::Quantized && !c.tensor(w)->quant()->is_signed())
    fail(who + ": weight " + c.tname(w) + " must be on a signed grid");
  if (b >= 0) {
    if (!c.is_const[static_cast<size_t>(b)]) fail(who + ": bias " + c.tname(b) + " has no data buffer");
    const auto bdt = c.tensor(b)->dtype();
    if (bdt != fb::DataType::Int32 && bdt != fb::DataType::Float32)
      fail(who + ": bias " + c.tname(b) + " must be int32 or float32");
    expect_shape(c, who, b, {rows});
  }
}

const char* act_name(fb::Activation a) {
  switch (a) {
    case fb::Activation::None: return "none";
    case fb::Activation::Relu: return "relu";
    case fb::Activation::Relu6: return "relu6";
  }
  return "?";
}

void check_operator(Ctx& c, size_t oi, std::vector<int>& producer) {
  const fb::Operator* o = c.m.operators()->Get(static_cast<flatbuffers::uoffset_t>(oi));
  const std::string who = "operator " + std::to_string(oi) + " '" + (o->name() ? o->name()->str() : "") +
                          "' (" + op_type_name(o->type()) + ")";
  const int ntensors = static_cast<int>(c.m.tensors()->size());
  const auto* ins = o->inputs();
  const auto* outs = o->outputs();
  std::vector<int> in(ins->begin(), ins->end());
  std::vector<int> out(outs->begin(), outs->end());
  const auto t = o->type();
  if (static_cast<int>(t) < 0 || t > fb::OpType::MAX) fail(who + ": unknown operator type");

  auto need_counts = [&](size_t nin_min, size_t nin_max, size_t nout) {
    if (in.size() < nin_min || in.size() > nin_max)
      fail(who + ": takes " + std::to_string(nin_min) + (nin_min != nin_max ? ".." + std::to_string(nin_max) : "") +
           " inputs, has " + std::to_string(in.size()));
    if (out.size() != nout) fail(who + ": takes " + std::to_string(nout) + " outputs, has " + std::to_string(out.size()));
  };
  switch (t) {
    case fb::OpType::Conv2D:
    case fb::OpType::FullyConnected: need_counts(2, 3, 1); break;
    case fb::OpType::Add: need_counts(2, 2, 1); break;
    case fb::OpType::Concat: need_counts(1, 1024, 1); break;
    default: need_counts(1, 1, 1); break;
  }
  for (size_t i = 0; i < in.size(); ++i) {
    const bool optional_bias = (t == fb::OpType::Conv2D || t == fb::OpType::FullyConnected) && i == 2;
    if (in[i] == -1 && optional_bias) continue;
    if (in[i] < 0 || in[i] >= ntensors) fail(who + ": input index " + std::to_string(in[i]) + " out of range");
  }
  for (int x : out)
    if (x < 0 || x >= ntensors) fail(who + ": output index " + std::to_string(x) + " out of range");

  // Data flow: activation inputs must exist before this operator.
  const size_t n_act_inputs = (t == fb::OpType::Conv2D || t == fb::OpType::FullyConnected) ? 1 : in.size();
  for (size_t i = 0; i < n_act_inputs; ++i) {
    const int x = in[i];
    if (c.is_const[static_cast<size_t>(x)]) fail(who + ": activation input " + c.tname(x) + " is a constant");
    if (producer[static_cast<size_t>(x)] == -2)
      fail(who + ": input " + c.tname(x) + " is neither a model input nor produced by an earlier operator");
    check_activation_dtype(c, who, x);
  }
  for (int x : out) {
    if (c.is_const[static_cast<size_t>(x)]) fail(who + ": output " + c.tname(x) + " is a constant");
    if (producer[static_cast<size_t>(x)] != -2) fail(who + ": output " + c.tname(x) + " is written twice");
    producer[static_cast<size_t>(x)] = static_cast<int>(oi);
    check_activation_dtype(c, who, x);
  }

  const auto& is = c.shapes[static_cast<size_t>(in[0])];
  switch (t) {
    case fb::OpType::Conv2D: {
      const auto* op = o->options_as_Conv2DOptions();
      if (!op) fail(who + ": missing Conv2DOptions");
      if (is.size() != 4) fail(who + ": input must be N,C,H,W, has shape " + shape_str(is));
      const int w = in[1];
      const int b = in.size() > 2 ? in[2] : -1;
      const auto& ws = c.shapes[static_cast<size_t>(w)];
      if (ws.size() != 4) fail(who + ": weight must be O,KH,KW,I/groups, has shape " + shape_str(ws));
      if (op->stride_h() < 1 || op->stride_w() < 1 || op->dilation_h() < 1 || op->dilation_w() < 1 ||
          op->groups() < 1 || op->pad_top() < 0 || op->pad_left() < 0 || op->pad_bottom() < 0 || op->pad_right() < 0)
        fail(who + ": stride, dilation and groups must be >= 1 and padding >= 0");
      const int64_t g = op->groups();
      if (is[1] % g != 0) fail(who + ": " + std::to_string(is[1]) + " input channels not divisible by groups " + std::to_string(g));
      if (ws[3] != is[1] / g)
        fail(who + ": weight has " + std::to_string(ws[3]) + " input channels per group, input gives " +
             std::to_string(is[1] / g));
      if (ws[0] % g != 0) fail(who + ": output channels " + std::to_string(ws[0]) + " not divisible by groups");
      check_weight_bias(c, who, w, b, ws[0]);
      check_keep_mask(c, o, who, ws[0]);
      check_pruned_rows(o, who, ws[0]);
      const int64_t oh = out_dim(is[2], ws[1], op->stride_h(), op->pad_top(), op->pad_bottom(), op->dilation_h());
      const int64_t ow = out_dim(is[3], ws[2], op->stride_w(), op->pad_left(), op->pad_right(), op->dilation_w());
      if (oh < 1 || ow < 1) fail(who + ": kernel larger than the padded input");
      expect_shape(c, who, out[0], {is[0], ws[0], oh, ow});
      if (op->activation() > fb::Activation::MAX) fail(who + ": unknown activation");
      (void)act_name;
      break;
    }
    case fb::OpType::FullyConnected: {
      if (!o->options_as_FullyConnectedOptions()) fail(who + ": missing FullyConnectedOptions");
      if (is.size() != 2) fail(who + ": input must be N,K, has shape " + shape_str(is));
      const int w = in[1];
      const int b = in.size() > 2 ? in[2] : -1;
      const auto& ws = c.shapes[static_cast<size_t>(w)];
      if (ws.size() != 2) fail(who + ": weight must be O,K, has shape " + shape_str(ws));
      if (ws[1] != is[1])
        fail(who + ": weight reads " + std::to_string(ws[1]) + " inputs, input has " + std::to_string(is[1]));
      check_weight_bias(c, who, w, b, ws[0]);
      check_keep_mask(c, o, who, ws[0]);
      check_pruned_rows(o, who, ws[0]);
      expect_shape(c, who, out[0], {is[0], ws[0]});
      break;
    }
    case fb::OpType::Relu:
    case fb::OpType::Relu6:
    case fb::OpType::Softmax:
      expect_shape(c, who, out[0], is);
      break;
    case fb::OpType::MaxPool2D:
    case fb::OpType::AvgPool2D: {
      const auto* op = o->options_as_Pool2DOptions();
      if (!op) fail(who + ": missing Pool2DOptions");
      if (is.size() != 4) fail(who + ": input must be N,C,H,W, has shape " + shape_str(is));
      if (op->kernel_h() < 1 || op->kernel_w() < 1 || op->stride_h() < 1 || op->stride_w() < 1 ||
          op->pad_top() < 0 || op->pad_left() < 0 || op->pad_bottom() < 0 || op->pad_right() < 0)
        fail(who + ": kernel and stride must be >= 1 and padding >= 0");
      if (op->pad_top() >= op->kernel_h() || op->pad_bottom() >= op->kernel_h() ||
          op->pad_left() >= op->kernel_w() || op->pad_right() >= op->kernel_w())
        fail(who + ": padding must be smaller than the pooling window");
      const int64_t oh = out_dim(is[2], op->kernel_h(), op->stride_h(), op->pad_top(), op->pad_bottom(), 1);
      const int64_t ow = out_dim(is[3], op->kernel_w(), op->stride_w(), op->pad_left(), op->pad_right(), 1);
      if (oh < 1 || ow < 1) fail(who + ": window larger than the padded input");
      expect_shape(c, who, out[0], {is[0], is[1], oh, ow});
      break;
    }
    case fb::OpType::GlobalAvgPool: {
      if (is.size() != 4) fail(who + ": input must be N,C,H,W, has shape " + shape_str(is));
      const auto& os = c.shapes[static_cast<size_t>(out[0])];
      if (os != std::vector<int64_t>{is[0], is[1], 1, 1} && os != std::vector<int64_t>{is[0], is[1]})
        fail(who + ": output shape " + shape_str(os) + ", expected " + shape_str(std::vector<int64_t>{is[0], is[1], 1, 1}));
      break;
    }
    case fb::OpType::Add: {
      if (!o->options_as_AddOptions()) fail(who + ": missing AddOptions");
      expect_shape(c, who, in[1], is);
      expect_shape(c, who, out[0], is);
      break;
    }
    case fb::OpType::Concat: {
      const auto* op = o->options_as_ConcatOptions();
      if (!op) fail(who + ": missing ConcatOptions");
      const int rank = static_cast<int>(is.size());
      int axis = op->axis();
      if (axis < 0) axis += rank;
      if (axis < 0 || axis >= rank) fail(who + ": concat axis out of range");
      std::vector<int64_t> want = is;
      want[static_cast<size_t>(axis)] = 0;
      for (int x : in) {
        const auto& s = c.shapes[static_cast<size_t>(x)];
        if (static_cast<int>(s.size()) != rank) fail(who + ": inputs of different rank");
        for (int d = 0; d < rank; ++d)
          if (d != axis && s[static_cast<size_t>(d)] != is[static_cast<size_t>(d)])
            fail(who + ": input " + c.tname(x) + " shape " + shape_str(s) + " does not match " + shape_str(is));
        want[static_cast<size_t>(axis)] += s[static_cast<size_t>(axis)];
      }
      expect_shape(c, who, out[0], want);
      break;
    }
    case fb::OpType::Reshape: {
      const auto& os = c.shapes[static_cast<size_t>(out[0])];
      if (shape_elements(os) != shape_elements(is))
        fail(who + ": reshape from " + shape_str(is) + " to " + shape_str(os) + " changes the element count");
      if (const auto* op = o->options_as_ReshapeOptions(); op && op->shape() && op->shape()->size() > 0) {
        std::vector<int64_t> s(op->shape()->begin(), op->shape()->end());
        if (s != os) fail(who + ": options say shape " + shape_str(s) + ", output tensor has " + shape_str(os));
      }
      break;
    }
  }
  // Pass-through operators keep their input's grid.
  if (t == fb::OpType::MaxPool2D || t == fb::OpType::Reshape) {
    const auto* a = c.tensor(in[0]);
    const auto* b = c.tensor(out[0]);
    if (a->dtype() != b->dtype()) fail(who + ": output element type differs from the input's");
  }
}

}  // namespace

int64_t shape_elements(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("negative dimension " + std::to_string(d));
    if (d > kMaxDim) fail("dimension " + std::to_string(d) + " too large");
    if (d != 0 && n > kMaxElements / d) fail("shape " + shape_str(shape) + ": element count overflows");
    n *= d;
  }
  return n;
}

int64_t expected_constant_bytes(fb::DataType dtype, int bits, std::span<const int64_t> shape) {
  const int64_t n = shape_elements(shape);
  if (dtype == fb::DataType::Quantized) {
    if (!is_integer_bits(bits)) fail("illegal bit width " + std::to_string(bits));
    if (shape.empty()) return static_cast<int64_t>(packed_row_bytes(1, bits));
    const int64_t rows = shape[0];
    const int64_t k = rows == 0 ? 0 : n / rows;
    return rows * static_cast<int64_t>(packed_row_bytes(k, bits));
  }
  return n * 4;
}

const char* op_type_name(fb::OpType t) {
  switch (t) {
    case fb::OpType::Conv2D: return "conv2d";
    case fb::OpType::FullyConnected: return "fully_connected";
    case fb::OpType::Relu: return "relu";
    case fb::OpType::Relu6: return "relu6";
    case fb::OpType::MaxPool2D: return "max_pool2d";
    case fb::OpType::AvgPool2D: return "avg_pool2d";
    case fb::OpType::GlobalAvgPool: return "global_avg_pool";
    case fb::OpType::Add: return "add";
    case fb::OpType::Concat: return "concat";
    case fb::OpType::Reshape: return "reshape";
    case fb::OpType::Softmax: return "softmax";
  }
  return "unknown";
}

void validate_model(const fb::Model& m, size_t data_size) {
  if (m.schema_version() != kSchemaVersion)
    fail("model table schema version " + std::to_string(m.schema_version()) + ", expected " +
         std::to_string(kSchemaVersion));
  if (!m.tensors() || !m.operators() || !m.inputs() || !m.outputs())
    fail("model is missing tensors, operators, inputs or outputs");
  const size_t nt = m.tensors()->size();
  if (nt == 0) fail("model has no tensors");
  if (nt > (size_t{1} << 24)) fail("model has too many tensors");
  if (m.inputs()->size() == 0) fail("model has no inputs");
  if (m.outputs()->size() == 0) fail("model has no outputs");

  // Buffers.
  const size_t nb = vsize(m.buffers());
  for (size_t i = 0; i < nb; ++i) {
    const fb::Buffer* b = m.buffers()->Get(static_cast<flatbuffers::uoffset_t>(i));
    if (b->offset() % kAlignment != 0)
      fail("buffer " + std::to_string(i) + ": offset " + std::to_string(b->offset()) + " is not 64-byte aligned");
    if (b->offset() > data_size || b->size() > data_size - b->offset())
      fail("buffer " + std::to_string(i) + ": bytes [" + std::to_string(b->offset()) + ", +" +
           std::to_string(b->size()) + ") lie outside the " + std::to_string(data_size) + "-byte data section");
  }

  Ctx c{m, data_size, {}, {}};
  c.shapes.resize(nt);
  c.is_const.resize(nt);
  for (size_t i = 0; i < nt; ++i) {
    const fb::Tensor* t = m.tensors()->Get(static_cast<flatbuffers::uoffset_t>(i));
    const int idx = static_cast<int>(i);
    const std::string who = c.tname(idx);
    std::vector<int64_t> s(t->shape()->begin(), t->shape()->end());
    if (s.empty()) fail(who + ": tensor has no dimensions");
    if (s.size() > 8) fail(who + ": rank " + std::to_string(s.size()) + " is too large");
    int64_t n;
    try {
      n = shape_elements(s);
    } catch (const FormatError& e) {
      fail(who + ": " + e.what());
    }
    if (n == 0) fail(who + ": zero-size tensor " + shape_str(s));
    if (static_cast<int>(t->dtype()) > static_cast<int>(fb::DataType::MAX)) fail(who + ": unknown element type");
    check_quant(c, idx, s);
    c.shapes[i] = s;
    c.is_const[i] = t->buffer() >= 0;
    if (t->buffer() < -1) fail(who + ": buffer index " + std::to_string(t->buffer()) + " is negative");
    if (t->buffer() >= 0) {
      if (static_cast<size_t>(t->buffer()) >= nb)
        fail(who + ": buffer index " + std::to_string(t->buffer()) + " out of range (" + std::to_string(nb) +
             " buffers)");
      const int bits = t->quant() ? t->quant()->bits() : 32;
      const int64_t want = expected_constant_bytes(t->dtype(), bits, s);
      const uint64_t have = m.buffers()->Get(static_cast<flatbuffers::uoffset_t>(t->buffer()))->size();
      if (static_cast<uint64_t>(want) != have)
        fail(who + ": buffer holds " + std::to_string(have) + " bytes, shape " + shape_str(s) + " at " +
             (t->dtype() == fb::DataType::Quantized ? std::to_string(bits) + " bits" : std::string("32 bits")) +
             " needs " + std::to_string(want));
    }
  }

  // Graph: -2 = not yet produced, -1 = model input, >= 0 = producing operator.
  std::vector<int> producer(nt, -2);
  for (auto x : *m.inputs()) {
    if (x < 0 || static_cast<size_t>(x) >= nt) fail("model input index " + std::to_string(x) + " out of range");
    if (c.is_const[static_cast<size_t>(x)]) fail("model input " + c.tname(x) + " is a constant");
    if (producer[static_cast<size_t>(x)] != -2) fail("model input " + c.tname(x) + " listed twice");
    producer[static_cast<size_t>(x)] = -1;
    if (c.tensor(x)->dtype() != fb::DataType::Quantized && c.tensor(x)->dtype() != fb::DataType::Float32)
      fail("model input " + c.tname(x) + " must be quantized or float32");
  }
  for (size_t oi = 0; oi < m.operators()->size(); ++oi) check_operator(c, oi, producer);
  for (auto x : *m.outputs()) {
    if (x < 0 || static_cast<size_t>(x) >= nt) fail("model output index " + std::to_string(x) + " out of range");
    if (producer[static_cast<size_t>(x)] == -2)
      fail("model output " + c.tname(x) + " is never produced");
  }
  if (const auto* p = m.preprocess()) {
    const size_t nm = vsize(p->mean()), ns = vsize(p->std());
    if (nm != 0 && p->channels() > 0 && nm != static_cast<size_t>(p->channels()))
      fail("preprocess: " + std::to_string(nm) + " means for " + std::to_string(p->channels()) + " channels");
    if (ns != 0 && p->channels() > 0 && ns != static_cast<size_t>(p->channels()))
      fail("preprocess: " + std::to_string(ns) + " stds for " + std::to_string(p->channels()) + " channels");
    for (size_t i = 0; i < ns; ++i) {
      const float v = p->std()->Get(static_cast<flatbuffers::uoffset_t>(i));
      if (!std::isfinite(v) || v == 0.0f) fail("preprocess: std " + std::to_string(i) + " is zero or not finite");
    }
    if (!std::isfinite(p->pixel_scale()) || p->pixel_scale() == 0.0f) fail("preprocess: pixel_scale is zero or not finite");
  }
}

void check_constant_values(const fb::Model& m, const uint8_t* data, size_t data_size) {
  if (m.tensors() == nullptr || m.buffers() == nullptr) return;
  for (flatbuffers::uoffset_t i = 0; i < m.tensors()->size(); ++i) {
    const auto* t = m.tensors()->Get(i);
    if (t->buffer() < 0 || t->dtype() != fb::DataType::Float32) continue;
    const auto* b = m.buffers()->Get(static_cast<flatbuffers::uoffset_t>(t->buffer()));
    if (b->offset() > data_size || b->size() > data_size - b->offset())
      fail("tensor " + std::to_string(i) + ": buffer lies outside the data section");
    const uint8_t* p = data + b->offset();
    const size_t n = static_cast<size_t>(b->size()) / sizeof(float);
    for (size_t k = 0; k < n; ++k) {
      float v;
      std::memcpy(&v, p + k * sizeof(float), sizeof v);
      if (!std::isfinite(v)) {
        const std::string name = t->name() ? t->name()->str() : std::to_string(i);
        fail("tensor '" + name + "': float32 value " + std::to_string(k) + " is not a finite number (" +
             (std::isnan(v) ? "NaN" : "infinity") + ")");
      }
    }
  }
  // A row listed in pruned_rows holds zeros.
  if (m.operators() == nullptr) return;
  for (flatbuffers::uoffset_t oi = 0; oi < m.operators()->size(); ++oi) {
    const fb::Operator* o = m.operators()->Get(oi);
    if (!o->pruned_rows() || o->pruned_rows()->size() == 0 || o->inputs()->size() < 2) continue;
    const auto* w = m.tensors()->Get(static_cast<flatbuffers::uoffset_t>(o->inputs()->Get(1)));
    const auto* b = m.buffers()->Get(static_cast<flatbuffers::uoffset_t>(w->buffer()));
    const int64_t rows = w->shape()->Get(0);
    if (rows <= 0) continue;
    const size_t row_bytes = static_cast<size_t>(b->size() / static_cast<uint64_t>(rows));
    for (int32_t r : *o->pruned_rows()) {
      const uint8_t* p = data + b->offset() + static_cast<size_t>(r) * row_bytes;
      for (size_t k = 0; k < row_bytes; ++k)
        if (p[k] != 0) {
          const std::string name = o->name() ? o->name()->str() : std::to_string(oi);
          fail("operator '" + name + "': weight row " + std::to_string(r) + " is listed in pruned_rows but is not zero");
        }
    }
  }
}

}  // namespace bbits::format
