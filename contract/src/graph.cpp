#include "bbits/contract/graph.h"

#include <cmath>
#include <set>
#include <sstream>
#include <tuple>

namespace bbits::contract {

using nlohmann::json;

int64_t FTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

const char* op_kind_name(OpKind op) {
  switch (op) {
    case OpKind::Conv2d: return "conv2d";
    case OpKind::Linear: return "linear";
    case OpKind::MaxPool: return "maxpool";
    case OpKind::AvgPool: return "avgpool";
    case OpKind::GlobalAvgPool: return "global_avgpool";
    case OpKind::Add: return "add";
    case OpKind::Concat: return "concat";
    case OpKind::Flatten: return "flatten";
    case OpKind::Relu: return "relu";
    case OpKind::Relu6: return "relu6";
  }
  return "?";
}

const char* act_name(Act a) {
  switch (a) {
    case Act::None: return "none";
    case Act::Relu: return "relu";
    case Act::Relu6: return "relu6";
  }
  return "?";
}

int Graph::index_of(const std::string& name) const {
  if (name == input.name) return -1;
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].name == name) return static_cast<int>(i);
  throw CheckpointError("graph: no node named '" + name + "'");
}

const Node& Graph::node(const std::string& name) const {
  const int i = index_of(name);
  if (i < 0) throw CheckpointError("graph: '" + name + "' is the input, not a node");
  return nodes[static_cast<size_t>(i)];
}

const std::vector<int64_t>& Shapes::of(const Graph& g, const std::string& name) const {
  const int i = g.index_of(name);
  return i < 0 ? input : node[static_cast<size_t>(i)];
}

// ---- JSON parsing --------------------------------------------------------------
namespace {

std::string where(const std::string& node) { return "bbits.graph: node '" + node + "'"; }

const json& field(const json& j, const char* key, const std::string& ctx) {
  if (!j.is_object()) throw CheckpointError(ctx + ": expected a JSON object");
  auto it = j.find(key);
  if (it == j.end()) throw CheckpointError(ctx + ": missing field '" + key + "'");
  return *it;
}

int64_t get_int(const json& j, const char* key, const std::string& ctx, int64_t lo, int64_t hi) {
  const json& v = field(j, key, ctx);
  if (!v.is_number_integer()) throw CheckpointError(ctx + ": field '" + key + "' must be an integer");
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    throw CheckpointError(ctx + ": field '" + key + "' = " + std::to_string(x) + " is out of range [" +
                       std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

bool get_bool(const json& j, const char* key, const std::string& ctx, bool required = true,
              bool def = false) {
  if (!required && (!j.contains(key))) return def;
  const json& v = field(j, key, ctx);
  if (!v.is_boolean()) throw CheckpointError(ctx + ": field '" + key + "' must be true or false");
  return v.get<bool>();
}

double get_num(const json& j, const char* key, const std::string& ctx) {
  const json& v = field(j, key, ctx);
  if (!v.is_number()) throw CheckpointError(ctx + ": field '" + key + "' must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x)) throw CheckpointError(ctx + ": field '" + key + "' must be finite");
  return x;
}

std::string get_str(const json& j, const char* key, const std::string& ctx) {
  const json& v = field(j, key, ctx);
  if (!v.is_string()) throw CheckpointError(ctx + ": field '" + key + "' must be a string");
  return v.get<std::string>();
}

std::pair<int, int> get_pair(const json& j, const char* key, const std::string& ctx, int lo,
                             int hi) {
  const json& v = field(j, key, ctx);
  if (!v.is_array() || v.size() != 2 || !v[0].is_number_integer() || !v[1].is_number_integer())
    throw CheckpointError(ctx + ": field '" + key + "' must be an array of two integers");
  const int64_t a = v[0].get<int64_t>(), b = v[1].get<int64_t>();
  if (a < lo || a > hi || b < lo || b > hi)
    throw CheckpointError(ctx + ": field '" + key + "' values must be in [" + std::to_string(lo) +
                       ", " + std::to_string(hi) + "]");
  return {static_cast<int>(a), static_cast<int>(b)};
}

Act parse_act(const json& j, const std::string& ctx) {
  if (!j.contains("activation")) return Act::None;
  const std::string a = get_str(j, "activation", ctx);
  if (a == "none") return Act::None;
  if (a == "relu") return Act::Relu;
  if (a == "relu6") return Act::Relu6;
  throw CheckpointError(ctx + ": unknown activation '" + a + "' (none, relu, relu6)");
}

void parse_act_quant(Node& n, const json& j, const std::string& ctx) {
  n.act_quant = get_bool(j, "act_quant", ctx, false, false);
  n.act_signed = get_bool(j, "act_signed", ctx, false, false);
}

constexpr int64_t kMaxDim = int64_t{1} << 24;

}  // namespace

Graph parse_graph(const json& j) {
  const std::string ctx = "bbits.graph";
  if (!j.is_object()) throw CheckpointError(ctx + ": must be a JSON object");
  Graph g;
  g.model = j.contains("model") ? get_str(j, "model", ctx) : std::string("unknown");

  const json& in = field(j, "input", ctx);
  const std::string ictx = ctx + ": input";
  g.input.name = in.contains("name") ? get_str(in, "name", ictx) : std::string("input");
  const json& shp = field(in, "shape", ictx);
  if (!shp.is_array() || shp.size() != 3)
    throw CheckpointError(ictx + ": field 'shape' must be [channels, height, width]");
  for (const json& d : shp) {
    if (!d.is_number_integer() || d.get<int64_t>() < 1 || d.get<int64_t>() > kMaxDim)
      throw CheckpointError(ictx + ": field 'shape' must hold positive integers");
    g.input.shape.push_back(d.get<int64_t>());
  }
  g.input.layout = in.contains("layout") ? get_str(in, "layout", ictx) : std::string("NCHW");
  if (g.input.layout != "NCHW")
    throw CheckpointError(ictx + ": layout '" + g.input.layout + "' is not supported (NCHW)");
  g.input.pixel_scale = in.contains("pixel_scale") ? get_num(in, "pixel_scale", ictx) : 1.0;
  if (!(g.input.pixel_scale > 0)) throw CheckpointError(ictx + ": pixel_scale must be positive");
  auto read_vec = [&](const char* key, float def) {
    std::vector<float> v;
    if (!in.contains(key)) {
      v.assign(static_cast<size_t>(g.input.shape[0]), def);
      return v;
    }
    const json& a = in.at(key);
    if (!a.is_array()) throw CheckpointError(ictx + ": field '" + key + "' must be an array");
    for (const json& x : a) {
      if (!x.is_number() || !std::isfinite(x.get<double>()))
        throw CheckpointError(ictx + ": field '" + key + "' must hold finite numbers");
      v.push_back(x.get<float>());
    }
    if (v.size() == 1 && g.input.shape[0] > 1) v.assign(static_cast<size_t>(g.input.shape[0]), v[0]);
    if (static_cast<int64_t>(v.size()) != g.input.shape[0])
      throw CheckpointError(ictx + ": field '" + key + "' must have one value per channel (" +
                         std::to_string(g.input.shape[0]) + ")");
    return v;
  };
  g.input.mean = read_vec("mean", 0.0f);
  g.input.std = read_vec("std", 1.0f);
  for (float s : g.input.std)
    if (!(s > 0)) throw CheckpointError(ictx + ": every 'std' value must be positive");

  const json& nodes = field(j, "nodes", ctx);
  if (!nodes.is_array() || nodes.empty()) throw CheckpointError(ctx + ": 'nodes' must be a non-empty array");
  std::set<std::string> names{g.input.name};
  for (const json& jn : nodes) {
    Node n;
    n.name = get_str(jn, "name", ctx + ": a node");
    const std::string nctx = where(n.name);
    if (n.name.empty()) throw CheckpointError(ctx + ": a node has an empty name");
    if (!names.insert(n.name).second) throw CheckpointError(nctx + ": duplicate node name");
    const std::string op = get_str(jn, "op", nctx);
    const json& ins = field(jn, "inputs", nctx);
    if (!ins.is_array()) throw CheckpointError(nctx + ": field 'inputs' must be an array");
    for (const json& x : ins) {
      if (!x.is_string()) throw CheckpointError(nctx + ": field 'inputs' must hold node names");
      const std::string s = x.get<std::string>();
      if (!names.count(s) || s == n.name)
        throw CheckpointError(nctx + ": input '" + s + "' is not the input or an earlier node");
      n.inputs.push_back(s);
    }
    size_t want_inputs = 1;
    if (op == "conv2d") {
      n.op = OpKind::Conv2d;
      n.in_channels = get_int(jn, "in_channels", nctx, 1, kMaxDim);
      n.out_channels = get_int(jn, "out_channels", nctx, 1, kMaxDim);
      std::tie(n.kernel_h, n.kernel_w) = get_pair(jn, "kernel", nctx, 1, 1024);
      std::tie(n.stride_h, n.stride_w) = get_pair(jn, "stride", nctx, 1, 1024);
      std::tie(n.pad_h, n.pad_w) = get_pair(jn, "padding", nctx, 0, 1024);
      std::tie(n.dilation_h, n.dilation_w) =
          jn.contains("dilation") ? get_pair(jn, "dilation", nctx, 1, 1024) : std::pair<int, int>{1, 1};
      n.groups = jn.contains("groups") ? static_cast<int>(get_int(jn, "groups", nctx, 1, kMaxDim)) : 1;
      if (n.in_channels % n.groups || n.out_channels % n.groups)
        throw CheckpointError(nctx + ": groups " + std::to_string(n.groups) +
                           " must divide in_channels and out_channels");
    } else if (op == "linear") {
      n.op = OpKind::Linear;
      n.in_features = get_int(jn, "in_features", nctx, 1, int64_t{1} << 31);
      n.out_features = get_int(jn, "out_features", nctx, 1, kMaxDim);
    } else if (op == "maxpool" || op == "avgpool") {
      n.op = op == "maxpool" ? OpKind::MaxPool : OpKind::AvgPool;
      std::tie(n.kernel_h, n.kernel_w) = get_pair(jn, "kernel", nctx, 1, 1024);
      std::tie(n.stride_h, n.stride_w) =
          jn.contains("stride") ? get_pair(jn, "stride", nctx, 1, 1024)
                                : std::pair<int, int>{n.kernel_h, n.kernel_w};
      std::tie(n.pad_h, n.pad_w) =
          jn.contains("padding") ? get_pair(jn, "padding", nctx, 0, 1024) : std::pair<int, int>{0, 0};
      if (n.pad_h * 2 > n.kernel_h || n.pad_w * 2 > n.kernel_w)
        throw CheckpointError(nctx + ": padding must be at most half the kernel");
      if (n.op == OpKind::AvgPool) n.count_include_pad = get_bool(jn, "count_include_pad", nctx);
    } else if (op == "global_avgpool") {
      n.op = OpKind::GlobalAvgPool;
    } else if (op == "add") {
      n.op = OpKind::Add;
      want_inputs = 2;
    } else if (op == "concat") {
      n.op = OpKind::Concat;
      n.axis = jn.contains("axis") ? static_cast<int>(get_int(jn, "axis", nctx, 1, 1)) : 1;
      want_inputs = 0;
    } else if (op == "flatten") {
      n.op = OpKind::Flatten;
    } else if (op == "relu") {
      n.op = OpKind::Relu;
    } else if (op == "relu6") {
      n.op = OpKind::Relu6;
    } else {
      throw CheckpointError(nctx + ": unknown op '" + op + "'");
    }
    if (want_inputs && n.inputs.size() != want_inputs)
      throw CheckpointError(nctx + ": " + op + " takes " + std::to_string(want_inputs) + " input(s), got " +
                         std::to_string(n.inputs.size()));
    if (!want_inputs && n.inputs.size() < 2)
      throw CheckpointError(nctx + ": concat takes at least two inputs");
    if (n.is_layer()) {
      n.bias = get_bool(jn, "bias", nctx);
      n.bn = get_bool(jn, "bn", nctx, false, false);
      if (n.bn) {
        n.bn_eps = jn.contains("bn_eps") ? get_num(jn, "bn_eps", nctx) : 1e-5;
        if (!(n.bn_eps > 0)) throw CheckpointError(nctx + ": bn_eps must be positive");
      }
      n.activation = parse_act(jn, nctx);
      n.weight_quant = get_bool(jn, "weight_quant", nctx, false, false);
      n.prune = get_bool(jn, "prune", nctx, false, false);
      if (n.prune && !n.weight_quant)
        throw CheckpointError(nctx + ": prune requires weight_quant (the pruning gate lives in the weight quantizer)");
      parse_act_quant(n, jn, nctx);
    } else if (n.op == OpKind::Add) {
      n.activation = parse_act(jn, nctx);
      parse_act_quant(n, jn, nctx);
    } else if (n.op == OpKind::Relu || n.op == OpKind::Relu6) {
      parse_act_quant(n, jn, nctx);
    }
    g.nodes.push_back(std::move(n));
  }
  const json& outs = field(j, "outputs", ctx);
  if (!outs.is_array() || outs.empty()) throw CheckpointError(ctx + ": 'outputs' must be a non-empty array");
  for (const json& o : outs) {
    if (!o.is_string() || !names.count(o.get<std::string>()) || o.get<std::string>() == g.input.name)
      throw CheckpointError(ctx + ": output '" + o.dump() + "' is not a node");
    g.outputs.push_back(o.get<std::string>());
  }
  return g;
}

json graph_to_json(const Graph& g) {
  json j;
  j["model"] = g.model;
  j["input"] = {{"name", g.input.name}, {"shape", g.input.shape},      {"layout", g.input.layout},
                {"pixel_scale", g.input.pixel_scale}, {"mean", g.input.mean}, {"std", g.input.std}};
  json nodes = json::array();
  for (const Node& n : g.nodes) {
    json jn;
    jn["name"] = n.name;
    jn["op"] = op_kind_name(n.op);
    jn["inputs"] = n.inputs;
    switch (n.op) {
      case OpKind::Conv2d:
        jn["in_channels"] = n.in_channels;
        jn["out_channels"] = n.out_channels;
        jn["kernel"] = {n.kernel_h, n.kernel_w};
        jn["stride"] = {n.stride_h, n.stride_w};
        jn["padding"] = {n.pad_h, n.pad_w};
        jn["dilation"] = {n.dilation_h, n.dilation_w};
        jn["groups"] = n.groups;
        break;
      case OpKind::Linear:
        jn["in_features"] = n.in_features;
        jn["out_features"] = n.out_features;
        break;
      case OpKind::MaxPool:
      case OpKind::AvgPool:
        jn["kernel"] = {n.kernel_h, n.kernel_w};
        jn["stride"] = {n.stride_h, n.stride_w};
        jn["padding"] = {n.pad_h, n.pad_w};
        if (n.op == OpKind::AvgPool) jn["count_include_pad"] = n.count_include_pad;
        break;
      case OpKind::Concat:
        jn["axis"] = n.axis;
        break;
      default:
        break;
    }
    if (n.is_layer()) {
      jn["bias"] = n.bias;
      jn["bn"] = n.bn;
      jn["bn_eps"] = n.bn_eps;
      jn["weight_quant"] = n.weight_quant;
      jn["prune"] = n.prune;
    }
    if (n.is_layer() || n.op == OpKind::Add) jn["activation"] = act_name(n.activation);
    if (n.is_layer() || n.op == OpKind::Add || n.op == OpKind::Relu || n.op == OpKind::Relu6) {
      jn["act_quant"] = n.act_quant;
      jn["act_signed"] = n.act_signed;
    }
    nodes.push_back(jn);
  }
  j["nodes"] = nodes;
  j["outputs"] = g.outputs;
  return j;
}

// ---- shapes ------------------------------------------------------------------------
namespace {
int64_t conv_out(int64_t in, int k, int s, int p, int d) {
  const int64_t eff = static_cast<int64_t>(d) * (k - 1) + 1;
  const int64_t num = in + 2 * p - eff;
  if (num < 0) return 0;
  return num / s + 1;
}
int64_t pool_out(int64_t in, int k, int s, int p) {
  // PyTorch floor mode
  const int64_t num = in + 2 * p - k;
  if (num < 0) return 0;
  return num / s + 1;
}
}  // namespace

Shapes infer_shapes(const Graph& g) {
  Shapes sh;
  sh.input = g.input.shape;
  sh.node.resize(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    const std::string ctx = where(n.name);
    const std::vector<int64_t>& in = sh.of(g, n.inputs[0]);
    auto need_chw = [&]() {
      if (in.size() != 3)
        throw CheckpointError(ctx + ": " + op_kind_name(n.op) + " needs a C,H,W input, '" + n.inputs[0] +
                           "' has shape " + shape_str(in));
    };
    std::vector<int64_t> out;
    switch (n.op) {
      case OpKind::Conv2d: {
        need_chw();
        if (in[0] != n.in_channels)
          throw CheckpointError(ctx + ": in_channels " + std::to_string(n.in_channels) +
                             " does not match input '" + n.inputs[0] + "' with " + std::to_string(in[0]) +
                             " channels");
        const int64_t oh = conv_out(in[1], n.kernel_h, n.stride_h, n.pad_h, n.dilation_h);
        const int64_t ow = conv_out(in[2], n.kernel_w, n.stride_w, n.pad_w, n.dilation_w);
        if (oh < 1 || ow < 1) throw CheckpointError(ctx + ": kernel larger than its padded input " + shape_str(in));
        out = {n.out_channels, oh, ow};
        break;
      }
      case OpKind::Linear: {
        int64_t f = 1;
        for (int64_t d : in) f *= d;
        if (in.size() != 1)
          throw CheckpointError(ctx + ": linear needs a flat input; insert a flatten node after '" +
                             n.inputs[0] + "' (shape " + shape_str(in) + ")");
        if (f != n.in_features)
          throw CheckpointError(ctx + ": in_features " + std::to_string(n.in_features) + " does not match input '" +
                             n.inputs[0] + "' with " + std::to_string(f) + " features");
        out = {n.out_features};
        break;
      }
      case OpKind::MaxPool:
      case OpKind::AvgPool: {
        need_chw();
        const int64_t oh = pool_out(in[1], n.kernel_h, n.stride_h, n.pad_h);
        const int64_t ow = pool_out(in[2], n.kernel_w, n.stride_w, n.pad_w);
        if (oh < 1 || ow < 1) throw CheckpointError(ctx + ": pooling window larger than its input " + shape_str(in));
        out = {in[0], oh, ow};
        break;
      }
      case OpKind::GlobalAvgPool:
        need_chw();
        out = {in[0], 1, 1};
        break;
      case OpKind::Add: {
        const auto& b = sh.of(g, n.inputs[1]);
        if (b != in)
          throw CheckpointError(ctx + ": add of different shapes " + shape_str(in) + " ('" + n.inputs[0] + "') and " +
                             shape_str(b) + " ('" + n.inputs[1] + "')");
        out = in;
        break;
      }
      case OpKind::Concat: {
        need_chw();
        out = in;
        for (size_t k = 1; k < n.inputs.size(); ++k) {
          const auto& b = sh.of(g, n.inputs[k]);
          if (b.size() != 3 || b[1] != in[1] || b[2] != in[2])
            throw CheckpointError(ctx + ": concat input '" + n.inputs[k] + "' has shape " + shape_str(b) +
                               ", incompatible with " + shape_str(in));
          out[0] += b[0];
        }
        break;
      }
      case OpKind::Flatten: {
        int64_t f = 1;
        for (int64_t d : in) f *= d;
        out = {f};
        break;
      }
      case OpKind::Relu:
      case OpKind::Relu6:
        out = in;
        break;
    }
    sh.node[i] = out;
  }
  return sh;
}

std::map<std::string, std::vector<int64_t>> expected_tensors(const Graph& g) {
  std::map<std::string, std::vector<int64_t>> t;
  t[g.input.name + ".aq.x_max"] = {1};
  auto aq = [&](const std::string& n) {
    t[n + ".aq.x_max"] = {1};
    for (const char* b : {"4", "8", "16", "32"}) t[n + ".aq.log_alpha_" + b] = {1};
  };
  for (const Node& n : g.nodes) {
    if (n.is_layer()) {
      const int64_t o = n.op == OpKind::Conv2d ? n.out_channels : n.out_features;
      if (n.op == OpKind::Conv2d)
        t[n.name + ".weight"] = {n.out_channels, n.in_channels / n.groups, n.kernel_h, n.kernel_w};
      else
        t[n.name + ".weight"] = {n.out_features, n.in_features};
      if (n.bias) t[n.name + ".bias"] = {o};
      if (n.bn)
        for (const char* s : {".bn.weight", ".bn.bias", ".bn.running_mean", ".bn.running_var"}) t[n.name + s] = {o};
      if (n.weight_quant) {
        t[n.name + ".wq.x_max"] = {1};
        for (const char* b : {"4", "8", "16", "32"}) t[n.name + ".wq.log_alpha_" + b] = {1};
        if (n.prune) t[n.name + ".wq.log_alpha_2"] = {o};
      }
    }
    if (n.act_quant) aq(n.name);
  }
  return t;
}

std::string feeding_quantizer(const Graph& g, const std::string& from) {
  std::string cur = from;
  for (;;) {
    if (cur == g.input.name) return g.input.name;
    const Node& n = g.node(cur);
    if (n.act_quant) return n.name;
    switch (n.op) {
      case OpKind::MaxPool:
      case OpKind::AvgPool:
      case OpKind::GlobalAvgPool:
      case OpKind::Flatten:
      case OpKind::Relu:
      case OpKind::Relu6:
        cur = n.inputs.at(0);
        continue;
      default:
        return "";
    }
  }
}

}  // namespace bbits::contract
