#include "bbits/converter/passes.h"

#include <cstring>
#include <set>

#include "bbits/converter/input.h"
#include "bbits/converter/simulate.h"
#include "bbits/format/cost.h"
#include "bbits/format/quant.h"

namespace bbits::converter::passes {

namespace fb = bbits::fb;
using nlohmann::json;

namespace {

Grid act_grid(const Checkpoint& ck, const Node& n) {
  Grid g;
  if (!n.act_quant) return g;
  g.x_max = ck.get(n.name + ".aq.x_max").scalar();
  const int bits = act_bits_of(ck, n.name);
  if (!is_integer_bits(bits)) return g;
  g.quant = true;
  g.bits = bits;
  g.is_signed = n.act_signed;
  g.scale = grid_scale(g.x_max, bits, n.act_signed);
  return g;
}

float on_grid(const Grid& g, float v) { return g.quant ? fake_quant(v, g.x_max, g.bits, g.is_signed) : v; }

std::unique_ptr<fb::QuantT> make_quant(int bits, bool is_signed, float scale, float x_max) {
  auto q = std::make_unique<fb::QuantT>();
  q->bits = static_cast<uint8_t>(bits);
  q->is_signed = is_signed;
  q->scale = {scale};
  q->x_max = {x_max};
  return q;
}

fb::Activation fb_act(Act a) {
  switch (a) {
    case Act::Relu: return fb::Activation::Relu;
    case Act::Relu6: return fb::Activation::Relu6;
    default: return fb::Activation::None;
  }
}

}  // namespace

Conversion check_graph(const Checkpoint& ck, const ConvertOptions& opts) {
  validate_checkpoint(ck);
  Conversion c;
  c.ck = &ck;
  const Graph& g = ck.graph;
  c.shapes = infer_shapes(g);
  c.input_bits = check_input_bits(opts.input_bits ? opts.input_bits : input_bits_of(ck));
  c.layout = opts.layout.empty() ? std::string("NCHW") : check_input_layout(opts.layout);
  const size_t nn = g.nodes.size();
  c.slots.resize(nn + 1);
  c.layers.resize(nn);
  c.slots[0].shape = g.input.shape;
  for (size_t i = 0; i < nn; ++i) c.slots[i + 1].shape = c.shapes.node[i];
  c.consumers.resize(nn + 1);
  for (size_t i = 0; i < nn; ++i)
    for (size_t k = 0; k < g.nodes[i].inputs.size(); ++k) c.consumers[c.slot_index(g.nodes[i].inputs[k])].push_back({i, k});
  c.is_output.assign(nn + 1, 0);
  for (const auto& o : g.outputs) c.is_output[c.slot_index(o)] = 1;
  return c;
}

void decide_gates(Conversion& c) {
  const Checkpoint& ck = *c.ck;
  const Graph& g = c.graph();
  const size_t nn = g.nodes.size();
  std::vector<Slot>& slots = c.slots;
  auto slot_of = [&](const std::string& name) -> Slot& { return c.slot_of(name); };
  Slot& in = slots[0];
  in.grid = Grid{};
  in.grid.is_signed = input_signed(g);
  in.grid.x_max = ck.get(g.input.name + ".aq.x_max").scalar();
  if (c.input_bits != 32) {  // 32: float32 input, the first layer runs on it as it is
    in.grid.quant = true;
    in.grid.bits = c.input_bits;
    in.grid.scale = grid_scale(in.grid.x_max, c.input_bits, in.grid.is_signed);
  }
  for (size_t i = 0; i < nn; ++i) {
    const Node& n = g.nodes[i];
    Slot& s = slots[i + 1];
    const Slot& x = slot_of(n.inputs[0]);
    switch (n.op) {
      case OpKind::Conv2d:
      case OpKind::Linear:
      case OpKind::Add:
        s.grid = act_grid(ck, n);
        break;
      case OpKind::Relu:
      case OpKind::Relu6:
        s.grid = n.act_quant ? act_grid(ck, n) : x.grid;
        break;
      case OpKind::Concat:
        s.grid = x.grid;
        for (const auto& src : n.inputs)
          if (!(slot_of(src).grid == x.grid))
            throw ConvertError("node '" + n.name + "': concat of tensors on different grids ('" + n.inputs[0] +
                               "' and '" + src + "') is not supported");
        break;
      case OpKind::AvgPool:
      case OpKind::GlobalAvgPool:
        // The eval mode keeps an average in float (no quantizer after
        // pooling): rounding it onto the input's grid would lose up to half a
        // step, so the average is float32 (its consumer runs in float32).
        s.grid = x.grid.quant ? Grid{} : x.grid;
        break;
      default:  // max pooling and flatten keep their input's grid
        s.grid = x.grid;
        break;
    }
    if (!n.is_layer()) continue;
    Layer& L = c.layers[i];
    L.wbits = weight_bits_of(ck, n);
    L.keep = keep_mask_of(ck, n);
  }
}

void fold_batch_norm(Conversion& c) {
  const Graph& g = c.graph();
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (g.nodes[i].is_layer()) c.layers[i].f = fold_layer(*c.ck, g.nodes[i]);
}

void quantize_weights(Conversion& c) {
  const Graph& g = c.graph();
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (!n.is_layer()) continue;
    Layer& L = c.layers[i];
    const int64_t O = L.f.weight.shape[0];
    const int64_t K = L.f.weight.numel() / O;
    L.wreal.assign(L.f.weight.data.size(), 0.0f);
    L.q.clear();
    if (is_integer_bits(L.wbits)) {
      L.x_max = c.ck->get(n.name + ".wq.x_max").scalar();
      L.scale = grid_scale(L.x_max, L.wbits, true);
      L.q.assign(L.f.weight.data.size(), 0);
    }
    for (int64_t o = 0; o < O; ++o) {
      if (!L.keep[static_cast<size_t>(o)]) continue;
      for (int64_t k = 0; k < K; ++k) {
        const size_t u = static_cast<size_t>(o * K + k);
        if (is_integer_bits(L.wbits)) {
          L.q[u] = quantize_value(L.f.weight.data[u], L.x_max, L.wbits, true);
          L.wreal[u] = L.scale * static_cast<float>(L.q[u]);
        } else {
          L.wreal[u] = L.f.weight.data[u];
        }
      }
    }
  }
}

void find_constant_channels(Conversion& c) {
  const Graph& g = c.graph();
  const size_t nn = g.nodes.size();
  std::vector<Slot>& slots = c.slots;
  auto slot_of = [&](const std::string& name) -> Slot& { return c.slot_of(name); };
  const std::vector<Layer>& layers = c.layers;
  Slot& in = slots[0];
  in.is_const.assign(static_cast<size_t>(in.channels()), 0);
  in.cval.assign(static_cast<size_t>(in.channels()), 0.0f);
  for (size_t i = 0; i < nn; ++i) {
    const Node& n = g.nodes[i];
    Slot& s = slots[i + 1];
    const Slot& x = slot_of(n.inputs[0]);
    const size_t C = static_cast<size_t>(s.channels());
    s.is_const.assign(C, 0);
    s.cval.assign(C, 0.0f);
    switch (n.op) {
      case OpKind::Conv2d:
      case OpKind::Linear: {
        const Layer& L = layers[i];
        const int64_t K = L.f.weight.numel() / static_cast<int64_t>(C);
        const bool no_pad = n.pad_h == 0 && n.pad_w == 0;
        // The constant is what the network computes for the channel: its bias
        // (integer layers apply a float bias exactly, docs/FORMAT.md).
        auto bias_of = [&](size_t o) { return static_cast<double>(L.f.bias[o]); };
        for (size_t o = 0; o < C; ++o) {
          float pre;
          if (!L.keep[o]) {
            pre = static_cast<float>(bias_of(o));
          } else if (n.is_depthwise() && x.is_const[o] && (no_pad || x.cval[o] == 0.0f)) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; ++k) acc += L.wreal[o * static_cast<size_t>(K) + static_cast<size_t>(k)];
            pre = static_cast<float>(acc * x.cval[o] + bias_of(o));
          } else {
            continue;
          }
          s.is_const[o] = 1;
          s.cval[o] = on_grid(s.grid, apply_act(n.activation, pre));
        }
        break;
      }
      case OpKind::MaxPool:
      case OpKind::GlobalAvgPool:
        s.is_const = x.is_const;
        s.cval = x.cval;
        break;
      case OpKind::AvgPool:
        for (size_t c = 0; c < C; ++c)
          if (x.is_const[c] && ((n.pad_h == 0 && n.pad_w == 0) || !n.count_include_pad || x.cval[c] == 0.0f)) {
            s.is_const[c] = 1;
            s.cval[c] = x.cval[c];
          }
        break;
      case OpKind::Flatten: {
        const int64_t hw = x.spatial();
        for (size_t f = 0; f < C; ++f) {
          s.is_const[f] = x.is_const[f / static_cast<size_t>(hw)];
          s.cval[f] = x.cval[f / static_cast<size_t>(hw)];
        }
        break;
      }
      case OpKind::Relu:
      case OpKind::Relu6:
        for (size_t c = 0; c < C; ++c)
          if (x.is_const[c]) {
            s.is_const[c] = 1;
            s.cval[c] = on_grid(s.grid, apply_act(n.op == OpKind::Relu ? Act::Relu : Act::Relu6, x.cval[c]));
          }
        break;
      case OpKind::Add: {
        const Slot& y = slot_of(n.inputs[1]);
        for (size_t c = 0; c < C; ++c)
          if (x.is_const[c] && y.is_const[c]) {
            s.is_const[c] = 1;
            s.cval[c] = on_grid(s.grid, apply_act(n.activation, x.cval[c] + y.cval[c]));
          }
        break;
      }
      case OpKind::Concat: {
        size_t off = 0;
        for (const auto& src : n.inputs) {
          const Slot& y = slot_of(src);
          for (size_t c = 0; c < y.is_const.size(); ++c) {
            s.is_const[off + c] = y.is_const[c];
            s.cval[off + c] = y.cval[c];
          }
          off += y.is_const.size();
        }
        break;
      }
    }
  }

}

void choose_removed_channels(Conversion& c) {
  const Graph& g = c.graph();
  const size_t nn = g.nodes.size();
  std::vector<Slot>& slots = c.slots;
  auto slot_of = [&](const std::string& name) -> Slot& { return c.slot_of(name); };
  const auto& consumers = c.consumers;
  const auto& is_output = c.is_output;
  std::set<size_t> forbid;  // layers that must not remove anything
  for (;;) {
    for (auto& s : slots) {
      s.cand.assign(s.is_const.size(), 0);
      s.removed.assign(s.is_const.size(), 0);
    }
    for (size_t ii = nn; ii-- > 0;) {
      const Node& n = g.nodes[ii];
      Slot& s = slots[ii + 1];
      const size_t C = s.is_const.size();
      const bool grouped = n.op == OpKind::Conv2d && n.groups > 1 && !n.is_depthwise();
      const bool blocks = n.op == OpKind::Add || n.op == OpKind::Concat || grouped || is_output[ii + 1] ||
                          (n.is_layer() && forbid.count(ii));
      if (!blocks) {
        for (size_t c = 0; c < C; ++c) {
          if (!s.is_const[c]) continue;
          bool ok = true;
          for (const auto& [j, pos] : consumers[ii + 1]) {
            const Node& m = g.nodes[j];
            const Slot& ms = slots[j + 1];
            (void)pos;
            switch (m.op) {
              case OpKind::Conv2d:
                if (m.is_depthwise()) ok = ok && ms.removed[c];
                else if (m.groups == 1) ok = ok && ((m.pad_h == 0 && m.pad_w == 0) || s.cval[c] == 0.0f);
                else ok = false;
                break;
              case OpKind::Linear:
                break;
              case OpKind::MaxPool:
              case OpKind::AvgPool:
              case OpKind::GlobalAvgPool:
              case OpKind::Relu:
              case OpKind::Relu6:
                ok = ok && ms.cand[c];
                break;
              case OpKind::Flatten: {
                const size_t hw = static_cast<size_t>(s.spatial());
                for (size_t f = c * hw; f < (c + 1) * hw; ++f) ok = ok && ms.cand[f];
                break;
              }
              case OpKind::Add:
              case OpKind::Concat:
                ok = false;
                break;
            }
            if (!ok) break;
          }
          // a depthwise channel goes only together with its input channel
          if (ok && n.is_depthwise()) ok = slot_of(n.inputs[0]).is_const[c] != 0;
          s.cand[c] = ok;
        }
      }
      if (n.is_layer()) {
        size_t ncand = 0;
        for (size_t c = 0; c < C; ++c) ncand += s.cand[c] ? 1 : 0;
        if (ncand > 0 && ncand < C) s.removed = s.cand;  // never remove every channel
      }
    }
    // pass removal on through pooling, flatten and activations; check depthwise consistency
    bool changed = false;
    for (size_t i = 0; i < nn; ++i) {
      const Node& n = g.nodes[i];
      Slot& s = slots[i + 1];
      const Slot& x = slot_of(n.inputs[0]);
      switch (n.op) {
        case OpKind::MaxPool:
        case OpKind::AvgPool:
        case OpKind::GlobalAvgPool:
        case OpKind::Relu:
        case OpKind::Relu6:
          s.removed = x.removed;
          break;
        case OpKind::Flatten: {
          const size_t hw = static_cast<size_t>(x.spatial());
          for (size_t f = 0; f < s.removed.size(); ++f) s.removed[f] = x.removed[f / hw];
          break;
        }
        case OpKind::Conv2d:
          if (n.is_depthwise() && s.removed != x.removed) {
            forbid.insert(i);
            changed = true;
          }
          break;
        default:
          break;
      }
    }
    if (!changed) break;
  }

}

ConvertReport write_model(Conversion& c, bbits::format::ModelWriter& writer, const ConvertOptions& opts) {
  const Checkpoint& ck = *c.ck;
  const Graph& g = c.graph();
  const size_t nn = g.nodes.size();
  std::vector<Slot>& slots = c.slots;
  auto slot_of = [&](const std::string& name) -> Slot& { return c.slot_of(name); };
  const std::vector<Layer>& layers = c.layers;
  const Slot& in = slots[0];
  const int in_bits = c.input_bits;
  const std::string& layout = c.layout;
  fb::ModelT& m = writer.model();
  m.schema_version = bbits::format::kSchemaVersion;
  auto present = [](const Slot& s) {
    std::vector<int64_t> idx;
    for (size_t c = 0; c < s.removed.size(); ++c)
      if (!s.removed[c]) idx.push_back(static_cast<int64_t>(c));
    return idx;
  };
  auto stored_shape = [&](const Slot& s) {
    std::vector<int64_t> shp{1, static_cast<int64_t>(present(s).size())};
    for (size_t d = 1; d < s.shape.size(); ++d) shp.push_back(s.shape[d]);
    return shp;
  };
  auto add_act_tensor = [&](const std::string& name, Slot& s) {
    auto t = std::make_unique<fb::TensorT>();
    t->name = name;
    t->shape = stored_shape(s);
    if (s.grid.quant) {
      t->dtype = fb::DataType::Quantized;
      t->quant = make_quant(s.grid.bits, s.grid.is_signed, s.grid.scale, s.grid.x_max);
    } else {
      t->dtype = fb::DataType::Float32;
    }
    s.tensor = static_cast<int>(m.tensors.size());
    m.tensors.push_back(std::move(t));
  };
  auto add_const_tensor = [&](const std::string& name, std::vector<int64_t> shape, fb::DataType dt,
                              std::unique_ptr<fb::QuantT> q, std::vector<uint8_t> bytes) {
    auto t = std::make_unique<fb::TensorT>();
    t->name = name;
    t->shape = std::move(shape);
    t->dtype = dt;
    t->quant = std::move(q);
    t->buffer = writer.add_buffer(std::move(bytes));
    const int idx = static_cast<int>(m.tensors.size());
    m.tensors.push_back(std::move(t));
    return idx;
  };

  add_act_tensor(g.input.name, slots[0]);
  m.inputs = {slots[0].tensor};

  ConvertReport rep;
  rep.model = g.model;
  rep.input = {g.input.shape, layout,        g.input.pixel_scale, g.input.mean,
               g.input.std,   in_bits,       in.grid.is_signed,   in.grid.x_max};
  for (size_t i = 0; i < nn; ++i) {
    const Node& n = g.nodes[i];
    Slot& s = slots[i + 1];
    Slot& x = slot_of(n.inputs[0]);
    add_act_tensor(n.name, s);
    auto op = std::make_unique<fb::OperatorT>();
    op->name = n.name;
    op->outputs = {s.tensor};
    LayerRow row;
    row.name = n.name;
    row.op = op_kind_name(n.op);
    row.out_shape = stored_shape(s);
    row.in_bits = x.grid.quant ? x.grid.bits : 32;
    row.out_bits = s.grid.quant ? s.grid.bits : 32;
    row.channels = s.channels();
    row.kept = s.channels();

    if (n.is_layer()) {
      const Layer& L = layers[i];
      const std::vector<int64_t> rows = present(s);
      const std::vector<int64_t> cols = present(x);  // kept input channels (features)
      const int64_t O = s.channels();
      const bool conv = n.op == OpKind::Conv2d;
      const bool dw = n.is_depthwise();
      const int64_t cpg = conv ? n.in_channels / n.groups : n.in_features;  // inputs per group, trained
      const int KH = conv ? n.kernel_h : 1, KW = conv ? n.kernel_w : 1;
      if (dw && rows != cols)
        throw ConvertError("internal: depthwise layer '" + n.name + "' lost the pairing of its channels");
      // inputs read by each output row, in stored order (OHWI: kh, kw, ci)
      std::vector<int64_t> ci_list;
      if (dw || (conv && n.groups > 1)) {
        for (int64_t c = 0; c < cpg; ++c) ci_list.push_back(c);
      } else {
        ci_list = cols;
      }
      const int64_t Kst = static_cast<int64_t>(ci_list.size()) * KH * KW;
      auto widx = [&](int64_t o, int64_t ci, int kh, int kw) {
        return static_cast<size_t>(((o * cpg + ci) * KH + kh) * KW + kw);
      };

      // biases: folded BN bias plus the constants of removed input channels
      std::vector<double> bias(static_cast<size_t>(O));
      for (int64_t o = 0; o < O; ++o) bias[static_cast<size_t>(o)] = L.f.bias[static_cast<size_t>(o)];
      bool any_folded = false;
      if (!dw && !(conv && n.groups > 1)) {
        for (size_t c = 0; c < x.removed.size(); ++c) {
          if (!x.removed[c] || x.cval[c] == 0.0f) continue;
          any_folded = true;
          for (int64_t o : rows) {
            double acc = 0.0;
            for (int kh = 0; kh < KH; ++kh)
              for (int kw = 0; kw < KW; ++kw) acc += L.wreal[widx(o, static_cast<int64_t>(c), kh, kw)];
            bias[static_cast<size_t>(o)] += acc * static_cast<double>(x.cval[c]);
          }
        }
      }

      // weights
      const bool int_w = is_integer_bits(L.wbits);
      std::vector<int64_t> wshape;
      if (conv) wshape = {static_cast<int64_t>(rows.size()), KH, KW, static_cast<int64_t>(ci_list.size())};
      else wshape = {static_cast<int64_t>(rows.size()), static_cast<int64_t>(ci_list.size())};
      std::vector<uint8_t> wbytes;
      const size_t row_bytes = int_w ? packed_row_bytes(Kst, L.wbits) : static_cast<size_t>(Kst) * 4;
      wbytes.resize(row_bytes * rows.size());
      std::vector<int32_t> qrow(static_cast<size_t>(Kst));
      std::vector<float> frow(static_cast<size_t>(Kst));
      for (size_t r = 0; r < rows.size(); ++r) {
        const int64_t o = rows[r];
        size_t k = 0;
        for (int kh = 0; kh < KH; ++kh)
          for (int kw = 0; kw < KW; ++kw)
            for (int64_t ci : ci_list) {
              const size_t u = widx(o, ci, kh, kw);
              if (int_w) qrow[k] = L.q[u];
              else frow[k] = L.wreal[u];
              ++k;
            }
        if (int_w) pack_row(qrow.data(), Kst, L.wbits, wbytes.data() + r * row_bytes);
        else std::memcpy(wbytes.data() + r * row_bytes, frow.data(), row_bytes);
      }
      const int wt = add_const_tensor(
          n.name + ".weight", wshape, int_w ? fb::DataType::Quantized : fb::DataType::Float32,
          int_w ? make_quant(L.wbits, true, L.scale, L.x_max) : nullptr, std::move(wbytes));

      int bt = -1;
      if (n.bias || n.bn || any_folded) {
        // Float32 biases also for integer layers: the runtime applies them at
        // the precision of the requantization multiplier (bias_fraction in
        // quant.h), not rounded to a whole accumulator step.
        std::vector<uint8_t> bb(rows.size() * 4);
        for (size_t r = 0; r < rows.size(); ++r) {
          const float v = static_cast<float>(bias[static_cast<size_t>(rows[r])]);
          std::memcpy(bb.data() + r * 4, &v, 4);
        }
        bt = add_const_tensor(n.name + ".bias", {static_cast<int64_t>(rows.size())}, fb::DataType::Float32, nullptr,
                              std::move(bb));
      }
      op->inputs = {x.tensor, wt, bt};

      // pruning record: with removal, keep_mask says which rows are stored (a
      // pruned channel that had to stay is a zero row and counts as kept);
      // without, it holds the gate decisions and pruned rows are zero
      bool any_pruned = false, any_removed = false;
      for (size_t c = 0; c < L.keep.size(); ++c) {
        any_pruned = any_pruned || !L.keep[c];
        any_removed = any_removed || s.removed[c];
        row.zero_rows += (!L.keep[c] && !s.removed[c]) ? 1 : 0;
      }
      if (any_removed) {
        op->keep_mask.resize(L.keep.size());
        for (size_t c = 0; c < L.keep.size(); ++c) op->keep_mask[c] = s.removed[c] ? 0 : 1;
        op->channels_removed = true;
        for (size_t r = 0; r < rows.size(); ++r)
          if (!L.keep[static_cast<size_t>(rows[r])]) op->pruned_rows.push_back(static_cast<int32_t>(r));
      } else if (any_pruned) {
        op->keep_mask.assign(L.keep.begin(), L.keep.end());
        op->channels_removed = false;
      }

      // costs: live channels only (pruned or constant channels do no work)
      int64_t live_out = 0, live_in = 0;
      for (size_t c = 0; c < L.keep.size(); ++c) live_out += (L.keep[c] && !s.removed[c] && !s.is_const[c]) ? 1 : 0;
      for (size_t c = 0; c < x.is_const.size(); ++c) live_in += x.is_const[c] ? 0 : 1;
      if (conv) {
        const int64_t OH = s.shape[1], OW = s.shape[2];
        const int64_t in_pg = dw ? 1 : (n.groups > 1 ? cpg : live_in);
        op->macs = cost::conv2d_macs(OH, OW, live_out, in_pg, KH, KW);
        op->macs_unpruned = cost::conv2d_macs(OH, OW, O, cpg, KH, KW);
        auto opt = std::make_unique<fb::Conv2DOptionsT>();
        opt->stride_h = n.stride_h;
        opt->stride_w = n.stride_w;
        opt->pad_top = opt->pad_bottom = n.pad_h;
        opt->pad_left = opt->pad_right = n.pad_w;
        opt->dilation_h = n.dilation_h;
        opt->dilation_w = n.dilation_w;
        opt->groups = dw ? static_cast<int>(rows.size()) : n.groups;
        opt->activation = fb_act(n.activation);
        op->type = fb::OpType::Conv2D;
        op->options.Set(std::move(*opt));
        row.op = dw ? "depthwise" : "conv2d";
      } else {
        op->macs = cost::fc_macs(live_out, live_in);
        op->macs_unpruned = cost::fc_macs(O, n.in_features);
        fb::FullyConnectedOptionsT opt;
        opt.activation = fb_act(n.activation);
        op->type = fb::OpType::FullyConnected;
        op->options.Set(std::move(opt));
      }
      op->weight_bytes = cost::weight_bytes(static_cast<int64_t>(rows.size()), Kst, L.wbits);
      op->bops = cost::bops(op->macs, L.wbits, row.in_bits);
      row.weight_bits = L.wbits;
      row.kept = 0;
      for (uint8_t k : L.keep) row.kept += k;
      row.channels_removed = op->channels_removed;
      for (char r : s.removed) rep.channels_removed += r ? 1 : 0;
    } else {
      op->inputs = {x.tensor};
      switch (n.op) {
        case OpKind::MaxPool:
        case OpKind::AvgPool: {
          fb::Pool2DOptionsT opt;
          opt.kernel_h = n.kernel_h;
          opt.kernel_w = n.kernel_w;
          opt.stride_h = n.stride_h;
          opt.stride_w = n.stride_w;
          opt.pad_top = opt.pad_bottom = n.pad_h;
          opt.pad_left = opt.pad_right = n.pad_w;
          opt.count_include_pad = n.op == OpKind::AvgPool && n.count_include_pad;
          op->type = n.op == OpKind::MaxPool ? fb::OpType::MaxPool2D : fb::OpType::AvgPool2D;
          op->options.Set(std::move(opt));
          break;
        }
        case OpKind::GlobalAvgPool:
          op->type = fb::OpType::GlobalAvgPool;
          break;
        case OpKind::Add: {
          op->inputs.push_back(slot_of(n.inputs[1]).tensor);
          fb::AddOptionsT opt;
          opt.activation = fb_act(n.activation);
          op->type = fb::OpType::Add;
          op->options.Set(std::move(opt));
          break;
        }
        case OpKind::Concat: {
          op->inputs.clear();
          for (const auto& src : n.inputs) op->inputs.push_back(slot_of(src).tensor);
          fb::ConcatOptionsT opt;
          opt.axis = 1;
          op->type = fb::OpType::Concat;
          op->options.Set(std::move(opt));
          break;
        }
        case OpKind::Flatten: {
          fb::ReshapeOptionsT opt;
          opt.shape = stored_shape(s);
          op->type = fb::OpType::Reshape;
          op->options.Set(std::move(opt));
          row.op = "flatten";
          break;
        }
        case OpKind::Relu:
          op->type = fb::OpType::Relu;
          break;
        case OpKind::Relu6:
          op->type = fb::OpType::Relu6;
          break;
        default:
          break;
      }
    }
    row.macs = op->macs;
    row.macs_unpruned = op->macs_unpruned;
    row.weight_bytes = op->weight_bytes;
    row.bops = op->bops;
    rep.macs += row.macs;
    rep.macs_unpruned += row.macs_unpruned;
    rep.weight_bytes += row.weight_bytes;
    rep.bops += row.bops;
    rep.bops_fp32 += cost::bops_fp32(row.macs_unpruned);
    rep.rows.push_back(row);
    m.operators.push_back(std::move(op));
  }
  for (const auto& o : g.outputs) m.outputs.push_back(slot_of(o).tensor);
  rep.relative_bops = rep.bops_fp32 ? static_cast<double>(rep.bops) / static_cast<double>(rep.bops_fp32) : 0.0;

  // preprocessing and metadata
  m.preprocess = std::make_unique<fb::PreprocessT>();
  m.preprocess->layout = layout == "NHWC" ? fb::Layout::NHWC : fb::Layout::NCHW;
  m.preprocess->channels = static_cast<int32_t>(g.input.shape[0]);
  m.preprocess->height = static_cast<int32_t>(g.input.shape[1]);
  m.preprocess->width = static_cast<int32_t>(g.input.shape[2]);
  m.preprocess->pixel_scale = static_cast<float>(g.input.pixel_scale);
  m.preprocess->mean = g.input.mean;
  m.preprocess->std = g.input.std;

  m.metadata = std::make_unique<fb::MetadataT>();
  m.metadata->producer = std::string("bbits-convert ") + converter_version();
  m.metadata->source_checkpoint = ck.source;
  m.metadata->description = opts.description;
  auto ti = std::make_unique<fb::TrainingInfoT>();
  const json& t = ck.training;
  if (t.contains("method") && t["method"].is_string()) ti->method = t["method"].get<std::string>();
  if (t.contains("mu") && t["mu"].is_number()) ti->mu = t["mu"].get<float>();
  if (t.contains("test_accuracy") && t["test_accuracy"].is_number()) ti->accuracy = t["test_accuracy"].get<float>();
  if (t.contains("relative_bops") && t["relative_bops"].is_number()) ti->relative_bops = t["relative_bops"].get<float>();
  if (t.contains("dataset") && t["dataset"].is_string()) ti->dataset = t["dataset"].get<std::string>();
  if (t.contains("epochs") && t["epochs"].is_number_integer()) ti->epochs = t["epochs"].get<int32_t>();
  ti->arch = g.model;
  m.metadata->training = std::move(ti);
  return rep;
}

}  // namespace bbits::converter::passes
