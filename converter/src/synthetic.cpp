#include "bbits/converter/synthetic.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <random>
#include <regex>

#include "bbits/contract/safetensors.h"
#include "bbits/contract/zoo.h"
#include "bbits/converter/input.h"
#include "bbits/converter/simulate.h"
#include "bbits/format/quant.h"

namespace bbits::converter {

using nlohmann::json;

namespace {

LayerBits parse_layer_bits(const json& j, LayerBits lb, const std::string& ctx) {
  if (!j.is_object()) throw ConvertError(ctx + ": must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k == "layers" && ctx == "bit config") continue;
    if (k == "weight_bits" || k == "act_bits") {
      if (!it->is_number_integer()) throw ConvertError(ctx + ": '" + k + "' must be an integer");
      const int b = it->get<int>();
      if (k == "weight_bits") {
        if (!is_legal_weight_bits(b)) throw ConvertError(ctx + ": weight_bits " + std::to_string(b) + " is not one of 0, 2, 4, 8, 16, 32");
        lb.weight_bits = b;
      } else {
        if (!is_legal_act_bits(b)) throw ConvertError(ctx + ": act_bits " + std::to_string(b) + " is not one of 2, 4, 8, 16, 32");
        lb.act_bits = b;
      }
    } else if (k == "keep") {
      if (!it->is_number()) throw ConvertError(ctx + ": 'keep' must be a number");
      const double v = it->get<double>();
      if (!(v >= 0.0 && v <= 1.0)) throw ConvertError(ctx + ": 'keep' must be in [0, 1]");
      lb.keep = v;
    } else {
      throw ConvertError(ctx + ": unknown key '" + k + "' (weight_bits, act_bits, keep" +
                         std::string(ctx == "bit config" ? ", layers" : "") + ")");
    }
  }
  return lb;
}

// log alphas of the nested gates z4..z32 for a bit width (+20 on, -20 off)
std::array<float, 4> gates_for(int bits) {
  std::array<float, 4> la{};
  const int widths[4] = {4, 8, 16, 32};
  for (int i = 0; i < 4; ++i) la[static_cast<size_t>(i)] = bits >= widths[i] ? 20.0f : -20.0f;
  return la;
}

}  // namespace

BitConfig bit_config_from_json(const json& j) {
  BitConfig cfg;
  cfg.base = parse_layer_bits(j, cfg.base, "bit config");
  if (j.contains("layers")) {
    const json& l = j["layers"];
    if (!l.is_object()) throw ConvertError("bit config: 'layers' must be an object keyed by layer name");
    for (auto it = l.begin(); it != l.end(); ++it)
      cfg.layers[it.key()] = parse_layer_bits(*it, cfg.base, "bit config: layer '" + it.key() + "'");
  }
  return cfg;
}

BitConfig parse_bit_config(const std::string& spec) {
  static const std::regex uniform("w([0-9]+)a([0-9]+)");
  std::smatch m;
  if (std::regex_match(spec, m, uniform)) {
    BitConfig cfg;
    cfg.base.weight_bits = std::stoi(m[1].str());
    cfg.base.act_bits = std::stoi(m[2].str());
    if (!is_legal_weight_bits(cfg.base.weight_bits) || cfg.base.weight_bits == 0)
      throw ConvertError("--bits " + spec + ": weight bits must be 2, 4, 8, 16 or 32");
    if (!is_legal_act_bits(cfg.base.act_bits)) throw ConvertError("--bits " + spec + ": activation bits must be 2, 4, 8, 16 or 32");
    return cfg;
  }
  const auto bytes = contract::read_file_bytes(spec);
  json j;
  try {
    j = json::parse(bytes.begin(), bytes.end());
  } catch (const json::exception& e) {
    throw ConvertError("--bits " + spec + ": not wNaM and not a valid JSON file: " + e.what());
  }
  try {
    return bit_config_from_json(j);
  } catch (const ConvertError& e) {
    throw ConvertError(spec + ": " + e.what());
  }
}

Checkpoint make_synthetic(const std::string& arch, const BitConfig& cfg, uint64_t seed, bool calibrate) {
  Checkpoint ck;
  ck.graph = contract::make_graph(arch);
  const Graph& g = ck.graph;
  for (const auto& entry : cfg.layers) {
    const std::string& name = entry.first;
    int i = -1;
    try {
      i = g.index_of(name);
    } catch (const contract::CheckpointError&) {
      throw ConvertError("bit config: '" + name + "' is not a node of " + arch);
    }
    if (i < 0) throw ConvertError("bit config: '" + name + "' is the input (always 8 bits)");
  }
  auto bits_of = [&](const std::string& name) {
    auto it = cfg.layers.find(name);
    return it == cfg.layers.end() ? cfg.base : it->second;
  };
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto put = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float> data) {
    FTensor t;
    t.shape = std::move(shape);
    t.data = std::move(data);
    ck.tensors[name] = std::move(t);
  };
  auto put_gates = [&](const std::string& prefix, int bits) {
    const auto la = gates_for(bits);
    const char* names[4] = {"4", "8", "16", "32"};
    for (int k = 0; k < 4; ++k) put(prefix + ".log_alpha_" + names[k], {1}, {la[static_cast<size_t>(k)]});
  };

  // weights and batch norm
  for (const Node& n : g.nodes) {
    if (!n.is_layer()) continue;
    const bool conv = n.op == OpKind::Conv2d;
    const int64_t O = conv ? n.out_channels : n.out_features;
    const int64_t fan_in = conv ? (n.in_channels / n.groups) * n.kernel_h * n.kernel_w : n.in_features;
    const bool last = std::find(g.outputs.begin(), g.outputs.end(), n.name) != g.outputs.end();
    const float stdv = std::sqrt((last ? 1.0f : 2.0f) / static_cast<float>(fan_in));
    std::vector<int64_t> wshape = conv ? std::vector<int64_t>{O, n.in_channels / n.groups, n.kernel_h, n.kernel_w}
                                       : std::vector<int64_t>{O, n.in_features};
    std::vector<float> w(static_cast<size_t>(O * fan_in));
    for (float& v : w) v = stdv * normal(rng);
    put(n.name + ".weight", wshape, std::move(w));
    if (n.bias) {
      std::vector<float> b(static_cast<size_t>(O));
      for (float& v : b) v = 0.01f * normal(rng);
      put(n.name + ".bias", {O}, std::move(b));
    }
    if (n.bn) {
      std::vector<float> gm(static_cast<size_t>(O)), bt(gm.size()), mn(gm.size()), vr(gm.size());
      for (size_t c = 0; c < gm.size(); ++c) {
        gm[c] = 1.0f + 0.1f * normal(rng);
        bt[c] = 0.1f * normal(rng);
        mn[c] = 0.1f * normal(rng);
        vr[c] = 1.0f + 0.1f * std::fabs(normal(rng));
      }
      put(n.name + ".bn.weight", {O}, std::move(gm));
      put(n.name + ".bn.bias", {O}, std::move(bt));
      put(n.name + ".bn.running_mean", {O}, std::move(mn));
      put(n.name + ".bn.running_var", {O}, std::move(vr));
    }
  }
  // weight quantizers: range from the folded weights, gates from the configuration
  for (const Node& n : g.nodes) {
    if (!n.is_layer() || !n.weight_quant) continue;
    const LayerBits lb = bits_of(n.name);
    const FoldedLayer f = fold_layer(ck, n);
    float xm = 0.0f;
    for (float v : f.weight.data) xm = std::max(xm, std::fabs(v));
    put(n.name + ".wq.x_max", {1}, {xm > 0.0f ? xm : 1.0f});
    put_gates(n.name + ".wq", lb.weight_bits == 0 ? 2 : lb.weight_bits);
    if (n.prune) {
      const int64_t O = f.weight.shape[0];
      const double keep = lb.weight_bits == 0 ? 0.0 : lb.keep;
      int64_t kept = static_cast<int64_t>(std::llround(keep * static_cast<double>(O)));
      if (lb.weight_bits != 0) kept = std::clamp<int64_t>(kept, 1, O);
      std::vector<int64_t> order(static_cast<size_t>(O));
      for (int64_t c = 0; c < O; ++c) order[static_cast<size_t>(c)] = c;
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<float> la(static_cast<size_t>(O), -20.0f);
      for (int64_t c = 0; c < kept; ++c) la[static_cast<size_t>(order[static_cast<size_t>(c)])] = 20.0f;
      // A depthwise layer prunes the channels its producer pruned (and only
      // those), so that both can go together.
      if (n.is_depthwise()) {
        const int pi = g.index_of(n.inputs[0]);
        const std::string pk = pi >= 0 ? g.nodes[static_cast<size_t>(pi)].name + ".wq.log_alpha_2" : std::string();
        if (!pk.empty() && ck.tensors.count(pk)) la = ck.tensors.at(pk).data;
        else std::fill(la.begin(), la.end(), 20.0f);
      }
      // A pruned channel before a ReLU gets a negative bias: its constant
      // output is 0, which every consumer can absorb (also through zero
      // padding), so the benchmarks see pruned channels removed.
      if (n.activation != Act::None) {
        for (int64_t c = 0; c < O; ++c) {
          if (la[static_cast<size_t>(c)] > 0.0f) continue;
          const size_t u = static_cast<size_t>(c);
          if (n.bn) {
            ck.tensors.at(n.name + ".bn.bias").data[u] -= std::fabs(f.bias[u]) + 1.0f;
          } else if (n.bias) {
            ck.tensors.at(n.name + ".bias").data[u] = -1.0f;
          }
        }
      }
      put(n.name + ".wq.log_alpha_2", {O}, std::move(la));
    } else if (cfg.layers.count(n.name) && cfg.layers.at(n.name).keep < 1.0) {
      throw ConvertError("bit config: layer '" + n.name + "' is not prunable (keep must be 1)");
    }
  }
  // activation ranges: float forward pass on a random input
  const float in_xm = default_input_x_max(g.input);
  put(g.input.name + ".aq.x_max", {1}, {in_xm});
  const int64_t batch = g.input.shape[1] * g.input.shape[2] > 1024 ? 1 : 2;
  FTensor x;
  x.shape = {batch, g.input.shape[0], g.input.shape[1], g.input.shape[2]};
  x.data.resize(static_cast<size_t>(x.numel()));
  std::uniform_int_distribution<int> pixel(0, 255);
  const int64_t hw = g.input.shape[1] * g.input.shape[2];
  for (size_t k = 0; k < x.data.size(); ++k) {
    const size_t c = static_cast<size_t>((static_cast<int64_t>(k) / hw) % g.input.shape[0]);
    x.data[k] = (static_cast<float>(pixel(rng)) * static_cast<float>(g.input.pixel_scale) - g.input.mean[c]) / g.input.std[c];
  }
  std::map<std::string, std::pair<float, float>> ranges;
  SimulateOptions so;
  so.quantize = false;
  so.ranges = &ranges;
  // the float pass needs no quantizer tensors, only the weights
  if (calibrate) simulate(ck, x, so);
  for (const Node& n : g.nodes) {
    if (!n.act_quant) continue;
    const float guess = n.activation == Act::Relu6 && !n.act_signed ? 6.0f : 4.0f;
    const auto [lo, hi] = calibrate ? ranges.at(n.name) : std::pair<float, float>{-guess, guess};
    float xm = n.act_signed ? std::max(std::fabs(lo), std::fabs(hi)) : hi;
    if (n.activation == Act::Relu6 && !n.act_signed) xm = std::min(xm, 6.0f);
    put(n.name + ".aq.x_max", {1}, {xm > 0.0f ? xm : 1.0f});
    put_gates(n.name + ".aq", bits_of(n.name).act_bits);
  }
  ck.training = {{"method", "synthetic"}, {"seed", seed}, {"arch", arch}};
  ck.source = "synthetic:" + arch;
  validate_checkpoint(ck);
  return ck;
}

}  // namespace bbits::converter
