#include "bbits/training/quantizer.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <cmath>
#include <stdexcept>

#include "bbits/format/quant.h"

namespace bbits::train {

namespace {
const double kOffset = bbits::kGateBeta * std::log(-bbits::kGateGamma / bbits::kGateZeta);

at::Tensor scalar_param(double v) { return at::full({1}, v, at::kFloat); }
}  // namespace

at::Tensor hard_concrete_sample(const at::Tensor& log_alpha) {
  const auto u = at::rand(log_alpha.sizes(), log_alpha.options().requires_grad(false)).clamp(1e-6, 1.0 - 1e-6);
  const auto s = at::sigmoid((at::log(u) - at::log1p(-u) + log_alpha) / bbits::kGateBeta);
  return at::clamp(s * (bbits::kGateZeta - bbits::kGateGamma) + bbits::kGateGamma, 0.0, 1.0);
}

at::Tensor gate_prob_on(const at::Tensor& log_alpha) { return at::sigmoid(log_alpha - kOffset); }

at::Tensor round_ste(const at::Tensor& x) { return x + (at::round(x) - x).detach(); }

at::Tensor quantize_eval_int(const at::Tensor& x, float x_max, int bits, bool is_signed) {
  const float s = bbits::grid_scale(x_max, bits, is_signed);
  const float c = bbits::clip_bound(x_max);
  const float lo = is_signed ? -c : 0.0f;
  auto xc = at::nan_to_num(x.to(at::kFloat), 0.0).clamp(lo, c);
  // Divide by a full tensor: a CPU scalar divisor may be turned into a
  // multiplication by its reciprocal, which is not bit-exact.
  auto q = at::round(at::div(xc, at::full_like(xc, s)));
  return q.clamp(static_cast<double>(bbits::qmin(bits, is_signed)), static_cast<double>(bbits::qmax(bits, is_signed)));
}

at::Tensor quantize_eval(const at::Tensor& x, float x_max, int bits, bool is_signed) {
  const float s = bbits::grid_scale(x_max, bits, is_signed);
  return quantize_eval_int(x, x_max, bits, is_signed) * at::full({1}, s, at::kFloat);
}

BBQuantizer::BBQuantizer(const QuantizerConfig& cfg) : cfg_(cfg) {
  x_max = register_parameter("x_max", scalar_param(1.0), cfg.learn_range);
  if (cfg.prune_channels > 0)
    log_alpha_2 = register_parameter("log_alpha_2", at::full({cfg.prune_channels}, cfg.gate_init_prune, at::kFloat),
                                     cfg.learn_prune_gates);
  log_alpha_4 = register_parameter("log_alpha_4", scalar_param(cfg.gate_init[0]), cfg.learn_bit_gates);
  log_alpha_8 = register_parameter("log_alpha_8", scalar_param(cfg.gate_init[1]), cfg.learn_bit_gates);
  log_alpha_16 = register_parameter("log_alpha_16", scalar_param(cfg.gate_init[2]), cfg.learn_bit_gates);
  log_alpha_32 = register_parameter("log_alpha_32", scalar_param(cfg.gate_init[3]), cfg.learn_bit_gates);
  if (!cfg.learn_bit_gates) set_fixed_bits(cfg.fixed_bits);
  if (cfg.prune_channels > 0 && !cfg.learn_prune_gates) {
    at::NoGradGuard ng;
    log_alpha_2.fill_(kGateOn);
  }
}

void BBQuantizer::set_fixed_bits(int bits) {
  if (!bbits::is_legal_act_bits(bits)) throw std::invalid_argument("quantizer: fixed bits must be 2, 4, 8, 16 or 32");
  at::NoGradGuard ng;
  const int widths[4] = {4, 8, 16, 32};
  at::Tensor* gates[4] = {&log_alpha_4, &log_alpha_8, &log_alpha_16, &log_alpha_32};
  for (int i = 0; i < 4; ++i) {
    gates[i]->fill_(widths[i] <= bits ? kGateOn : kGateOff);
    gates[i]->set_requires_grad(false);
  }
  cfg_.learn_bit_gates = false;
  cfg_.fixed_bits = bits;
}

void BBQuantizer::set_learn_range(bool on) {
  cfg_.learn_range = on;
  x_max.set_requires_grad(on);
}

void BBQuantizer::freeze_gates() {
  const int b = bits();
  const auto k = keep();
  set_fixed_bits(b);
  if (has_prune()) {
    at::NoGradGuard ng;
    auto acc = log_alpha_2.accessor<float, 1>();
    for (int64_t i = 0; i < log_alpha_2.size(0); ++i) acc[i] = k[i] ? kGateOn : kGateOff;
    log_alpha_2.set_requires_grad(false);
    cfg_.learn_prune_gates = false;
  }
}

std::vector<at::Tensor> BBQuantizer::gate_parameters() const {
  std::vector<at::Tensor> r;
  if (prune_gates_learned()) r.push_back(log_alpha_2);
  if (cfg_.learn_bit_gates) r.insert(r.end(), {log_alpha_4, log_alpha_8, log_alpha_16, log_alpha_32});
  return r;
}

std::vector<at::Tensor> BBQuantizer::range_parameters() const {
  if (cfg_.learn_range) return {x_max};
  return {};
}

float BBQuantizer::range() const { return x_max.item<float>(); }

void BBQuantizer::set_range(float v) {
  if (!(v > 0.0f) || !std::isfinite(v)) throw std::invalid_argument("quantizer: x_max must be positive and finite");
  at::NoGradGuard ng;
  x_max.fill_(v);
  initialized_ = true;
}

void BBQuantizer::init_range_from(const at::Tensor& x) {
  at::NoGradGuard ng;
  float m = cfg_.is_signed ? x.abs().max().item<float>() : x.max().item<float>();
  if (!(m > 1e-8f) || !std::isfinite(m)) m = 1e-8f;
  set_range(m);
}

int BBQuantizer::bits() const {
  return bbits::bits_from_gates(log_alpha_4.item<float>(), log_alpha_8.item<float>(), log_alpha_16.item<float>(),
                                log_alpha_32.item<float>());
}

std::vector<bool> BBQuantizer::keep() const {
  std::vector<bool> k;
  if (!has_prune()) return k;
  auto la = log_alpha_2.detach().contiguous();
  const float* p = la.data_ptr<float>();
  for (int64_t i = 0; i < la.numel(); ++i) k.push_back(bbits::gate_on(p[i]));
  return k;
}

at::Tensor BBQuantizer::prune_mask_eval(const at::Tensor& like) const {
  const auto k = keep();
  auto m = at::empty({static_cast<int64_t>(k.size())}, at::kFloat);
  float* p = m.data_ptr<float>();
  for (size_t i = 0; i < k.size(); ++i) p[i] = k[i] ? 1.0f : 0.0f;
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = -1;
  return m.view(shape);
}

at::Tensor BBQuantizer::forward(const at::Tensor& x) {
  if (!initialized_) init_range_from(x.detach());
  if (!cfg_.enabled) return x;
  return is_training() ? forward_train(x) : forward_eval(x);
}

at::Tensor BBQuantizer::forward_eval(const at::Tensor& x) const {
  const int b = bits();
  at::Tensor y = b == 32 ? x : quantize_eval(x, range(), b, cfg_.is_signed);
  if (has_prune()) y = y * prune_mask_eval(y);
  return y;
}

BBQuantizer::GateSample BBQuantizer::sample_gates() const {
  GateSample g;
  if (has_prune()) g.z2 = cfg_.learn_prune_gates ? hard_concrete_sample(log_alpha_2) : prune_mask_eval(log_alpha_2).view({-1});
  if (!cfg_.learn_bit_gates) return g;
  // The reference's cut-off closes a gate whose log alpha is <= -2 together
  // with every gate above it. A gate sampled exactly 0 contributes nothing
  // (and no gradient), so the finer residuals are not computed.
  const at::Tensor* las[4] = {&log_alpha_4, &log_alpha_8, &log_alpha_16, &log_alpha_32};
  for (int i = 0; i < 4; ++i) {
    if (las[i]->item<float>() <= bbits::kGateCutoff) break;
    at::Tensor gi = hard_concrete_sample(*las[i]);
    if (gi.item<float>() <= 0.0f) break;
    g.bits.push_back(std::move(gi));
  }
  return g;
}

at::Tensor BBQuantizer::quantize_train(const at::Tensor& x, const GateSample& g, bool fused) const {
  const int base = cfg_.learn_bit_gates ? 2 : bits();
  if (base == 32) {  // float: only the pruning gates act
    if (!g.z2.defined()) return x;
    std::vector<int64_t> shape(x.dim(), 1);
    shape[0] = -1;
    return g.z2.view(shape) * x;
  }
  if (fused) {
    const at::Tensor gates = g.bits.empty() ? at::empty({0}, at::kFloat) : at::cat(g.bits);
    const at::Tensor z2 = g.z2.defined() ? g.z2 : at::empty({0}, at::kFloat);
    return bb_quantize_train(x, x_max, gates, z2, cfg_.is_signed, base);
  }
  // Composite formula (reference semantics), differentiated by autograd.
  // pact_clip: -relu(c - lo - relu(x - lo)) + c, so the gradient reaches x_max.
  const at::Tensor c = x_max * (1.0 - 1e-7);
  const at::Tensor lo = cfg_.is_signed ? -c : at::zeros_like(c);
  const at::Tensor range_t = cfg_.is_signed ? (x_max - (-x_max)) : x_max;
  const at::Tensor s2 = range_t / 3.0;
  const at::Tensor s4 = s2 / 5.0, s8 = s4 / 17.0, s16 = s8 / 257.0, s32 = s16 / 65537.0;
  const at::Tensor scales[5] = {s2, s4, s8, s16, s32};
  const int b0 = base == 2 ? 0 : base == 4 ? 1 : base == 8 ? 2 : 3;
  const at::Tensor xc = -at::relu(c - lo - at::relu(x - lo)) + c;
  const at::Tensor xb = scales[b0] * round_ste(xc / scales[b0]);
  std::vector<at::Tensor> e;
  at::Tensor acc = xb;
  for (size_t i = 0; i < g.bits.size(); ++i) {
    const at::Tensor& s = scales[b0 + 1 + static_cast<int>(i)];
    e.push_back(s * round_ste((xc - acc) / s));  // residual on the finer grid
    acc = acc + e.back();
  }
  // xq = x2 + z4 (eps4 + z8 (eps8 + z16 (eps16 + z32 eps32)))
  at::Tensor inner;
  for (int i = static_cast<int>(e.size()) - 1; i >= 0; --i)
    inner = g.bits[static_cast<size_t>(i)] * (inner.defined() ? e[static_cast<size_t>(i)] + inner : e[static_cast<size_t>(i)]);
  at::Tensor y = inner.defined() ? xb + inner : xb;
  if (g.z2.defined()) {
    std::vector<int64_t> shape(x.dim(), 1);
    shape[0] = -1;
    y = g.z2.view(shape) * y;
  }
  return y;
}

at::Tensor BBQuantizer::forward_train(const at::Tensor& x) { return quantize_train(x, sample_gates(), true); }

at::Tensor BBQuantizer::regularizer() const {
  const double ratio = max_macs > 0 ? mac_count / max_macs : 1.0;
  auto bops = [&](double b) { return const_cost ? 1.0 : ratio * b; };
  const at::Tensor q4 = gate_prob_on(log_alpha_4), q8 = gate_prob_on(log_alpha_8), q16 = gate_prob_on(log_alpha_16),
                   q32 = gate_prob_on(log_alpha_32);
  if (has_prune()) {
    const at::Tensor q2 = gate_prob_on(log_alpha_2);
    const at::Tensor kl = bops(2) * q2 + q2 * bops(4) * q4 + q2 * q4 * bops(8) * q8 +
                          q2 * q4 * q8 * bops(16) * q16 + q2 * q4 * q8 * q16 * bops(32) * q32;
    return kl.sum() / static_cast<double>(log_alpha_2.size(0));
  }
  const at::Tensor kl = 1.0 + bops(4) * q4 + q4 * bops(8) * q8 + q4 * q8 * bops(16) * q16 +
                        q4 * q8 * q16 * bops(32) * q32;
  return kl.sum();
}

}  // namespace bbits::train
