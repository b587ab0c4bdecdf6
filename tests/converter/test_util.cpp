#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <zlib.h>

#include "bbits/converter/simulate.h"

namespace bbits::converter::test {

using nlohmann::json;

std::string fixture_path(const std::string& name) {
  return std::string(BBITS_SOURCE_DIR) + "/tests/converter/fixtures/" + name;
}

static std::vector<uint8_t> gunzip_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  gzclose(f);
  if (n < 0) throw std::runtime_error("cannot decompress " + path);
  return out;
}

std::vector<uint8_t> read_fixture(const std::string& name) {
  const std::string p = fixture_path(name);
  if (p.size() > 3 && p.compare(p.size() - 3, 3, ".gz") == 0) return gunzip_file(p);
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + p);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::filesystem::path temp_dir(const std::string& tag) {
  std::random_device rd;
  auto p = std::filesystem::temp_directory_path() / ("bbits_conv_" + tag + "_" + std::to_string(rd()));
  std::filesystem::create_directories(p);
  return p;
}

nlohmann::json conv_node(const std::string& name, const std::string& in, int cin, int cout, int k, int pad,
                         int groups, const std::string& act, bool prune) {
  return {{"name", name}, {"op", "conv2d"}, {"inputs", {in}}, {"in_channels", cin}, {"out_channels", cout},
          {"kernel", {k, k}}, {"stride", {1, 1}}, {"padding", {pad, pad}}, {"dilation", {1, 1}}, {"groups", groups},
          {"bias", true}, {"bn", false}, {"activation", act}, {"weight_quant", true}, {"prune", prune},
          {"act_quant", true}, {"act_signed", act == "none"}};
}

nlohmann::json head_node(const std::string& in, int fin) {
  return {{"name", "fc"}, {"op", "linear"}, {"inputs", {in}}, {"in_features", fin}, {"out_features", 5},
          {"bias", true}, {"activation", "none"}, {"weight_quant", true}, {"prune", false}, {"act_quant", false}};
}

nlohmann::json graph_json(const nlohmann::json& nodes, int c, int h) {
  return {{"model", "test"},
          {"input", {{"shape", {c, h, h}}, {"pixel_scale", 1.0 / 255}, {"mean", {0.0}}, {"std", {1.0}}}},
          {"nodes", nodes},
          {"outputs", {"fc"}}};
}

std::vector<int> mask(int n, std::initializer_list<int> pruned) {
  std::vector<int> m(static_cast<size_t>(n), 1);
  for (int p : pruned) m[static_cast<size_t>(p)] = 0;
  return m;
}

Checkpoint make_small_checkpoint(const SmallNet& net) {
  Checkpoint ck;
  ck.graph = parse_graph(net.graph);
  const Graph& g = ck.graph;
  std::mt19937_64 rng(net.seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto put = [&](const std::string& n, std::vector<int64_t> s, std::vector<float> d) {
    ck.tensors[n] = FTensor{std::move(s), std::move(d)};
  };
  auto gates = [&](const std::string& prefix, int bits) {
    const int w[4] = {4, 8, 16, 32};
    for (int k = 0; k < 4; ++k)
      put(prefix + ".log_alpha_" + std::to_string(w[k]), {1}, {bits >= w[k] ? 20.0f : -20.0f});
  };
  for (const Node& n : g.nodes) {
    if (!n.is_layer()) continue;
    const bool conv = n.op == OpKind::Conv2d;
    const int64_t O = conv ? n.out_channels : n.out_features;
    const int64_t fan = conv ? n.in_channels / n.groups * n.kernel_h * n.kernel_w : n.in_features;
    std::vector<float> w(static_cast<size_t>(O * fan));
    for (float& v : w) v = nd(rng) * std::sqrt(2.0f / static_cast<float>(fan));
    put(n.name + ".weight",
        conv ? std::vector<int64_t>{O, n.in_channels / n.groups, n.kernel_h, n.kernel_w} : std::vector<int64_t>{O, fan},
        std::move(w));
    std::vector<float> b(static_cast<size_t>(O));
    for (float& v : b) v = 0.1f * nd(rng);
    auto kit = net.keep.find(n.name);
    auto sit = net.bias_shift.find(n.name);
    if (kit != net.keep.end() && sit != net.bias_shift.end())
      for (int64_t o = 0; o < O; ++o)
        if (!kit->second[static_cast<size_t>(o)]) b[static_cast<size_t>(o)] += sit->second;
    if (n.bn) {
      std::vector<float> gm(static_cast<size_t>(O)), bt(gm.size()), mn(gm.size()), vr(gm.size());
      for (size_t c = 0; c < gm.size(); ++c) {
        gm[c] = 1.0f + 0.2f * nd(rng);
        bt[c] = b[c];
        mn[c] = 0.1f * nd(rng);
        vr[c] = 0.5f + std::fabs(nd(rng));
      }
      put(n.name + ".bn.weight", {O}, gm);
      put(n.name + ".bn.bias", {O}, bt);
      put(n.name + ".bn.running_mean", {O}, mn);
      put(n.name + ".bn.running_var", {O}, vr);
    }
    if (n.bias) put(n.name + ".bias", {O}, n.bn ? std::vector<float>(static_cast<size_t>(O), 0.05f) : b);
  }
  // float calibration pass for the ranges
  const FTensor x = random_inputs(g, 4, net.seed + 1);
  std::map<std::string, std::pair<float, float>> ranges;
  SimulateOptions so;
  so.quantize = false;
  so.ranges = &ranges;
  simulate(ck, x, so);
  float in_max = 0.0f;
  for (float v : x.data) in_max = std::max(in_max, std::fabs(v));
  put(g.input.name + ".aq.x_max", {1}, {in_max > 0 ? in_max : 1.0f});
  for (const Node& n : g.nodes) {
    if (n.is_layer() && n.weight_quant) {
      const FoldedLayer f = fold_layer(ck, n);
      float m = 0.0f;
      for (float v : f.weight.data) m = std::max(m, std::fabs(v));
      put(n.name + ".wq.x_max", {1}, {m});
      gates(n.name + ".wq", net.weight_bits);
      if (n.prune) {
        const int64_t O = f.weight.shape[0];
        std::vector<float> la(static_cast<size_t>(O), 20.0f);
        auto kit = net.keep.find(n.name);
        if (kit != net.keep.end())
          for (int64_t o = 0; o < O; ++o) la[static_cast<size_t>(o)] = kit->second[static_cast<size_t>(o)] ? 20.0f : -20.0f;
        put(n.name + ".wq.log_alpha_2", {O}, la);
      }
    }
    if (n.act_quant) {
      const auto [lo, hi] = ranges.at(n.name);
      const float m = n.act_signed ? std::max(std::fabs(lo), std::fabs(hi)) : hi;
      put(n.name + ".aq.x_max", {1}, {m > 0 ? m : 1.0f});
      gates(n.name + ".aq", net.act_bits);
    }
  }
  ck.training = {{"method", "fixed"}};
  ck.source = "test";
  validate_checkpoint(ck);
  return ck;
}

FTensor random_inputs(const Graph& g, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> px(0, 255);
  FTensor x;
  x.shape = {n, g.input.shape[0], g.input.shape[1], g.input.shape[2]};
  x.data.resize(static_cast<size_t>(x.numel()));
  const int64_t hw = g.input.shape[1] * g.input.shape[2];
  for (size_t k = 0; k < x.data.size(); ++k) {
    const size_t c = static_cast<size_t>((static_cast<int64_t>(k) / hw) % g.input.shape[0]);
    x.data[k] = (static_cast<float>(px(rng)) * static_cast<float>(g.input.pixel_scale) - g.input.mean[c]) / g.input.std[c];
  }
  return x;
}

static std::vector<uint8_t> gunzip_path(const std::string& p) { return gunzip_file(p); }

std::vector<float> read_npy_f32(const std::vector<uint8_t>& b, std::vector<int64_t>& shape) {
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0) throw std::runtime_error("not a .npy file");
  const int major = b[6];
  size_t hlen, hoff;
  if (major == 1) {
    hlen = b[8] | (b[9] << 8);
    hoff = 10;
  } else {
    hlen = b[8] | (b[9] << 8) | (static_cast<size_t>(b[10]) << 16) | (static_cast<size_t>(b[11]) << 24);
    hoff = 12;
  }
  const std::string h(reinterpret_cast<const char*>(b.data() + hoff), hlen);
  if (h.find("'descr': '<f4'") == std::string::npos || h.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(".npy is not little-endian float32 in C order: " + h);
  const size_t s0 = h.find('(', h.find("'shape'")), s1 = h.find(')', s0);
  shape.clear();
  std::string dims = h.substr(s0 + 1, s1 - s0 - 1);
  size_t p = 0;
  while (p < dims.size()) {
    const size_t q = dims.find(',', p);
    const std::string d = dims.substr(p, q == std::string::npos ? std::string::npos : q - p);
    if (d.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(d));
    if (q == std::string::npos) break;
    p = q + 1;
  }
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (b.size() < hoff + hlen + static_cast<size_t>(n) * 4) throw std::runtime_error(".npy truncated");
  std::vector<float> v(static_cast<size_t>(n));
  std::memcpy(v.data(), b.data() + hoff + hlen, v.size() * 4);
  return v;
}

int64_t images_to_evaluate(int64_t native, int64_t emulated) {
  const char* e = std::getenv("BBITS_TEST_EMULATED");
  return e != nullptr && std::string(e) == "1" ? emulated : native;
}

bool load_fashion_mnist_test(int64_t limit, FTensor& images, std::vector<int>& labels) {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  if (!std::filesystem::exists(dir + "t10k-images-idx3-ubyte.gz")) return false;
  const auto img = gunzip_path(dir + "t10k-images-idx3-ubyte.gz");
  const auto lab = gunzip_path(dir + "t10k-labels-idx1-ubyte.gz");
  if (img.size() < 16 || lab.size() < 8) return false;
  const int64_t n = std::min<int64_t>(limit, static_cast<int64_t>((img.size() - 16) / 784));
  images.shape = {n, 1, 28, 28};
  images.data.resize(static_cast<size_t>(n * 784));
  for (int64_t i = 0; i < n * 784; ++i) images.data[static_cast<size_t>(i)] = static_cast<float>(img[16 + static_cast<size_t>(i)]) / 255.0f;
  labels.assign(lab.begin() + 8, lab.begin() + 8 + n);
  return true;
}

}  // namespace bbits::converter::test
