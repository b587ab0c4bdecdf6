#include "bbits/converter/simulate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "bbits/format/quant.h"

namespace bbits::converter {

float fake_quant(float x, float x_max, int bits, bool is_signed) {
  if (!is_integer_bits(bits)) return x;
  const float s = grid_scale(x_max, bits, is_signed);
  return s * static_cast<float>(quantize_value(x, x_max, bits, is_signed));
}

namespace {
// The same rounding in double precision (clip bound and step are the float32
// constants of quant.h): the oracle computes sums exactly enough that only
// true ties could round differently from the integer network.
double fake_quant_d(double x, float x_max, int bits, bool is_signed) {
  if (!is_integer_bits(bits)) return x;
  const double s = grid_scale(x_max, bits, is_signed);
  const double c = clip_bound(x_max);
  const double lo = is_signed ? -c : 0.0;
  if (std::isnan(x)) x = 0.0;
  const double xc = x < lo ? lo : (x > c ? c : x);
  double q = std::nearbyint(xc / s);  // round half to even
  q = std::clamp(q, static_cast<double>(qmin(bits, is_signed)), static_cast<double>(qmax(bits, is_signed)));
  return s * q;
}
}  // namespace

namespace {

struct Act4 {  // activation tensor: N + per-sample shape
  int64_t n = 0;
  std::vector<int64_t> shape;  // C,H,W or F
  std::vector<double> data;
  int64_t per() const {
    int64_t p = 1;
    for (auto d : shape) p *= d;
    return p;
  }
};

void conv2d(const Node& nd, const Act4& x, const std::vector<double>& w, const std::vector<double>& b, Act4& y,
            const std::vector<int64_t>& oshape) {
  const int64_t C = x.shape[0], H = x.shape[1], W = x.shape[2];
  const int64_t O = oshape[0], OH = oshape[1], OW = oshape[2];
  const int64_t G = nd.groups, cpg = C / G, opg = O / G;
  const int KH = nd.kernel_h, KW = nd.kernel_w;
  y.n = x.n;
  y.shape = oshape;
  y.data.assign(static_cast<size_t>(x.n * O * OH * OW), 0.0);
  for (int64_t n = 0; n < x.n; ++n) {
    const double* xb = x.data.data() + n * C * H * W;
    double* yb = y.data.data() + n * O * OH * OW;
    for (int64_t o = 0; o < O; ++o) {
      const int64_t g = o / opg;
      double* yo = yb + o * OH * OW;
      for (int64_t i = 0; i < OH * OW; ++i) yo[i] = 0.0;
      for (int64_t ci = 0; ci < cpg; ++ci) {
        const double* xc = xb + (g * cpg + ci) * H * W;
        for (int kh = 0; kh < KH; ++kh)
          for (int kw = 0; kw < KW; ++kw) {
            const double wv = w[static_cast<size_t>(((o * cpg + ci) * KH + kh) * KW + kw)];
            if (wv == 0.0) continue;
            // output columns whose input column ix = ox * sw + off lies inside the row
            const int64_t sw = nd.stride_w, off = static_cast<int64_t>(kw) * nd.dilation_w - nd.pad_w;
            const int64_t ox_lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
            const int64_t ox_hi = std::min<int64_t>(OW, W - 1 - off < 0 ? 0 : (W - 1 - off) / sw + 1);
            for (int64_t oy = 0; oy < OH; ++oy) {
              const int64_t iy = oy * nd.stride_h - nd.pad_h + kh * nd.dilation_h;
              if (iy < 0 || iy >= H) continue;
              const double* xr = xc + iy * W + off;
              double* yr = yo + oy * OW;
              if (sw == 1) {
                for (int64_t ox = ox_lo; ox < ox_hi; ++ox) yr[ox] += wv * xr[ox];
              } else {
                for (int64_t ox = ox_lo; ox < ox_hi; ++ox) yr[ox] += wv * xr[ox * sw];
              }
            }
          }
      }
      for (int64_t i = 0; i < OH * OW; ++i) yo[i] += b[static_cast<size_t>(o)];
    }
  }
}

void pool(const Node& nd, const Act4& x, Act4& y, const std::vector<int64_t>& oshape) {
  const int64_t C = x.shape[0], H = x.shape[1], W = x.shape[2], OH = oshape[1], OW = oshape[2];
  y.n = x.n;
  y.shape = oshape;
  y.data.assign(static_cast<size_t>(x.n * C * OH * OW), 0.0);
  const bool is_max = nd.op == OpKind::MaxPool;
  for (int64_t nc = 0; nc < x.n * C; ++nc) {
    const double* xc = x.data.data() + nc * H * W;
    double* yc = y.data.data() + nc * OH * OW;
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox) {
        double acc = is_max ? -std::numeric_limits<double>::infinity() : 0.0;
        int64_t count = 0;
        for (int kh = 0; kh < nd.kernel_h; ++kh)
          for (int kw = 0; kw < nd.kernel_w; ++kw) {
            const int64_t iy = oy * nd.stride_h - nd.pad_h + kh, ix = ox * nd.stride_w - nd.pad_w + kw;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
            const double v = xc[iy * W + ix];
            if (is_max) acc = std::max(acc, v);
            else acc += v;
            ++count;
          }
        if (!is_max) {
          const int64_t div = nd.count_include_pad ? int64_t{nd.kernel_h} * nd.kernel_w : count;
          acc /= static_cast<double>(div);
        }
        yc[oy * OW + ox] = acc;
      }
  }
}

}  // namespace

std::vector<FTensor> simulate(const Checkpoint& ck, const FTensor& input, const SimulateOptions& opts) {
  const Graph& g = ck.graph;
  const Shapes sh = infer_shapes(g);
  if (input.shape.size() != 4 || std::vector<int64_t>(input.shape.begin() + 1, input.shape.end()) != g.input.shape)
    throw ConvertError("simulate: input shape " + shape_str(input.shape) + " does not match N," +
                       shape_str(g.input.shape));
  std::vector<Act4> vals(g.nodes.size());
  // grid step of every value (0: float), for integer_bias
  std::vector<float> step(g.nodes.size(), 0.0f);
  float in_step = 0.0f;
  Act4 in;
  in.n = input.shape[0];
  in.shape = g.input.shape;
  in.data.assign(input.data.begin(), input.data.end());
  const int in_bits = opts.input_bits ? opts.input_bits : input_bits_of(ck);
  if (opts.quantize && in_bits != 32) {
    const float xm = ck.get(g.input.name + ".aq.x_max").scalar();
    const bool sg = input_signed(g);
    for (double& v : in.data) v = fake_quant(static_cast<float>(v), xm, in_bits, sg);
    in_step = grid_scale(xm, in_bits, sg);
  }
  auto step_of = [&](const std::string& name) {
    const int i = g.index_of(name);
    return i < 0 ? in_step : step[static_cast<size_t>(i)];
  };
  auto value_of = [&](const std::string& name) -> const Act4& {
    const int i = g.index_of(name);
    return i < 0 ? in : vals[static_cast<size_t>(i)];
  };
  auto finish = [&](const Node& nd, Act4& y, Act act) {
    for (double& v : y.data) v = act == Act::Relu ? std::max(v, 0.0) : (act == Act::Relu6 ? std::clamp(v, 0.0, 6.0) : v);
    if (opts.quantize && nd.act_quant) {
      const int bits = act_bits_of(ck, nd.name);
      const float xm = ck.get(nd.name + ".aq.x_max").scalar();
      for (double& v : y.data) v = fake_quant_d(v, xm, bits, nd.act_signed);
    }
  };
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& nd = g.nodes[i];
    const Act4& x = value_of(nd.inputs[0]);
    Act4& y = vals[i];
    // pooling, flatten and plain activations keep their input's grid
    step[i] = nd.op == OpKind::Concat ? 0.0f : step_of(nd.inputs[0]);
    if (opts.quantize && (nd.is_layer() || nd.op == OpKind::Add || nd.act_quant)) {
      step[i] = 0.0f;
      if (nd.act_quant) {
        const int bits = act_bits_of(ck, nd.name);
        if (is_integer_bits(bits)) step[i] = grid_scale(ck.get(nd.name + ".aq.x_max").scalar(), bits, nd.act_signed);
      }
    }
    switch (nd.op) {
      case OpKind::Conv2d:
      case OpKind::Linear: {
        FoldedLayer f = fold_layer(ck, nd);
        const int64_t O = f.weight.shape[0];
        const int64_t K = f.weight.numel() / O;
        std::vector<double> wd(f.weight.data.begin(), f.weight.data.end());
        std::vector<double> bd(f.bias.begin(), f.bias.end());
        if (opts.quantize && nd.weight_quant) {
          const int bits = weight_bits_of(ck, nd);
          const float xm = ck.get(nd.name + ".wq.x_max").scalar();
          const auto keep = keep_mask_of(ck, nd);
          for (int64_t o = 0; o < O; ++o)
            for (int64_t k = 0; k < K; ++k) {
              const size_t u = static_cast<size_t>(o * K + k);
              const float w = f.weight.data[u];
              wd[u] = !keep[static_cast<size_t>(o)] ? 0.0
                      : is_integer_bits(bits)      ? static_cast<double>(grid_scale(xm, bits, true)) * quantize_value(w, xm, bits, true)
                                                   : static_cast<double>(w);
            }
          const float s_in = step_of(nd.inputs[0]);
          if (opts.integer_bias && is_integer_bits(bits) && s_in > 0.0f) {
            const double acc_step = static_cast<double>(grid_scale(xm, bits, true)) * s_in;
            for (size_t o = 0; o < bd.size(); ++o) bd[o] = acc_step * quantize_bias(f.bias[o], grid_scale(xm, bits, true), s_in);
          }
        }
        if (nd.op == OpKind::Conv2d) {
          conv2d(nd, x, wd, bd, y, sh.node[i]);
        } else {
          y.n = x.n;
          y.shape = sh.node[i];
          y.data.assign(static_cast<size_t>(x.n * O), 0.0);
          for (int64_t n = 0; n < x.n; ++n)
            for (int64_t o = 0; o < O; ++o) {
              const double* xr = x.data.data() + n * K;
              const double* wr = wd.data() + o * K;
              double acc = 0.0;
              for (int64_t k = 0; k < K; ++k) acc += wr[k] * xr[k];
              y.data[static_cast<size_t>(n * O + o)] = acc + bd[static_cast<size_t>(o)];
            }
        }
        finish(nd, y, nd.activation);
        break;
      }
      case OpKind::MaxPool:
      case OpKind::AvgPool:
        pool(nd, x, y, sh.node[i]);
        break;
      case OpKind::GlobalAvgPool: {
        const int64_t C = x.shape[0], HW = x.shape[1] * x.shape[2];
        y.n = x.n;
        y.shape = sh.node[i];
        y.data.assign(static_cast<size_t>(x.n * C), 0.0);
        for (int64_t nc = 0; nc < x.n * C; ++nc) {
          double acc = 0.0;
          for (int64_t k = 0; k < HW; ++k) acc += x.data[static_cast<size_t>(nc * HW + k)];
          y.data[static_cast<size_t>(nc)] = acc / static_cast<double>(HW);
        }
        break;
      }
      case OpKind::Add: {
        const Act4& b = value_of(nd.inputs[1]);
        y = x;
        for (size_t k = 0; k < y.data.size(); ++k) y.data[k] += b.data[k];
        finish(nd, y, nd.activation);
        break;
      }
      case OpKind::Concat: {
        y.n = x.n;
        y.shape = sh.node[i];
        const int64_t HW = x.shape[1] * x.shape[2];
        y.data.assign(static_cast<size_t>(y.n * y.per()), 0.0);
        int64_t coff = 0;
        for (const std::string& src : nd.inputs) {
          const Act4& s = value_of(src);
          for (int64_t n = 0; n < x.n; ++n)
            std::copy(s.data.begin() + n * s.per(), s.data.begin() + (n + 1) * s.per(),
                      y.data.begin() + n * y.per() + coff * HW);
          coff += s.shape[0];
        }
        break;
      }
      case OpKind::Flatten:
        y = x;
        y.shape = sh.node[i];
        break;
      case OpKind::Relu:
      case OpKind::Relu6:
        y = x;
        finish(nd, y, nd.op == OpKind::Relu ? Act::Relu : Act::Relu6);
        break;
    }
    if (opts.ranges) {
      float lo = std::numeric_limits<float>::infinity(), hi = -lo;
      for (double v : y.data) {
        lo = std::min(lo, static_cast<float>(v));
        hi = std::max(hi, static_cast<float>(v));
      }
      (*opts.ranges)[nd.name] = {lo, hi};
    }
  }
  std::vector<FTensor> outs;
  for (const std::string& o : g.outputs) {
    const Act4& v = value_of(o);
    FTensor t;
    t.shape = {v.n};
    t.shape.insert(t.shape.end(), v.shape.begin(), v.shape.end());
    t.data.assign(v.data.begin(), v.data.end());
    outs.push_back(std::move(t));
  }
  return outs;
}

}  // namespace bbits::converter
