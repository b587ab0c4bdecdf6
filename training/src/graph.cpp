#include "bbits/training/graph.h"

#include <cmath>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace bbits::train {

using nlohmann::json;

const char* op_name(Op op) {
  switch (op) {
    case Op::Conv2d: return "conv2d";
    case Op::Linear: return "linear";
    case Op::MaxPool: return "maxpool";
    case Op::AvgPool: return "avgpool";
    case Op::GlobalAvgPool: return "global_avgpool";
    case Op::Add: return "add";
    case Op::Concat: return "concat";
    case Op::Flatten: return "flatten";
    case Op::Relu: return "relu";
    case Op::Relu6: return "relu6";
  }
  return "?";
}

Op op_from_name(const std::string& s) {
  static const std::pair<const char*, Op> table[] = {
      {"conv2d", Op::Conv2d}, {"linear", Op::Linear},   {"maxpool", Op::MaxPool},
      {"avgpool", Op::AvgPool}, {"global_avgpool", Op::GlobalAvgPool}, {"add", Op::Add},
      {"concat", Op::Concat}, {"flatten", Op::Flatten}, {"relu", Op::Relu},
      {"relu6", Op::Relu6}};
  for (const auto& [n, op] : table)
    if (s == n) return op;
  throw std::invalid_argument("graph: unknown op '" + s + "'");
}

const Node& Graph::node(const std::string& name) const {
  for (const auto& n : nodes)
    if (n.name == name) return n;
  throw std::invalid_argument("graph: no node named '" + name + "'");
}

int Graph::index_of(const std::string& name) const {
  if (name == input.name) return -1;
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].name == name) return static_cast<int>(i);
  throw std::invalid_argument("graph: no node named '" + name + "'");
}

namespace {
json pair_json(const std::array<int64_t, 2>& a) { return json::array({a[0], a[1]}); }

bool is_activation_ok(const std::string& a) { return a == "none" || a == "relu" || a == "relu6"; }

template <class T>
T get_field(const json& j, const char* key, const std::string& node) {
  if (!j.contains(key)) throw std::invalid_argument("graph: node '" + node + "' lacks field '" + key + "'");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    throw std::invalid_argument("graph: node '" + node + "' field '" + key + "' has the wrong type");
  }
}

std::array<int64_t, 2> get_pair(const json& j, const char* key, const std::string& node) {
  auto v = get_field<std::vector<int64_t>>(j, key, node);
  if (v.size() != 2) throw std::invalid_argument("graph: node '" + node + "' field '" + key + "' must have 2 entries");
  return {v[0], v[1]};
}
}  // namespace

json Graph::to_json() const {
  json j;
  j["model"] = model;
  j["input"] = {{"name", input.name},           {"shape", input.shape}, {"layout", input.layout},
                {"pixel_scale", input.pixel_scale}, {"mean", input.mean},   {"std", input.std}};
  json jn = json::array();
  for (const auto& n : nodes) {
    json o;
    o["name"] = n.name;
    o["op"] = op_name(n.op);
    o["inputs"] = n.inputs;
    switch (n.op) {
      case Op::Conv2d:
        o["in_channels"] = n.in_channels;
        o["out_channels"] = n.out_channels;
        o["kernel"] = pair_json(n.kernel);
        o["stride"] = pair_json(n.stride);
        o["padding"] = pair_json(n.padding);
        o["dilation"] = pair_json(n.dilation);
        o["groups"] = n.groups;
        o["bias"] = n.bias;
        o["bn"] = n.bn;
        o["bn_eps"] = n.bn_eps;
        o["activation"] = n.activation;
        o["weight_quant"] = n.weight_quant;
        o["prune"] = n.prune;
        o["act_quant"] = n.act_quant;
        o["act_signed"] = n.act_signed;
        break;
      case Op::Linear:
        o["in_features"] = n.in_channels;
        o["out_features"] = n.out_channels;
        o["bias"] = n.bias;
        o["activation"] = n.activation;
        o["weight_quant"] = n.weight_quant;
        o["prune"] = n.prune;
        o["act_quant"] = n.act_quant;
        o["act_signed"] = n.act_signed;
        break;
      case Op::MaxPool:
      case Op::AvgPool:
        o["kernel"] = pair_json(n.kernel);
        o["stride"] = pair_json(n.stride);
        o["padding"] = pair_json(n.padding);
        break;
      case Op::Add:
        o["activation"] = n.activation;
        o["act_quant"] = n.act_quant;
        o["act_signed"] = n.act_signed;
        break;
      case Op::Concat:
        o["axis"] = n.axis;
        break;
      case Op::Relu:
      case Op::Relu6:
        o["act_quant"] = n.act_quant;
        o["act_signed"] = n.act_signed;
        break;
      case Op::GlobalAvgPool:
      case Op::Flatten:
        break;
    }
    jn.push_back(std::move(o));
  }
  j["nodes"] = std::move(jn);
  j["outputs"] = outputs;
  return j;
}

std::string Graph::to_json_string() const { return to_json().dump(); }

Graph Graph::from_json_string(const std::string& s) {
  json j;
  try {
    j = json::parse(s);
  } catch (const json::exception& e) {
    throw std::invalid_argument(std::string("graph: metadata is not valid JSON: ") + e.what());
  }
  return from_json(j);
}

Graph Graph::from_json(const json& j) {
  if (!j.is_object()) throw std::invalid_argument("graph: not a JSON object");
  Graph g;
  try {
    g.model = j.at("model").get<std::string>();
    const json& in = j.at("input");
    g.input.name = in.at("name").get<std::string>();
    g.input.shape = in.at("shape").get<std::vector<int64_t>>();
    g.input.layout = in.at("layout").get<std::string>();
    g.input.pixel_scale = in.at("pixel_scale").get<double>();
    g.input.mean = in.at("mean").get<std::vector<double>>();
    g.input.std = in.at("std").get<std::vector<double>>();
    g.outputs = j.at("outputs").get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    throw std::invalid_argument(std::string("graph: missing or malformed top-level field: ") + e.what());
  }
  if (g.input.shape.size() != 3) throw std::invalid_argument("graph: input shape must be [C, H, W]");
  if (g.input.layout != "NCHW") throw std::invalid_argument("graph: only NCHW input layout is supported");
  if (!j.contains("nodes") || !j["nodes"].is_array()) throw std::invalid_argument("graph: 'nodes' must be an array");
  for (const auto& o : j["nodes"]) {
    Node n;
    if (!o.is_object()) throw std::invalid_argument("graph: node is not an object");
    n.name = get_field<std::string>(o, "name", "?");
    n.op = op_from_name(get_field<std::string>(o, "op", n.name));
    n.inputs = get_field<std::vector<std::string>>(o, "inputs", n.name);
    switch (n.op) {
      case Op::Conv2d:
        n.in_channels = get_field<int64_t>(o, "in_channels", n.name);
        n.out_channels = get_field<int64_t>(o, "out_channels", n.name);
        n.kernel = get_pair(o, "kernel", n.name);
        n.stride = get_pair(o, "stride", n.name);
        n.padding = get_pair(o, "padding", n.name);
        n.dilation = get_pair(o, "dilation", n.name);
        n.groups = get_field<int64_t>(o, "groups", n.name);
        n.bias = get_field<bool>(o, "bias", n.name);
        n.bn = get_field<bool>(o, "bn", n.name);
        n.bn_eps = get_field<double>(o, "bn_eps", n.name);
        n.activation = get_field<std::string>(o, "activation", n.name);
        n.weight_quant = get_field<bool>(o, "weight_quant", n.name);
        n.prune = get_field<bool>(o, "prune", n.name);
        n.act_quant = get_field<bool>(o, "act_quant", n.name);
        n.act_signed = n.act_quant ? get_field<bool>(o, "act_signed", n.name) : false;
        break;
      case Op::Linear:
        n.in_channels = get_field<int64_t>(o, "in_features", n.name);
        n.out_channels = get_field<int64_t>(o, "out_features", n.name);
        n.bias = get_field<bool>(o, "bias", n.name);
        n.activation = get_field<std::string>(o, "activation", n.name);
        n.weight_quant = get_field<bool>(o, "weight_quant", n.name);
        n.prune = get_field<bool>(o, "prune", n.name);
        n.act_quant = get_field<bool>(o, "act_quant", n.name);
        n.act_signed = n.act_quant ? get_field<bool>(o, "act_signed", n.name) : false;
        break;
      case Op::MaxPool:
      case Op::AvgPool:
        n.kernel = get_pair(o, "kernel", n.name);
        n.stride = get_pair(o, "stride", n.name);
        n.padding = get_pair(o, "padding", n.name);
        break;
      case Op::Add:
        n.activation = get_field<std::string>(o, "activation", n.name);
        n.act_quant = get_field<bool>(o, "act_quant", n.name);
        n.act_signed = n.act_quant ? get_field<bool>(o, "act_signed", n.name) : false;
        break;
      case Op::Concat:
        n.axis = get_field<int64_t>(o, "axis", n.name);
        break;
      case Op::Relu:
      case Op::Relu6:
        n.activation = n.op == Op::Relu ? "relu" : "relu6";
        n.act_quant = get_field<bool>(o, "act_quant", n.name);
        n.act_signed = n.act_quant ? get_field<bool>(o, "act_signed", n.name) : false;
        break;
      case Op::GlobalAvgPool:
      case Op::Flatten:
        break;
    }
    if (!is_activation_ok(n.activation))
      throw std::invalid_argument("graph: node '" + n.name + "' has unknown activation '" + n.activation + "'");
    for (const auto& in : n.inputs) {
      bool found = in == g.input.name;
      for (const auto& prev : g.nodes) found = found || prev.name == in;
      if (!found) throw std::invalid_argument("graph: node '" + n.name + "' reads '" + in + "' which is not an earlier node");
    }
    for (const auto& prev : g.nodes)
      if (prev.name == n.name) throw std::invalid_argument("graph: duplicate node name '" + n.name + "'");
    g.nodes.push_back(std::move(n));
  }
  for (const auto& o : g.outputs) g.index_of(o);
  infer_shapes(g);  // validates channels and spatial sizes
  return g;
}

std::map<std::string, std::vector<int64_t>> infer_shapes(const Graph& g) {
  std::map<std::string, std::vector<int64_t>> s;
  s[g.input.name] = g.input.shape;
  auto fail = [](const Node& n, const std::string& why) {
    throw std::invalid_argument("graph: node '" + n.name + "': " + why);
  };
  for (const auto& n : g.nodes) {
    const size_t want_inputs = (n.op == Op::Add) ? 2 : (n.op == Op::Concat ? n.inputs.size() : 1);
    if (n.inputs.size() != want_inputs || n.inputs.empty()) fail(n, "wrong number of inputs");
    const auto& x = s.at(n.inputs[0]);
    std::vector<int64_t> y;
    switch (n.op) {
      case Op::Conv2d: {
        if (x.size() != 3) fail(n, "conv2d needs a C,H,W input");
        if (x[0] != n.in_channels) fail(n, "in_channels " + std::to_string(n.in_channels) + " but input has " + std::to_string(x[0]));
        if (n.groups < 1 || n.in_channels % n.groups || n.out_channels % n.groups) fail(n, "bad groups");
        int64_t hw[2];
        for (int d = 0; d < 2; ++d) {
          if (n.kernel[d] < 1 || n.stride[d] < 1 || n.padding[d] < 0 || n.dilation[d] < 1) fail(n, "bad kernel/stride/padding/dilation");
          hw[d] = (x[1 + d] + 2 * n.padding[d] - n.dilation[d] * (n.kernel[d] - 1) - 1) / n.stride[d] + 1;
          if (hw[d] < 1) fail(n, "output map is empty");
        }
        y = {n.out_channels, hw[0], hw[1]};
        break;
      }
      case Op::Linear: {
        int64_t f = 1;
        for (auto v : x) f *= v;
        if (x.size() != 1) fail(n, "linear needs a flat input (add a flatten node)");
        if (f != n.in_channels) fail(n, "in_features " + std::to_string(n.in_channels) + " but input has " + std::to_string(f));
        y = {n.out_channels};
        break;
      }
      case Op::MaxPool:
      case Op::AvgPool: {
        if (x.size() != 3) fail(n, "pooling needs a C,H,W input");
        int64_t hw[2];
        for (int d = 0; d < 2; ++d) {
          if (n.kernel[d] < 1 || n.stride[d] < 1 || n.padding[d] < 0) fail(n, "bad pooling window");
          hw[d] = (x[1 + d] + 2 * n.padding[d] - n.kernel[d]) / n.stride[d] + 1;
          if (hw[d] < 1) fail(n, "output map is empty");
        }
        y = {x[0], hw[0], hw[1]};
        break;
      }
      case Op::GlobalAvgPool:
        if (x.size() != 3) fail(n, "global_avgpool needs a C,H,W input");
        y = {x[0], 1, 1};
        break;
      case Op::Flatten: {
        int64_t f = 1;
        for (auto v : x) f *= v;
        y = {f};
        break;
      }
      case Op::Add:
        if (s.at(n.inputs[1]) != x) fail(n, "add inputs have different shapes");
        y = x;
        break;
      case Op::Concat: {
        if (n.axis != 1) fail(n, "only channel concat (axis 1) is supported");
        y = x;
        for (size_t i = 1; i < n.inputs.size(); ++i) {
          const auto& z = s.at(n.inputs[i]);
          if (z.size() != x.size() || (x.size() == 3 && (z[1] != x[1] || z[2] != x[2]))) fail(n, "concat inputs disagree");
          y[0] += z[0];
        }
        break;
      }
      case Op::Relu:
      case Op::Relu6:
        y = x;
        break;
    }
    s[n.name] = y;
  }
  return s;
}

std::string feeding_quantizer(const Graph& g, const std::string& from) {
  std::string cur = from;
  for (;;) {
    if (cur == g.input.name) return g.input.name;
    const Node& n = g.node(cur);
    if (n.act_quant) return n.name;
    if (n.op == Op::MaxPool || n.op == Op::AvgPool || n.op == Op::GlobalAvgPool || n.op == Op::Flatten ||
        n.op == Op::Relu || n.op == Op::Relu6) {
      cur = n.inputs.at(0);
      continue;
    }
    return "";
  }
}

// ---------------------------------------------------------------------------
// Model builders
namespace {

struct Builder {
  Graph g;
  const ModelOptions& opt;
  std::string last;
  explicit Builder(const std::string& model, const ModelOptions& o) : opt(o) {
    g.model = model;
    g.input.shape = o.input_shape;
    g.input.pixel_scale = o.pixel_scale;
    g.input.mean = o.mean;
    g.input.std = o.std;
    last = g.input.name;
  }
  int64_t channels_of(const std::string& name) const { return infer_shapes(g).at(name)[0]; }

  std::string conv(const std::string& name, const std::string& in, int64_t in_c, int64_t out_c, int64_t k,
                   int64_t stride, int64_t pad, bool bn, const std::string& act, bool act_signed = false,
                   int64_t groups = 1) {
    Node n;
    n.name = name;
    n.op = Op::Conv2d;
    n.inputs = {in};
    n.in_channels = in_c;
    n.out_channels = out_c;
    n.kernel = {k, k};
    n.stride = {stride, stride};
    n.padding = {pad, pad};
    n.groups = groups;
    n.bias = !bn;
    n.bn = bn;
    n.activation = act;
    n.weight_quant = opt.quantize;
    n.prune = opt.quantize && opt.prune && groups == 1;
    n.act_quant = opt.quantize;
    n.act_signed = n.act_quant && act_signed;
    g.nodes.push_back(n);
    last = name;
    return name;
  }
  std::string linear(const std::string& name, const std::string& in, int64_t in_f, int64_t out_f,
                     const std::string& act, bool is_last) {
    Node n;
    n.name = name;
    n.op = Op::Linear;
    n.inputs = {in};
    n.in_channels = in_f;
    n.out_channels = out_f;
    n.bias = true;
    n.activation = act;
    n.weight_quant = opt.quantize;
    n.prune = opt.quantize && opt.prune && !is_last;
    n.act_quant = opt.quantize && !is_last;  // logits stay float
    n.act_signed = n.act_quant && act == "none";
    g.nodes.push_back(n);
    last = name;
    return name;
  }
  std::string pool(const std::string& name, const std::string& in, Op op, int64_t k, int64_t s, int64_t p) {
    Node n;
    n.name = name;
    n.op = op;
    n.inputs = {in};
    n.kernel = {k, k};
    n.stride = {s, s};
    n.padding = {p, p};
    g.nodes.push_back(n);
    last = name;
    return name;
  }
  std::string simple(const std::string& name, const std::string& in, Op op) {
    Node n;
    n.name = name;
    n.op = op;
    n.inputs = {in};
    g.nodes.push_back(n);
    last = name;
    return name;
  }
  std::string add(const std::string& name, const std::string& a, const std::string& b, const std::string& act) {
    Node n;
    n.name = name;
    n.op = Op::Add;
    n.inputs = {a, b};
    n.activation = act;
    n.act_quant = opt.quantize;
    n.act_signed = n.act_quant && act == "none";
    g.nodes.push_back(n);
    last = name;
    return name;
  }
  Graph finish() {
    g.outputs = {last};
    infer_shapes(g);
    return g;
  }
};

int64_t scaled(int64_t c, double w) { return std::max<int64_t>(1, static_cast<int64_t>(std::llround(c * w))); }

Graph lenet5(const ModelOptions& o) {
  Builder b("lenet5", o);
  const int64_t c = o.input_shape[0];
  b.conv("features.0", "input", c, 32, 5, 1, 0, false, "relu");
  b.pool("features.1", "features.0", Op::MaxPool, 2, 2, 0);
  b.conv("features.2", "features.1", 32, 64, 5, 1, 0, false, "relu");
  b.pool("features.3", "features.2", Op::MaxPool, 2, 2, 0);
  b.simple("flatten", "features.3", Op::Flatten);
  const auto shp = infer_shapes(b.g).at("flatten");
  b.linear("classifier.0", "flatten", shp[0], 512, "relu", false);
  b.linear("classifier.1", "classifier.0", 512, o.num_classes, "none", true);
  return b.finish();
}

// VGG7 as in the Bayesian Bits paper: 2x128C3 - MP2 - 2x256C3 - MP2 - 2x512C3 - MP2 - FC1024 - FC.
Graph vgg7(const ModelOptions& o) {
  Builder b("vgg7", o);
  int64_t in = o.input_shape[0];
  const int64_t widths[3] = {scaled(128, o.width), scaled(256, o.width), scaled(512, o.width)};
  int idx = 0;
  std::string cur = "input";
  for (int stage = 0; stage < 3; ++stage) {
    for (int r = 0; r < 2; ++r) {
      cur = b.conv("features." + std::to_string(idx++), cur, in, widths[stage], 3, 1, 1, true, "relu");
      in = widths[stage];
    }
    cur = b.pool("features." + std::to_string(idx++), cur, Op::MaxPool, 2, 2, 0);
  }
  cur = b.simple("flatten", cur, Op::Flatten);
  const auto f = infer_shapes(b.g).at("flatten")[0];
  b.linear("classifier.0", cur, f, scaled(1024, o.width), "relu", false);
  b.linear("classifier.1", "classifier.0", scaled(1024, o.width), o.num_classes, "none", true);
  return b.finish();
}

Graph resnet18(const ModelOptions& o, bool small) {
  Builder b(small ? "resnet18-small" : "resnet18", o);
  int64_t in = scaled(64, o.width);
  std::string cur;
  if (small) {
    cur = b.conv("conv1", "input", o.input_shape[0], in, 3, 1, 1, true, "relu");
  } else {
    cur = b.conv("conv1", "input", o.input_shape[0], in, 7, 2, 3, true, "relu");
    cur = b.pool("maxpool", cur, Op::MaxPool, 3, 2, 1);
  }
  const int64_t widths[4] = {scaled(64, o.width), scaled(128, o.width), scaled(256, o.width), scaled(512, o.width)};
  for (int stage = 0; stage < 4; ++stage) {
    for (int blk = 0; blk < 2; ++blk) {
      const std::string p = "layer" + std::to_string(stage + 1) + "." + std::to_string(blk) + ".";
      const int64_t stride = (stage > 0 && blk == 0) ? 2 : 1;
      const int64_t out = widths[stage];
      std::string a = b.conv(p + "conv1", cur, in, out, 3, stride, 1, true, "relu");
      std::string c2 = b.conv(p + "conv2", a, out, out, 3, 1, 1, true, "none", true);
      std::string sc = cur;
      if (stride != 1 || in != out) sc = b.conv(p + "downsample", cur, in, out, 1, stride, 0, true, "none", true);
      cur = b.add(p + "add", c2, sc, "relu");
      in = out;
    }
  }
  cur = b.simple("avgpool", cur, Op::GlobalAvgPool);
  cur = b.simple("flatten", cur, Op::Flatten);
  b.linear("fc", cur, in, o.num_classes, "none", true);
  return b.finish();
}

int64_t make_divisible(double v, int64_t d = 8) {
  int64_t nv = std::max<int64_t>(d, static_cast<int64_t>(v + d / 2.0) / d * d);
  if (nv < 0.9 * v) nv += d;
  return nv;
}

Graph mobilenetv2(const ModelOptions& o) {
  Builder b("mobilenetv2", o);
  const bool small = o.input_shape[1] < 64;
  int64_t in = make_divisible(32 * o.width);
  // (expansion t, channels c, repeats n, stride s) of the MobileNetV2 paper.
  const int cfg[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                         {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  std::string cur = b.conv("features.0", "input", o.input_shape[0], in, 3, small ? 1 : 2, 1, true, "relu6");
  int idx = 1;
  for (const auto& c : cfg) {
    const int64_t out = make_divisible(c[1] * o.width);
    for (int r = 0; r < c[2]; ++r) {
      int64_t stride = r == 0 ? c[3] : 1;
      if (small && idx <= 3) stride = 1;  // small inputs: keep resolution in the first blocks
      const std::string p = "features." + std::to_string(idx++) + ".";
      const int64_t hidden = in * c[0];
      std::string x = cur;
      if (c[0] != 1) x = b.conv(p + "expand", x, in, hidden, 1, 1, 0, true, "relu6");
      x = b.conv(p + "dw", x, hidden, hidden, 3, stride, 1, true, "relu6", false, hidden);
      x = b.conv(p + "project", x, hidden, out, 1, 1, 0, true, "none", true);
      if (stride == 1 && in == out) x = b.add(p + "add", x, cur, "none");
      cur = x;
      in = out;
    }
  }
  const int64_t last = o.width > 1.0 ? make_divisible(1280 * o.width) : 1280;
  cur = b.conv("features." + std::to_string(idx), cur, in, last, 1, 1, 0, true, "relu6");
  cur = b.simple("avgpool", cur, Op::GlobalAvgPool);
  cur = b.simple("flatten", cur, Op::Flatten);
  b.linear("classifier", cur, last, o.num_classes, "none", true);
  return b.finish();
}

}  // namespace

std::vector<std::string> model_names() { return {"lenet5", "vgg7", "resnet18", "resnet18-small", "mobilenetv2"}; }

Graph build_model(const std::string& name, const ModelOptions& opt) {
  if (opt.input_shape.size() != 3) throw std::invalid_argument("build_model: input shape must be C,H,W");
  if (name == "lenet5") return lenet5(opt);
  if (name == "vgg7") return vgg7(opt);
  if (name == "resnet18") return resnet18(opt, false);
  if (name == "resnet18-small") return resnet18(opt, true);
  if (name == "mobilenetv2") return mobilenetv2(opt);
  std::string all;
  for (const auto& n : model_names()) all += (all.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown model '" + name + "' (known: " + all + ")");
}

}  // namespace bbits::train
