// bbits kernels — the depthwise family, portable part: weight prepacking, the
// driver, cost model and table entries (scheme in dw8.h, ISA code in
// dw8_isa.cpp).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "bbits/kernels/thread_pool.h"
#include "dw8.h"
#include "gemm8/gemm8.h"

namespace bbits::kernels::simd {
namespace {

constexpr Isa kIsas[] = {Isa::AVX512_VNNI, Isa::AVX2, Isa::NEON_DOTPROD, Isa::NEON};

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
    check_cpu(isa_, name_);
    const int64_t C = d_.C, T = d_.KH * d_.KW;
    const size_t row = packed_row_bytes(T, d_.wbits);
    set_dw_shape(g_, d_, w, name_);
    // The stored activation bytes, as in the 8-bit GEMM family.
    const Gemm8Traits tr = gemm8_traits(isa_);
    const bool flip = tr.signed_bytes ? (!d_.in.is_signed && d_.in.bits == 8) : d_.in.is_signed;
    g_.flip = flip ? 0x80 : 0x00;
    const int a_offset = !flip ? 0 : (tr.signed_bytes ? -128 : 128);
    const int64_t VB = 4 * vec_layout(isa_).lanes;  // channels per block
    P_.block = VB;
    P_.taps = T;
    P_.tgroups = (T + 3) / 4;
    P_.cblocks = (C + VB - 1) / VB;
    auto wv = [&](int64_t c, int64_t t) { return unpack_value(w.data + static_cast<size_t>(c) * row, t, d_.wbits); };
    P_.w8 = make_aligned<int8_t>(static_cast<size_t>(P_.cblocks * P_.tgroups * 4 * VB));
    for (int64_t cb = 0; cb < P_.cblocks; ++cb)
      for (int64_t tg = 0; tg < P_.tgroups; ++tg)
        for (int j = 0; j < 4; ++j)
          for (int64_t lane = 0; lane < VB / 4; ++lane) {
            const int64_t c = cb * VB + 16 * (lane / 4) + 4 * j + lane % 4;
            for (int tp = 0; tp < 4; ++tp) {
              const int64_t t = tg * 4 + tp;
              const int32_t v = (c < C && t < T) ? wv(c, t) : 0;
              P_.w8[static_cast<size_t>(((cb * P_.tgroups + tg) * 4 + j) * VB + lane * 4 + tp)] = static_cast<int8_t>(v);
            }
          }
    const int64_t OCp = P_.cblocks * VB;
    std::vector<int32_t> wsum(static_cast<size_t>(OCp), 0);
    for (int64_t c = 0; c < C; ++c) {
      int32_t s = 0;
      for (int64_t t = 0; t < T; ++t) s += wv(c, t);
      wsum[static_cast<size_t>(c)] = s;
    }
    E_ = make_epilogue(C, OCp, T, d_.wbits, w, d_.in, d_.out, d_.activation, wsum, a_offset, vec_layout(isa_),
                       name_);
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    with_isa<Isa::AVX512_VNNI, Isa::AVX2, Isa::NEON_DOTPROD, Isa::NEON>(isa_, [&]<class Tag>() {
      parallel_for(pool, g_.N * g_.OH,
                   [&](int64_t b, int64_t e, int) { dwconv8_rows<Tag>(g_, P_, E_, in, args.output, b, e); });
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

// ns per (output pixel, block of channels) at 3x3 (calibratable). AVX-512
// VNNI (64 channels): measured on MobileNetV2's depthwise layers (Zen 4, one
// thread); AVX2 (32 channels): 18 to 23 measured on the same layers
// (bbits-bench-kernels under BBITS_MAX_ISA=avx2; the int32-multiply kernel it
// replaced ran them 4 to 6x slower); NEON (16 channels): estimates (not
// measured here).
double default_dw_rate(Isa isa) {
  switch (isa) {
    case Isa::AVX512_VNNI: return 35.0;
    case Isa::AVX2: return 20.0;
    case Isa::NEON_DOTPROD: return 25.0;
    default: return 60.0;
  }
}

void add_dw(std::vector<KernelInfo>& t, Isa isa) {
  const int block = 4 * vec_layout(isa).lanes;
  KernelInfo k;
  k.name = std::string("dwconv2d_w8a8_u8s8_") + isa_tag(isa) + "_c" + std::to_string(block);
  k.op = OpKind::Conv2D;
  k.weight_bits = 8;
  k.act_bits = 8;
  k.isa = isa;
  set_default_rate(k.name, default_dw_rate(isa));
  k.supports = [isa](const OpDesc& d) {
    const auto* c = std::get_if<ConvDesc>(&d);
    return cpu_has(isa) && c && dw_supports(*c);
  };
  k.cost_ns = [name = k.name, block](const OpDesc& d) {
    const auto& c = std::get<ConvDesc>(d);
    const double px = static_cast<double>(c.N * c.out_h() * c.out_w());
    const double blocks = std::ceil(static_cast<double>(c.C) / block);
    const double taps = static_cast<double>(c.KH * c.KW) / 9.0;
    const double per_block = kernel_rate(name);  // ns per pixel-block at 3x3 (calibratable)
    return px * (blocks * per_block * taps + 35.0) + 500.0;
  };
  k.create = [name = k.name, isa](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
    const auto* c = std::get_if<ConvDesc>(&d);
    if (!c) throw std::invalid_argument(name + ": not a conv2d: " + describe(d));
    return std::make_unique<DwConv>(name, isa, *c, w);
  };
  const std::string dot = isa == Isa::AVX512_VNNI ? "vpdpbusd"
                          : isa == Isa::AVX2      ? "vpmaddubsw pairs"
                          : isa == Isa::NEON_DOTPROD ? "sdot"
                                                     : "smull + sadalp";
  k.note = "depthwise: 4 taps x " + std::to_string(block) + " channels per " + dot + " step; 2/4-bit weights widened";
  t.push_back(std::move(k));
}

}  // namespace

void register_dw8_kernels(std::vector<KernelInfo>& table) {
  for (Isa isa : kIsas)
    if (isa_built(isa)) add_dw(table, isa);
}

}  // namespace bbits::kernels::simd
