// Fused training-mode Bayesian Bits quantization: one pass forward, one pass
// backward, instead of ~40 elementwise ATen ops per quantizer. Gradients are
// those of the reference's composite formula with straight-through rounding
// (tests/training/quantizer_test.cpp checks them against autograd of the
// composite implementation).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
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
  float af[5] = {0, 0, 0, 0, 0};
  float c = 0, lo = 0, m = 0;
  float sgn = 0;  // 1 for a signed grid (the clip at -c moves with x_max)
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
  for (int i = 0; i < 5; ++i) p.af[i] = static_cast<float>(p.a[i]);
  p.c = static_cast<float>(1.0 - 1e-7) * p.m;
  p.lo = is_signed ? -p.c : 0.0f;
  p.sgn = is_signed ? 1.0f : 0.0f;
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
  float in_range;  // 1 inside (lo, c), else 0
  float dydm;
  float dyg[4];
};

// Round half to even for |v| < 2^22 without a libm call (default FP rounding mode).
inline float round_even(float v) {
  const float m = 12582912.0f;  // 1.5 * 2^23; (v + m) - m is not folded without -ffast-math
  return (v + m) - m;
}

// K open residual levels, known at compile time so the arrays live in registers.
template <int K, bool GRADS>
inline Elem compute(const Params& p, float xv) {
  Elem r{};
  const float xc = std::min(std::max(xv, p.lo), p.c);
  float e[K > 0 ? K : 1];
  float delta[K + 1];
  const float s0 = p.s[p.base];
  const float q0 = xc * p.inv[p.base];
  const float n0 = round_even(q0);
  const float x2 = s0 * n0;
  delta[0] = n0 - q0;
  float acc = x2;
  _Pragma("GCC unroll 4") for (int i = 0; i < K; ++i) {
    const float q = (xc - acc) * p.inv[p.base + 1 + i];
    const float n = round_even(q);
    e[i] = p.s[p.base + 1 + i] * n;
    delta[i + 1] = n - q;
    acc = acc + e[i];
  }
  // y = x2 + g0 (e0 + g1 (e1 + g2 (e2 + g3 e3)))
  float t[K + 1];
  t[K] = 0.0f;
  _Pragma("GCC unroll 4") for (int i = K - 1; i >= 0; --i) t[i] = p.g[i] * (e[i] + t[i + 1]);
  r.y = x2 + t[0];
  if constexpr (GRADS) {
    const float above = static_cast<float>(xv >= p.c), below = static_cast<float>(xv <= p.lo);
    r.in_range = (1.0f - above) * (1.0f - below);
    const float dxcdm = static_cast<float>(1.0 - 1e-7) * (above - p.sgn * below);
    // dy/dm = delta0 a0 + sum_i P_i (delta_i a_i - delta_{i-1} a_{i-1}) + dxc/dm
    float dydm = delta[0] * p.af[p.base] + dxcdm;
    float P = 1.0f;
    _Pragma("GCC unroll 4") for (int i = 0; i < K; ++i) {
      // dy/dg_i = P_{i-1} (e_i + inner_{i+1}) where inner_{i+1} = t[i+1]
      r.dyg[i] = P * (e[i] + t[i + 1]);
      P *= p.g[i];
      dydm += P * (delta[i + 1] * p.af[p.base + 1 + i] - delta[i] * p.af[p.base + i]);
    }
    r.dydm = dydm;
  }
  return r;
}

template <int K>
void forward_loop(const Params& params, const float* xp, const float* zp, float* op, int64_t n) {
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    const Params p = params;
    if (zp) {
      for (int64_t i = b; i < e; ++i) op[i] = zp[i / p.inner] * compute<K, false>(p, xp[i]).y;
    } else {
      for (int64_t i = b; i < e; ++i) op[i] = compute<K, false>(p, xp[i]).y;
    }
  });
}

// acc layout per thread: [m, g0..g3, z2 channels...]. Each run of 1024
// elements first computes the per-element terms (a loop the compiler can
// vectorise), then sums them.
template <int K, bool Z2>
void backward_loop(const Params& params, const float* xp, const float* zp, const float* gp, float* gxp, int64_t n,
                   std::vector<double>& partial, int64_t width) {
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    const Params p = params;  // a local copy: stores through gx cannot alias it
    double* acc = partial.data() + at::get_thread_num() * width;
    constexpr int64_t kRun = 1024;
    float dm[kRun], dg[K > 0 ? K : 1][kRun], dz[Z2 ? kRun : 1];
    for (int64_t run = b; run < e; run += kRun) {
      const int64_t len = std::min(e - run, kRun);
      const float* x = xp + run;
      const float* g = gp + run;
      float* gx = gxp + run;
      for (int64_t j = 0; j < len; ++j) {
        const Elem r = compute<K, true>(p, x[j]);
        const float z = Z2 ? zp[(run + j) / p.inner] : 1.0f;
        const float gz = g[j] * z;
        gx[j] = r.in_range * gz;
        dm[j] = gz * r.dydm;
        _Pragma("GCC unroll 4") for (int k = 0; k < K; ++k) dg[k][j] = gz * r.dyg[k];
        if constexpr (Z2) dz[j] = g[j] * r.y;
      }
      float sm = 0.0f;
      for (int64_t j = 0; j < len; ++j) sm += dm[j];
      acc[0] += sm;
      for (int k = 0; k < K; ++k) {
        float sg = 0.0f;
        for (int64_t j = 0; j < len; ++j) sg += dg[k][j];
        acc[1 + k] += sg;
      }
      if constexpr (Z2)
        for (int64_t j = 0; j < len; ++j) acc[5 + (run + j) / p.inner] += dz[j];
    }
  });
}

template <int K>
void backward_dispatch(const Params& p, const float* xp, const float* zp, const float* gp, float* gxp, int64_t n,
                       std::vector<double>& partial, int64_t width) {
  if (zp) backward_loop<K, true>(p, xp, zp, gp, gxp, n, partial, width);
  else backward_loop<K, false>(p, xp, zp, gp, gxp, n, partial, width);
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
    switch (p.k) {
      case 0: forward_loop<0>(p, xp, zp, op, xc.numel()); break;
      case 1: forward_loop<1>(p, xp, zp, op, xc.numel()); break;
      case 2: forward_loop<2>(p, xp, zp, op, xc.numel()); break;
      case 3: forward_loop<3>(p, xp, zp, op, xc.numel()); break;
      default: forward_loop<4>(p, xp, zp, op, xc.numel()); break;
    }
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
    switch (p.k) {
      case 0: backward_dispatch<0>(p, xp, zp, gp, gxp, x.numel(), partial, width); break;
      case 1: backward_dispatch<1>(p, xp, zp, gp, gxp, x.numel(), partial, width); break;
      case 2: backward_dispatch<2>(p, xp, zp, gp, gxp, x.numel(), partial, width); break;
      case 3: backward_dispatch<3>(p, xp, zp, gp, gxp, x.numel(), partial, width); break;
      default: backward_dispatch<4>(p, xp, zp, gp, gxp, x.numel(), partial, width); break;
    }
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
