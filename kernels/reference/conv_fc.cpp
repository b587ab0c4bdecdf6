// Reference conv2d and fully connected kernels: plain C++, exact integer
// arithmetic (see kernels.h for the semantics). Fully connected runs as a
// 1x1 convolution on a 1x1 image.
#include <algorithm>
#include <cmath>
#include <limits>

#include "bbits/kernels/thread_pool.h"
#include "reference/ref_util.h"

namespace bbits::kernels::ref {
namespace {


class RefConv final : public Kernel {
 public:
  RefConv(std::string name, const ConvDesc& d, const Weights& w) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    OH_ = d_.out_h();
    OW_ = d_.out_w();
    K_ = d_.K();
    Cg_ = d_.C / d_.groups;
    OCg_ = d_.OC / d_.groups;
    float_path_ = d_.wbits == 32 || d_.in.is_float();
    const auto OC = static_cast<size_t>(d_.OC);
    const std::string who = name_ + ": ";

    // Weight scales.
    std::vector<double> s_w(OC, 1.0);
    if (is_integer_bits(d_.wbits) || (d_.wbits == 0 && !w.scales.empty())) {
      if (w.scales.size() != OC && w.scales.size() != 1)
        throw std::invalid_argument(who + "expected " + std::to_string(OC) + " weight scales (or 1), got " +
                                    std::to_string(w.scales.size()));
      for (size_t i = 0; i < OC; ++i) {
        const float s = w.scales[w.scales.size() == 1 ? 0 : i];
        if (!(std::isfinite(s) && s > 0.0f))
          throw std::invalid_argument(who + "weight scale " + std::to_string(s) + " of channel " +
                                      std::to_string(i) + " must be positive and finite");
        s_w[i] = s;
      }
    }
    // Weights.
    if (d_.wbits != 0) {
      const size_t row = packed_row_bytes(K_, d_.wbits);
      const size_t need = row * OC;
      if (w.data == nullptr || w.size < need)
        throw std::invalid_argument(who + "weights hold " + std::to_string(w.size) + " bytes, " +
                                    std::to_string(need) + " needed for " + std::to_string(OC) + " rows of " +
                                    std::to_string(K_) + " values at " + std::to_string(d_.wbits) + " bits");
      if (d_.wbits == 32) {
        wf_.resize(OC * static_cast<size_t>(K_));
        std::memcpy(wf_.data(), w.data, need);  // float32 little-endian (x86)
      } else {
        wq_.resize(OC * static_cast<size_t>(K_));
        for (size_t oc = 0; oc < OC; ++oc) {
          const uint8_t* r = w.data + oc * row;
          for (int64_t k = 0; k < K_; ++k) wq_[oc * static_cast<size_t>(K_) + static_cast<size_t>(k)] =
              static_cast<int16_t>(unpack_value(r, k, d_.wbits));
        }
        if (float_path_) {  // dequantize once
          wf_.resize(wq_.size());
          for (size_t oc = 0; oc < OC; ++oc)
            for (int64_t k = 0; k < K_; ++k) {
              const size_t i = oc * static_cast<size_t>(K_) + static_cast<size_t>(k);
              wf_[i] = static_cast<float>(wq_[i]) * static_cast<float>(s_w[oc]);
            }
          wq_.clear();
          wq_.shrink_to_fit();
        }
      }
    }
    // Biases.
    if (!w.bias_q.empty() && w.bias_q.size() != OC)
      throw std::invalid_argument(who + "expected " + std::to_string(OC) + " int32 biases, got " +
                                  std::to_string(w.bias_q.size()));
    if (!w.bias_f.empty() && w.bias_f.size() != OC)
      throw std::invalid_argument(who + "expected " + std::to_string(OC) + " float biases, got " +
                                  std::to_string(w.bias_f.size()));
    const double s_in = d_.in.is_float() ? 1.0 : static_cast<double>(d_.in.scale);
    bias_q_.assign(OC, 0);
    bias_f_.assign(OC, 0.0f);
    for (size_t oc = 0; oc < OC; ++oc) {
      if (!w.bias_q.empty()) bias_q_[oc] = w.bias_q[oc];
      else if (!w.bias_f.empty() && !float_path_) bias_q_[oc] = quantize_bias(w.bias_f[oc], s_w[oc], s_in);
      if (!w.bias_f.empty()) bias_f_[oc] = w.bias_f[oc];
      else if (!w.bias_q.empty())
        bias_f_[oc] = static_cast<float>(static_cast<double>(w.bias_q[oc]) * s_w[oc] * s_in);
    }
    // Output stage.
    out_mul_.resize(OC);
    for (size_t oc = 0; oc < OC; ++oc) out_mul_[oc] = s_w[oc] * s_in;
    if (!d_.out.is_float()) {
      clamp_ = output_clamp(d_.out, d_.activation);
      if (!float_path_) {
        rq_.resize(OC);
        for (size_t oc = 0; oc < OC; ++oc) {
          try {
            rq_[oc] = make_requant(s_w[oc] * s_in / static_cast<double>(d_.out.scale));
          } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(who + "channel " + std::to_string(oc) + ": " + e.what());
          }
        }
        // A float bias keeps its sub-step part (docs/FORMAT.md, bias_fraction).
        bfrac_.assign(OC, 0);
        if (!w.bias_f.empty())
          for (size_t oc = 0; oc < OC; ++oc)
            bfrac_[oc] = bias_fraction(w.bias_f[oc], s_w[oc], s_in, bias_q_[oc], rq_[oc]);
      }
    }
    // int32 accumulation is exact when |sum| + |bias| stays below 2^31.
    if (!float_path_) {
      const double wmax = d_.wbits == 0 ? 0.0 : static_cast<double>(qmax(d_.wbits, true));
      const double imax = static_cast<double>(std::max(-qmin(d_.in.bits, d_.in.is_signed), qmax(d_.in.bits, d_.in.is_signed)));
      acc32_ = wmax * imax * static_cast<double>(K_) < 2147483647.0;
    }
  }

  std::string_view name() const override { return name_; }

  size_t scratch_bytes(int num_threads) const override {
    return static_cast<size_t>(std::max(1, num_threads)) * thread_scratch();
  }

  void run(const KernelArgs& args, ThreadPool* pool) const override {
    const int threads = pool ? pool->num_threads() : 1;
    check_args(args, 1, scratch_bytes(threads), name_);
    with_type(d_.in, [&](auto ti) {
      with_type(d_.out, [&](auto to) {
        using TI = decltype(ti);
        using TO = decltype(to);
        run_typed<TI, TO>(static_cast<const TI*>(args.inputs[0]), static_cast<TO*>(args.output),
                          static_cast<uint8_t*>(args.scratch), pool);
      });
    });
  }

 private:
  // Per thread: one input patch (K_ int32 or float) and one accumulator per
  // output channel (int64 or double).
  size_t patch_bytes() const { return round_up64(static_cast<size_t>(K_) * 4); }
  size_t thread_scratch() const { return patch_bytes() + round_up64(static_cast<size_t>(d_.OC) * 8); }

  // Accumulators of all output channels of one output pixel are computed
  // first and stored afterwards: the (possibly byte-sized) output stores may
  // alias anything, so they are kept out of the inner loops, which read only
  // locals.
  template <class TI, class TO>
  void run_typed(const TI* in, TO* out, uint8_t* scratch, ThreadPool* pool) const {
    const ConvDesc d = d_;
    const int64_t OH = OH_, OW = OW_, K = K_, Cg = Cg_, OCg = OCg_, OC = d.OC;
    const float s_in = d.in.scale;
    parallel_for(pool, d.N * OH, [&](int64_t begin, int64_t end, int t) {
      uint8_t* base = scratch + static_cast<size_t>(t) * thread_scratch();
      void* patch_raw = base;
      void* acc_raw = base + patch_bytes();
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / OH, oh = r % OH;
        for (int64_t ow = 0; ow < OW; ++ow) {
          TO* o = out + ((n * OH + oh) * OW + ow) * OC;
          if (float_path_) {
            float* patch = static_cast<float*>(patch_raw);
            double* acc = static_cast<double*>(acc_raw);
            for (int64_t g = 0; g < d.groups; ++g) {
              gather(d, in, n, oh, ow, g, Cg, patch, [s_in](TI v) {
                if constexpr (kIsFloat<TI>) return v;
                else return static_cast<float>(v) * s_in;
              });
              const float* w = wf_.empty() ? nullptr : wf_.data();
              for (int64_t oc = g * OCg; oc < (g + 1) * OCg; ++oc) acc[oc] = w ? dot<double>(w + oc * K, patch, K) : 0.0;
            }
            for (int64_t oc = 0; oc < OC; ++oc) o[oc] = finish_float<TO>(acc[oc], oc);
          } else if constexpr (!kIsFloat<TI>) {
            int32_t* patch = static_cast<int32_t*>(patch_raw);
            int64_t* acc = static_cast<int64_t*>(acc_raw);
            const int16_t* w = wq_.empty() ? nullptr : wq_.data();
            for (int64_t g = 0; g < d.groups; ++g) {
              gather(d, in, n, oh, ow, g, Cg, patch, [](TI v) { return static_cast<int32_t>(v); });
              for (int64_t oc = g * OCg; oc < (g + 1) * OCg; ++oc) {
                if (!w) acc[oc] = 0;  // pruned layer
                else if (acc32_) acc[oc] = dot<int32_t>(w + oc * K, patch, K);
                else acc[oc] = dot<int64_t>(w + oc * K, patch, K);
              }
            }
            finish_int<TO>(acc, o);
          }
        }
      }
    });
  }

  // Input patch of group g at output (n, oh, ow), in (kh, kw, ci) order; zero padding.
  template <class TI, class T, class F>
  static void gather(const ConvDesc& d, const TI* in, int64_t n, int64_t oh, int64_t ow, int64_t g, int64_t Cg,
                     T* patch, F conv) {
    int64_t k = 0;
    for (int64_t kh = 0; kh < d.KH; ++kh) {
      const int64_t ih = oh * d.stride_h - d.pad_top + kh * d.dilation_h;
      for (int64_t kw = 0; kw < d.KW; ++kw) {
        const int64_t iw = ow * d.stride_w - d.pad_left + kw * d.dilation_w;
        if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) {
          for (int64_t c = 0; c < Cg; ++c) patch[k + c] = T{0};
        } else {
          const TI* p = in + ((n * d.H + ih) * d.W + iw) * d.C + g * Cg;
          for (int64_t c = 0; c < Cg; ++c) patch[k + c] = conv(p[c]);
        }
        k += Cg;
      }
    }
  }

  template <class Acc, class W, class P>
  static Acc dot(const W* w, const P* p, int64_t K) {
    Acc acc = 0;
    for (int64_t k = 0; k < K; ++k) acc += static_cast<Acc>(w[k]) * static_cast<Acc>(p[k]);
    return acc;
  }

  template <class TO>
  TO finish_float(double acc, int64_t oc) const {
    const float v = apply_act_float(static_cast<float>(acc + static_cast<double>(bias_f_[static_cast<size_t>(oc)])),
                                    d_.activation);
    if constexpr (kIsFloat<TO>) return v;
    else return static_cast<TO>(quantize_to_grid(v, d_.out.scale, clamp_.lo, clamp_.hi));
  }

  template <class TO>
  void finish_int(const int64_t* acc, TO* o) const {
    const int64_t OC = d_.OC;
    if constexpr (kIsFloat<TO>) {
      const Activation act = d_.activation;
      for (int64_t oc = 0; oc < OC; ++oc) {
        const auto i = static_cast<size_t>(oc);
        const double v = static_cast<double>(acc[oc]) * out_mul_[i] + static_cast<double>(bias_f_[i]);
        o[oc] = apply_act_float(static_cast<float>(v), act);
      }
    } else {
      const int64_t lo = clamp_.lo, hi = clamp_.hi;
      const int64_t* bias = bias_q_.data();
      const Requant* rq = rq_.data();
      for (int64_t oc = 0; oc < OC; ++oc) {
        const int64_t v = apply_requant(acc[oc] + bias[oc], rq[oc], bfrac_[static_cast<size_t>(oc)]);
        o[oc] = static_cast<TO>(v < lo ? lo : (v > hi ? hi : v));
      }
    }
  }

  std::string name_;
  ConvDesc d_;
  int64_t OH_ = 0, OW_ = 0, K_ = 0, Cg_ = 0, OCg_ = 0;
  bool float_path_ = false;
  bool acc32_ = false;
  std::vector<int16_t> wq_;  // integer weights, OC x K (integer path)
  std::vector<float> wf_;    // float / dequantized weights, OC x K (float path)
  std::vector<int64_t> bias_q_;
  std::vector<int64_t> bfrac_;  // sub-step part of a float bias, in multiplier units
  std::vector<float> bias_f_;
  std::vector<double> out_mul_;  // s_w[oc] * s_in
  std::vector<Requant> rq_;
  ClampRange clamp_{};
};

std::string ref_name(const char* op, int wb, int ab) {
  return std::string(op) + "_ref_w" + std::to_string(wb) + "a" + std::to_string(ab);
}

double conv_cost(const OpDesc& desc) {
  ConvDesc c;
  if (const auto* f = std::get_if<FcDesc>(&desc)) c = fc_as_conv(*f);
  else c = std::get<ConvDesc>(desc);
  const bool fl = c.wbits == 32 || c.in.is_float();
  const bool wide = c.wbits == 16 || c.in.bits == 16;
  const double rate = fl ? RefCost::kFloatMacsPerNs : (wide ? RefCost::kWideMacsPerNs : RefCost::kIntMacsPerNs);
  const double pixels = static_cast<double>(c.N * c.out_h() * c.out_w());
  const double work = static_cast<double>(c.macs()) / rate + pixels * static_cast<double>(c.K() * c.groups) * RefCost::kGatherNs +
                      pixels * static_cast<double>(c.groups) * RefCost::kPatchNs +
                      pixels * static_cast<double>(c.OC) * RefCost::kOutputNs;
  return work + static_cast<double>(op_bytes(desc)) / RefCost::kBytesPerNs + RefCost::kOverheadNs;
}

}  // namespace

void register_conv_fc(std::vector<KernelInfo>& table) {
  for (int wb : kWeightBits) {
    for (int ab : kActBits) {
      {
        KernelInfo k;
        k.name = ref_name("conv2d", wb, ab);
        k.op = OpKind::Conv2D;
        k.weight_bits = wb;
        k.act_bits = ab;
        k.isa = Isa::Reference;
        k.supports = [wb, ab](const OpDesc& d) {
          const auto* c = std::get_if<ConvDesc>(&d);
          return c && c->wbits == wb && c->in.bits == ab;
        };
        k.cost_ns = conv_cost;
        k.create = [name = k.name, wb, ab](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
          const auto* c = std::get_if<ConvDesc>(&d);
          if (!c || c->wbits != wb || c->in.bits != ab)
            throw std::invalid_argument(name + ": cannot run " + describe(d));
          return std::make_unique<RefConv>(name, *c, w);
        };
        k.note = "plain C++ oracle, any stride/padding/dilation/groups";
        table.push_back(std::move(k));
      }
      {
        KernelInfo k;
        k.name = ref_name("fc", wb, ab);
        k.op = OpKind::FullyConnected;
        k.weight_bits = wb;
        k.act_bits = ab;
        k.isa = Isa::Reference;
        k.supports = [wb, ab](const OpDesc& d) {
          const auto* f = std::get_if<FcDesc>(&d);
          return f && f->wbits == wb && f->in.bits == ab;
        };
        k.cost_ns = conv_cost;
        k.create = [name = k.name, wb, ab](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
          const auto* f = std::get_if<FcDesc>(&d);
          if (!f || f->wbits != wb || f->in.bits != ab)
            throw std::invalid_argument(name + ": cannot run " + describe(d));
          check_desc(d);
          return std::make_unique<RefConv>(name, fc_as_conv(*f), w);
        };
        k.note = "plain C++ oracle";
        table.push_back(std::move(k));
      }
    }
  }
}

}  // namespace bbits::kernels::ref
