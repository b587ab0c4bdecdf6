// bbits SIMD kernels — depthwise conv, residual add, max / average / global
// average pool, concat and softmax on 8-bit data (drivers, validation, cost
// model, registration). Portable code: the ISA work is in ops_avx512.cpp /
// ops_avx2.cpp and ops2_avx512.cpp / ops2_avx2.cpp. Also registers the 16-bit
// conv / fc kernels (gemm16.cpp).
#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>

#include "bbits/kernels/thread_pool.h"
#include "simd_internal.h"

namespace bbits::kernels::simd {
namespace {

// Real multiplier m * 2^-s <= 2^22: requantized 8-bit values (and the sum of
// two) stay within int32.
bool small_requant(const Requant& r) {
  if (r.multiplier == 0) return true;
  return r.shift >= 31 || static_cast<int64_t>(r.multiplier) <= (int64_t{1} << (r.shift + 22));
}

// ---- depthwise conv ------------------------------------------------------------------
}  // namespace

namespace {

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
    if (!cpu_has(isa_)) throw std::invalid_argument(name_ + ": this CPU lacks " + std::string(isa_name(isa_)));
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
    parallel_for(pool, chunks, [&](int64_t cb, int64_t ce, int) {
      const int64_t i0 = cb * 4096, i1 = std::min(d_.count, ce * 4096);
      if (isa_ == Isa::AVX512) add_u8_avx512(p_, a + i0, b + i0, o + i0, i1 - i0);
      else add_u8_avx2(p_, a + i0, b + i0, o + i0, i1 - i0);
    });
  }

 private:
  std::string name_;
  Isa isa_;
  AddDesc d_;
  AddParams p_;
};

// ---- max pool ------------------------------------------------------------------------
bool maxpool_supports(const PoolDesc& d) {
  if (d.kind != PoolKind::Max || !int8_grid(d.in) || !int8_grid(d.out)) return false;
  if (d.pad_top >= d.KH || d.pad_bottom >= d.KH || d.pad_left >= d.KW || d.pad_right >= d.KW) return false;
  if (d.in.scale == d.out.scale) return true;
  return small_requant(make_requant(static_cast<double>(d.in.scale) / static_cast<double>(d.out.scale)));
}

class MaxPoolKernel final : public Kernel {
 public:
  MaxPoolKernel(std::string name, Isa isa, const PoolDesc& d) : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!maxpool_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    if (!cpu_has(isa_)) throw std::invalid_argument(name_ + ": this CPU lacks " + std::string(isa_name(isa_)));
    p_.N = d_.N;
    p_.H = d_.H;
    p_.W = d_.W;
    p_.C = d_.C;
    p_.OH = d_.out_h();
    p_.OW = d_.out_w();
    p_.KH = d_.KH;
    p_.KW = d_.KW;
    p_.sh = d_.stride_h;
    p_.sw = d_.stride_w;
    p_.pt = d_.pad_top;
    p_.pl = d_.pad_left;
    p_.in_signed = d_.in.is_signed;
    p_.out_signed = d_.out.is_signed;
    p_.identity = d_.in.scale == d_.out.scale;
    if (!p_.identity) {
      const Requant r = make_requant(static_cast<double>(d_.in.scale) / static_cast<double>(d_.out.scale));
      p_.m = r.multiplier;
      p_.shift = r.shift;
      p_.round = r.shift > 0 ? int64_t{1} << (r.shift - 1) : 0;
    }
    const ClampRange cr = output_clamp(d_.out, Activation::None);
    p_.lo = static_cast<int32_t>(cr.lo);
    p_.hi = static_cast<int32_t>(cr.hi);
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    auto* o = static_cast<uint8_t*>(args.output);
    parallel_for(pool, p_.N * p_.OH, [&](int64_t b, int64_t e, int) {
      if (isa_ == Isa::AVX512) maxpool_rows_avx512(p_, in, o, b, e);
      else maxpool_rows_avx2(p_, in, o, b, e);
    });
  }

 private:
  std::string name_;
  Isa isa_;
  PoolDesc d_;
  MaxPoolParams p_;
};

// ---- average / global average pool ------------------------------------------------------
// Window of a (global) average pool; nullopt-like false when the desc is not
// an 8-bit average pool this kernel runs exactly.
bool avgpool_params(const PoolDesc& d, AvgPoolParams* out) {
  if (d.kind != PoolKind::Avg && d.kind != PoolKind::GlobalAvg) return false;
  if (!int8_grid(d.in) || !(int8_grid(d.out) || d.out.bits == 32)) return false;
  AvgPoolParams p;
  p.N = d.N;
  p.H = d.H;
  p.W = d.W;
  p.C = d.C;
  p.OH = d.out_h();
  p.OW = d.out_w();
  if (d.kind == PoolKind::GlobalAvg) {
    if (d.H * d.W > (int64_t{1} << 23)) return false;  // int32 window sums
    p.KH = static_cast<int>(d.H);
    p.KW = static_cast<int>(d.W);
  } else {
    if (d.pad_top >= d.KH || d.pad_bottom >= d.KH || d.pad_left >= d.KW || d.pad_right >= d.KW) return false;
    if (int64_t{d.KH} * d.KW > (int64_t{1} << 23)) return false;
    p.KH = d.KH;
    p.KW = d.KW;
    p.sh = d.stride_h;
    p.sw = d.stride_w;
    p.pt = d.pad_top;
    p.pl = d.pad_left;
    p.count_include_pad = d.count_include_pad;
  }
  p.in_signed = d.in.is_signed;
  p.out_signed = d.out.is_signed;
  if (d.out.bits == 32) {  // the reference's float path, exact for windows <= 2^20 (simd_internal.h)
    if (int64_t{p.KH} * p.KW > (int64_t{1} << 20)) return false;
    p.out_float = true;
    p.in_scale = d.in.scale;
    if (out) *out = p;
    return true;
  }
  try {
    p.r = make_requant(static_cast<double>(d.in.scale) / static_cast<double>(d.out.scale));
  } catch (const std::invalid_argument&) {
    return false;  // the reference rejects it too
  }
  // Exactness of the double division (simd_internal.h): N < 2^53 for the
  // largest |sum| and count.
  const __int128 cmax = static_cast<__int128>(p.KH) * p.KW;
  const __int128 tmax = (d.in.is_signed ? 128 : 255) * cmax;
  const __int128 n_max = 2 * tmax * p.r.multiplier + (cmax << p.r.shift);
  if (n_max >= (static_cast<__int128>(1) << 53)) return false;
  const ClampRange cr = output_clamp(d.out, Activation::None);
  p.lo = static_cast<int32_t>(cr.lo);
  p.hi = static_cast<int32_t>(cr.hi);
  if (out) *out = p;
  return true;
}

class AvgPoolKernel final : public Kernel {
 public:
  AvgPoolKernel(std::string name, Isa isa, const PoolDesc& d) : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!avgpool_params(d_, &p_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    if (!cpu_has(isa_)) throw std::invalid_argument(name_ + ": this CPU lacks " + std::string(isa_name(isa_)));
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    auto* o = static_cast<uint8_t*>(args.output);
    parallel_for(pool, p_.N * p_.OH, [&](int64_t b, int64_t e, int) {
      if (p_.out_float) {
        auto* f = static_cast<float*>(args.output);
        if (isa_ == Isa::AVX512) avgpool_rows_f32_avx512(p_, in, f, b, e);
        else avgpool_rows_f32_avx2(p_, in, f, b, e);
      } else if (isa_ == Isa::AVX512) {
        avgpool_rows_avx512(p_, in, o, b, e);
      } else {
        avgpool_rows_avx2(p_, in, o, b, e);
      }
    });
  }

 private:
  std::string name_;
  Isa isa_;
  PoolDesc d_;
  AvgPoolParams p_;
};

// ---- concat ---------------------------------------------------------------------------------
bool concat_params(const ConcatDesc& d, std::vector<Convert8Params>* out) {
  if (!int8_grid(d.out) || d.in.size() != d.sizes.size()) return false;
  const ClampRange cr = output_clamp(d.out, Activation::None);
  for (const QuantInfo& q : d.in) {
    if (!int8_grid(q)) return false;
    Convert8Params p;
    p.in_signed = q.is_signed;
    p.out_signed = d.out.is_signed;
    p.identity = q.scale == d.out.scale;
    if (!p.identity) {
      Requant r;
      try {
        r = make_requant(static_cast<double>(q.scale) / static_cast<double>(d.out.scale));
      } catch (const std::invalid_argument&) {
        return false;  // the reference rejects it too
      }
      p.m = r.multiplier;
      p.shift = r.shift;
      p.round = r.shift > 0 ? int64_t{1} << (r.shift - 1) : 0;
    }
    p.lo = static_cast<int32_t>(cr.lo);
    p.hi = static_cast<int32_t>(cr.hi);
    if (out) out->push_back(p);
  }
  return true;
}

class ConcatKernel final : public Kernel {
 public:
  ConcatKernel(std::string name, Isa isa, const ConcatDesc& d) : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!concat_params(d_, &p_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    if (!cpu_has(isa_)) throw std::invalid_argument(name_ + ": this CPU lacks " + std::string(isa_name(isa_)));
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
    parallel_for(pool, chunks, [&](int64_t cb, int64_t ce, int) {
      const int64_t o0 = cb * per, o1 = std::min(d_.outer, ce * per);
      for (size_t i = 0; i < d_.sizes.size(); ++i) {
        const auto* in = static_cast<const uint8_t*>(args.inputs[i]);
        const int64_t row = d_.sizes[i] * d_.inner, off = offsets_[i] * d_.inner;
        for (int64_t o = o0; o < o1; ++o) {
          if (isa_ == Isa::AVX512) convert8_avx512(p_[i], in + o * row, out + o * orow + off, row);
          else convert8_avx2(p_[i], in + o * row, out + o * orow + off, row);
        }
      }
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
    if (!cpu_has(isa_)) throw std::invalid_argument(name_ + ": this CPU lacks " + std::string(isa_name(isa_)));
    if (!d_.out.is_float()) clamp_ = output_clamp(d_.out, Activation::None);
  }
  std::string_view name() const override { return name_; }
  size_t scratch_bytes(int num_threads) const override {
    return static_cast<size_t>(std::max(1, num_threads)) * thread_bytes();
  }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    const int threads = pool ? std::max(1, pool->num_threads()) : 1;
    if (args.scratch == nullptr || args.scratch_size < scratch_bytes(threads))
      throw std::invalid_argument(name_ + ": scratch of " + std::to_string(args.scratch_size) + " bytes, " +
                                  std::to_string(scratch_bytes(threads)) + " needed");
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
        if (isa_ == Isa::AVX512) softmax_row_u8_avx512(row, d_.in.is_signed, d_.in.scale, A, dst, table);
        else softmax_row_u8_avx2(row, d_.in.is_signed, d_.in.scale, A, dst, table);
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

void add_ops2(std::vector<KernelInfo>& t, Isa isa) {
  const bool z = isa == Isa::AVX512;
  for (PoolKind kind : {PoolKind::Avg, PoolKind::GlobalAvg}) {
    t.push_back(op_kernel<PoolDesc, AvgPoolKernel>(
        std::string(kind == PoolKind::Avg ? "avg_pool2d" : "global_avg_pool") + "_a8_" + isa_tag(isa),
        kind == PoolKind::Avg ? OpKind::AvgPool2D : OpKind::GlobalAvgPool, isa, 8,
        [kind](const PoolDesc& p) { return p.kind == kind && avgpool_params(p, nullptr); },
        [z](const PoolDesc& p) {
          const double win =
              p.kind == PoolKind::GlobalAvg ? static_cast<double>(p.H * p.W) : static_cast<double>(p.KH * p.KW);
          const double px = static_cast<double>(p.N * p.out_h() * p.out_w());
          const double taps = px * win * std::ceil(static_cast<double>(p.C) / (z ? 64.0 : 32.0));
          return taps * (z ? 0.6 : 0.8) + px * static_cast<double>(p.C) * (z ? 0.25 : 0.5) + 150.0;
        },
        std::string("8-bit average pool over ") + (z ? "64" : "32") +
            " channels: int16/int32 window sums, exact rounding division; float output as exact double sums"));
  }
  t.push_back(op_kernel<ConcatDesc, ConcatKernel>(
      std::string("concat_a8_") + isa_tag(isa), OpKind::Concat, isa, 8, [](const ConcatDesc& c) { return concat_params(c, nullptr); },
      [z](const ConcatDesc& c) {
        double ns = 150.0;
        for (size_t i = 0; i < c.sizes.size(); ++i) {
          const double elems = static_cast<double>(c.outer * c.sizes[i] * c.inner);
          const bool same = c.in[i] == c.out;
          const double per = same ? 0.03 : (c.in[i].scale == c.out.scale ? 0.06 : (z ? 0.25 : 0.4));
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
      "8-bit softmax: one exp per distinct input value, vector max and division; bit-identical"));
}

void add_eltwise(std::vector<KernelInfo>& t, Isa isa) {
  const bool z = isa == Isa::AVX512;
  t.push_back(op_kernel<AddDesc, AddKernel>(
      std::string("add_a8_") + isa_tag(isa), OpKind::Add, isa, 8, add_supports,
      [z](const AddDesc& a) { return static_cast<double>(a.count) * (z ? 0.08 : 0.2) + 150.0; },
      "8-bit residual add: the real sum rounded once onto the output grid, activation fused"));
  t.push_back(op_kernel<PoolDesc, MaxPoolKernel>(
      std::string("max_pool2d_a8_") + isa_tag(isa), OpKind::MaxPool2D, isa, 8, maxpool_supports,
      [z](const PoolDesc& p) {
        const double px = static_cast<double>(p.N * p.out_h() * p.out_w());
        const double taps = px * static_cast<double>(p.KH * p.KW) * std::ceil(static_cast<double>(p.C) / (z ? 64.0 : 32.0));
        return taps * 0.6 + px * static_cast<double>(p.C) * 0.05 + 150.0;
      },
      "8-bit max pool over channels (64 per vector), requantized when the grids differ"));
}

}  // namespace

void register_extra_kernels(std::vector<KernelInfo>& table) {
  add_eltwise(table, Isa::AVX512);
  add_eltwise(table, Isa::AVX2);
  add_ops2(table, Isa::AVX512);
  add_ops2(table, Isa::AVX2);
}

}  // namespace bbits::kernels::simd
