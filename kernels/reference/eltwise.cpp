// Reference relu / relu6, add, concat, reshape (flatten) and softmax.
#include <algorithm>
#include <cmath>
#include <limits>

#include "bbits/kernels/thread_pool.h"
#include "reference/ref_util.h"

namespace bbits::kernels::ref {
namespace {

constexpr int64_t kGrain = 4096;  // elements per parallel chunk

template <class F>
void dispatch2(const QuantInfo& a, const QuantInfo& b, F&& f) {
  with_type(a, [&](auto ta) { with_type(b, [&](auto tb) { f(ta, tb); }); });
}

// ---- relu / relu6 ---------------------------------------------------------------
class RefActivation final : public Kernel {
 public:
  RefActivation(std::string name, const ActivationDesc& d) : name_(std::move(name)), d_(d), conv_(d.in, d.out, d.act) {
    check_desc(d_);
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_args(args, 1, 0, name_);
    dispatch2(d_.in, d_.out, [&](auto ti, auto to) {
      using TI = decltype(ti);
      using TO = decltype(to);
      const TI* in = static_cast<const TI*>(args.inputs[0]);
      TO* out = static_cast<TO*>(args.output);
      parallel_for(pool, d_.count, [&](int64_t b, int64_t e, int) { convert_n(in + b, 1, out + b, e - b, conv_); },
                   kGrain);
    });
  }

 private:
  std::string name_;
  ActivationDesc d_;
  Converter conv_;
};

// ---- add -------------------------------------------------------------------------
class RefAdd final : public Kernel {
 public:
  RefAdd(std::string name, const AddDesc& d) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    int_path_ = !d_.a.is_float() && !d_.b.is_float() && !d_.out.is_float();
    if (!d_.out.is_float()) clamp_ = output_clamp(d_.out, d_.activation);
    if (int_path_) rq_ = add_requant(d_.a, d_.b, d_.out);
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_args(args, 2, 0, name_);
    with_type(d_.a, [&](auto ta) {
      with_type(d_.b, [&](auto tb) {
        with_type(d_.out, [&](auto to) {
          using TA = decltype(ta);
          using TB = decltype(tb);
          using TO = decltype(to);
          run_typed<TA, TB, TO>(static_cast<const TA*>(args.inputs[0]), static_cast<const TB*>(args.inputs[1]),
                                static_cast<TO*>(args.output), pool);
        });
      });
    });
  }

 private:
  template <class TA, class TB, class TO>
  void run_typed(const TA* a, const TB* b, TO* out, ThreadPool* pool) const {
    // Locals: byte-sized output stores may alias the members.
    const Requant ra = rq_.a, rb = rq_.b;
    const int64_t lo = clamp_.lo, hi = clamp_.hi;
    const QuantInfo qa = d_.a, qb = d_.b, qo = d_.out;
    const Activation act = d_.activation;
    parallel_for(pool, d_.count, [=](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) {
        if constexpr (!kIsFloat<TA> && !kIsFloat<TB> && !kIsFloat<TO>) {
          const int64_t sum = apply_requant_sum(static_cast<int64_t>(a[i]), ra, static_cast<int64_t>(b[i]), rb);
          out[i] = static_cast<TO>(sum < lo ? lo : (sum > hi ? hi : sum));
        } else {
          const float x = apply_act_float(deq(a[i], qa) + deq(b[i], qb), act);
          if constexpr (kIsFloat<TO>) out[i] = x;
          else out[i] = static_cast<TO>(quantize_to_grid(x, qo.scale, lo, hi));
        }
      }
    }, kGrain);
  }

  template <class T>
  static float deq(T v, const QuantInfo& q) {
    if constexpr (kIsFloat<T>) return v;
    else return static_cast<float>(v) * q.scale;
  }

  std::string name_;
  AddDesc d_;
  bool int_path_ = false;
  ClampRange clamp_{};
  AddRequant rq_{};
};

// ---- concat --------------------------------------------------------------------------
class RefConcat final : public Kernel {
 public:
  RefConcat(std::string name, const ConcatDesc& d) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    total_ = 0;
    for (size_t i = 0; i < d_.sizes.size(); ++i) {
      convs_.emplace_back(d_.in[i], d_.out, Activation::None);
      offsets_.push_back(total_);
      total_ += d_.sizes[i];
    }
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_args(args, static_cast<int>(d_.sizes.size()), 0, name_);
    for (size_t i = 0; i < d_.sizes.size(); ++i) {
      dispatch2(d_.in[i], d_.out, [&](auto ti, auto to) {
        using TI = decltype(ti);
        using TO = decltype(to);
        const TI* in = static_cast<const TI*>(args.inputs[i]);
        TO* out = static_cast<TO*>(args.output);
        const int64_t row = d_.sizes[i] * d_.inner;   // input elements per outer index
        const int64_t orow = total_ * d_.inner;       // output elements per outer index
        const int64_t off = offsets_[i] * d_.inner;
        const Converter& cv = convs_[i];
        parallel_for(pool, d_.outer, [&](int64_t b, int64_t e, int) {
          for (int64_t o = b; o < e; ++o) convert_n(in + o * row, 1, out + o * orow + off, row, cv);
        }, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, row)));
      });
    }
  }

 private:
  std::string name_;
  ConcatDesc d_;
  std::vector<Converter> convs_;
  std::vector<int64_t> offsets_;
  int64_t total_ = 0;
};

// ---- reshape / flatten -------------------------------------------------------------------
class RefReshape final : public Kernel {
 public:
  RefReshape(std::string name, const ReshapeDesc& d) : name_(std::move(name)), d_(d), conv_(d.in, d.out, Activation::None) {
    check_desc(d_);
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_args(args, 1, 0, name_);
    dispatch2(d_.in, d_.out, [&](auto ti, auto to) {
      using TI = decltype(ti);
      using TO = decltype(to);
      const TI* in = static_cast<const TI*>(args.inputs[0]);
      TO* out = static_cast<TO*>(args.output);
      const int64_t H = d_.H, W = d_.W, C = d_.C, HWC = H * W * C;
      if (!d_.to_chw) {
        parallel_for(pool, d_.N * HWC, [&](int64_t b, int64_t e, int) { convert_n(in + b, 1, out + b, e - b, conv_); },
                     kGrain);
        return;
      }
      // out[n][c*H*W + h*W + w] = in[n][h][w][c]
      parallel_for(pool, d_.N * C, [&](int64_t b, int64_t e, int) {
        for (int64_t r = b; r < e; ++r) {
          const int64_t n = r / C, c = r % C;
          const TI* src = in + n * HWC + c;
          TO* dst = out + n * HWC + c * H * W;
          convert_n(src, C, dst, H * W, conv_);
        }
      });
    });
  }

 private:
  std::string name_;
  ReshapeDesc d_;
  Converter conv_;
};

// ---- softmax ---------------------------------------------------------------------------------
class RefSoftmax final : public Kernel {
 public:
  RefSoftmax(std::string name, const SoftmaxDesc& d) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    if (!d_.out.is_float()) clamp_ = output_clamp(d_.out, Activation::None);
  }
  std::string_view name() const override { return name_; }
  size_t scratch_bytes(int num_threads) const override {
    return static_cast<size_t>(std::max(1, num_threads)) * round_up64(static_cast<size_t>(d_.axis_size) * sizeof(double));
  }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    const int threads = pool ? pool->num_threads() : 1;
    check_args(args, 1, scratch_bytes(threads), name_);
    dispatch2(d_.in, d_.out, [&](auto ti, auto to) {
      using TI = decltype(ti);
      using TO = decltype(to);
      const TI* in = static_cast<const TI*>(args.inputs[0]);
      TO* out = static_cast<TO*>(args.output);
      const int64_t A = d_.axis_size, I = d_.inner;
      const size_t stride = round_up64(static_cast<size_t>(A) * sizeof(double));
      parallel_for(pool, d_.outer * I, [&](int64_t b, int64_t e, int t) {
        double* e_buf = reinterpret_cast<double*>(static_cast<uint8_t*>(args.scratch) + static_cast<size_t>(t) * stride);
        for (int64_t r = b; r < e; ++r) {
          const int64_t o = r / I, in_i = r % I;
          const int64_t base = o * A * I + in_i;
          double mx = -std::numeric_limits<double>::infinity();
          for (int64_t a = 0; a < A; ++a) mx = std::max(mx, deq(in[base + a * I]));
          double sum = 0.0;
          for (int64_t a = 0; a < A; ++a) {
            e_buf[a] = std::exp(deq(in[base + a * I]) - mx);
            sum += e_buf[a];
          }
          for (int64_t a = 0; a < A; ++a) {
            const float p = static_cast<float>(e_buf[a] / sum);
            if constexpr (kIsFloat<TO>) out[base + a * I] = p;
            else out[base + a * I] = static_cast<TO>(quantize_to_grid(p, d_.out.scale, clamp_.lo, clamp_.hi));
          }
        }
      });
    });
  }

 private:
  template <class T>
  double deq(T v) const {
    if constexpr (kIsFloat<T>) return std::isnan(v) ? 0.0 : static_cast<double>(v);  // NaN would poison the row
    else return static_cast<double>(static_cast<float>(v) * d_.in.scale);
  }

  std::string name_;
  SoftmaxDesc d_;
  ClampRange clamp_{};
};

double elt_cost(const OpDesc& desc) {
  // Integer elements cost a 128-bit requantization each unless the grids agree
  // (a clamped copy); an integer add requantizes both inputs.
  const QuantInfo out = output_quant(desc);
  bool any_int = !out.is_float(), all_same = true;
  for (int i = 0; i < num_inputs(desc); ++i) {
    const QuantInfo q = input_quant(desc, i);
    any_int |= !q.is_float();
    all_same &= q == out;
  }
  double per = RefCost::kFloatElemNs;
  if (std::holds_alternative<AddDesc>(desc) && any_int) per = 2.0 * RefCost::kRequantElemNs;
  else if (any_int) per = all_same ? RefCost::kCopyElemNs : RefCost::kRequantElemNs;
  return cost_model_ns(static_cast<double>(output_elements(desc)), 1.0 / per, static_cast<double>(op_bytes(desc)),
                       RefCost::kBytesPerNs, RefCost::kOverheadNs);
}

double softmax_cost(const OpDesc& desc) {
  return cost_model_ns(static_cast<double>(op_work(desc)), 1.0 / RefCost::kSoftmaxElemNs,
                       static_cast<double>(op_bytes(desc)), RefCost::kBytesPerNs, RefCost::kOverheadNs);
}

template <class Desc, class K>
void add_kernel(std::vector<KernelInfo>& table, OpKind op, const char* opname, int ab, double (*cost)(const OpDesc&),
                bool (*extra)(const Desc&), const char* note) {
  KernelInfo k;
  k.name = std::string(opname) + "_ref_a" + std::to_string(ab);
  k.op = op;
  k.weight_bits = kAnyBits;
  k.act_bits = ab;
  k.isa = Isa::Reference;
  k.supports = [ab, extra](const OpDesc& d) {
    const auto* p = std::get_if<Desc>(&d);
    return p && input_bits(d) == ab && extra(*p);
  };
  k.cost_ns = cost;
  k.create = [name = k.name, ab, extra](const OpDesc& d, const Weights&) -> std::unique_ptr<Kernel> {
    const auto* p = std::get_if<Desc>(&d);
    if (!p || input_bits(d) != ab || !extra(*p)) throw std::invalid_argument(name + ": cannot run " + describe(d));
    return std::make_unique<K>(name, *p);
  };
  k.note = note;
  table.push_back(std::move(k));
}

}  // namespace

void register_eltwise(std::vector<KernelInfo>& table) {
  for (int ab : kActBits) {
    add_kernel<ActivationDesc, RefActivation>(
        table, OpKind::Relu, "relu", ab, elt_cost, [](const ActivationDesc& d) { return d.act == Activation::Relu; },
        "plain C++ oracle; requantizes to the output grid");
    add_kernel<ActivationDesc, RefActivation>(
        table, OpKind::Relu6, "relu6", ab, elt_cost, [](const ActivationDesc& d) { return d.act == Activation::Relu6; },
        "plain C++ oracle; requantizes to the output grid");
    add_kernel<AddDesc, RefAdd>(table, OpKind::Add, "add", ab, elt_cost, [](const AddDesc&) { return true; },
                                "plain C++ oracle; each input requantized to the output grid");
    add_kernel<ConcatDesc, RefConcat>(table, OpKind::Concat, "concat", ab, elt_cost,
                                      [](const ConcatDesc&) { return true; },
                                      "plain C++ oracle; every input requantized to the output grid");
    add_kernel<ReshapeDesc, RefReshape>(table, OpKind::Reshape, "reshape", ab, elt_cost,
                                        [](const ReshapeDesc&) { return true; },
                                        "plain C++ oracle; NHWC -> C,H,W flatten or plain copy");
    add_kernel<SoftmaxDesc, RefSoftmax>(table, OpKind::Softmax, "softmax", ab, softmax_cost,
                                        [](const SoftmaxDesc&) { return true; }, "plain C++ oracle; double sums");
  }
}

}  // namespace bbits::kernels::ref
