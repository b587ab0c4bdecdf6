// bbits SIMD kernels — the shared portable parts (common.h): CPU check, rates,
// argument checks, requantization tables and the epilogue set-up.
#include "common.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "bbits/kernels/cpu.h"
#include "bbits/kernels/simd.h"

namespace bbits::kernels {
namespace simd {

bool cpu_has(Isa isa) { return isa_at_most(isa, max_supported_isa(cpu_features())); }

namespace {
struct Rates {
  std::mutex mu;
  std::map<std::string, double, std::less<>> defaults, calibrated;
};
Rates& rates() {
  static Rates r;
  return r;
}
}  // namespace

void set_default_rate(const std::string& name, double macs_per_ns) {
  Rates& r = rates();
  std::lock_guard<std::mutex> lock(r.mu);
  r.defaults[name] = macs_per_ns;
}

double kernel_rate(std::string_view name) {
  Rates& r = rates();
  std::lock_guard<std::mutex> lock(r.mu);
  if (auto it = r.calibrated.find(name); it != r.calibrated.end()) return it->second;
  if (auto it = r.defaults.find(name); it != r.defaults.end()) return it->second;
  return 0.0;
}

const char* isa_tag(Isa isa) {
  switch (isa) {
    case Isa::AVX2: return "avx2";
    case Isa::AVX512: return "avx512";
    case Isa::AVX512_VNNI: return "avx512vnni";
    case Isa::AMX: return "amx";
    case Isa::NEON: return "neon";
    case Isa::NEON_DOTPROD: return "neondot";
    case Isa::Reference: break;
  }
  return "ref";
}

void check_io(const KernelArgs& a, size_t n_inputs, const std::string& name) {
  if (a.inputs.size() != n_inputs)
    throw std::invalid_argument(name + ": expected " + std::to_string(n_inputs) + " input(s), got " +
                                std::to_string(a.inputs.size()));
  for (const void* p : a.inputs)
    if (p == nullptr) throw std::invalid_argument(name + ": null input");
  if (a.output == nullptr) throw std::invalid_argument(name + ": null output");
}

void check_scratch(const KernelArgs& a, size_t need, const std::string& name) {
  if ((a.scratch == nullptr && need > 0) || a.scratch_size < need)
    throw std::invalid_argument(name + ": scratch of " + std::to_string(a.scratch_size) + " bytes, " +
                                std::to_string(need) + " needed");
}

void check_cpu(Isa isa, const std::string& name) {
  if (!cpu_has(isa)) throw std::invalid_argument(name + ": this CPU lacks " + std::string(isa_name(isa)));
}

size_t out_elem_bytes(OutKind k) {
  switch (k) {
    case OutKind::U8:
    case OutKind::S8:
      return 1;
    case OutKind::U16:
    case OutKind::S16:
      return 2;
    case OutKind::F32:
      return 4;
  }
  return 1;
}

// ---- requantization tables ------------------------------------------------------
void pre_clamp_bounds(Requant r, int64_t extra, int64_t lo, int64_t hi, int32_t* a_lo, int32_t* a_hi) {
  constexpr __int128 kMin = INT32_MIN, kMax = INT32_MAX;
  const __int128 m = r.multiplier, d = static_cast<__int128>(1) << r.shift;
  if (m <= 0) throw std::logic_error("pre_clamp_bounds: no positive multiplier");
  const __int128 round = (r.shift > 0 ? d / 2 : 0) + extra;
  // f(a) >= hi  <=>  a * m + round >= hi * 2^s  <=>  a >= ceil((hi * 2^s - round) / m)
  const __int128 nh = static_cast<__int128>(hi) * d - round;
  __int128 ah = nh >= 0 ? (nh + m - 1) / m : -((-nh) / m);
  // f(a) <= lo  <=>  a * m + round <= (lo + 1) * 2^s - 1
  const __int128 nl = (static_cast<__int128>(lo) + 1) * d - round - 1;
  __int128 al = nl >= 0 ? nl / m : -((-nl + m - 1) / m);
  ah = std::clamp(ah, kMin, kMax);
  al = std::clamp(al, kMin, kMax);
  // Every clamped a requantizes into int32 (the vector routine keeps 32 bits).
  // This holds for every multiplier make_requant gives (< 2^31) and outputs
  // of up to 16 bits: with s >= 1 the values stay within hi + 2^30; with
  // s = 0, a_hi = ceil(hi / m) <= 1 and a_lo = floor(lo / m) >= -1 give at
  // most m and at least -m.
  for (const __int128 a : {al, ah}) {
    const int64_t f = apply_requant(static_cast<int64_t>(a), r, extra);
    if (f < kMin || f > kMax) throw std::logic_error("pre_clamp_bounds: a bound requantizes outside int32");
  }
  *a_lo = static_cast<int32_t>(al);
  *a_hi = static_cast<int32_t>(ah);
}

namespace {
// Fills t for channels [0, n) of the given parameters (padded entries stay 0).
void fill_table(RequantTable& t, int64_t n, VecLayout layout, const int64_t* m, const int64_t* round,
                const int64_t* shift) {
  t.layout = layout;
  t.n = round_up(std::max<int64_t>(n, 1), layout.lanes);
  const auto N = static_cast<size_t>(t.n);
  t.mult = make_aligned<int32_t>(N);
  t.round = make_aligned<int64_t>(N);
  t.shift = make_aligned<int64_t>(N);
  for (int64_t c = 0; c < n; ++c) {
    t.mult[c] = static_cast<int32_t>(m[c]);
    t.round[t.pair_pos(c)] = round[c];
    t.shift[t.pair_pos(c)] = shift[c];
  }
}
bool multiplier_above_one(int64_t m, int64_t s) { return s < 31 && m > (int64_t{1} << s); }
}  // namespace

RequantTable single_requant(Requant r, int64_t lo, int64_t hi, VecLayout layout) {
  RequantTable t;
  const int64_t L = layout.lanes;
  const std::vector<int64_t> m(static_cast<size_t>(L), r.multiplier), s(static_cast<size_t>(L), r.shift),
      rnd(static_cast<size_t>(L), r.shift > 0 ? int64_t{1} << (r.shift - 1) : 0);
  fill_table(t, L, layout, m.data(), rnd.data(), s.data());
  if (r.multiplier != 0 && multiplier_above_one(r.multiplier, r.shift)) {
    int32_t alo = 0, ahi = 0;
    pre_clamp_bounds(r, 0, lo, hi, &alo, &ahi);
    t.pre = true;
    t.pre_lo = make_aligned<int32_t>(static_cast<size_t>(L));
    t.pre_hi = make_aligned<int32_t>(static_cast<size_t>(L));
    std::fill_n(t.pre_lo.get(), L, alo);
    std::fill_n(t.pre_hi.get(), L, ahi);
  }
  return t;
}

std::vector<int> weight_upshifts(int64_t OC, int64_t K, int wbits, const Weights& w, const QuantInfo& in,
                                 const QuantInfo& out) {
  if ((wbits != 2 && wbits != 4) || out.is_float() || out.bits > 8 || in.is_float()) return {};
  const auto n = static_cast<size_t>(OC);
  if (w.scales.size() != 1 && w.scales.size() != n) return {};
  if ((!w.bias_q.empty() && w.bias_q.size() != n) || (!w.bias_f.empty() && w.bias_f.size() != n)) return {};
  const double s_in = static_cast<double>(in.scale);
  const double wmax = static_cast<double>(qmax(wbits, true) + 1);
  const double imax = static_cast<double>(std::max(-qmin(in.bits, in.is_signed), qmax(in.bits, in.is_signed)));
  std::vector<int> up(n, 0);
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    const double sw = static_cast<double>(w.scales.size() == 1 ? w.scales[0] : w.scales[i]);
    if (!(std::isfinite(sw) && sw > 0.0)) return {};
    Requant r;
    try {
      r = make_requant(sw * s_in / static_cast<double>(out.scale));
    } catch (const std::invalid_argument&) {
      return {};
    }
    if (r.multiplier == 0) continue;
    int64_t bias = 0;
    if (!w.bias_q.empty()) bias = w.bias_q[i];
    else if (!w.bias_f.empty()) bias = quantize_bias(w.bias_f[i], sw, s_in);
    int j = std::clamp(32 - static_cast<int>(r.shift), 0, 8 - wbits);
    // The widened sums and the bias, 2^j times larger, stay within int32.
    while (j > 0 && (wmax * imax * static_cast<double>(K) + std::fabs(static_cast<double>(bias))) *
                            static_cast<double>(int64_t{1} << j) >=
                        2147483647.0)
      --j;
    up[i] = j;
    any = any || j > 0;
  }
  if (!any) return {};
  return up;
}

Epilogue make_epilogue(int64_t OC, int64_t OCp, int64_t K, int wbits, const Weights& w, const QuantInfo& in,
                       const QuantInfo& out, Activation act, const std::vector<int32_t>& wsum, int a_offset,
                       VecLayout layout, const std::string& who, const std::vector<int>& upshift) {
  if (!upshift.empty() && (upshift.size() != static_cast<size_t>(OC) || out.is_float()))
    throw std::logic_error(who + ": upshift needs one entry per channel and an integer output");
  auto up = [&](int64_t oc) { return upshift.empty() ? 0 : upshift[static_cast<size_t>(oc)]; };
  Epilogue E;
  E.OC = OC;
  E.act = act;
  OCp = round_up(std::max(OCp, OC), layout.lanes);
  const auto n = static_cast<size_t>(OC);
  if (w.scales.size() != 1 && w.scales.size() != n)
    throw std::invalid_argument(who + ": expected " + std::to_string(OC) + " weight scales (or 1), got " +
                                std::to_string(w.scales.size()));
  for (float s : w.scales)
    if (!(std::isfinite(s) && s > 0.0f))
      throw std::invalid_argument(who + ": weight scale " + std::to_string(s) + " must be positive and finite");
  if (!w.bias_q.empty() && w.bias_q.size() != n)
    throw std::invalid_argument(who + ": expected " + std::to_string(OC) + " int32 biases, got " +
                                std::to_string(w.bias_q.size()));
  if (!w.bias_f.empty() && w.bias_f.size() != n)
    throw std::invalid_argument(who + ": expected " + std::to_string(OC) + " float biases, got " +
                                std::to_string(w.bias_f.size()));
  auto sw = [&](int64_t oc) {
    return static_cast<double>(w.scales.size() == 1 ? w.scales[0] : w.scales[static_cast<size_t>(oc)]);
  };
  const double s_in = static_cast<double>(in.scale);
  E.colterm = make_aligned<int32_t>(static_cast<size_t>(OCp));
  E.mult = make_aligned<int64_t>(static_cast<size_t>(OCp));
  E.round = make_aligned<int64_t>(static_cast<size_t>(OCp));
  E.shift = make_aligned<int64_t>(static_cast<size_t>(OCp));
  E.bias64.assign(n, 0);
  E.bfrac.assign(n, 0);
  if (out.bits == 32) {
    E.kind = OutKind::F32;
    E.mul.resize(n);
    E.bias_f.assign(n, 0.0f);
    for (int64_t oc = 0; oc < OC; ++oc) {
      const auto i = static_cast<size_t>(oc);
      E.mul[i] = sw(oc) * s_in;
      if (!w.bias_f.empty()) E.bias_f[i] = w.bias_f[i];
      else if (!w.bias_q.empty()) E.bias_f[i] = static_cast<float>(static_cast<double>(w.bias_q[i]) * sw(oc) * s_in);
    }
  } else {
    E.kind = out.bits <= 8 ? (out.is_signed ? OutKind::S8 : OutKind::U8)
                           : (out.is_signed ? OutKind::S16 : OutKind::U16);
    const ClampRange cr = output_clamp(out, act);
    E.lo = cr.lo;
    E.hi = cr.hi;
    int64_t max_bias = 0;
    for (int64_t oc = 0; oc < OC; ++oc) {
      const auto i = static_cast<size_t>(oc);
      if (!w.bias_q.empty()) E.bias64[i] = w.bias_q[i];
      else if (!w.bias_f.empty()) E.bias64[i] = quantize_bias(w.bias_f[i], sw(oc), s_in);
      max_bias = std::max<int64_t>(max_bias, E.bias64[i] < 0 ? -E.bias64[i] : E.bias64[i]);
      Requant r;
      try {
        r = make_requant(sw(oc) * s_in / static_cast<double>(out.scale));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(who + ": channel " + std::to_string(oc) + ": " + e.what());
      }
      // A float bias keeps its sub-step part (docs/FORMAT.md, bias_fraction).
      if (!w.bias_f.empty()) E.bfrac[i] = bias_fraction(w.bias_f[i], sw(oc), s_in, E.bias64[i], r);
      // Weights upshifted by j: sums, bias and fraction 2^j times larger,
      // shift j larger; apply_requant gives the same integers.
      const int j = up(oc);
      E.bias64[i] *= int64_t{1} << j;
      E.bfrac[i] *= int64_t{1} << j;
      E.mult[oc] = r.multiplier;
      E.shift[oc] = r.shift + j;
      E.round[oc] = (E.shift[oc] > 0 ? (int64_t{1} << (E.shift[oc] - 1)) : 0) + E.bfrac[i];
    }
    const double wmax = static_cast<double>(qmax(wbits, true) + 1);  // raw codes reach -2^(b-1)
    const double imax = static_cast<double>(std::max(-qmin(in.bits, in.is_signed), qmax(in.bits, in.is_signed)));
    int jmax = 0;
    for (int64_t oc = 0; oc < OC; ++oc) jmax = std::max(jmax, up(oc));
    max_bias = 0;
    for (int64_t b : E.bias64) max_bias = std::max<int64_t>(max_bias, b < 0 ? -b : b);
    E.wide = wmax * static_cast<double>(int64_t{1} << jmax) * imax * static_cast<double>(K) +
                 static_cast<double>(max_bias) >=
             2147483647.0;
    E.small_mult = true;
    for (int64_t oc = 0; oc < OC; ++oc)
      if (multiplier_above_one(E.mult[oc], E.shift[oc])) E.small_mult = false;
    fill_table(E.rq, OC, layout, E.mult.get(), E.round.get(), E.shift.get());
    if (!E.small_mult && !E.wide) {
      E.rq.pre = true;
      E.rq.pre_lo = make_aligned<int32_t>(static_cast<size_t>(E.rq.n));
      E.rq.pre_hi = make_aligned<int32_t>(static_cast<size_t>(E.rq.n));
    }
  }
  for (int64_t oc = 0; oc < OC; ++oc) {
    int64_t ct = -static_cast<int64_t>(a_offset) * wsum[static_cast<size_t>(oc)];
    if (E.kind != OutKind::F32 && !E.wide) ct += E.bias64[static_cast<size_t>(oc)];
    E.colterm[oc] = static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(ct)));  // wraps like int32
  }
  // Multipliers above 1: a = acc + colterm - rowcorr is clamped to the range
  // outside of which the output clamps anyway, so that the requantized value
  // stays within int32 (requant.h).
  if (E.rq.pre)
    for (int64_t oc = 0; oc < OC; ++oc) {
      const Requant r{static_cast<int32_t>(E.mult[oc]), static_cast<int32_t>(E.shift[oc])};
      pre_clamp_bounds(r, E.bfrac[static_cast<size_t>(oc)], E.lo, E.hi, &E.rq.pre_lo[oc], &E.rq.pre_hi[oc]);
    }
  return E;
}

void fold_colterm(Epilogue& E) {
  RequantTable& t = E.rq;
  if (!E.small_mult || E.wide || !(E.kind == OutKind::U8 || E.kind == OutKind::S8) || !t.layout.even_odd) return;
  for (int64_t oc = 0; oc < E.OC; ++oc)
    if (E.shift[oc] < 32) return;
  // Exact: without `wide`, acc + colterm stays in int32, so
  // (acc + colterm) * m + round = acc * m + (colterm * m + round) in 64 bits.
  t.cround = make_aligned<int64_t>(static_cast<size_t>(t.n));
  t.shift32 = make_aligned<int64_t>(static_cast<size_t>(t.n));
  const int64_t L = t.layout.lanes;
  for (int64_t oc = 0; oc < E.OC; ++oc) {
    const int64_t pos = t.pair_pos(oc);
    t.cround[pos] = static_cast<int64_t>(E.colterm[oc]) * E.mult[oc] + E.round[oc];
    t.shift32[pos] = (oc % L) % 2 == 1 ? E.shift[oc] - 32 : E.shift[oc];
  }
  t.folded = true;
}

void epilogue_value(const Epilogue& E, int64_t oc, int64_t a, int64_t bias, void* out_row) {
  const auto i = static_cast<size_t>(oc);
  if (E.kind == OutKind::F32) {
    float v = static_cast<float>(static_cast<double>(a) * E.mul[i] + static_cast<double>(E.bias_f[i]));
    if (E.act != Activation::None) {
      if (!(v > 0.0f)) v = 0.0f;
      if (E.act == Activation::Relu6 && v > 6.0f) v = 6.0f;
    }
    static_cast<float*>(out_row)[oc] = v;
    return;
  }
  const int64_t v = clamp_i64(
      apply_requant(a + bias, Requant{static_cast<int32_t>(E.mult[oc]), static_cast<int32_t>(E.shift[oc])}, E.bfrac[i]),
      E.lo, E.hi);
  if (E.kind == OutKind::U8 || E.kind == OutKind::S8) static_cast<uint8_t*>(out_row)[oc] = static_cast<uint8_t>(v);
  else static_cast<uint16_t*>(out_row)[oc] = static_cast<uint16_t>(v);
}

void epilogue_row_scalar(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                         void* out_row) {
  for (int64_t c = 0; c < n; ++c) {
    const int64_t oc = oc0 + c;
    const int32_t a = static_cast<int32_t>(static_cast<uint32_t>(acc[c]) + static_cast<uint32_t>(E.colterm[oc]) -
                                           static_cast<uint32_t>(rowcorr));
    epilogue_value(E, oc, a, E.wide && E.kind != OutKind::F32 ? E.bias64[static_cast<size_t>(oc)] : 0, out_row);
  }
}

void set_dw_shape(DwShape& g, const ConvDesc& d, const Weights& w, const std::string& kernel) {
  const int64_t C = d.C, T = d.KH * d.KW;
  const size_t row = packed_row_bytes(T, d.wbits);
  if (w.data == nullptr || w.size < row * static_cast<size_t>(C))
    throw std::invalid_argument(kernel + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                std::to_string(row * static_cast<size_t>(C)) + " needed");
  g.N = d.N;
  g.H = d.H;
  g.W = d.W;
  g.C = C;
  g.OH = d.out_h();
  g.OW = d.out_w();
  g.KH = static_cast<int>(d.KH);
  g.KW = static_cast<int>(d.KW);
  g.sh = static_cast<int>(d.stride_h);
  g.sw = static_cast<int>(d.stride_w);
  g.pt = static_cast<int>(d.pad_top);
  g.pl = static_cast<int>(d.pad_left);
  g.dh = static_cast<int>(d.dilation_h);
  g.dw = static_cast<int>(d.dilation_w);
}

}  // namespace simd

// ---- simd.h: calibration of the cost models ------------------------------------------
void set_simd_kernel_rate(std::string_view kernel_name, double macs_per_ns) {
  simd::Rates& r = simd::rates();
  std::lock_guard<std::mutex> lock(r.mu);
  if (macs_per_ns > 0.0 && std::isfinite(macs_per_ns)) r.calibrated[std::string(kernel_name)] = macs_per_ns;
  else r.calibrated.erase(std::string(kernel_name));
}

double simd_kernel_rate(std::string_view kernel_name) { return simd::kernel_rate(kernel_name); }

std::vector<std::string> simd_kernel_names() {
  simd::Rates& r = simd::rates();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> names;
  for (const auto& [k, v] : r.defaults) names.push_back(k);
  return names;
}

}  // namespace bbits::kernels
