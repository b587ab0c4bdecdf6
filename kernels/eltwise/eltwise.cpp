// bbits kernels — the element-wise family, portable part: validation,
// parameters, cost models and table entries (semantics in eltwise.h, ISA
// code in eltwise_isa.cpp).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "bbits/kernels/thread_pool.h"
#include "eltwise.h"

namespace bbits::kernels::simd {
namespace {

template <class F>
void with_eltwise_isa(Isa isa, F&& f) {
  with_isa<Isa::AVX512, Isa::AVX2, Isa::NEON>(isa, f);
}

// Real multiplier m * 2^-s <= 2^22: requantized 8-bit values (and the sum of
// two) stay within int32.
bool small_requant(const Requant& r) {
  if (r.multiplier == 0) return true;
  return r.shift >= 31 || static_cast<int64_t>(r.multiplier) <= (int64_t{1} << (r.shift + 22));
}

// ---- add -----------------------------------------------------------------------------
bool add_supports(const AddDesc& d) {
  if (!int8_grid(d.a) || !int8_grid(d.b) || !int8_grid(d.out)) return false;
  const AddRequant r = add_requant(d.a, d.b, d.out);
  if (!small_requant(r.a) || !small_requant(r.b)) return false;
  // The kernels align both products to the larger shift in 64 bits:
  // |q * m| < 2^39, so a shift difference <= 15 keeps the sum below 2^56.
  if (r.a.multiplier != 0 && r.b.multiplier != 0 && std::abs(r.a.shift - r.b.shift) > 15) return false;
  return true;
}

class AddKernel final : public Kernel {
 public:
  AddKernel(std::string name, Isa isa, const AddDesc& d) : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!add_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    check_cpu(isa_, name_);
    const AddRequant r = add_requant(d_.a, d_.b, d_.out);
    const ClampRange cr = output_clamp(d_.out, d_.activation);
    p_.a_signed = d_.a.is_signed;
    p_.b_signed = d_.b.is_signed;
    p_.out_signed = d_.out.is_signed;
    int S = 0;
    if (r.a.multiplier != 0) S = r.a.shift;
    if (r.b.multiplier != 0) S = std::max(S, static_cast<int>(r.b.shift));
    p_.ma = r.a.multiplier;
    p_.da = r.a.multiplier != 0 ? S - r.a.shift : 0;
    p_.mb = r.b.multiplier;
    p_.db = r.b.multiplier != 0 ? S - r.b.shift : 0;
    p_.shift = S;
    p_.round = S > 0 ? int64_t{1} << (S - 1) : 0;
    p_.lo = static_cast<int32_t>(cr.lo);
    p_.hi = static_cast<int32_t>(cr.hi);
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 2, name_);
    const auto* a = static_cast<const uint8_t*>(args.inputs[0]);
    const auto* b = static_cast<const uint8_t*>(args.inputs[1]);
    auto* o = static_cast<uint8_t*>(args.output);
    const int64_t chunks = (d_.count + 4095) / 4096;
    with_eltwise_isa(isa_, [&]<class Tag>() {
      parallel_for(pool, chunks, [&](int64_t cb, int64_t ce, int) {
        const int64_t i0 = cb * 4096, i1 = std::min(d_.count, ce * 4096);
        add8<Tag>(p_, a + i0, b + i0, o + i0, i1 - i0);
      });
    });
  }
  bool elementwise() const override { return true; }
  void run_elements(const KernelArgs& args, int64_t begin, int64_t end) const override {
    check_io(args, 2, name_);
    if (begin < 0 || end > d_.count || begin > end)
      throw std::invalid_argument(name_ + ": elements [" + std::to_string(begin) + ", " + std::to_string(end) +
                                  ") outside [0, " + std::to_string(d_.count) + ")");
    const auto* a = static_cast<const uint8_t*>(args.inputs[0]);
    const auto* b = static_cast<const uint8_t*>(args.inputs[1]);
    auto* o = static_cast<uint8_t*>(args.output);
    with_eltwise_isa(isa_, [&]<class Tag>() { add8<Tag>(p_, a + begin, b + begin, o + begin, end - begin); });
  }

 private:
  std::string name_;
  Isa isa_;
  AddDesc d_;
  AddParams p_;
};

// ---- concat ---------------------------------------------------------------------------------
bool concat_params(const ConcatDesc& d, std::vector<Convert8Params>* out, VecLayout layout = {}) {
  if (!int8_grid(d.out) || d.in.size() != d.sizes.size()) return false;
  const ClampRange cr = output_clamp(d.out, Activation::None);
  for (const QuantInfo& q : d.in) {
    if (!int8_grid(q)) return false;
    Convert8Params p;
    p.in_signed = q.is_signed;
    p.out_signed = d.out.is_signed;
    p.identity = q.scale == d.out.scale;
    Requant r = make_requant(1.0);
    if (!p.identity) {
      try {
        r = make_requant(static_cast<double>(q.scale) / static_cast<double>(d.out.scale));
      } catch (const std::invalid_argument&) {
        return false;  // the reference rejects it too
      }
    }
    p.lo = static_cast<int32_t>(cr.lo);
    p.hi = static_cast<int32_t>(cr.hi);
    if (out) {
      // A multiplier above 1 clamps x first (requant.h), whatever its size.
      p.rq = single_requant(r, p.lo, p.hi, layout);
      out->push_back(std::move(p));
    }
  }
  return true;
}

class ConcatKernel final : public Kernel {
 public:
  ConcatKernel(std::string name, Isa isa, const ConcatDesc& d) : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!concat_params(d_, &p_, vec_layout(isa))) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    check_cpu(isa_, name_);
    for (int64_t s : d_.sizes) {
      offsets_.push_back(total_);
      total_ += s;
    }
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, d_.sizes.size(), name_);
    auto* out = static_cast<uint8_t*>(args.output);
    const int64_t orow = total_ * d_.inner;
    // Chunks of outer rows of about 16 KiB of output each.
    const int64_t per = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, orow));
    const int64_t chunks = (d_.outer + per - 1) / per;
    with_eltwise_isa(isa_, [&]<class Tag>() {
      parallel_for(pool, chunks, [&](int64_t cb, int64_t ce, int) {
        const int64_t o0 = cb * per, o1 = std::min(d_.outer, ce * per);
        for (size_t i = 0; i < d_.sizes.size(); ++i) {
          const auto* in = static_cast<const uint8_t*>(args.inputs[i]);
          const int64_t row = d_.sizes[i] * d_.inner, off = offsets_[i] * d_.inner;
          for (int64_t o = o0; o < o1; ++o) convert8<Tag>(p_[i], in + o * row, out + o * orow + off, row);
        }
      });
    });
  }

 private:
  std::string name_;
  Isa isa_;
  ConcatDesc d_;
  std::vector<Convert8Params> p_;
  std::vector<int64_t> offsets_;
  int64_t total_ = 0;
};

// ---- softmax ---------------------------------------------------------------------------------
bool softmax_supports(const SoftmaxDesc& d) {
  return int8_grid(d.in) && (d.out.bits == 32 || int8_grid(d.out) || d.out.bits == 16);
}

class SoftmaxKernel final : public Kernel {
 public:
  SoftmaxKernel(std::string name, Isa isa, const SoftmaxDesc& d) : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!softmax_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    check_cpu(isa_, name_);
    if (!d_.out.is_float()) clamp_ = output_clamp(d_.out, Activation::None);
  }
  std::string_view name() const override { return name_; }
  size_t scratch_bytes(int num_threads) const override {
    return static_cast<size_t>(std::max(1, num_threads)) * thread_bytes();
  }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    const int threads = pool ? std::max(1, pool->num_threads()) : 1;
    check_scratch(args, scratch_bytes(threads), name_);
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    const int64_t A = d_.axis_size, I = d_.inner;
    const bool direct = I == 1 && d_.out.is_float();
    parallel_for(pool, d_.outer * I, [&](int64_t b, int64_t e, int t) {
      uint8_t* base = static_cast<uint8_t*>(args.scratch) + static_cast<size_t>(t) * thread_bytes();
      auto* table = reinterpret_cast<double*>(base);
      auto* prob = reinterpret_cast<float*>(base + 256 * sizeof(double));
      uint8_t* col = base + 256 * sizeof(double) + round_up(static_cast<size_t>(A) * 4);
      for (int64_t r = b; r < e; ++r) {
        const int64_t o = r / I, ii = r % I;
        const int64_t first = o * A * I + ii;  // element (o, 0, ii)
        const uint8_t* row = in + first;
        if (I != 1) {
          for (int64_t a = 0; a < A; ++a) col[a] = in[first + a * I];
          row = col;
        }
        float* dst = direct ? static_cast<float*>(args.output) + first : prob;
        with_eltwise_isa(isa_, [&]<class Tag>() { softmax_row8<Tag>(row, d_.in.is_signed, d_.in.scale, A, dst, table); });
        if (!direct) store(prob, first, A, I, args.output);
      }
    });
  }

 private:
  static size_t round_up(size_t n) { return (n + 63) / 64 * 64; }
  size_t thread_bytes() const {
    return 256 * sizeof(double) + round_up(static_cast<size_t>(d_.axis_size) * 4) +
           round_up(static_cast<size_t>(d_.axis_size));
  }
  // Probabilities of one row to the output (strided by `inner`), quantized
  // when the output is an integer grid.
  void store(const float* prob, int64_t first, int64_t A, int64_t I, void* out) const {
    const int64_t lo = clamp_.lo, hi = clamp_.hi;
    const float s = d_.out.scale;
    for (int64_t a = 0; a < A; ++a) {
      const int64_t idx = first + a * I;
      if (d_.out.is_float()) {
        static_cast<float*>(out)[idx] = prob[a];
        continue;
      }
      const int64_t q = quantize_to_grid(prob[a], s, lo, hi);
      if (d_.out.bits == 16) {
        if (d_.out.is_signed) static_cast<int16_t*>(out)[idx] = static_cast<int16_t>(q);
        else static_cast<uint16_t*>(out)[idx] = static_cast<uint16_t>(q);
      } else {
        static_cast<uint8_t*>(out)[idx] = static_cast<uint8_t>(q);
      }
    }
  }

  std::string name_;
  Isa isa_;
  SoftmaxDesc d_;
  ClampRange clamp_{};
};

// Cost models (ns, one thread): measured on Zen 4 for AVX-512 and AVX2; NEON estimates.
struct EltRates {
  double add, requant;
};
EltRates elt_rates(Isa isa) {
  switch (isa) {
    case Isa::AVX512: return {0.08, 0.25};
    case Isa::AVX2: return {0.2, 0.4};
    default: return {0.3, 0.6};
  }
}

void add_eltwise(std::vector<KernelInfo>& t, Isa isa) {
  const EltRates er = elt_rates(isa);
  t.push_back(op_kernel<AddDesc, AddKernel>(
      std::string("add_a8_") + isa_tag(isa), OpKind::Add, isa, 8, add_supports,
      [er](const AddDesc& a) { return static_cast<double>(a.count) * er.add + 150.0; },
      "8-bit residual add: the real sum rounded once onto the output grid, activation fused"));
  t.push_back(op_kernel<ConcatDesc, ConcatKernel>(
      std::string("concat_a8_") + isa_tag(isa), OpKind::Concat, isa, 8,
      [](const ConcatDesc& c) { return concat_params(c, nullptr); },
      [er](const ConcatDesc& c) {
        double ns = 150.0;
        for (size_t i = 0; i < c.sizes.size(); ++i) {
          const double elems = static_cast<double>(c.outer * c.sizes[i] * c.inner);
          const bool same = c.in[i] == c.out;
          const double per = same ? 0.03 : (c.in[i].scale == c.out.scale ? 0.06 : er.requant);
          ns += elems * per + static_cast<double>(c.outer) * 6.0;
        }
        return ns;
      },
      "8-bit concat: copies, clamped copies or vector requantization per input"));
  t.push_back(op_kernel<SoftmaxDesc, SoftmaxKernel>(
      std::string("softmax_a8_") + isa_tag(isa), OpKind::Softmax, isa, 8, softmax_supports,
      [](const SoftmaxDesc& s) {
        const double rows = static_cast<double>(s.outer * s.inner), A = static_cast<double>(s.axis_size);
        // One exp per distinct value (<= 256) and a serial double sum; no better
        // than the reference on short rows (A < ~40).
        return rows * (std::min(A, 256.0) * 6.5 + A * 1.2 + 60.0) + 300.0;
      },
      "8-bit softmax: one exp per distinct input value, vector max; bit-identical"));
}

}  // namespace

void register_eltwise_kernels(std::vector<KernelInfo>& table) {
  for (Isa isa : {Isa::AVX512, Isa::AVX2, Isa::NEON})
    if (isa_built(isa)) add_eltwise(table, isa);
}

}  // namespace bbits::kernels::simd
