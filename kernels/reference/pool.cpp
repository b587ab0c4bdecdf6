// Reference max / average / global average pooling (NHWC).
#include <algorithm>
#include <cmath>
#include <limits>

#include "bbits/kernels/thread_pool.h"
#include "reference/ref_util.h"

namespace bbits::kernels::ref {
namespace {

class RefPool final : public Kernel {
 public:
  RefPool(std::string name, const PoolDesc& d) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    if (d_.kind == PoolKind::GlobalAvg) {
      d_.KH = static_cast<int>(d_.H);
      d_.KW = static_cast<int>(d_.W);
      d_.stride_h = d_.stride_w = 1;
      d_.pad_top = d_.pad_left = d_.pad_bottom = d_.pad_right = 0;
      d_.count_include_pad = false;
      if (d_.H * d_.W > std::numeric_limits<int>::max())
        throw std::invalid_argument(name_ + ": H*W is too large for a global pool");
    }
    OH_ = d_.out_h();
    OW_ = d_.out_w();
    int_path_ = !d_.in.is_float() && !d_.out.is_float();
    if (!d_.out.is_float()) clamp_ = output_clamp(d_.out, Activation::None);
    if (int_path_) {
      if (d_.kind == PoolKind::Max) {
        conv_ = std::make_unique<Converter>(d_.in, d_.out, Activation::None);
      } else {
        rq_ = make_requant(static_cast<double>(d_.in.scale) / static_cast<double>(d_.out.scale));
      }
    }
  }

  std::string_view name() const override { return name_; }

  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_args(args, 1, 0, name_);
    with_type(d_.in, [&](auto ti) {
      with_type(d_.out, [&](auto to) {
        using TI = decltype(ti);
        using TO = decltype(to);
        run_typed<TI, TO>(static_cast<const TI*>(args.inputs[0]), static_cast<TO*>(args.output), pool);
      });
    });
  }

 private:
  template <class TI, class TO>
  void run_typed(const TI* in, TO* out, ThreadPool* pool) const {
    const PoolDesc& d = d_;
    parallel_for(pool, d.N * OH_, [&](int64_t begin, int64_t end, int) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / OH_, oh = r % OH_;
        const int64_t h0 = oh * d.stride_h - d.pad_top;
        const int64_t hs = std::max<int64_t>(h0, 0), he = std::min<int64_t>(h0 + d.KH, d.H);
        for (int64_t ow = 0; ow < OW_; ++ow) {
          const int64_t w0 = ow * d.stride_w - d.pad_left;
          const int64_t ws = std::max<int64_t>(w0, 0), we = std::min<int64_t>(w0 + d.KW, d.W);
          const int64_t inside = (he - hs) * (we - ws);  // >= 1: padding < kernel
          const int64_t count = d.count_include_pad ? int64_t{d.KH} * d.KW : inside;
          TO* o = out + ((n * OH_ + oh) * OW_ + ow) * d.C;
          for (int64_t c = 0; c < d.C; ++c) {
            if constexpr (!kIsFloat<TI> && !kIsFloat<TO>) {
              if (d.kind == PoolKind::Max) {
                int64_t m = std::numeric_limits<int64_t>::min();
                for (int64_t ih = hs; ih < he; ++ih)
                  for (int64_t iw = ws; iw < we; ++iw) m = std::max<int64_t>(m, in[((n * d.H + ih) * d.W + iw) * d.C + c]);
                o[c] = (*conv_).template operator()<int64_t, TO>(m);
              } else {
                int64_t s = 0;
                for (int64_t ih = hs; ih < he; ++ih)
                  for (int64_t iw = ws; iw < we; ++iw) s += in[((n * d.H + ih) * d.W + iw) * d.C + c];
                o[c] = static_cast<TO>(clamp_range(avg_pool_divide(s, count, rq_), clamp_));
              }
            } else {
              // Float path: dequantize, pool in float (double sum), store or quantize.
              double v;
              if (d.kind == PoolKind::Max) {
                float m = -std::numeric_limits<float>::infinity();
                for (int64_t ih = hs; ih < he; ++ih)
                  for (int64_t iw = ws; iw < we; ++iw) m = std::max(m, deq<TI>(in[((n * d.H + ih) * d.W + iw) * d.C + c]));
                v = m;
              } else {
                double s = 0.0;
                for (int64_t ih = hs; ih < he; ++ih)
                  for (int64_t iw = ws; iw < we; ++iw) s += deq<TI>(in[((n * d.H + ih) * d.W + iw) * d.C + c]);
                v = s / static_cast<double>(count);
              }
              if constexpr (kIsFloat<TO>) o[c] = static_cast<float>(v);
              else o[c] = static_cast<TO>(quantize_to_grid(static_cast<float>(v), d.out.scale, clamp_.lo, clamp_.hi));
            }
          }
        }
      }
    });
  }

  template <class TI>
  float deq(TI v) const {
    if constexpr (kIsFloat<TI>) return v;
    else return static_cast<float>(v) * d_.in.scale;
  }

  std::string name_;
  PoolDesc d_;
  int64_t OH_ = 0, OW_ = 0;
  bool int_path_ = false;
  ClampRange clamp_{};
  std::unique_ptr<Converter> conv_;
  Requant rq_{};  // s_in / s_out (average pools)
};

double pool_cost(const OpDesc& desc) {
  return cost_model_ns(static_cast<double>(op_work(desc)), 1.0 / RefCost::kPoolTapNs,
                       static_cast<double>(op_bytes(desc)), RefCost::kBytesPerNs,
                       RefCost::kOverheadNs + static_cast<double>(output_elements(desc)) * RefCost::kOutputNs);
}

}  // namespace

void register_pool(std::vector<KernelInfo>& table) {
  const struct {
    PoolKind kind;
    OpKind op;
    const char* name;
  } kinds[] = {{PoolKind::Max, OpKind::MaxPool2D, "max_pool2d"},
               {PoolKind::Avg, OpKind::AvgPool2D, "avg_pool2d"},
               {PoolKind::GlobalAvg, OpKind::GlobalAvgPool, "global_avg_pool"}};
  for (const auto& kd : kinds) {
    for (int ab : kActBits) {
      KernelInfo k;
      k.name = std::string(kd.name) + "_ref_a" + std::to_string(ab);
      k.op = kd.op;
      k.weight_bits = kAnyBits;
      k.act_bits = ab;
      k.isa = Isa::Reference;
      const PoolKind kind = kd.kind;
      k.supports = [kind, ab](const OpDesc& d) {
        const auto* p = std::get_if<PoolDesc>(&d);
        return p && p->kind == kind && p->in.bits == ab;
      };
      k.cost_ns = pool_cost;
      k.create = [name = k.name, kind, ab](const OpDesc& d, const Weights&) -> std::unique_ptr<Kernel> {
        const auto* p = std::get_if<PoolDesc>(&d);
        if (!p || p->kind != kind || p->in.bits != ab) throw std::invalid_argument(name + ": cannot run " + describe(d));
        return std::make_unique<RefPool>(name, *p);
      };
      k.note = "plain C++ oracle";
      table.push_back(std::move(k));
    }
  }
}

}  // namespace bbits::kernels::ref
