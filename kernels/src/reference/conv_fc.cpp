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

ConvDesc fc_as_conv(const FcDesc& f) {
  ConvDesc c;
  c.N = f.N;
  c.H = c.W = 1;
  c.C = f.K;
  c.OC = f.OC;
  c.KH = c.KW = 1;
  c.wbits = f.wbits;
  c.in = f.in;
  c.out = f.out;
  c.activation = f.activation;
  return c;
}

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
    return static_cast<size_t>(std::max(1, num_threads)) * patch_stride();
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
  size_t patch_stride() const { return round_up64(static_cast<size_t>(K_) * 4); }

  template <class TI, class TO>
  void run_typed(const TI* in, TO* out, uint8_t* scratch, ThreadPool* pool) const {
    const ConvDesc& d = d_;
    parallel_for(pool, d.N * OH_, [&](int64_t begin, int64_t end, int t) {
      uint8_t* patch_raw = scratch + static_cast<size_t>(t) * patch_stride();
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / OH_, oh = r % OH_;
        for (int64_t ow = 0; ow < OW_; ++ow) {
          TO* o = out + ((n * OH_ + oh) * OW_ + ow) * d.OC;
          for (int64_t g = 0; g < d.groups; ++g) {
            if (float_path_) {
              float* patch = reinterpret_cast<float*>(patch_raw);
              gather<TI>(in, n, oh, ow, g, patch, [&](TI v) {
                if constexpr (kIsFloat<TI>) return v;
                else return static_cast<float>(v) * d.in.scale;
              });
              for (int64_t oc = g * OCg_; oc < (g + 1) * OCg_; ++oc) o[oc] = finish_float<TO>(dot_float(oc, patch), oc);
            } else {
              int32_t* patch = reinterpret_cast<int32_t*>(patch_raw);
              if constexpr (!kIsFloat<TI>) {
                gather<TI>(in, n, oh, ow, g, patch, [](TI v) { return static_cast<int32_t>(v); });
                for (int64_t oc = g * OCg_; oc < (g + 1) * OCg_; ++oc) o[oc] = finish_int<TO>(dot_int(oc, patch), oc);
              }
            }
          }
        }
      }
    });
  }

  // Input patch of group g at output (n, oh, ow), in (kh, kw, ci) order; zero padding.
  template <class TI, class T, class F>
  void gather(const TI* in, int64_t n, int64_t oh, int64_t ow, int64_t g, T* patch, F conv) const {
    const ConvDesc& d = d_;
    int64_t k = 0;
    for (int64_t kh = 0; kh < d.KH; ++kh) {
      const int64_t ih = oh * d.stride_h - d.pad_top + kh * d.dilation_h;
      for (int64_t kw = 0; kw < d.KW; ++kw) {
        const int64_t iw = ow * d.stride_w - d.pad_left + kw * d.dilation_w;
        if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) {
          for (int64_t c = 0; c < Cg_; ++c) patch[k++] = T{0};
        } else {
          const TI* p = in + ((n * d.H + ih) * d.W + iw) * d.C + g * Cg_;
          for (int64_t c = 0; c < Cg_; ++c) patch[k++] = conv(p[c]);
        }
      }
    }
  }

  double dot_float(int64_t oc, const float* patch) const {
    if (wf_.empty()) return 0.0;  // pruned layer
    const float* w = wf_.data() + oc * K_;
    double acc = 0.0;
    for (int64_t k = 0; k < K_; ++k) acc += static_cast<double>(w[k]) * static_cast<double>(patch[k]);
    return acc;
  }

  int64_t dot_int(int64_t oc, const int32_t* patch) const {
    if (wq_.empty()) return 0;  // pruned layer
    const int16_t* w = wq_.data() + oc * K_;
    if (acc32_) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K_; ++k) acc += static_cast<int32_t>(w[k]) * patch[k];
      return acc;
    }
    int64_t acc = 0;
    for (int64_t k = 0; k < K_; ++k) acc += static_cast<int64_t>(w[k]) * patch[k];
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
  TO finish_int(int64_t acc, int64_t oc) const {
    const auto i = static_cast<size_t>(oc);
    if constexpr (kIsFloat<TO>) {
      const double v = static_cast<double>(acc) * out_mul_[i] + static_cast<double>(bias_f_[i]);
      return apply_act_float(static_cast<float>(v), d_.activation);
    } else {
      return static_cast<TO>(clamp_range(apply_requant(acc + bias_q_[i], rq_[i]), clamp_));
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
  std::vector<float> bias_f_;
  std::vector<double> out_mul_;  // s_w[oc] * s_in
  std::vector<Requant> rq_;
  ClampRange clamp_{};
};

std::string ref_name(const char* op, int wb, int ab) {
  return std::string(op) + "_ref_w" + std::to_string(wb) + "a" + std::to_string(ab);
}

double conv_cost(const OpDesc& desc) {
  const bool fl = weight_bits(desc) == 32 || input_bits(desc) == 32;
  return cost_model_ns(static_cast<double>(op_work(desc)), fl ? RefCost::kFloatMacsPerNs : RefCost::kIntMacsPerNs,
                       static_cast<double>(op_bytes(desc)), RefCost::kBytesPerNs, RefCost::kOverheadNs);
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
