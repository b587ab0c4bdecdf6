// Fused training-mode Bayesian Bits quantization: one pass forward, one pass
// backward, instead of ~40 elementwise ATen ops per quantizer. Gradients are
// those of the reference's composite formula with straight-through rounding
// (tests/training/quantizer_test.cpp checks them against autograd of the
// composite implementation).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "bbits/training/quantizer.h"

namespace bbits::train {

namespace {

struct Params {
  bool is_signed = true;
  int base = 0;  // index of the base scale: 0 -> s2, 1 -> s4, 2 -> s8, 3 -> s16
  int k = 0;     // number of open residual levels (gates)
  float g[4] = {0, 0, 0, 0};
  float s[5] = {0, 0, 0, 0, 0};   // s2, s4, s8, s16, s32 in float32, as the reference computes them
  float inv[5] = {0, 0, 0, 0, 0}; // 1 / s (training mode need not be bit exact; eval mode divides)
  double a[5] = {0, 0, 0, 0, 0};  // d s_i / d x_max
  float c = 0, lo = 0, m = 0;
  int64_t channels = 0, inner = 1;
};

Params make_params(const at::Tensor& x, const at::Tensor& xmax, const at::Tensor& gates, const at::Tensor& z2,
                   bool is_signed, int base_bits) {
  Params p;
  p.is_signed = is_signed;
  p.m = xmax.item<float>();
  const float range = is_signed ? (p.m - (-p.m)) : p.m;
  p.s[0] = range / 3.0f;
  p.s[1] = p.s[0] / 5.0f;
  p.s[2] = p.s[1] / 17.0f;
  p.s[3] = p.s[2] / 257.0f;
  p.s[4] = p.s[3] / 65537.0f;
  for (int i = 0; i < 5; ++i) p.inv[i] = 1.0f / p.s[i];
  for (int i = 0; i < 5; ++i) p.a[i] = (is_signed ? 2.0 : 1.0) / 3.0;
  p.a[1] /= 5.0;
  p.a[2] = p.a[1] / 17.0;
  p.a[3] = p.a[2] / 257.0;
  p.a[4] = p.a[3] / 65537.0;
  p.c = static_cast<float>(1.0 - 1e-7) * p.m;
  p.lo = is_signed ? -p.c : 0.0f;
  switch (base_bits) {
    case 2: p.base = 0; break;
    case 4: p.base = 1; break;
    case 8: p.base = 2; break;
    case 16: p.base = 3; break;
    default: throw std::invalid_argument("bb_quantize_train: base bits must be 2, 4, 8 or 16");
  }
  p.k = static_cast<int>(gates.numel());
  if (p.k > 4 - p.base) throw std::invalid_argument("bb_quantize_train: too many gates");
  auto gc = gates.detach().to(at::kFloat).contiguous();
  for (int i = 0; i < p.k; ++i) p.g[i] = gc.data_ptr<float>()[i];
  if (z2.numel() > 0) {
    p.channels = z2.numel();
    if (x.dim() < 1 || x.size(0) != p.channels) throw std::invalid_argument("bb_quantize_train: z2 does not match dim 0");
    p.inner = x.numel() / p.channels;
  }
  return p;
}

// Per element: forward value y (before z2) and, when asked, the pieces of the gradient.
struct Elem {
  float y;
  bool in_range;
  double dydm;
  double dyg[4];
};

// Round half to even for |v| < 2^22 without a libm call (default FP rounding mode).
inline float round_even(float v) {
  const float m = 12582912.0f;  // 1.5 * 2^23; (v + m) - m is not folded without -ffast-math
  return (v + m) - m;
}

inline Elem compute(const Params& p, float xv, bool grads) {
  Elem r{};
  const float xc = xv < p.lo ? p.lo : (xv > p.c ? p.c : xv);
  float e[4];
  double delta[5];
  const float s0 = p.s[p.base];
  const float q0 = xc * p.inv[p.base];
  const float n0 = round_even(q0);
  const float x2 = s0 * n0;
  delta[0] = static_cast<double>(n0) - static_cast<double>(q0);
  float acc = x2;
  for (int i = 0; i < p.k; ++i) {
    const float si = p.s[p.base + 1 + i];
    const float rr = xc - acc;
    const float q = rr * p.inv[p.base + 1 + i];
    const float n = round_even(q);
    e[i] = si * n;
    delta[i + 1] = static_cast<double>(n) - static_cast<double>(q);
    acc = acc + e[i];
  }
  // y = x2 + g0 (e0 + g1 (e1 + g2 (e2 + g3 e3)))
  float t[5];
  t[p.k] = 0.0f;
  for (int i = p.k - 1; i >= 0; --i) t[i] = p.g[i] * (e[i] + t[i + 1]);
  r.y = x2 + t[0];
  if (!grads) return r;
  r.in_range = xv > p.lo && xv < p.c;
  double dxcdm = 0.0;
  if (xv >= p.c) dxcdm = 1.0 - 1e-7;
  else if (p.is_signed && xv <= p.lo) dxcdm = -(1.0 - 1e-7);
  // dy/dm = delta0 a0 + sum_i P_i (delta_i a_i - delta_{i-1} a_{i-1}) + dxc/dm
  double dydm = delta[0] * p.a[p.base] + dxcdm;
  double P = 1.0;
  for (int i = 0; i < p.k; ++i) {
    // dy/dg_i = P_{i-1} (e_i + inner_{i+1}) where inner_{i+1} = t[i+1]
    r.dyg[i] = P * (static_cast<double>(e[i]) + static_cast<double>(t[i + 1]));
    P *= p.g[i];
    dydm += P * (delta[i + 1] * p.a[p.base + 1 + i] - delta[i] * p.a[p.base + i]);
  }
  r.dydm = dydm;
  return r;
}

class BBQuantFn : public torch::autograd::Function<BBQuantFn> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& xmax,
                            const at::Tensor& gates, const at::Tensor& z2, bool is_signed, int64_t base_bits) {
    const auto xc = x.contiguous();
    const Params p = make_params(xc, xmax, gates, z2, is_signed, static_cast<int>(base_bits));
    auto out = at::empty_like(xc);
    const float* xp = xc.data_ptr<float>();
    float* op = out.data_ptr<float>();
    const auto z2c = z2.numel() > 0 ? z2.detach().contiguous() : z2;
    const float* zp = z2.numel() > 0 ? z2c.data_ptr<float>() : nullptr;
    at::parallel_for(0, xc.numel(), 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float y = compute(p, xp[i], false).y;
        op[i] = zp ? zp[i / p.inner] * y : y;
      }
    });
    ctx->save_for_backward({xc, xmax, gates, z2});
    ctx->saved_data["signed"] = is_signed;
    ctx->saved_data["base"] = base_bits;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& xmax = saved[1];
    const at::Tensor& gates = saved[2];
    const at::Tensor& z2 = saved[3];
    const bool is_signed = ctx->saved_data["signed"].toBool();
    const int base = static_cast<int>(ctx->saved_data["base"].toInt());
    const Params p = make_params(x, xmax, gates, z2, is_signed, base);
    const auto go = grads[0].contiguous();
    auto gx = at::empty_like(x);
    const float* xp = x.data_ptr<float>();
    const float* gp = go.data_ptr<float>();
    float* gxp = gx.data_ptr<float>();
    const auto z2c = z2.numel() > 0 ? z2.detach().contiguous() : z2;
    const float* zp = z2.numel() > 0 ? z2c.data_ptr<float>() : nullptr;
    const int nthreads = at::get_num_threads();
    // Per-thread partial sums: [m, g0..g3, z2 channels...]
    const int64_t width = 5 + p.channels;
    std::vector<double> partial(static_cast<size_t>(nthreads * width), 0.0);
    at::parallel_for(0, x.numel(), 16384, [&](int64_t b, int64_t e) {
      double* acc = partial.data() + at::get_thread_num() * width;
      for (int64_t i = b; i < e; ++i) {
        const Elem r = compute(p, xp[i], true);
        const float z = zp ? zp[i / p.inner] : 1.0f;
        const double gz = static_cast<double>(gp[i]) * z;
        gxp[i] = r.in_range ? static_cast<float>(gz) : 0.0f;
        acc[0] += gz * r.dydm;
        for (int k = 0; k < p.k; ++k) acc[1 + k] += gz * r.dyg[k];
        if (zp) acc[5 + i / p.inner] += static_cast<double>(gp[i]) * r.y;
      }
    });
    std::vector<double> total(static_cast<size_t>(width), 0.0);
    for (int t = 0; t < nthreads; ++t)
      for (int64_t j = 0; j < width; ++j) total[j] += partial[t * width + j];
    auto gm = at::full({1}, total[0], at::kFloat);
    auto gg = at::empty({p.k}, at::kFloat);
    for (int k = 0; k < p.k; ++k) gg.data_ptr<float>()[k] = static_cast<float>(total[1 + k]);
    at::Tensor gzt = at::empty({p.channels}, at::kFloat);
    for (int64_t c = 0; c < p.channels; ++c) gzt.data_ptr<float>()[c] = static_cast<float>(total[5 + c]);
    return {gx, gm.view(xmax.sizes()), gg, z2.numel() > 0 ? gzt.view(z2.sizes()) : at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor bb_quantize_train(const at::Tensor& x, const at::Tensor& x_max, const at::Tensor& gates,
                             const at::Tensor& z2, bool is_signed, int base_bits) {
  if (x.scalar_type() != at::kFloat) throw std::invalid_argument("bb_quantize_train: float32 input expected");
  return BBQuantFn::apply(x, x_max, gates, z2, is_signed, static_cast<int64_t>(base_bits));
}

}  // namespace bbits::train
