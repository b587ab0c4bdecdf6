// bbits kernels — the pooling family, portable part: validation, parameters,
// cost models and table entries (semantics in pool.h, ISA code in
// pool_isa.cpp).
#include <cmath>
#include <stdexcept>
#include <string>

#include "bbits/kernels/thread_pool.h"
#include "pool.h"

namespace bbits::kernels::simd {
namespace {

template <class F>
void with_pool_isa(Isa isa, F&& f) {
  with_isa<Isa::AVX512, Isa::AVX2, Isa::NEON>(isa, f);
}

void set_geom(PoolGeom& p, const PoolDesc& d) {
  p.N = d.N;
  p.H = d.H;
  p.W = d.W;
  p.C = d.C;
  p.OH = d.out_h();
  p.OW = d.out_w();
  p.KH = d.KH;
  p.KW = d.KW;
  p.sh = d.stride_h;
  p.sw = d.stride_w;
  p.pt = d.pad_top;
  p.pl = d.pad_left;
  p.in_signed = d.in.is_signed;
  p.out_signed = d.out.is_signed;
  if (!d.out.is_float()) {
    const ClampRange cr = output_clamp(d.out, Activation::None);
    p.lo = static_cast<int32_t>(cr.lo);
    p.hi = static_cast<int32_t>(cr.hi);
  }
}

// Real multiplier m * 2^-s <= 2^22 (the grids of a max pool may differ only that much).
bool small_requant(const Requant& r) {
  return r.shift >= 31 || static_cast<int64_t>(r.multiplier) <= (int64_t{1} << (r.shift + 22));
}

// ---- max pool ------------------------------------------------------------------------
bool maxpool_supports(const PoolDesc& d) {
  if (d.kind != PoolKind::Max || !int8_grid(d.in) || !int8_grid(d.out)) return false;
  if (d.pad_top >= d.KH || d.pad_bottom >= d.KH || d.pad_left >= d.KW || d.pad_right >= d.KW) return false;
  if (d.in.scale == d.out.scale) return true;
  try {
    return small_requant(make_requant(static_cast<double>(d.in.scale) / static_cast<double>(d.out.scale)));
  } catch (const std::invalid_argument&) {
    return false;
  }
}

class MaxPoolKernel final : public Kernel {
 public:
  MaxPoolKernel(std::string name, Isa isa, const PoolDesc& d) : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!maxpool_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    check_cpu(isa_, name_);
    set_geom(p_, d_);
    p_.identity = d_.in.scale == d_.out.scale;
    const Requant r = p_.identity ? make_requant(1.0)
                                  : make_requant(static_cast<double>(d_.in.scale) / static_cast<double>(d_.out.scale));
    p_.rq = single_requant(r, p_.lo, p_.hi, vec_layout(isa_));
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    auto* o = static_cast<uint8_t*>(args.output);
    with_pool_isa(isa_, [&]<class Tag>() {
      parallel_for(pool, p_.N * p_.OH, [&](int64_t b, int64_t e, int) { maxpool_rows<Tag>(p_, in, o, b, e); });
    });
  }

 private:
  std::string name_;
  Isa isa_;
  PoolDesc d_;
  MaxPoolParams p_;
};

// ---- average / global average pool ------------------------------------------------------
// The parameters of an 8-bit average pool this kernel runs exactly; false for
// any other desc.
bool avgpool_params(const PoolDesc& d, AvgPoolParams* out) {
  if (d.kind != PoolKind::Avg && d.kind != PoolKind::GlobalAvg) return false;
  if (!int8_grid(d.in) || !(int8_grid(d.out) || d.out.bits == 32)) return false;
  AvgPoolParams p;
  set_geom(p, d);
  if (d.kind == PoolKind::GlobalAvg) {
    if (d.H * d.W > (int64_t{1} << 23)) return false;  // int32 window sums
    p.KH = static_cast<int>(d.H);
    p.KW = static_cast<int>(d.W);
    p.sh = p.sw = 1;
    p.pt = p.pl = 0;
  } else {
    if (d.pad_top >= d.KH || d.pad_bottom >= d.KH || d.pad_left >= d.KW || d.pad_right >= d.KW) return false;
    if (int64_t{d.KH} * d.KW > (int64_t{1} << 23)) return false;
    p.count_include_pad = d.count_include_pad;
  }
  if (d.out.bits == 32) {  // the reference's float path, exact for windows <= 2^20 (pool.h)
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
  // Exactness of the double division (pool.h): N < 2^53 for the largest |sum| and count.
  const __int128 cmax = static_cast<__int128>(p.KH) * p.KW;
  const __int128 tmax = (d.in.is_signed ? 128 : 255) * cmax;
  const __int128 n_max = 2 * tmax * p.r.multiplier + (cmax << p.r.shift);
  if (n_max >= (static_cast<__int128>(1) << 53)) return false;
  if (out) *out = p;
  return true;
}

class AvgPoolKernel final : public Kernel {
 public:
  AvgPoolKernel(std::string name, Isa isa, const PoolDesc& d) : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!avgpool_params(d_, &p_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    check_cpu(isa_, name_);
  }
  std::string_view name() const override { return name_; }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    with_pool_isa(isa_, [&]<class Tag>() {
      parallel_for(pool, p_.N * p_.OH, [&](int64_t b, int64_t e, int) {
        if (p_.out_float) avgpool_rows_f32<Tag>(p_, in, static_cast<float*>(args.output), b, e);
        else avgpool_rows<Tag>(p_, in, static_cast<uint8_t*>(args.output), b, e);
      });
    });
  }

 private:
  std::string name_;
  Isa isa_;
  PoolDesc d_;
  AvgPoolParams p_;
};

// Cost models: ns per window tap of a block of channels and per output,
// measured on Zen 4 (one thread) for AVX-512 and AVX2; NEON estimates.
struct PoolRates {
  double block, tap_max, tap_avg, out_avg;
};
PoolRates pool_rates(Isa isa) {
  switch (isa) {
    case Isa::AVX512: return {64.0, 0.6, 0.6, 0.25};
    case Isa::AVX2: return {32.0, 0.6, 0.8, 0.5};
    default: return {16.0, 1.0, 1.2, 1.0};
  }
}

void add_pool(std::vector<KernelInfo>& t, Isa isa) {
  const PoolRates pr = pool_rates(isa);
  t.push_back(op_kernel<PoolDesc, MaxPoolKernel>(
      std::string("max_pool2d_a8_") + isa_tag(isa), OpKind::MaxPool2D, isa, 8, maxpool_supports,
      [pr](const PoolDesc& p) {
        const double px = static_cast<double>(p.N * p.out_h() * p.out_w());
        const double taps = px * static_cast<double>(p.KH * p.KW) * std::ceil(static_cast<double>(p.C) / pr.block);
        return taps * pr.tap_max + px * static_cast<double>(p.C) * 0.05 + 150.0;
      },
      "8-bit max pool over channels (" + std::to_string(static_cast<int>(pr.block)) +
          " per vector), requantized when the grids differ"));
  for (PoolKind kind : {PoolKind::Avg, PoolKind::GlobalAvg}) {
    t.push_back(op_kernel<PoolDesc, AvgPoolKernel>(
        std::string(kind == PoolKind::Avg ? "avg_pool2d" : "global_avg_pool") + "_a8_" + isa_tag(isa),
        kind == PoolKind::Avg ? OpKind::AvgPool2D : OpKind::GlobalAvgPool, isa, 8,
        [kind](const PoolDesc& p) { return p.kind == kind && avgpool_params(p, nullptr); },
        [pr](const PoolDesc& p) {
          const double win =
              p.kind == PoolKind::GlobalAvg ? static_cast<double>(p.H * p.W) : static_cast<double>(p.KH * p.KW);
          const double px = static_cast<double>(p.N * p.out_h() * p.out_w());
          const double taps = px * win * std::ceil(static_cast<double>(p.C) / pr.block);
          return taps * pr.tap_avg + px * static_cast<double>(p.C) * pr.out_avg + 150.0;
        },
        "8-bit average pool over " + std::to_string(static_cast<int>(pr.block)) +
            " channels: int16/int32 window sums, exact rounding division; float output as exact double sums"));
  }
}

}  // namespace

void register_pool_kernels(std::vector<KernelInfo>& table) {
  for (Isa isa : {Isa::AVX512, Isa::AVX2, Isa::NEON})
    if (isa_built(isa)) add_pool(table, isa);
}

}  // namespace bbits::kernels::simd
