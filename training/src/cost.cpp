#include "bbits/training/cost.h"

#include <algorithm>
#include <stdexcept>

#include "bbits/contract/cost_table.h"
#include "bbits/format/cost.h"

namespace bbits::train {

using contract::OpKind;

std::map<std::string, int64_t> layer_macs(const Graph& g) {
  const auto shapes = contract::infer_shapes(g);
  std::map<std::string, int64_t> m;
  for (const auto& n : g.nodes) {
    if (n.op == OpKind::Conv2d) {
      const auto& y = shapes.of(g, n.name);
      m[n.name] = bbits::cost::conv2d_macs(y[1], y[2], n.out_channels, n.in_channels / n.groups, n.kernel_h, n.kernel_w);
    } else if (n.op == OpKind::Linear) {
      m[n.name] = bbits::cost::fc_macs(n.out_features, n.in_features);
    }
  }
  return m;
}

std::map<std::string, int64_t> quantizer_macs(const Graph& g) {
  const auto macs = layer_macs(g);
  std::map<std::string, int64_t> q;
  for (const auto& n : g.nodes) {
    if (!n.is_layer()) continue;
    const std::string f = contract::feeding_quantizer(g, n.inputs.at(0));
    if (!f.empty()) q[f] += macs.at(n.name);
  }
  return q;
}

namespace {
// Kept input units (channels for conv, features for linear) of layer n.
int64_t kept_inputs(const Graph& g, const Node& n, const std::map<std::string, std::vector<bool>>& keep) {
  const int64_t total = n.op == OpKind::Conv2d ? n.in_channels : n.in_features;
  if (n.op == OpKind::Conv2d && n.groups != 1) return total;
  const std::string cur = contract::channel_source(g, n.inputs.at(0));
  if (cur != g.input.name) {
    const Node& p = g.node(cur);
    if (p.is_layer() && p.prune && keep.count(p.name)) {
      const auto& mask = keep.at(p.name);
      const int64_t kept = std::count(mask.begin(), mask.end(), true);
      const int64_t c = static_cast<int64_t>(mask.size());
      if (c == 0 || total % c) return total;
      return kept * (total / c);  // flatten: every kept channel brings its H*W features
    }
  }
  return total;
}
}  // namespace

CostReport compute_costs(const Graph& g, const std::map<std::string, int>& weight_bits,
                         const std::map<std::string, int>& act_bits,
                         const std::map<std::string, std::vector<bool>>& keep) {
  const auto shapes = contract::infer_shapes(g);
  const auto full = layer_macs(g);
  CostReport r;
  for (const auto& n : g.nodes) {
    if (!n.is_layer()) continue;
    LayerCost c;
    c.name = n.name;
    c.macs_full = full.at(n.name);
    c.total = n.outputs();
    c.kept = n.outputs();
    if (n.prune && keep.count(n.name)) {
      const auto& m = keep.at(n.name);
      if (static_cast<int64_t>(m.size()) != n.outputs())
        throw std::invalid_argument("compute_costs: keep mask of '" + n.name + "' has the wrong size");
      c.kept = std::count(m.begin(), m.end(), true);
    }
    const int64_t in_kept = kept_inputs(g, n, keep);
    if (n.op == OpKind::Conv2d) {
      const auto& y = shapes.of(g, n.name);
      const int64_t in_per_group = n.groups == 1 ? in_kept : n.in_channels / n.groups;
      c.macs = bbits::cost::conv2d_macs(y[1], y[2], c.kept, in_per_group, n.kernel_h, n.kernel_w);
    } else {
      c.macs = bbits::cost::fc_macs(c.kept, in_kept);
    }
    auto wb = weight_bits.find(n.name);
    c.weight_bits = (n.weight_quant && wb != weight_bits.end()) ? wb->second : 32;
    if (c.kept == 0) c.weight_bits = 0;
    const std::string f = contract::feeding_quantizer(g, n.inputs.at(0));
    if (f.empty()) {
      c.act_bits = 32;
    } else {
      auto ab = act_bits.find(f);
      c.act_bits = ab != act_bits.end() ? ab->second : (f == g.input.name ? 8 : 32);
    }
    c.bops = bbits::cost::bops(c.macs, c.weight_bits, c.act_bits);
    r.bops += c.bops;
    r.bops_fp32 += bbits::cost::bops_fp32(c.macs_full);
    r.layers.push_back(c);
  }
  r.relative = r.bops_fp32 > 0 ? static_cast<double>(r.bops) / static_cast<double>(r.bops_fp32) : 0.0;
  return r;
}

}  // namespace bbits::train

#include <fmt/format.h>

namespace bbits::train {
std::string layer_table(const CostReport& r) {
  size_t w = 5;
  for (const auto& l : r.layers) w = std::max(w, l.name.size());
  std::string s = fmt::format("{:<{}}  {:>6} {:>6} {:>11} {:>12} {:>12} {:>16}\n", "layer", w, "w_bits", "a_bits",
                              "kept/total", "MACs", "MACs kept", "BOPs");
  int64_t macs = 0, macs_full = 0;
  for (const auto& l : r.layers) {
    s += fmt::format("{:<{}}  {:>6} {:>6} {:>11} {:>12} {:>12} {:>16}\n", l.name, w, l.weight_bits, l.act_bits,
                     fmt::format("{}/{}", l.kept, l.total), l.macs_full, l.macs, l.bops);
    macs += l.macs;
    macs_full += l.macs_full;
  }
  s += fmt::format("{:<{}}  {:>6} {:>6} {:>11} {:>12} {:>12} {:>16}\n", "total", w, "", "", "", macs_full, macs, r.bops);
  s += fmt::format("BOPs at 32/32: {}  relative BOPs: {:.4f}%\n", r.bops_fp32, 100.0 * r.relative);
  return s;
}
}  // namespace bbits::train
