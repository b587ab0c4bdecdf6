// Per-operator costs recomputed from the model's shapes, keep masks and
// weights with format's cost vocabulary (bbits/format/cost.h), so that what
// the runtime reports never depends on the figures a file stores.
//
// The rules are the converter's (docs/CONVERTER.md, "Costs"): MACs at batch 1
// count live channels only. A channel is constant when its value does not
// depend on the input: a pruned output channel kept as a zero row (its output
// is its bias through the activation), a depthwise channel reading a constant
// channel (when no zero padding meets a non-zero constant), and what pooling,
// flatten, activations, adds and concats make of constant channels. A layer
// does no work for constant output channels nor for constant input channels
// (their contribution is a bias). Pruned rows are known from the keep mask
// when the layer keeps its channels in place (channels_removed = false), and
// from pruned_rows when it removed some and others had to stay.
#include <cstring>

#include "bbits/format/cost.h"
#include "bbits/format/quant.h"
#include "internal.h"

namespace bbits::detail {
namespace {

std::vector<int64_t> shape_of(const fb::Tensor* t) {
  std::vector<int64_t> s;
  if (t && t->shape()) s.assign(t->shape()->begin(), t->shape()->end());
  return s;
}

int bits_of(const fb::Tensor* t) {
  return t->dtype() == fb::DataType::Quantized && t->quant() ? t->quant()->bits() : 32;
}

float activate(fb::Activation a, float v) {
  if (a == fb::Activation::Relu) return v > 0.0f ? v : 0.0f;
  if (a == fb::Activation::Relu6) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
  return v;
}

// What the channels of one activation tensor (dimension 1) are.
struct ChannelFacts {
  int64_t trained = 0;           // channels of the trained layer (before any removal)
  std::vector<char> constant;    // per stored channel
  std::vector<float> value;      // the constant, on the tensor's grid
  int64_t live() const {
    int64_t n = 0;
    for (char c : constant) n += c ? 0 : 1;
    return n;
  }
};

// A real value rounded onto a tensor's grid (float tensors keep it).
float on_grid(const fb::Tensor* t, float v) {
  if (t->dtype() != fb::DataType::Quantized || !t->quant()) return v;
  const fb::Quant* q = t->quant();
  const int bits = q->bits();
  if (!is_integer_bits(bits)) return v;
  if (q->x_max() && q->x_max()->size() > 0) {
    const float x_max = q->x_max()->Get(0);
    return grid_scale(x_max, bits, q->is_signed()) * static_cast<float>(quantize_value(v, x_max, bits, q->is_signed()));
  }
  const float s = q->scale() && q->scale()->size() > 0 ? q->scale()->Get(0) : 1.0f;
  float r = round_half_even(v / s);
  const float lo = static_cast<float>(qmin(bits, q->is_signed())), hi = static_cast<float>(qmax(bits, q->is_signed()));
  r = r < lo ? lo : (r > hi ? hi : r);
  return s * r;
}

// The real value of weight (r, i) of a constant weight tensor.
float weight_value(const fb::Tensor* w, std::span<const uint8_t> data, int64_t r, int64_t i, int64_t k, int bits) {
  const uint8_t* row = data.data() + static_cast<size_t>(r) * packed_row_bytes(k, bits);
  if (bits == 32) {
    float v;
    std::memcpy(&v, row + 4 * i, 4);
    return v;
  }
  const auto* sc = w->quant() ? w->quant()->scale() : nullptr;
  float s = 1.0f;
  if (sc && sc->size() > 0) s = sc->Get(static_cast<int64_t>(sc->size()) > r ? static_cast<flatbuffers::uoffset_t>(r) : 0);
  return s * static_cast<float>(unpack_value(row, i, bits));
}

// The bias of row `r` as a real value (0 without a bias).
float bias_value(const format::ModelView& view, const fb::Operator& op, int64_t r, const fb::Tensor* w,
                 const fb::Tensor* x) {
  if (op.inputs()->size() < 3 || op.inputs()->Get(2) < 0) return 0.0f;
  const int bi = op.inputs()->Get(2);
  const fb::Tensor* b = view.model->tensors()->Get(static_cast<flatbuffers::uoffset_t>(bi));
  const auto data = view.tensor_data(bi);
  if (static_cast<size_t>(r + 1) * 4 > data.size()) return 0.0f;
  if (b->dtype() == fb::DataType::Float32) {
    float v;
    std::memcpy(&v, data.data() + 4 * r, 4);
    return v;
  }
  int32_t q;
  std::memcpy(&q, data.data() + 4 * r, 4);
  const auto* ws = w->quant() ? w->quant()->scale() : nullptr;
  const auto* xs = x->quant() ? x->quant()->scale() : nullptr;
  const float s_w =
      ws && ws->size() > 0 ? ws->Get(static_cast<int64_t>(ws->size()) > r ? static_cast<flatbuffers::uoffset_t>(r) : 0) : 1.0f;
  const float s_in = xs && xs->size() > 0 ? xs->Get(0) : 1.0f;
  return static_cast<float>(q) * s_w * s_in;
}

}  // namespace

std::vector<OpCosts> operator_costs(const format::ModelView& view) {
  const fb::Model& m = *view.model;
  const auto& tensors = *m.tensors();
  auto tensor = [&](int i) { return tensors.Get(static_cast<flatbuffers::uoffset_t>(i)); };
  std::vector<ChannelFacts> facts(tensors.size());
  auto plain = [&](int t) {  // nothing known: every channel live, trained = stored
    ChannelFacts& f = facts[static_cast<size_t>(t)];
    const auto s = shape_of(tensor(t));
    const int64_t c = s.size() >= 2 ? s[1] : (s.empty() ? 0 : s[0]);
    f.trained = c;
    f.constant.assign(static_cast<size_t>(c), 0);
    f.value.assign(static_cast<size_t>(c), 0.0f);
  };
  for (int t : *m.inputs()) plain(t);

  std::vector<OpCosts> out;
  out.reserve(m.operators()->size());
  for (const fb::Operator* op : *m.operators()) {
    OpCosts cost;
    const auto& ins = *op->inputs();
    const int xi = ins.Get(0), yi = op->outputs()->Get(0);
    const fb::Tensor* x = tensor(xi);
    const fb::Tensor* y = tensor(yi);
    const ChannelFacts& fx = facts[static_cast<size_t>(xi)];
    ChannelFacts& fy = facts[static_cast<size_t>(yi)];
    plain(yi);
    const auto ys = shape_of(y);
    switch (op->type()) {
      case fb::OpType::Conv2D:
      case fb::OpType::FullyConnected: {
        const bool conv = op->type() == fb::OpType::Conv2D;
        const fb::Tensor* w = tensor(ins.Get(1));
        const auto ws = shape_of(w);
        const auto wdata = view.tensor_data(ins.Get(1));
        const int wbits = bits_of(w);
        const int64_t rows = ws[0];
        int64_t k = 1;
        for (size_t d = 1; d < ws.size(); ++d) k *= ws[d];
        const auto* opt = conv ? op->options_as_Conv2DOptions() : nullptr;
        const fb::Activation act = conv ? opt->activation() : op->options_as_FullyConnectedOptions()->activation();
        const int64_t groups = conv ? opt->groups() : 1;
        const bool depthwise = conv && groups > 1 && ws[3] == 1 && rows == groups;
        const bool padded =
            conv && (opt->pad_top() != 0 || opt->pad_bottom() != 0 || opt->pad_left() != 0 || opt->pad_right() != 0);
        const auto* mask = op->keep_mask() && op->keep_mask()->size() > 0 ? op->keep_mask() : nullptr;
        const int64_t trained_out = mask ? static_cast<int64_t>(mask->size()) : rows;
        // Pruned rows: the keep mask says which when channels stay in place;
        // after a removal, pruned_rows lists the pruned channels that stayed.
        std::vector<char> pruned(static_cast<size_t>(rows), 0);
        if (mask && !op->channels_removed()) {
          for (int64_t r = 0; r < rows; ++r) pruned[static_cast<size_t>(r)] = mask->Get(static_cast<flatbuffers::uoffset_t>(r)) == 0;
        } else if (op->pruned_rows()) {
          for (int32_t r : *op->pruned_rows()) pruned[static_cast<size_t>(r)] = 1;
        }
        int64_t live_out = 0;
        for (int64_t r = 0; r < rows; ++r) {
          float pre;
          if (pruned[static_cast<size_t>(r)]) {
            pre = bias_value(view, *op, r, w, x);
          } else if (depthwise && static_cast<size_t>(r) < fx.constant.size() && fx.constant[static_cast<size_t>(r)] &&
                     (!padded || fx.value[static_cast<size_t>(r)] == 0.0f)) {
            double acc = 0.0;
            for (int64_t i = 0; i < k; ++i) acc += weight_value(w, wdata, r, i, k, wbits);
            pre = static_cast<float>(acc * fx.value[static_cast<size_t>(r)] + bias_value(view, *op, r, w, x));
          } else {
            ++live_out;
            continue;
          }
          fy.constant[static_cast<size_t>(r)] = 1;
          fy.value[static_cast<size_t>(r)] = on_grid(y, activate(act, pre));
        }
        fy.trained = trained_out;
        const int abits = bits_of(x);
        if (conv) {
          const int64_t kh = ws[1], kw = ws[2];
          const int64_t trained_in = depthwise ? 1 : (groups > 1 ? ws[3] : fx.trained);
          const int64_t live_in = depthwise ? 1 : (groups > 1 ? ws[3] : fx.live());
          cost.macs = cost::conv2d_macs(ys[2], ys[3], live_out, live_in, kh, kw);
          cost.macs_unpruned = cost::conv2d_macs(ys[2], ys[3], trained_out, trained_in, kh, kw);
          cost.float32_weights = cost::mul(cost::mul(cost::mul(trained_out, trained_in), kh), kw);
        } else {
          cost.macs = cost::fc_macs(live_out, fx.live());
          cost.macs_unpruned = cost::fc_macs(trained_out, fx.trained);
          cost.float32_weights = cost.macs_unpruned;
        }
        cost.weight_bytes = cost::weight_bytes(rows, k, wbits);
        cost.bops = cost::bops(cost.macs, wbits, abits);
        break;
      }
      case fb::OpType::MaxPool2D:
      case fb::OpType::GlobalAvgPool:
        fy = fx;
        break;
      case fb::OpType::AvgPool2D: {
        const auto* opt = op->options_as_Pool2DOptions();
        const bool padded = opt->pad_top() != 0 || opt->pad_bottom() != 0 || opt->pad_left() != 0 || opt->pad_right() != 0;
        fy.trained = fx.trained;
        for (size_t c = 0; c < fy.constant.size() && c < fx.constant.size(); ++c)
          if (fx.constant[c] && (!padded || !opt->count_include_pad() || fx.value[c] == 0.0f)) {
            fy.constant[c] = 1;
            fy.value[c] = fx.value[c];
          }
        break;
      }
      case fb::OpType::Reshape: {
        const auto xs = shape_of(x);
        if (xs.size() == 4 && ys.size() == 2 && xs[1] > 0 && ys[1] == xs[1] * xs[2] * xs[3]) {
          // flatten of N,C,H,W: feature f reads channel f / (H*W)
          const int64_t hw = xs[2] * xs[3];
          fy.trained = cost::mul(fx.trained, hw);
          for (int64_t f = 0; f < ys[1]; ++f) {
            fy.constant[static_cast<size_t>(f)] = fx.constant[static_cast<size_t>(f / hw)];
            fy.value[static_cast<size_t>(f)] = fx.value[static_cast<size_t>(f / hw)];
          }
        } else if (xs.size() >= 2 && ys.size() >= 2 && xs[1] == ys[1]) {
          fy = fx;
        }
        break;
      }
      case fb::OpType::Relu:
      case fb::OpType::Relu6: {
        const fb::Activation act = op->type() == fb::OpType::Relu ? fb::Activation::Relu : fb::Activation::Relu6;
        fy.trained = fx.trained;
        for (size_t c = 0; c < fy.constant.size() && c < fx.constant.size(); ++c)
          if (fx.constant[c]) {
            fy.constant[c] = 1;
            fy.value[c] = on_grid(y, activate(act, fx.value[c]));
          }
        break;
      }
      case fb::OpType::Add: {
        const ChannelFacts& f2 = facts[static_cast<size_t>(ins.Get(1))];
        const fb::Activation act = op->options_as_AddOptions()->activation();
        fy.trained = fx.trained;
        for (size_t c = 0; c < fy.constant.size() && c < fx.constant.size() && c < f2.constant.size(); ++c)
          if (fx.constant[c] && f2.constant[c]) {
            fy.constant[c] = 1;
            fy.value[c] = on_grid(y, activate(act, fx.value[c] + f2.value[c]));
          }
        break;
      }
      case fb::OpType::Concat: {
        const auto* opt = op->options_as_ConcatOptions();
        if (ys.size() < 2 || (opt->axis() != 1 && opt->axis() != 1 - static_cast<int>(ys.size()))) break;
        fy.trained = 0;
        size_t at = 0;
        for (int src : ins) {
          const ChannelFacts& f = facts[static_cast<size_t>(src)];
          fy.trained += f.trained;
          for (size_t c = 0; c < f.constant.size() && at < fy.constant.size(); ++c, ++at) {
            fy.constant[at] = f.constant[c];
            fy.value[at] = f.value[c];
          }
        }
        break;
      }
      default:
        break;
    }
    out.push_back(cost);
  }
  return out;
}

}  // namespace bbits::detail
