#include "bbits/contract/cost_table.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "bbits/contract/safetensors.h"

namespace bbits::contract {

using nlohmann::json;

namespace {

[[noreturn]] void fail(const std::string& what) { throw CostTableError("cost table: " + what); }

const json& need(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) fail(where + ": field '" + key + "' is missing");
  return *it;
}

template <class T>
T get_as(const json& j, const char* key, const std::string& where) {
  const json& v = need(j, key, where);
  try {
    return v.get<T>();
  } catch (const json::exception&) {
    fail(where + ": field '" + key + "' has the wrong type (" + v.type_name() + ")");
  }
}

double number(const json& v, const std::string& where) {
  if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  if (!v.is_number()) fail(where + " is not a number (" + std::string(v.type_name()) + ")");
  return v.get<double>();
}

bool legal_wbits(int b) { return b == 0 || b == 2 || b == 4 || b == 8 || b == 16 || b == 32; }
bool legal_abits(int b) { return b == 2 || b == 4 || b == 8 || b == 16 || b == 32; }

void check_grid(const std::vector<int64_t>& g, int64_t full, const std::string& where) {
  if (g.empty()) fail(where + " is empty");
  for (size_t i = 0; i < g.size(); ++i) {
    if (g[i] < 1) fail(where + " holds " + std::to_string(g[i]) + " (kept counts are >= 1)");
    if (i > 0 && g[i] <= g[i - 1]) fail(where + " is not strictly ascending");
  }
  if (g.back() != full)
    fail(where + " ends at " + std::to_string(g.back()) + ", not at the layer's " + std::to_string(full) + " channels");
}

size_t pos_of(const std::vector<int>& v, int b) {
  auto it = std::find(v.begin(), v.end(), b);
  return it == v.end() ? v.size() : static_cast<size_t>(it - v.begin());
}

}  // namespace

bool keeps_channels(OpKind op) {
  return op == OpKind::MaxPool || op == OpKind::AvgPool || op == OpKind::GlobalAvgPool || op == OpKind::Flatten ||
         op == OpKind::Relu || op == OpKind::Relu6;
}

std::string channel_source(const Graph& g, const std::string& from) {
  std::string cur = from;
  while (cur != g.input.name) {
    const Node& p = g.node(cur);
    if (!keeps_channels(p.op)) break;
    cur = p.inputs.at(0);
  }
  return cur;
}

std::vector<int64_t> kept_grid(int64_t n) {
  std::set<int64_t> s;
  for (double f : {0.0, 0.125, 0.25, 0.5, 0.75, 1.0}) s.insert(std::max<int64_t>(1, std::llround(f * n)));
  return {s.begin(), s.end()};
}

std::vector<double> interp_weights(const std::vector<int64_t>& grid, double x) {
  std::vector<double> w(grid.size(), 0.0);
  if (grid.empty()) return w;
  if (!(x > static_cast<double>(grid.front()))) {
    w.front() = 1.0;
    return w;
  }
  if (x >= static_cast<double>(grid.back())) {
    w.back() = 1.0;
    return w;
  }
  size_t i = 1;
  while (static_cast<double>(grid[i]) < x) ++i;
  const double lo = static_cast<double>(grid[i - 1]), hi = static_cast<double>(grid[i]);
  const double t = (x - lo) / (hi - lo);
  w[i - 1] = 1.0 - t;
  w[i] = t;
  return w;
}

size_t CostLayer::index(size_t wi, size_t ai, size_t oi, size_t ii) const {
  return ((wi * act_bits.size() + ai) * kept_out.size() + oi) * kept_in.size() + ii;
}

// ---------------------------------------------------------------------------
json CostTable::to_json() const {
  json j;
  j["format"] = kCostTableFormat;
  j["version"] = kVersion;
  j["created"] = created;
  j["cpu"] = cpu;
  j["isa"] = isa;
  j["threads"] = threads;
  j["commit"] = commit;
  j["calibration"] = calibration;
  j["arch"] = arch;
  j["width"] = width;
  j["input"] = input;
  j["weight_bits"] = weight_bits;
  j["measured"] = measured;
  j["priced_by"] = priced_by;
  j["call_us"] = call_us;
  auto nested = [&](const CostLayer& L, const std::vector<double>& v) {
    json a = json::array();
    for (size_t wi = 0; wi < weight_bits.size(); ++wi) {
      json b = json::array();
      for (size_t ai = 0; ai < L.act_bits.size(); ++ai) {
        json c = json::array();
        for (size_t oi = 0; oi < L.kept_out.size(); ++oi) {
          json d = json::array();
          for (size_t ii = 0; ii < L.kept_in.size(); ++ii) {
            const double x = v[L.index(wi, ai, oi, ii)];
            d.push_back(std::isfinite(x) ? json(x) : json(nullptr));
          }
          c.push_back(std::move(d));
        }
        b.push_back(std::move(c));
      }
      a.push_back(std::move(b));
    }
    return a;
  };
  j["layers"] = json::array();
  for (const CostLayer& L : layers) {
    json l = {{"name", L.name},
              {"op", L.op},
              {"out_channels", L.out_channels},
              {"in_channels", L.in_channels},
              {"out_removable", L.out_removable},
              {"in_from", L.in_from},
              {"in_per_channel", L.in_per_channel},
              {"act_bits", L.act_bits},
              {"kept_out", L.kept_out},
              {"kept_in", L.kept_in},
              {"us", nested(L, L.us)}};
    if (!L.measured_us.empty()) l["measured_us"] = nested(L, L.measured_us);
    json k = json::array();
    for (size_t wi = 0; wi < weight_bits.size(); ++wi) {
      json row = json::array();
      for (size_t ai = 0; ai < L.act_bits.size(); ++ai) row.push_back(L.kernels.at(wi * L.act_bits.size() + ai));
      k.push_back(std::move(row));
    }
    l["kernels"] = std::move(k);
    j["layers"].push_back(std::move(l));
  }
  j["other"] = json::array();
  for (const CostOther& o : other) {
    json e = {{"name", o.name}, {"op", o.op}, {"us", o.us}};
    if (o.measured_us >= 0) e["measured_us"] = o.measured_us;
    j["other"].push_back(std::move(e));
  }
  return j;
}

CostTable CostTable::from_json(const json& j) {
  if (!j.is_object()) fail("the document is not a JSON object");
  const std::string fmt = get_as<std::string>(j, "format", "table");
  if (fmt != kCostTableFormat) fail("format is '" + fmt + "', expected '" + kCostTableFormat + "'");
  const int version = get_as<int>(j, "version", "table");
  if (version != kVersion)
    fail("version " + std::to_string(version) + " is not supported (this build reads version " +
         std::to_string(kVersion) + "; run `bbits profile` again)");
  CostTable t;
  t.created = get_as<std::string>(j, "created", "table");
  t.cpu = get_as<std::string>(j, "cpu", "table");
  t.isa = get_as<std::string>(j, "isa", "table");
  t.threads = get_as<int>(j, "threads", "table");
  if (t.threads < 1) fail("threads must be >= 1, got " + std::to_string(t.threads));
  t.commit = get_as<std::string>(j, "commit", "table");
  t.calibration = get_as<std::string>(j, "calibration", "table");
  t.arch = get_as<std::string>(j, "arch", "table");
  t.width = get_as<double>(j, "width", "table");
  if (!(t.width > 0) || !std::isfinite(t.width)) fail("width must be positive");
  t.input = get_as<std::vector<int64_t>>(j, "input", "table");
  if (t.input.size() != 3) fail("input must be [C, H, W]");
  t.weight_bits = get_as<std::vector<int>>(j, "weight_bits", "table");
  t.measured = get_as<bool>(j, "measured", "table");
  if (j.contains("priced_by")) t.priced_by = get_as<std::string>(j, "priced_by", "table");  // absent: roofline
  if (t.priced_by != "roofline" && t.priced_by != "measured")
    fail("priced_by is '" + t.priced_by + "', not roofline or measured");
  if (t.priced_by == "measured" && !t.measured) fail("priced_by is measured but the table holds no measurements");
  t.call_us = get_as<double>(j, "call_us", "table");
  if (!(t.call_us >= 0) || !std::isfinite(t.call_us)) fail("call_us must be >= 0 and finite");
  if (t.weight_bits.empty()) fail("weight_bits is empty");
  for (size_t i = 0; i < t.weight_bits.size(); ++i) {
    if (!legal_wbits(t.weight_bits[i]))
      fail("weight_bits holds " + std::to_string(t.weight_bits[i]) + " (legal: 0, 2, 4, 8, 16, 32)");
    if (i > 0 && t.weight_bits[i] <= t.weight_bits[i - 1]) fail("weight_bits is not strictly ascending");
  }
  for (int b : {2, 4, 8, 16, 32})
    if (pos_of(t.weight_bits, b) == t.weight_bits.size())
      fail("weight_bits misses grid point " + std::to_string(b));
  const json& layers = need(j, "layers", "table");
  if (!layers.is_array() || layers.empty()) fail("layers must be a non-empty array");
  std::set<std::string> names;
  for (const json& l : layers) {
    CostLayer L;
    L.name = get_as<std::string>(l, "name", "a layer");
    const std::string where = "layer '" + L.name + "'";
    if (!names.insert(L.name).second) fail(where + " appears twice");
    L.op = get_as<std::string>(l, "op", where);
    if (L.op != "conv2d" && L.op != "linear") fail(where + ": op '" + L.op + "' is not conv2d or linear");
    L.out_channels = get_as<int64_t>(l, "out_channels", where);
    L.in_channels = get_as<int64_t>(l, "in_channels", where);
    if (L.out_channels < 1 || L.in_channels < 1) fail(where + ": channel counts must be >= 1");
    L.out_removable = get_as<bool>(l, "out_removable", where);
    L.in_from = get_as<std::string>(l, "in_from", where);
    L.in_per_channel = get_as<int64_t>(l, "in_per_channel", where);
    if (L.in_per_channel < 1) fail(where + ": in_per_channel must be >= 1");
    if (!L.in_from.empty()) {
      if (!names.count(L.in_from) || L.in_from == L.name)
        fail(where + ": in_from '" + L.in_from + "' is not an earlier layer of the table");
    }
    L.act_bits = get_as<std::vector<int>>(l, "act_bits", where);
    if (L.act_bits.empty()) fail(where + ": act_bits is empty");
    for (size_t i = 0; i < L.act_bits.size(); ++i) {
      if (!legal_abits(L.act_bits[i]))
        fail(where + ": act_bits holds " + std::to_string(L.act_bits[i]) + " (legal: 2, 4, 8, 16, 32)");
      if (i > 0 && L.act_bits[i] <= L.act_bits[i - 1]) fail(where + ": act_bits is not strictly ascending");
    }
    L.kept_out = get_as<std::vector<int64_t>>(l, "kept_out", where);
    L.kept_in = get_as<std::vector<int64_t>>(l, "kept_in", where);
    check_grid(L.kept_out, L.out_channels, where + ": kept_out");
    check_grid(L.kept_in, L.in_channels, where + ": kept_in");
    if (!L.out_removable && L.kept_out.size() != 1)
      fail(where + ": kept_out must be [out_channels] when out_removable is false");
    if (L.in_from.empty() && L.kept_in.size() != 1) fail(where + ": kept_in must be [in_channels] without in_from");
    const size_t n = t.weight_bits.size() * L.act_bits.size() * L.kept_out.size() * L.kept_in.size();
    auto read_nested = [&](const json& a, const char* key, bool allow_null) {
      std::vector<double> v(n, 0.0);
      const std::string w = where + ": " + key;
      if (!a.is_array() || a.size() != t.weight_bits.size())
        fail(w + " must hold one entry per weight bit width (" + std::to_string(t.weight_bits.size()) + ")");
      for (size_t wi = 0; wi < t.weight_bits.size(); ++wi) {
        const json& b = a[wi];
        if (!b.is_array() || b.size() != L.act_bits.size())
          fail(w + "[w" + std::to_string(t.weight_bits[wi]) + "] must hold one entry per activation bit width");
        for (size_t ai = 0; ai < L.act_bits.size(); ++ai) {
          const json& c = b[ai];
          const std::string wa = w + "[w" + std::to_string(t.weight_bits[wi]) + "a" + std::to_string(L.act_bits[ai]) + "]";
          if (!c.is_array() || c.size() != L.kept_out.size()) fail(wa + " must hold one entry per kept_out grid point");
          for (size_t oi = 0; oi < L.kept_out.size(); ++oi) {
            const json& d = c[oi];
            if (!d.is_array() || d.size() != L.kept_in.size())
              fail(wa + "[" + std::to_string(oi) + "] must hold one entry per kept_in grid point (missing grid points)");
            for (size_t ii = 0; ii < L.kept_in.size(); ++ii) {
              const std::string at = wa + " at kept_out " + std::to_string(L.kept_out[oi]) + ", kept_in " +
                                     std::to_string(L.kept_in[ii]);
              const double x = number(d[ii], at);
              if (std::isnan(x) && !allow_null) fail(at + " is missing (null)");
              if (!std::isnan(x) && (!(x >= 0) || !std::isfinite(x)))
                fail(at + " is " + std::to_string(x) + " (times must be >= 0 and finite)");
              v[L.index(wi, ai, oi, ii)] = x;
            }
          }
        }
      }
      return v;
    };
    L.us = read_nested(need(l, "us", where), "us", false);
    if (l.contains("measured_us")) L.measured_us = read_nested(l["measured_us"], "measured_us", true);
    // Monotone in kept channels: more channels never cost less.
    for (size_t wi = 0; wi < t.weight_bits.size(); ++wi)
      for (size_t ai = 0; ai < L.act_bits.size(); ++ai)
        for (size_t oi = 0; oi < L.kept_out.size(); ++oi)
          for (size_t ii = 0; ii < L.kept_in.size(); ++ii) {
            const double x = L.us[L.index(wi, ai, oi, ii)];
            const std::string at = where + ": us[w" + std::to_string(t.weight_bits[wi]) + "a" +
                                   std::to_string(L.act_bits[ai]) + "]";
            if (oi > 0 && x < L.us[L.index(wi, ai, oi - 1, ii)])
              fail(at + " decreases from kept_out " + std::to_string(L.kept_out[oi - 1]) + " to " +
                   std::to_string(L.kept_out[oi]) + " (times must not decrease with kept channels)");
            if (ii > 0 && x < L.us[L.index(wi, ai, oi, ii - 1)])
              fail(at + " decreases from kept_in " + std::to_string(L.kept_in[ii - 1]) + " to " +
                   std::to_string(L.kept_in[ii]) + " (times must not decrease with kept channels)");
          }
    const json& k = need(l, "kernels", where);
    if (!k.is_array() || k.size() != t.weight_bits.size()) fail(where + ": kernels must hold one row per weight bit width");
    for (const json& row : k) {
      if (!row.is_array() || row.size() != L.act_bits.size())
        fail(where + ": kernels must hold one name per activation bit width");
      for (const json& s : row) {
        if (!s.is_string()) fail(where + ": kernels holds a non-string");
        L.kernels.push_back(s.get<std::string>());
      }
    }
    t.layers.push_back(std::move(L));
  }
  // in_from names a layer whose outputs are removable and whose channels match.
  for (const CostLayer& L : t.layers) {
    if (L.in_from.empty()) continue;
    const CostLayer& P = t.layer(L.in_from);
    if (!P.out_removable)
      fail("layer '" + L.name + "': in_from '" + P.name + "' does not remove its pruned outputs (out_removable false)");
    if (P.out_channels * L.in_per_channel != L.in_channels)
      fail("layer '" + L.name + "': in_from '" + P.name + "' has " + std::to_string(P.out_channels) + " outputs x " +
           std::to_string(L.in_per_channel) + " per channel, not the layer's " + std::to_string(L.in_channels) +
           " inputs");
  }
  const json& other = need(j, "other", "table");
  if (!other.is_array()) fail("other must be an array");
  for (const json& o : other) {
    CostOther c;
    c.name = get_as<std::string>(o, "name", "an 'other' entry");
    const std::string where = "other '" + c.name + "'";
    c.op = get_as<std::string>(o, "op", where);
    c.us = get_as<double>(o, "us", where);
    if (!(c.us >= 0) || !std::isfinite(c.us)) fail(where + ": us must be >= 0 and finite");
    if (o.contains("measured_us")) {
      c.measured_us = number(o["measured_us"], where + ": measured_us");
      if (!(c.measured_us >= 0) || !std::isfinite(c.measured_us)) fail(where + ": measured_us must be >= 0 and finite");
    }
    t.other.push_back(std::move(c));
  }
  return t;
}

CostTable CostTable::load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw CostTableError("cost table '" + path + "': cannot open the file");
  std::stringstream ss;
  ss << f.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    throw CostTableError("cost table '" + path + "': not valid JSON (" + e.what() + ")");
  }
  try {
    return from_json(j);
  } catch (const CostTableError& e) {
    throw CostTableError("'" + path + "': " + e.what());
  }
}

void CostTable::save(const std::string& path) const {
  const std::string s = to_json().dump(1) + "\n";
  try {
    write_file_bytes(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  } catch (const std::exception& e) {
    throw CostTableError(std::string("cost table: ") + e.what());
  }
}

int CostTable::layer_index(const std::string& name) const {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].name == name) return static_cast<int>(i);
  return -1;
}

const CostLayer& CostTable::layer(const std::string& name) const {
  const int i = layer_index(name);
  if (i < 0) fail("no layer '" + name + "'");
  return layers[static_cast<size_t>(i)];
}

double CostTable::other_us() const {
  double s = call_us;
  for (const auto& o : other) s += o.us;
  return s;
}

void CostTable::check_graph(const Graph& g) const {
  if (g.input.shape != input)
    fail("the table describes input " + shape_str(input) + ", the graph's input is " + shape_str(g.input.shape));
  std::vector<const Node*> gl;
  for (const auto& n : g.nodes)
    if (n.is_layer()) gl.push_back(&n);
  for (size_t i = 0; i < std::max(gl.size(), layers.size()); ++i) {
    if (i >= layers.size()) fail("the graph's layer '" + gl[i]->name + "' is not in the table");
    if (i >= gl.size()) fail("the table's layer '" + layers[i].name + "' is not in the graph");
    const Node& n = *gl[i];
    const CostLayer& L = layers[i];
    if (n.name != L.name)
      fail("layer " + std::to_string(i) + " is '" + L.name + "' in the table but '" + n.name +
           "' in the graph (layer names do not match the graph: profile this architecture again)");
    const std::string op = n.op == OpKind::Conv2d ? "conv2d" : "linear";
    const int64_t in = n.op == OpKind::Conv2d ? n.in_channels : n.in_features;
    if (L.op != op || L.out_channels != n.outputs() || L.in_channels != in)
      fail("layer '" + L.name + "' is " + L.op + " " + std::to_string(L.in_channels) + "->" +
           std::to_string(L.out_channels) + " in the table but " + op + " " + std::to_string(in) + "->" +
           std::to_string(n.outputs()) + " in the graph (another width?)");
  }
}

double CostTable::layer_us(const CostLayer& L, int w, int a, double ko, double ki) const {
  const size_t wi = pos_of(weight_bits, w), ai = pos_of(L.act_bits, a);
  if (wi == weight_bits.size()) fail("layer '" + L.name + "': " + std::to_string(w) + " weight bits are not on the grid");
  if (ai == L.act_bits.size())
    fail("layer '" + L.name + "': " + std::to_string(a) + " input activation bits are not on the layer's grid");
  const auto wo = interp_weights(L.kept_out, ko), wi_ = interp_weights(L.kept_in, ki);
  double t = 0;
  for (size_t oi = 0; oi < wo.size(); ++oi)
    for (size_t ii = 0; ii < wi_.size(); ++ii)
      if (wo[oi] != 0 && wi_[ii] != 0) t += wo[oi] * wi_[ii] * L.us[L.index(wi, ai, oi, ii)];
  return t;
}

double CostTable::predict_us(const std::map<std::string, int>& wbits, const std::map<std::string, int>& abits,
                             const std::map<std::string, int64_t>& kept) const {
  double total = other_us();
  auto kept_of = [&](const CostLayer& L) -> double {
    if (!L.out_removable) return static_cast<double>(L.out_channels);
    auto it = kept.find(L.name);
    return it == kept.end() ? static_cast<double>(L.out_channels) : static_cast<double>(std::max<int64_t>(1, it->second));
  };
  for (const CostLayer& L : layers) {
    auto wb = wbits.find(L.name);
    auto ab = abits.find(L.name);
    const double ki = L.in_from.empty() ? static_cast<double>(L.in_channels)
                                        : kept_of(layer(L.in_from)) * static_cast<double>(L.in_per_channel);
    total += layer_us(L, wb == wbits.end() ? 32 : wb->second, ab == abits.end() ? L.act_bits.back() : ab->second,
                      kept_of(L), ki);
  }
  return total;
}

}  // namespace bbits::contract
