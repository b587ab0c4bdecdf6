#include "bbits/converter/checkpoint.h"

#include <cmath>
#include <set>
#include <sstream>

#include "bbits/format/quant.h"

namespace bbits::converter {

using nlohmann::json;

Checkpoint parse_checkpoint(std::span<const uint8_t> bytes, const std::string& source) {
  return Checkpoint(contract::parse_checkpoint(bytes, source));
}

Checkpoint load_checkpoint(const std::string& path) { return Checkpoint(contract::load_checkpoint(path)); }

int weight_bits_of(const Checkpoint& ck, const Node& n) {
  if (!n.weight_quant) return 32;
  const std::string p = n.name + ".wq.log_alpha_";
  return bits_from_gates(ck.get(p + "4").scalar(), ck.get(p + "8").scalar(), ck.get(p + "16").scalar(),
                         ck.get(p + "32").scalar());
}

int act_bits_of(const Checkpoint& ck, const std::string& node) {
  if (node == ck.graph.input.name) return input_bits_of(ck);
  const Node& n = ck.graph.node(node);
  if (!n.act_quant) return 32;
  const std::string p = node + ".aq.log_alpha_";
  return bits_from_gates(ck.get(p + "4").scalar(), ck.get(p + "8").scalar(), ck.get(p + "16").scalar(),
                         ck.get(p + "32").scalar());
}

std::vector<uint8_t> keep_mask_of(const Checkpoint& ck, const Node& n) {
  const int64_t o = n.op == OpKind::Conv2d ? n.out_channels : n.out_features;
  std::vector<uint8_t> keep(static_cast<size_t>(o), 1);
  if (!n.prune) return keep;
  const FTensor& la = ck.get(n.name + ".wq.log_alpha_2");
  for (int64_t i = 0; i < o; ++i) keep[static_cast<size_t>(i)] = gate_on(la.data[static_cast<size_t>(i)]) ? 1 : 0;
  return keep;
}

namespace {
bool input_signed_spec(const InputSpec& in) {
  for (size_t c = 0; c < in.mean.size(); ++c)
    if (-in.mean[c] / in.std[c] < 0.0f) return true;
  return false;
}
}  // namespace

bool input_signed(const Graph& g) { return input_signed_spec(g.input); }

bool pixels_exact_on_grid(const InputSpec& in, float x_max, int bits) {
  const bool sg = input_signed_spec(in);
  const float step = grid_scale(x_max, bits, sg);
  const float ps = static_cast<float>(in.pixel_scale);
  for (size_t c = 0; c < in.mean.size(); ++c)
    for (int p = 0; p < 256; ++p) {
      const float v = (static_cast<float>(p) * ps - in.mean[c]) / in.std[c];
      const float q = static_cast<float>(quantize_value(v, x_max, bits, sg)) * step;
      if (!(std::fabs(q - v) <= 1e-3f * step)) return false;
    }
  return true;
}

int input_bits_of(const Checkpoint& ck) {
  if (ck.input_bits != kInputBitsFromPixels) return ck.input_bits;
  return pixels_exact_on_grid(ck.graph.input, ck.get(ck.graph.input.name + ".aq.x_max").scalar(), 8) ? 8 : 16;
}

FoldedLayer fold_layer(const Checkpoint& ck, const Node& n) {
  FoldedLayer f;
  f.weight = ck.get(n.name + ".weight");
  const int64_t o = f.weight.shape[0];
  const int64_t k = f.weight.numel() / o;
  f.bias.assign(static_cast<size_t>(o), 0.0f);
  if (n.bias) f.bias = ck.get(n.name + ".bias").data;
  if (n.bn) {
    const auto& g = ck.get(n.name + ".bn.weight").data;
    const auto& b = ck.get(n.name + ".bn.bias").data;
    const auto& m = ck.get(n.name + ".bn.running_mean").data;
    const auto& v = ck.get(n.name + ".bn.running_var").data;
    const float eps = static_cast<float>(n.bn_eps);
    for (int64_t i = 0; i < o; ++i) {
      const size_t u = static_cast<size_t>(i);
      const float sigma = std::sqrt(v[u] + eps);
      for (int64_t j = 0; j < k; ++j) {
        float& w = f.weight.data[static_cast<size_t>(i * k + j)];
        w = w * g[u] / sigma;
      }
      f.bias[u] = b[u] + (f.bias[u] - m[u]) * g[u] / sigma;
    }
  }
  return f;
}

}  // namespace bbits::converter
