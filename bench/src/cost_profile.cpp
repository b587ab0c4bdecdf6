#include "bbits/bench/cost_profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

#include "bbits/bench/layer_runner.h"
#include "bbits/bench/model_bench.h"
#include "bbits/bench/model_layers.h"
#include "bbits/bench/peaks.h"
#include "bbits/bench/roofline.h"
#include "bbits/bench/synthetic.h"
#include "bbits/bench/sysinfo.h"
#include "bbits/kernels/cpu.h"
#include "bbits/kernels/thread_pool.h"

namespace bbits::bench {

using contract::Graph;
using contract::Node;
using contract::OpKind;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr float kScale = 0.05f;  // any grid scale: times do not depend on it

kernels::Activation kact(contract::Act a) {
  return a == contract::Act::Relu ? kernels::Activation::Relu
         : a == contract::Act::Relu6 ? kernels::Activation::Relu6
                                     : kernels::Activation::None;
}

// The grid an activation tensor lives on in the trainer's network: the input
// at 8 bits (signed when normalised with a mean), a node's quantizer at `bits`
// on its signed or unsigned grid, float where no quantizer feeds.
kernels::QuantInfo grid_of(const Graph& g, const std::string& from, int bits) {
  const std::string q = contract::feeding_quantizer(g, from);
  if (q.empty() || bits == 32) return {32, true, 1.0f};
  if (q == g.input.name) {
    bool nonneg = true;
    for (float m : g.input.mean) nonneg = nonneg && m == 0.0f;
    return {bits, !nonneg, kScale};
  }
  return {bits, g.node(q).act_signed, kScale};
}

std::vector<int> act_grid(const Graph& g, const Node& n) {
  const std::string q = contract::feeding_quantizer(g, n.inputs.at(0));
  if (q.empty()) return {32};
  if (q == g.input.name) return {8};  // the trainer's input quantizer is fixed at 8 bits
  return {2, 4, 8, 16, 32};
}

// A node's output grid: its quantizer at `bits` (float at 32), float without one.
kernels::QuantInfo out_grid(const Node& n, int bits = 8) {
  if (!n.act_quant || bits == 32) return {32, true, 1.0f};
  return {bits, n.act_signed, kScale};
}

// Kernel, stride and symmetric padding of a conv or pooling desc from the node.
template <class Desc>
void set_window(Desc& d, const Node& n) {
  d.KH = n.kernel_h;
  d.KW = n.kernel_w;
  d.stride_h = n.stride_h;
  d.stride_w = n.stride_w;
  d.pad_top = d.pad_bottom = n.pad_h;
  d.pad_left = d.pad_right = n.pad_w;
}

// One point of a layer: its desc with `ko` outputs and `ki` inputs.
kernels::OpDesc layer_desc(const Graph& g, const contract::Shapes& shapes, const Node& n, int wbits, int abits,
                           int64_t ko, int64_t ki, int out_bits = 8) {
  if (n.op == OpKind::Conv2d) {
    const auto& xs = shapes.of(g, n.inputs.at(0));
    kernels::ConvDesc d;
    d.H = xs.at(1);
    d.W = xs.at(2);
    d.C = n.groups == 1 ? ki : n.in_channels;
    d.OC = n.groups == 1 ? ko : n.out_channels;
    set_window(d, n);
    d.dilation_h = n.dilation_h;
    d.dilation_w = n.dilation_w;
    d.groups = n.groups;
    d.wbits = wbits;
    d.in = grid_of(g, n.inputs.at(0), abits);
    d.out = out_grid(n, out_bits);
    d.activation = kact(n.activation);
    return d;
  }
  kernels::FcDesc d;
  d.K = ki;
  d.OC = ko;
  d.wbits = wbits;
  d.in = grid_of(g, n.inputs.at(0), abits);
  d.out = out_grid(n, out_bits);
  d.activation = kact(n.activation);
  return d;
}

// The desc of an operator between the layers, its (first) input on the
// `bits` grid of the quantizer feeding it (8 by default), with `channels`
// channels (< 0: all).
std::optional<kernels::OpDesc> other_desc(const Graph& g, const contract::Shapes& shapes, const Node& n, int bits = 8,
                                          int64_t channels = -1) {
  auto xs = shapes.of(g, n.inputs.at(0));
  if (channels > 0 && !xs.empty()) xs[0] = channels;
  const kernels::QuantInfo in = grid_of(g, n.inputs.at(0), bits);
  switch (n.op) {
    case OpKind::MaxPool:
    case OpKind::AvgPool:
    case OpKind::GlobalAvgPool: {
      kernels::PoolDesc d;
      d.kind = n.op == OpKind::MaxPool ? kernels::PoolKind::Max
               : n.op == OpKind::AvgPool ? kernels::PoolKind::Avg
                                         : kernels::PoolKind::GlobalAvg;
      d.C = xs.at(0);
      d.H = xs.at(1);
      d.W = xs.at(2);
      if (n.op != OpKind::GlobalAvgPool) {
        set_window(d, n);
        d.count_include_pad = n.count_include_pad;
      }
      d.in = in;
      d.out = n.op == OpKind::MaxPool ? in : kernels::QuantInfo{in.is_float() ? 32 : 8, in.is_signed, kScale};
      return d;
    }
    case OpKind::Add: {
      kernels::AddDesc d;
      d.count = xs.at(0) * xs.at(1) * xs.at(2);
      d.a = in;
      d.b = grid_of(g, n.inputs.at(1), 8);
      d.out = n.act_quant ? kernels::QuantInfo{8, n.act_signed, kScale} : kernels::QuantInfo{32, true, 1.0f};
      d.activation = kact(n.activation);
      return d;
    }
    case OpKind::Flatten: {
      if (xs.size() != 3) return std::nullopt;
      kernels::ReshapeDesc d;
      d.C = xs[0];
      d.H = xs[1];
      d.W = xs[2];
      d.to_chw = true;
      d.in = d.out = in;
      return d;
    }
    case OpKind::Relu:
    case OpKind::Relu6: {
      kernels::ActivationDesc d;
      d.count = 1;
      for (auto v : xs) d.count *= v;
      d.act = n.op == OpKind::Relu ? kernels::Activation::Relu : kernels::Activation::Relu6;
      d.in = in;
      d.out = n.act_quant ? kernels::QuantInfo{8, false, kScale} : in;
      return d;
    }
    case OpKind::Concat: {
      kernels::ConcatDesc d;
      d.outer = xs.at(1) * xs.at(2);
      d.inner = 1;
      for (const auto& s : n.inputs) {
        d.sizes.push_back(shapes.of(g, s).at(0));
        d.in.push_back(grid_of(g, s, 8));
      }
      d.out = {8, false, kScale};
      return d;
    }
    default:
      return std::nullopt;
  }
}

struct Point {
  double predicted_ns = kNaN;
  double measured_ns = kNaN;
  std::string kernel;
  int64_t bytes = 0;
};

}  // namespace

std::vector<LayerLinks> layer_links(const Graph& g) {
  const auto shapes = contract::infer_shapes(g);
  // consumers of every node's output
  std::map<std::string, std::vector<const Node*>> consumers;
  for (const auto& n : g.nodes)
    for (const auto& in : n.inputs) consumers[in].push_back(&n);
  std::set<std::string> outputs(g.outputs.begin(), g.outputs.end());
  // Whether every consumer of `name`'s output can take a removed channel: a
  // plain (groups 1) convolution or a linear layer; pooling, flatten and
  // standalone activations pass the question on; adds, concats, grouped and
  // depthwise convolutions and graph outputs keep the channel (docs/CONVERTER.md).
  std::function<bool(const std::string&)> absorbable = [&](const std::string& name) {
    if (outputs.count(name)) return false;
    auto it = consumers.find(name);
    if (it == consumers.end()) return false;
    for (const Node* m : it->second) {
      if (m->op == OpKind::Linear) continue;
      if (m->op == OpKind::Conv2d && m->groups == 1) continue;
      if (contract::keeps_channels(m->op) && absorbable(m->name)) continue;
      return false;
    }
    return true;
  };
  std::vector<LayerLinks> r;
  for (const auto& n : g.nodes) {
    if (!n.is_layer()) continue;
    LayerLinks l;
    l.out_removable = n.prune && n.weight_quant && absorbable(n.name);
    const std::string cur = contract::channel_source(g, n.inputs.at(0));
    const int64_t in_units = n.op == OpKind::Conv2d ? n.in_channels : n.in_features;
    if (cur != g.input.name && (n.op == OpKind::Linear || n.groups == 1)) {
      const Node& p = g.node(cur);
      if (p.is_layer() && p.prune && p.weight_quant && absorbable(p.name) && in_units % p.outputs() == 0) {
        l.in_from = p.name;
        l.in_per_channel = in_units / p.outputs();
      }
    }
    r.push_back(l);
  }
  return r;
}

contract::CostTable profile_graph(const Graph& g, const ProfileOptions& o,
                                  const std::function<void(const std::string&)>& progress) {
  auto say = [&](const std::string& s) {
    if (progress) progress(s);
  };
  if (o.threads < 1 || o.threads > 256) throw std::invalid_argument(fmt::format("profile: threads {} out of range", o.threads));
  const auto shapes = contract::infer_shapes(g);
  const auto links = layer_links(g);
  const kernels::Isa isa = kernels::detect_isa();
  std::unique_ptr<kernels::ThreadPool> pool;
  if (o.threads > 1) pool = std::make_unique<kernels::ThreadPool>(o.threads);

  contract::CostTable t;
  t.created = utc_timestamp();
  t.cpu = cpu_model_name();
  t.isa = kernels::isa_name(isa);
  t.threads = o.threads;
  t.commit = build_commit();
  t.calibration = o.calibration_path;
  t.arch = g.model;
  t.width = o.width;
  t.input = g.input.shape;
  t.measured = o.measure;
  if (o.price_measured && !o.measure) throw std::invalid_argument("profile: pricing by measurement needs measure");
  t.priced_by = o.price_measured ? "measured" : "roofline";
  auto price = [&](const Point& p) { return (o.price_measured ? p.measured_ns : p.predicted_ns) * 1e-3; };
  const bool price_measured = o.price_measured;
  t.call_us = o.calibration.dispatch_ns("pool", o.threads) * 1e-3;

  // One operator as the runtime plans it: its kernel, cost and prediction
  // (weights coming back after `reuse` bytes of the rest of the run), and
  // with `measure` its time alone.
  auto run_point = [&](const kernels::OpDesc& desc, const std::string& what, int64_t reuse, bool measure) {
    Point p;
    std::vector<uint8_t> bytes;
    std::unique_ptr<ModelLayers> ml;
    try {
      bytes = single_op_model(desc);
      ml = ModelLayers::from_memory(bytes.data(), bytes.size(), what);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("profile: {}: the runtime cannot plan it: {}", what, e.what()));
    }
    const ModelLayer& L = ml->layers().at(0);
    const kernels::KernelInfo* k = pick_kernel(L, L.kernel, isa);
    LayerRunner runner(L, *k, o.threads);
    LayerCost c = L.cost();
    c.scratch_bytes = static_cast<int64_t>(runner.scratch_bytes(o.threads));
    p.kernel = k->name;
    p.bytes = c.bytes();
    const auto r = predict_roofline(c, o.calibration, k->name, L.family(), o.threads, gemm_kn(L.desc), reuse, "pool");
    if (!r)
      throw std::runtime_error(fmt::format(
          "profile: {}: kernel {} has no {} peak in the calibration {} (run `bbits calibrate` again)", what, k->name,
          L.family(), o.calibration_path));
    p.predicted_ns = r->time_ns;
    if (measure) p.measured_ns = time_ns([&] { runner.run(pool.get()); }, o.timing).median;
    return p;
  };

  // The bytes of one whole run at full size and 8 bits: how far apart two
  // calls of a layer are inside a session (roofline's weights_reuse_bytes).
  int64_t run_bytes = 0;
  for (const Node& n : g.nodes) {
    if (n.is_layer()) {
      const int ab = act_grid(g, n).size() == 5 ? 8 : act_grid(g, n).front();
      const int64_t in = n.op == OpKind::Conv2d ? n.in_channels : n.in_features;
      run_bytes += run_point(layer_desc(g, shapes, n, 8, ab, n.outputs(), in), n.name, 0, false).bytes;
    } else if (auto d = other_desc(g, shapes, n)) {
      run_bytes += run_point(*d, n.name, 0, false).bytes;
    }
  }

  size_t li = 0;
  for (const Node& n : g.nodes) {
    if (!n.is_layer()) {
      if (auto d = other_desc(g, shapes, n)) {
        const Point p = run_point(*d, n.name, run_bytes, o.measure);
        contract::CostOther c;
        c.name = n.name;
        c.op = contract::op_kind_name(n.op);
        c.us = price(p);
        c.measured_us = o.measure ? p.measured_ns * 1e-3 : -1;
        t.other.push_back(c);
      }
      continue;
    }
    const LayerLinks& lk = links.at(li++);
    contract::CostLayer L;
    L.name = n.name;
    L.op = n.op == OpKind::Conv2d ? "conv2d" : "linear";
    L.out_channels = n.outputs();
    L.in_channels = n.op == OpKind::Conv2d ? n.in_channels : n.in_features;
    L.out_removable = lk.out_removable;
    L.in_from = lk.in_from;
    L.in_per_channel = lk.in_per_channel;
    L.act_bits = act_grid(g, n);
    L.kept_out = L.out_removable ? contract::kept_grid(L.out_channels) : std::vector<int64_t>{L.out_channels};
    if (L.in_from.empty()) {
      L.kept_in = {L.in_channels};
    } else {
      for (int64_t k : contract::kept_grid(g.node(L.in_from).outputs())) L.kept_in.push_back(k * L.in_per_channel);
    }
    const size_t nw = t.weight_bits.size(), na = L.act_bits.size(), no = L.kept_out.size(), ni = L.kept_in.size();
    // What the width of the layer's input costs outside the layer: at 16 or
    // 32 bits the producing layer writes int16 or float instead of 8-bit
    // values, and the operators between (pooling, flatten) run on them. Their
    // extra time over 8 bits, with the producer keeping the channels that
    // give each kept-input grid point, is added to the layer's price at that
    // input width (2 and 4 bits are stored as 8-bit values: nothing).
    std::vector<double> surcharge(na * ni, 0.0);
    const std::string fq = contract::feeding_quantizer(g, n.inputs.at(0));
    if (na == 5 && !fq.empty() && fq != g.input.name && g.node(fq).is_layer()) {
      const Node& prod = g.node(fq);
      const std::vector<int> pin = act_grid(g, prod);
      const int pa = std::find(pin.begin(), pin.end(), 8) != pin.end() ? 8 : pin.front();
      const int64_t pki = prod.op == OpKind::Conv2d ? prod.in_channels : prod.in_features;
      std::vector<const Node*> chain;  // the operators from the producer to this layer
      for (std::string x = n.inputs.at(0); x != fq; x = g.node(x).inputs.at(0)) chain.push_back(&g.node(x));
      auto outside = [&](int bits, int64_t kept) {
        double us = price(run_point(layer_desc(g, shapes, prod, 8, pa, kept, pki, bits),
                                    fmt::format("layer '{}' writing {}-bit outputs", fq, bits), run_bytes, price_measured));
        for (const Node* c : chain)
          if (auto d = other_desc(g, shapes, *c, bits, kept))
            us += price(run_point(*d, fmt::format("'{}' at {} bits", c->name, bits), run_bytes, price_measured));
        return us;
      };
      for (size_t ii = 0; ii < ni; ++ii) {
        const int64_t kept = L.in_from == fq ? L.kept_in[ii] / L.in_per_channel : prod.outputs();
        const double at8 = outside(8, kept);
        for (size_t ai = 0; ai < na; ++ai)
          if (L.act_bits[ai] > 8) surcharge[ai * ni + ii] = std::max(0.0, outside(L.act_bits[ai], kept) - at8);
      }
      say(fmt::format("{}: its input at 16 / 32 bits costs {:.2f} / {:.2f} us more outside the layer (all channels)",
                      n.name, surcharge[3 * ni + ni - 1], surcharge[4 * ni + ni - 1]));
    }
    L.us.assign(nw * na * no * ni, 0.0);
    if (o.measure) L.measured_us.assign(L.us.size(), kNaN);
    L.kernels.assign(nw * na, "");
    int adjusted = 0;
    for (size_t wi = 0; wi < nw; ++wi) {
      const int wb = t.weight_bits[wi];
      if (wb == 0) {  // every output channel pruned: the layer computes nothing
        if (o.measure)
          for (size_t ai = 0; ai < na; ++ai)
            for (size_t oi = 0; oi < no; ++oi)
              for (size_t ii = 0; ii < ni; ++ii) L.measured_us[L.index(wi, ai, oi, ii)] = 0.0;
        continue;
      }
      for (size_t ai = 0; ai < na; ++ai) {
        for (size_t oi = 0; oi < no; ++oi)
          for (size_t ii = 0; ii < ni; ++ii) {
            const std::string what = fmt::format("layer '{}' at w{}a{}, {} of {} outputs, {} of {} inputs", n.name, wb,
                                                 L.act_bits[ai], L.kept_out[oi], L.out_channels, L.kept_in[ii],
                                                 L.in_channels);
            const Point p = run_point(layer_desc(g, shapes, n, wb, L.act_bits[ai], L.kept_out[oi], L.kept_in[ii]), what,
                                      run_bytes, o.measure);
            L.us[L.index(wi, ai, oi, ii)] = price(p) + surcharge[ai * ni + ii];
            if (o.measure) L.measured_us[L.index(wi, ai, oi, ii)] = p.measured_ns * 1e-3;
            if (oi + 1 == no && ii + 1 == ni) L.kernels[wi * na + ai] = p.kernel;
          }
        // Non-decreasing in kept channels: a running maximum along both axes.
        for (size_t oi = 0; oi < no; ++oi)
          for (size_t ii = 0; ii < ni; ++ii) {
            double& v = L.us[L.index(wi, ai, oi, ii)];
            const double before = v;
            if (oi > 0) v = std::max(v, L.us[L.index(wi, ai, oi - 1, ii)]);
            if (ii > 0) v = std::max(v, L.us[L.index(wi, ai, oi, ii - 1)]);
            if (v != before) ++adjusted;
          }
      }
    }
    say(fmt::format("{}: {} grid points{}{}", n.name, (nw - 1) * na * no * ni, o.measure ? " predicted and measured" : "",
                    adjusted ? fmt::format(" ({} raised to keep times non-decreasing in kept channels)", adjusted) : ""));
    t.layers.push_back(std::move(L));
  }
  // The table is checked as the trainer will read it.
  return contract::CostTable::from_json(t.to_json());
}

double predict_model_us(const contract::CostTable& t, const ModelLayers& model, std::vector<std::string>* notes) {
  double total = t.other_us();
  for (const contract::CostLayer& L : t.layers) {
    const ModelLayer* m = nullptr;
    for (const ModelLayer& x : model.layers())
      if (x.name == L.name) m = &x;
    if (!m)
      throw contract::CostTableError(fmt::format("cost table: layer '{}' is not an operator of the model {}", L.name,
                                                 model.label()));
    int64_t ko = 0, ki = 0;
    if (const auto* c = std::get_if<kernels::ConvDesc>(&m->desc)) {
      ko = c->OC;
      ki = c->C;
    } else if (const auto* f = std::get_if<kernels::FcDesc>(&m->desc)) {
      ko = f->OC;
      ki = f->K;
    } else {
      throw contract::CostTableError(fmt::format("cost table: layer '{}' is not a conv or fully connected operator in {}",
                                                 L.name, model.label()));
    }
    const int wb = kernels::weight_bits(m->desc);
    const int in_bits = kernels::input_bits(m->desc);
    int ab = L.act_bits.back();
    for (int b : L.act_bits)
      if (b >= in_bits) {
        ab = b;
        break;
      }
    if (ab != in_bits && notes)
      notes->push_back(fmt::format("{}: input at {} bits, priced at the table's {} bits", L.name, in_bits, ab));
    total += t.layer_us(L, wb, ab, static_cast<double>(ko), static_cast<double>(ki));
  }
  return total;
}

std::string budget_report(const ModelBenchResult& r, const std::string& model_path, double target_ms,
                          const contract::CostTable* table) {
  std::string s;
  double pred_us = kNaN;
  std::vector<std::string> notes;
  if (table) {
    const auto ml = ModelLayers::load(model_path);
    pred_us = predict_model_us(*table, *ml, &notes);
  }
  const size_t scope = r.rows.column_index("scope"), th = r.rows.column_index("threads"), tu = r.rows.column_index("t_us");
  for (const auto& row : r.rows.rows()) {
    if (std::get<std::string>(row[scope]) != "model") continue;
    const int64_t t = std::get<int64_t>(row[th]);
    const double ms = std::holds_alternative<double>(row[tu]) ? std::get<double>(row[tu]) * 1e-3 : kNaN;
    s += fmt::format("whole model, {} thread{}: measured median {:.4f} ms", t, t == 1 ? "" : "s", ms);
    if (target_ms > 0)
      s += fmt::format("; budget {:.4f} ms: {:+.1f}% ({})", target_ms, 100.0 * (ms / target_ms - 1.0),
                       ms <= target_ms * 1.10 ? (ms <= target_ms ? "met" : "within 10%") : "missed");
    if (table) {
      s += fmt::format("; table predicts {:.4f} ms (error {:+.1f}%)", pred_us * 1e-3, 100.0 * relative_error(pred_us * 1e-3, ms));
      if (t != table->threads) s += fmt::format(" [the table is for {} thread{}]", table->threads, table->threads == 1 ? "" : "s");
    }
    s += "\n";
  }
  for (const auto& n : notes) s += "note: " + n + "\n";
  return s;
}

}  // namespace bbits::bench
