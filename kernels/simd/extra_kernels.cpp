// bbits SIMD kernels — depthwise conv, residual add and max pool on 8-bit data
// (drivers, validation, cost model, registration). Portable code: the ISA
// work is in ops_avx512.cpp / ops_avx2.cpp.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "bbits/kernels/thread_pool.h"
#include "simd_internal.h"
#include "simd_registry.h"

namespace bbits::kernels::simd {
namespace {

std::string isa_tag(Isa isa) { return isa == Isa::AVX512_VNNI ? "avx512vnni" : isa == Isa::AVX512 ? "avx512" : "avx2"; }

bool int8_grid(const QuantInfo& q) { return q.bits == 2 || q.bits == 4 || q.bits == 8; }

// Real multiplier m * 2^-s <= 2^22: requantized 8-bit values (and the sum of
// two) stay within int32.
bool small_requant(const Requant& r) {
  if (r.multiplier == 0) return true;
  return r.shift >= 31 || static_cast<int64_t>(r.multiplier) <= (int64_t{1} << (r.shift + 22));
}

void check_io(const KernelArgs& a, size_t n_inputs, const std::string& name) {
  if (a.inputs.size() != n_inputs)
    throw std::invalid_argument(name + ": expected " + std::to_string(n_inputs) + " input(s), got " +
                                std::to_string(a.inputs.size()));
  for (const void* p : a.inputs)
    if (p == nullptr) throw std::invalid_argument(name + ": null input");
  if (a.output == nullptr) throw std::invalid_argument(name + ": null output");
}

// ---- depthwise conv ------------------------------------------------------------------
bool dw_supports(const ConvDesc& c) {
  if (!c.is_depthwise()) return false;
  if (c.wbits != 2 && c.wbits != 4 && c.wbits != 8) return false;
  if (!int8_grid(c.in)) return false;
  if (!(int8_grid(c.out) || c.out.bits == 16 || c.out.bits == 32)) return false;
  return c.KH * c.KW <= 256;
}

class DwConv final : public Kernel {
 public:
  DwConv(std::string name, Isa isa, const ConvDesc& d, const Weights& w) : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!dw_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    if (!cpu_has(isa_)) throw std::invalid_argument(name_ + ": this CPU lacks " + std::string(isa_name(isa_)));
    const int64_t C = d_.C, T = d_.KH * d_.KW;
    const size_t row = packed_row_bytes(T, d_.wbits);
    if (w.data == nullptr || w.size < row * static_cast<size_t>(C))
      throw std::invalid_argument(name_ + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                  std::to_string(row * static_cast<size_t>(C)) + " needed");
    g_.N = d_.N;
    g_.H = d_.H;
    g_.W = d_.W;
    g_.C = C;
    g_.OH = d_.out_h();
    g_.OW = d_.out_w();
    g_.KH = static_cast<int>(d_.KH);
    g_.KW = static_cast<int>(d_.KW);
    g_.sh = d_.stride_h;
    g_.sw = d_.stride_w;
    g_.pt = d_.pad_top;
    g_.pl = d_.pad_left;
    g_.dh = d_.dilation_h;
    g_.dw = d_.dilation_w;
    g_.is_signed = d_.in.is_signed;
    P_.taps = T;
    P_.tgroups = (T + 3) / 4;
    auto wv = [&](int64_t c, int64_t t) { return unpack_value(w.data + static_cast<size_t>(c) * row, t, d_.wbits); };
    int64_t OCp;
    if (isa_ == Isa::AVX512_VNNI) {
      P_.cblocks = (C + 63) / 64;
      OCp = P_.cblocks * 64;
      P_.w8 = make_aligned<int8_t>(static_cast<size_t>(P_.cblocks * P_.tgroups * 256));
      for (int64_t cb = 0; cb < P_.cblocks; ++cb)
        for (int64_t tg = 0; tg < P_.tgroups; ++tg)
          for (int j = 0; j < 4; ++j)
            for (int lane = 0; lane < 16; ++lane) {
              const int64_t L = lane / 4, i = lane % 4;
              const int64_t c = cb * 64 + 16 * L + 4 * j + i;
              for (int tp = 0; tp < 4; ++tp) {
                const int64_t t = tg * 4 + tp;
                const int32_t v = (c < C && t < T) ? wv(c, t) : 0;
                P_.w8[static_cast<size_t>(((cb * P_.tgroups + tg) * 4 + j) * 64 + lane * 4 + tp)] =
                    static_cast<int8_t>(v);
              }
            }
    } else {
      P_.cblocks = (C + 7) / 8;
      OCp = P_.cblocks * 8;
      P_.w32 = make_aligned<int32_t>(static_cast<size_t>(P_.cblocks * T * 8));
      for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < T; ++t) P_.w32[static_cast<size_t>(((c / 8) * T + t) * 8 + c % 8)] = wv(c, t);
    }
    std::vector<int32_t> wsum(static_cast<size_t>(OCp), 0);
    for (int64_t c = 0; c < C; ++c) {
      int32_t s = 0;
      for (int64_t t = 0; t < T; ++t) s += wv(c, t);
      wsum[static_cast<size_t>(c)] = s;
    }
    E_ = make_epilogue(C, OCp, T, d_.wbits, w, d_.in, d_.out, d_.activation, wsum, name_);
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    parallel_for(pool, g_.N * g_.OH, [&](int64_t b, int64_t e, int) {
      if (isa_ == Isa::AVX512_VNNI) dwconv_rows_avx512vnni(g_, P_, E_, in, args.output, b, e);
      else dwconv_rows_avx2(g_, P_, E_, in, args.output, b, e);
    });
  }

 private:
  std::string name_;
  Isa isa_;
  ConvDesc d_;
  DwGeom g_;
  DwPacked P_;
  Epilogue E_;
};

// ---- add -----------------------------------------------------------------------------
bool add_supports(const AddDesc& d) {
  if (!int8_grid(d.a) || !int8_grid(d.b) || !int8_grid(d.out)) return false;
  const AddRequant r = add_requant(d.a, d.b, d.out);
  return small_requant(r.a) && small_requant(r.b);
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
    p_.ma = r.a.multiplier;
    p_.sa = r.a.shift;
    p_.ra = r.a.shift > 0 ? int64_t{1} << (r.a.shift - 1) : 0;
    p_.mb = r.b.multiplier;
    p_.sb = r.b.shift;
    p_.rb = r.b.shift > 0 ? int64_t{1} << (r.b.shift - 1) : 0;
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

void add_dw(std::vector<KernelInfo>& t, Isa isa) {
  KernelInfo k;
  k.name = "dwconv2d_w8a8_u8s8_" + isa_tag(isa) + (isa == Isa::AVX512_VNNI ? "_c64" : "_c8");
  k.op = OpKind::Conv2D;
  k.weight_bits = 8;
  k.act_bits = 8;
  k.isa = isa;
  // Cost: ns per (output pixel, 64-channel block) and per output pixel,
  // measured on MobileNetV2's depthwise layers (Zen 4, one thread).
  set_default_rate(k.name, isa == Isa::AVX512_VNNI ? 35.0 : 120.0);
  k.supports = [isa](const OpDesc& d) {
    const auto* c = std::get_if<ConvDesc>(&d);
    return cpu_has(isa) && c && dw_supports(*c);
  };
  k.cost_ns = [name = k.name, isa](const OpDesc& d) {
    const auto& c = std::get<ConvDesc>(d);
    const double px = static_cast<double>(c.N * c.out_h() * c.out_w());
    const double blocks = std::ceil(static_cast<double>(c.C) / (isa == Isa::AVX512_VNNI ? 64.0 : 8.0));
    const double taps = static_cast<double>(c.KH * c.KW) / 9.0;
    const double per_block = kernel_rate(name);  // ns per pixel-block at 3x3 (calibratable)
    return px * (blocks * per_block * taps + 35.0) + 500.0;
  };
  k.create = [name = k.name, isa](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
    const auto* c = std::get_if<ConvDesc>(&d);
    if (!c) throw std::invalid_argument(name + ": not a conv2d: " + describe(d));
    return std::make_unique<DwConv>(name, isa, *c, w);
  };
  k.note = isa == Isa::AVX512_VNNI ? "depthwise: 4 taps x 64 channels per vpdpbusd step; 2/4-bit weights widened"
                                   : "depthwise: AVX2 int32 multiply-add over 8 channels";
  t.push_back(std::move(k));
}

void add_eltwise(std::vector<KernelInfo>& t, Isa isa) {
  {
    KernelInfo k;
    k.name = "add_a8_" + isa_tag(isa);
    k.op = OpKind::Add;
    k.act_bits = 8;
    k.isa = isa;
    k.supports = [isa](const OpDesc& d) {
      const auto* a = std::get_if<AddDesc>(&d);
      return cpu_has(isa) && a && add_supports(*a);
    };
    k.cost_ns = [isa](const OpDesc& d) {
      return static_cast<double>(std::get<AddDesc>(d).count) * (isa == Isa::AVX512 ? 0.08 : 0.2) + 150.0;
    };
    k.create = [name = k.name, isa](const OpDesc& d, const Weights&) -> std::unique_ptr<Kernel> {
      const auto* a = std::get_if<AddDesc>(&d);
      if (!a) throw std::invalid_argument(name + ": not an add: " + describe(d));
      return std::make_unique<AddKernel>(name, isa, *a);
    };
    k.note = "8-bit residual add, both sides requantized, activation fused";
    t.push_back(std::move(k));
  }
  {
    KernelInfo k;
    k.name = "max_pool2d_a8_" + isa_tag(isa);
    k.op = OpKind::MaxPool2D;
    k.act_bits = 8;
    k.isa = isa;
    k.supports = [isa](const OpDesc& d) {
      const auto* p = std::get_if<PoolDesc>(&d);
      return cpu_has(isa) && p && maxpool_supports(*p);
    };
    k.cost_ns = [isa](const OpDesc& d) {
      const auto& p = std::get<PoolDesc>(d);
      const double taps = static_cast<double>(p.N * p.out_h() * p.out_w() * p.KH * p.KW) *
                          std::ceil(static_cast<double>(p.C) / (isa == Isa::AVX512 ? 64.0 : 32.0));
      return taps * 0.6 + static_cast<double>(p.N * p.out_h() * p.out_w() * p.C) * 0.05 + 150.0;
    };
    k.create = [name = k.name, isa](const OpDesc& d, const Weights&) -> std::unique_ptr<Kernel> {
      const auto* p = std::get_if<PoolDesc>(&d);
      if (!p) throw std::invalid_argument(name + ": not a pool: " + describe(d));
      return std::make_unique<MaxPoolKernel>(name, isa, *p);
    };
    k.note = "8-bit max pool over channels (64 per vector), requantized when the grids differ";
    t.push_back(std::move(k));
  }
}

}  // namespace

void register_extra_kernels(std::vector<KernelInfo>& table) {
  add_dw(table, Isa::AVX512_VNNI);
  add_dw(table, Isa::AVX2);
  add_eltwise(table, Isa::AVX512);
  add_eltwise(table, Isa::AVX2);
  register_onednn_kernels(table);
}

}  // namespace bbits::kernels::simd
