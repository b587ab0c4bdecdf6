// bbits — reusable helpers for kernel tests (GoogleTest).
//
//   TestLayer layer = make_layer(desc, seed);        // random inputs + weights
//   TestTensor out = run_kernel(info, layer, pool);  // 64-byte aligned, guard bytes checked
//   EXPECT_TRUE(matches_reference(info, desc, seed)); // exact against the reference kernel
//   EXPECT_TRUE(within_float_tolerance(layer, out));  // against a float computation
//   EXPECT_TRUE(matches_reference_float_layer(info, layer)); // float layers: within float rounding
//
// matches_reference() is what a SIMD kernel's tester calls for every shape of a
// sweep: integer outputs must agree bit for bit; float outputs within a small
// relative tolerance. make_layer() picks the output scale from the float
// result so that the output grid is well used (a few values clamp).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bbits/format/quant.h"
#include "bbits/kernels/cpu.h"
#include "bbits/kernels/kernels.h"
#include "bbits/kernels/thread_pool.h"

namespace bbits::kernels::testing {

inline constexpr size_t kGuardBytes = 64;
inline constexpr uint8_t kGuardByte = 0xA5;

// A 64-byte aligned activation buffer of `n` elements stored by QuantInfo rules,
// followed by guard bytes that a kernel must not touch.
class TestTensor {
 public:
  TestTensor() = default;
  TestTensor(const QuantInfo& q, int64_t n) : q_(q), n_(n) {
    bytes_ = static_cast<size_t>(n) * element_bytes(q.bits);
    const size_t alloc = (bytes_ + kGuardBytes + 63) / 64 * 64;
    mem_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, alloc)));
    if (!mem_) throw std::bad_alloc();
    std::memset(mem_.get(), 0, bytes_);
    std::memset(mem_.get() + bytes_, kGuardByte, alloc - bytes_);
    alloc_ = alloc;
  }
  const QuantInfo& quant() const { return q_; }
  int64_t size() const { return n_; }
  size_t bytes() const { return bytes_; }
  void* data() { return mem_.get(); }
  const void* data() const { return mem_.get(); }
  void fill(uint8_t b) { std::memset(mem_.get(), b, bytes_); }

  int64_t get_int(int64_t i) const { return load_int(data(), i, q_); }
  float get_float(int64_t i) const { return load_float(data(), i, q_); }  // dequantized
  void set_int(int64_t i, int64_t v) { store_int(data(), i, q_, v); }
  void set_float(int64_t i, float v) { store_float(data(), i, v); }

  bool guard_intact() const {
    for (size_t i = bytes_; i < alloc_; ++i)
      if (mem_.get()[i] != kGuardByte) return false;
    return true;
  }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  QuantInfo q_{};
  int64_t n_ = 0;
  size_t bytes_ = 0, alloc_ = 0;
  std::unique_ptr<uint8_t, Free> mem_;
};

// Weights of a conv / fc layer in file layout plus their unpacked values.
struct TestWeights {
  int bits = 8;
  int64_t rows = 0, k = 0;
  std::vector<uint8_t> packed;   // rows x packed_row_bytes(k, bits), 64-byte aligned copy below
  std::vector<int32_t> q;        // rows x k integer values (integer bits)
  std::vector<float> f;          // rows x k float values (32 bits)
  std::vector<float> scales;     // rows, or 1 (per tensor) (integer bits)
  std::vector<int32_t> bias_q;   // rows or empty
  std::vector<float> bias_f;     // rows or empty

  Weights view() const {
    Weights w;
    w.data = packed.empty() ? nullptr : packed.data();
    w.size = packed.size();
    w.scales = scales;
    w.bias_q = bias_q;
    w.bias_f = bias_f;
    return w;
  }
  // Dequantized weight (oc, kk).
  double value(int64_t oc, int64_t kk) const {
    if (bits == 0) return 0.0;
    const size_t i = static_cast<size_t>(oc * k + kk);
    if (bits == 32) return f[i];
    // One scale: per tensor.
    return static_cast<double>(static_cast<float>(q[i]) * scales[scales.size() == 1 ? 0 : static_cast<size_t>(oc)]);
  }
  // Bias as the kernels see it in real units. `quantized`: the layer runs on
  // integers with an integer output, so a float bias is first rounded to
  // int32 at step s_w * s_in (kernels.h).
  double bias(int64_t oc, double s_in, bool quantized = false) const {
    const auto i = static_cast<size_t>(oc);
    const double sw = scales.empty() ? 1.0 : scales[scales.size() == 1 ? 0 : i];
    if (!bias_f.empty() && quantized) return static_cast<double>(quantize_bias(bias_f[i], sw, s_in)) * sw * s_in;
    if (!bias_f.empty()) return bias_f[i];
    if (!bias_q.empty()) return static_cast<double>(bias_q[i]) * sw * s_in;
    return 0.0;
  }
};

// Pack integer weights (rows x k, on the signed grid of `bits`) as the file does.
inline std::vector<uint8_t> pack_rows(const std::vector<int32_t>& q, int64_t rows, int64_t k, int bits) {
  const size_t rb = packed_row_bytes(k, bits);
  std::vector<uint8_t> out(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) pack_row(q.data() + r * k, k, bits, out.data() + static_cast<size_t>(r) * rb);
  return out;
}

inline TestWeights random_weights(int bits, int64_t rows, int64_t k, bool float_bias, std::mt19937_64& rng,
                                  double in_scale) {
  TestWeights w;
  w.bits = bits;
  w.rows = rows;
  w.k = k;
  std::uniform_real_distribution<float> sd(0.5f, 1.5f);
  if (bits == 32) {
    std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt(static_cast<float>(k)));
    w.f.resize(static_cast<size_t>(rows * k));
    for (auto& v : w.f) v = nd(rng);
    w.packed.resize(w.f.size() * 4);
    std::memcpy(w.packed.data(), w.f.data(), w.packed.size());
  } else if (bits != 0) {
    const int64_t m = qmax(bits, true);
    std::uniform_int_distribution<int64_t> qd(-m, m);
    w.q.resize(static_cast<size_t>(rows * k));
    for (auto& v : w.q) v = static_cast<int32_t>(qd(rng));
    w.packed = pack_rows(w.q, rows, k, bits);
  }
  if (bits != 32) {
    w.scales.resize(static_cast<size_t>(rows));
    const float base = bits == 0 ? 0.01f : 1.0f / static_cast<float>(qmax(bits, true)) / std::sqrt(static_cast<float>(k));
    for (auto& s : w.scales) s = base * sd(rng);
  }
  // Biases around the typical size of one output.
  std::normal_distribution<double> bd(0.0, 0.3);
  for (int64_t r = 0; r < rows; ++r) {
    const double b = bd(rng);
    if (float_bias) {
      w.bias_f.push_back(static_cast<float>(b));
    } else {
      const double sw = bits == 32 ? 1.0 : w.scales[static_cast<size_t>(r)];
      w.bias_q.push_back(quantize_bias(b, sw, in_scale));
    }
  }
  return w;
}

// Random activation values: integers uniform over the grid; floats ~ N(0, 1)
// (non-negative when the grid the float replaces would be unsigned).
inline TestTensor random_tensor(const QuantInfo& q, int64_t n, std::mt19937_64& rng) {
  TestTensor t(q, n);
  if (q.is_float()) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int64_t i = 0; i < n; ++i) {
      const float v = nd(rng);
      t.set_float(i, q.is_signed ? v : std::fabs(v));
    }
  } else {
    std::uniform_int_distribution<int64_t> d(qmin(q.bits, q.is_signed), qmax(q.bits, q.is_signed));
    for (int64_t i = 0; i < n; ++i) t.set_int(i, d(rng));
  }
  return t;
}

// A random layer: the desc (output scale calibrated), its inputs and weights.
struct TestLayer {
  OpDesc desc;
  std::vector<TestTensor> inputs;
  TestWeights weights;
  bool has_weights = false;
};

// ---- float reference (real values after the activation, before output quantization)
inline double act_double(double v, Activation a) {
  if (a == Activation::None) return v;
  v = std::max(v, 0.0);
  if (a == Activation::Relu6) v = std::min(v, 6.0);
  return v;
}

// Calls term(weight_k, input_index) for every tap of conv output (n, oh, ow,
// oc) that falls inside the input (padding skipped): the window walk of the
// float references below.
template <class Term>
void conv_taps(const ConvDesc& d, int64_t n, int64_t oh, int64_t ow, int64_t oc, Term&& term) {
  const int64_t Cg = d.C / d.groups, g = oc / (d.OC / d.groups);
  for (int64_t kh = 0; kh < d.KH; ++kh)
    for (int64_t kw = 0; kw < d.KW; ++kw) {
      const int64_t ih = oh * d.stride_h - d.pad_top + kh * d.dilation_h;
      const int64_t iw = ow * d.stride_w - d.pad_left + kw * d.dilation_w;
      if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) continue;
      for (int64_t c = 0; c < Cg; ++c) term((kh * d.KW + kw) * Cg + c, ((n * d.H + ih) * d.W + iw) * d.C + g * Cg + c);
    }
}

inline std::vector<double> float_reference(const TestLayer& L) {
  const OpDesc& desc = L.desc;
  std::vector<double> out(static_cast<size_t>(output_elements(desc)));
  auto in = [&](int i, int64_t idx) { return static_cast<double>(L.inputs[static_cast<size_t>(i)].get_float(idx)); };
  if (const auto* fcp = std::get_if<FcDesc>(&desc)) {
    const FcDesc& d = *fcp;
    const double s_in = d.in.is_float() ? 1.0 : d.in.scale;
    const bool qbias = false;  // integer layers apply a float bias exactly (bias_fraction, docs/FORMAT.md)
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t oc = 0; oc < d.OC; ++oc) {
        double acc = L.weights.bias(oc, s_in, qbias);
        for (int64_t k = 0; k < d.K; ++k) acc += L.weights.value(oc, k) * in(0, n * d.K + k);
        out[static_cast<size_t>(n * d.OC + oc)] = act_double(acc, d.activation);
      }
  } else if (const auto* cp = std::get_if<ConvDesc>(&desc)) {
    const ConvDesc& d = *cp;
    const double s_in = d.in.is_float() ? 1.0 : d.in.scale;
    const bool qbias = false;  // integer layers apply a float bias exactly (bias_fraction, docs/FORMAT.md)
    const int64_t OH = d.out_h(), OW = d.out_w();
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow)
          for (int64_t oc = 0; oc < d.OC; ++oc) {
            double acc = L.weights.bias(oc, s_in, qbias);
            conv_taps(d, n, oh, ow, oc, [&](int64_t k, int64_t i) { acc += L.weights.value(oc, k) * in(0, i); });
            out[static_cast<size_t>(((n * OH + oh) * OW + ow) * d.OC + oc)] = act_double(acc, d.activation);
          }
  } else if (const auto* ap = std::get_if<ActivationDesc>(&desc)) {
    for (int64_t i = 0; i < ap->count; ++i) out[static_cast<size_t>(i)] = act_double(in(0, i), ap->act);
  } else if (const auto* pp = std::get_if<PoolDesc>(&desc)) {
    PoolDesc d = *pp;
    if (d.kind == PoolKind::GlobalAvg) {
      d.KH = static_cast<int>(d.H);
      d.KW = static_cast<int>(d.W);
      d.stride_h = d.stride_w = 1;
      d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 0;
      d.count_include_pad = false;
    }
    const int64_t OH = pp->out_h(), OW = pp->out_w();
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow)
          for (int64_t c = 0; c < d.C; ++c) {
            double mx = -std::numeric_limits<double>::infinity(), sum = 0.0;
            int64_t cnt = 0;
            for (int64_t kh = 0; kh < d.KH; ++kh)
              for (int64_t kw = 0; kw < d.KW; ++kw) {
                const int64_t ih = oh * d.stride_h - d.pad_top + kh, iw = ow * d.stride_w - d.pad_left + kw;
                if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) continue;
                const double v = in(0, ((n * d.H + ih) * d.W + iw) * d.C + c);
                mx = std::max(mx, v);
                sum += v;
                ++cnt;
              }
            if (d.count_include_pad) cnt = int64_t{d.KH} * d.KW;
            out[static_cast<size_t>(((n * OH + oh) * OW + ow) * d.C + c)] =
                d.kind == PoolKind::Max ? mx : sum / static_cast<double>(cnt);
          }
  } else if (const auto* adp = std::get_if<AddDesc>(&desc)) {
    for (int64_t i = 0; i < adp->count; ++i) out[static_cast<size_t>(i)] = act_double(in(0, i) + in(1, i), adp->activation);
  } else if (const auto* ccp = std::get_if<ConcatDesc>(&desc)) {
    int64_t total = 0;
    for (int64_t s : ccp->sizes) total += s;
    int64_t off = 0;
    for (size_t i = 0; i < ccp->sizes.size(); ++i) {
      const int64_t row = ccp->sizes[i] * ccp->inner;
      for (int64_t o = 0; o < ccp->outer; ++o)
        for (int64_t j = 0; j < row; ++j)
          out[static_cast<size_t>(o * total * ccp->inner + off * ccp->inner + j)] = in(static_cast<int>(i), o * row + j);
      off += ccp->sizes[i];
    }
  } else if (const auto* rp = std::get_if<ReshapeDesc>(&desc)) {
    const int64_t H = rp->H, W = rp->W, C = rp->C;
    for (int64_t n = 0; n < rp->N; ++n)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t src = ((n * H + h) * W + w) * C + c;
            const int64_t dst = rp->to_chw ? n * H * W * C + (c * H + h) * W + w : src;
            out[static_cast<size_t>(dst)] = in(0, src);
          }
  } else if (const auto* sp = std::get_if<SoftmaxDesc>(&desc)) {
    const int64_t A = sp->axis_size, I = sp->inner;
    for (int64_t o = 0; o < sp->outer; ++o)
      for (int64_t ii = 0; ii < I; ++ii) {
        double mx = -std::numeric_limits<double>::infinity(), sum = 0.0;
        for (int64_t a = 0; a < A; ++a) mx = std::max(mx, in(0, (o * A + a) * I + ii));
        for (int64_t a = 0; a < A; ++a) sum += std::exp(in(0, (o * A + a) * I + ii) - mx);
        for (int64_t a = 0; a < A; ++a)
          out[static_cast<size_t>((o * A + a) * I + ii)] = std::exp(in(0, (o * A + a) * I + ii) - mx) / sum;
      }
  }
  return out;
}

inline QuantInfo& output_quant_ref(OpDesc& desc) {
  return *std::visit([](auto& d) { return &d.out; }, desc);
}

// Random inputs and weights for `desc`; the output scale is then set from the
// float result so that its largest magnitude lands near the top of the output
// grid (ops that keep their grid — max pool, reshape, concat with one input —
// are left alone when `keep_out_scale`).
inline TestLayer make_layer(const OpDesc& desc_in, uint64_t seed, bool keep_out_scale = false,
                            bool float_bias = false) {
  std::mt19937_64 rng(seed);
  TestLayer L;
  L.desc = desc_in;
  for (int i = 0; i < num_inputs(L.desc); ++i)
    L.inputs.push_back(random_tensor(input_quant(L.desc, i), input_elements(L.desc, i), rng));
  const int wb = weight_bits(L.desc);
  if (wb >= 0) {
    int64_t rows = 0, k = 0;
    if (const auto* c = std::get_if<ConvDesc>(&L.desc)) rows = c->OC, k = c->K();
    if (const auto* f = std::get_if<FcDesc>(&L.desc)) rows = f->OC, k = f->K;
    const QuantInfo iq = input_quant(L.desc, 0);
    const bool float_layer = wb == 32 || iq.is_float();
    L.weights = random_weights(wb, rows, k, float_bias || float_layer, rng, iq.is_float() ? 1.0 : iq.scale);
    L.has_weights = true;
  }
  QuantInfo& oq = output_quant_ref(L.desc);
  if (!keep_out_scale && !oq.is_float()) {
    const auto ref = float_reference(L);
    double mx = 0.0;
    for (double v : ref) mx = std::max(mx, std::fabs(v));
    if (!(mx > 0.0)) mx = 1.0;
    oq.scale = static_cast<float>(mx / (0.9 * static_cast<double>(qmax(oq.bits, oq.is_signed))));
  }
  return L;
}

// Run an existing kernel on a layer into `out` (scratch allocated as asked;
// `done`: KernelArgs::done). Fails the current test (ADD_FAILURE) if the
// kernel writes past its output or scratch.
inline void run_kernel_into(const Kernel& kernel, const TestLayer& L, TestTensor& out, ThreadPool* pool = nullptr,
                            const DoneFn* done = nullptr) {
  const std::string name(kernel.name());
  const int threads = pool ? pool->num_threads() : 1;
  TestTensor scratch(QuantInfo{8, false, 1.0f}, static_cast<int64_t>(kernel.scratch_bytes(threads)));
  std::vector<const void*> ptrs;
  for (const auto& t : L.inputs) ptrs.push_back(t.data());
  KernelArgs args;
  args.inputs = ptrs;
  args.output = out.data();
  args.scratch = scratch.bytes() ? scratch.data() : nullptr;
  args.scratch_size = scratch.bytes();
  args.done = done;
  kernel.run(args, pool);
  if (!out.guard_intact()) ADD_FAILURE() << name << " wrote past the end of its output";
  if (!scratch.guard_intact()) ADD_FAILURE() << name << " wrote past the end of its scratch";
}

// The same into a new output tensor (filled with 0x5A first).
inline TestTensor run_kernel(const Kernel& kernel, const TestLayer& L, ThreadPool* pool = nullptr) {
  TestTensor out(output_quant(L.desc), output_elements(L.desc));
  out.fill(0x5A);
  run_kernel_into(kernel, L, out, pool);
  return out;
}

// Create a kernel from the table entry and run it as above.
inline TestTensor run_kernel(const KernelInfo& info, const TestLayer& L, ThreadPool* pool = nullptr) {
  const auto kernel = info.create(L.desc, L.has_weights ? L.weights.view() : Weights{});
  return run_kernel(*kernel, L, pool);
}

// Exact comparison: integers bit for bit, floats within rel_tol (relative to
// max(1, |expected|)).
inline ::testing::AssertionResult same_output(const TestTensor& got, const TestTensor& want, double rel_tol = 1e-5,
                                              int max_report = 5) {
  if (got.size() != want.size() || got.quant().bits != want.quant().bits)
    return ::testing::AssertionFailure() << "output shapes/types differ";
  int bad = 0;
  std::ostringstream msg;
  for (int64_t i = 0; i < got.size(); ++i) {
    bool ok;
    if (got.quant().is_float()) {
      const double g = got.get_float(i), w = want.get_float(i);
      ok = std::fabs(g - w) <= rel_tol * std::max(1.0, std::fabs(w));
      if (!ok && bad < max_report) msg << "\n  [" << i << "] got " << g << " want " << w;
    } else {
      ok = got.get_int(i) == want.get_int(i);
      if (!ok && bad < max_report) msg << "\n  [" << i << "] got " << got.get_int(i) << " want " << want.get_int(i);
    }
    if (!ok) ++bad;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " outputs differ:" << msg.str();
}

// Runs `info` and the reference kernel on the same random layer and compares.
// Use from SIMD testers: for (shape : sweep) EXPECT_TRUE(matches_reference(k, desc, seed));
inline ::testing::AssertionResult matches_reference(const KernelInfo& info, const OpDesc& desc, uint64_t seed,
                                                    ThreadPool* pool = nullptr, double float_rel_tol = 1e-4) {
  if (!info.supports(desc))
    return ::testing::AssertionFailure() << info.name << " does not support " << describe(desc);
  const TestLayer L = make_layer(desc, seed);
  const KernelInfo* ref = reference_kernel(L.desc);
  const TestTensor want = run_kernel(*ref, L);
  const TestTensor got = run_kernel(info, L, pool);
  auto r = same_output(got, want, float_rel_tol);
  if (!r) r << "\n  kernel " << info.name << " vs " << ref->name << " on " << describe(L.desc) << " seed " << seed;
  return r;
}

// ---- float layers (weights or input at 32 bits) ----------------------------------------
// A float layer's kernel may sum in another order (or precision) than the
// reference, so its outputs agree only up to float rounding. The scale of that
// rounding is, per output, the sum of the magnitudes of its terms:
//   mag[i] = sum_k |w[oc][k] * x[k]| + |bias[oc]|   (fc and conv; dequantized values)
inline std::vector<double> float_term_magnitude(const TestLayer& L) {
  std::vector<double> mag(static_cast<size_t>(output_elements(L.desc)), 0.0);
  auto in = [&](int64_t idx) { return std::fabs(static_cast<double>(L.inputs[0].get_float(idx))); };
  if (const auto* fcp = std::get_if<FcDesc>(&L.desc)) {
    const FcDesc& d = *fcp;
    const double s_in = d.in.is_float() ? 1.0 : d.in.scale;
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t oc = 0; oc < d.OC; ++oc) {
        double m = std::fabs(L.weights.bias(oc, s_in));
        for (int64_t k = 0; k < d.K; ++k) m += std::fabs(L.weights.value(oc, k)) * in(n * d.K + k);
        mag[static_cast<size_t>(n * d.OC + oc)] = m;
      }
  } else if (const auto* cp = std::get_if<ConvDesc>(&L.desc)) {
    const ConvDesc& d = *cp;
    const double s_in = d.in.is_float() ? 1.0 : d.in.scale;
    const int64_t OH = d.out_h(), OW = d.out_w();
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow)
          for (int64_t oc = 0; oc < d.OC; ++oc) {
            double m = std::fabs(L.weights.bias(oc, s_in));
            conv_taps(d, n, oh, ow, oc, [&](int64_t k, int64_t i) { m += std::fabs(L.weights.value(oc, k)) * in(i); });
            mag[static_cast<size_t>(((n * OH + oh) * OW + ow) * d.OC + oc)] = m;
          }
  }
  return mag;
}

// Compares a float layer's output `got` with the reference kernel's `want`:
// float outputs within tol[i] = rel_tol * mag[i] + abs_tol; integer outputs
// equal, or one grid step apart where the real result (float_reference, after
// the activation) lies within tol[i] of the rounding boundary between the two
// steps (a last-bit difference of the sum may round either way there).
// Only fc and conv layers (float_term_magnitude).
inline ::testing::AssertionResult same_float_layer_output(const TestLayer& L, const TestTensor& got,
                                                          const TestTensor& want, double rel_tol = 1e-5,
                                                          double abs_tol = 1e-12, int max_report = 5) {
  if (!std::holds_alternative<FcDesc>(L.desc) && !std::holds_alternative<ConvDesc>(L.desc))
    return ::testing::AssertionFailure() << "same_float_layer_output: not a conv / fc layer: " << describe(L.desc);
  if (got.size() != want.size() || got.quant().bits != want.quant().bits)
    return ::testing::AssertionFailure() << "output shapes/types differ";
  const auto mag = float_term_magnitude(L);
  const auto real = float_reference(L);
  const QuantInfo oq = output_quant(L.desc);
  int bad = 0, boundary = 0;
  std::ostringstream msg;
  for (int64_t i = 0; i < got.size(); ++i) {
    const auto u = static_cast<size_t>(i);
    const double tol = rel_tol * mag[u] + abs_tol;
    bool ok;
    if (oq.is_float()) {
      const double g = got.get_float(i), w = want.get_float(i);
      ok = std::fabs(g - w) <= tol;
      if (!ok && bad < max_report) msg << "\n  [" << i << "] got " << g << " want " << w << " (tol " << tol << ")";
    } else {
      const int64_t g = got.get_int(i), w = want.get_int(i);
      ok = g == w;
      if (!ok && (g - w == 1 || w - g == 1)) {
        const double edge = (static_cast<double>(std::min(g, w)) + 0.5) * static_cast<double>(oq.scale);
        ok = std::fabs(real[u] - edge) <= tol + 1e-6 * std::fabs(edge);  // + the float32 divide by the step
        if (ok) ++boundary;
      }
      if (!ok && bad < max_report)
        msg << "\n  [" << i << "] got " << g << " want " << w << " (real " << real[u] / oq.scale << " steps)";
    }
    if (!ok) ++bad;
  }
  if (bad == 0) return ::testing::AssertionSuccess() << boundary << " boundary roundings";
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " outputs differ:" << msg.str();
}

// Runs `info` and the reference kernel on the layer L and compares them with
// same_float_layer_output (for kernels of float layers: weights or input at
// 32 bits).
inline ::testing::AssertionResult matches_reference_float_layer(const KernelInfo& info, const TestLayer& L,
                                                                ThreadPool* pool = nullptr, double rel_tol = 1e-5) {
  if (!info.supports(L.desc))
    return ::testing::AssertionFailure() << info.name << " does not support " << describe(L.desc);
  const KernelInfo* ref = reference_kernel(L.desc);
  const TestTensor want = run_kernel(*ref, L);
  const TestTensor got = run_kernel(info, L, pool);
  auto r = same_float_layer_output(L, got, want, rel_tol);
  if (!r) r << "\n  kernel " << info.name << " vs " << ref->name << " on " << describe(L.desc);
  return r;
}

// Checks a kernel's output against the float reference: integer outputs within
// `steps` output steps of the float result clamped to the output range; float
// outputs within rel_tol.
inline ::testing::AssertionResult within_float_tolerance(const TestLayer& L, const TestTensor& got, double steps = 1.0,
                                                         double rel_tol = 1e-4) {
  const auto ref = float_reference(L);
  const QuantInfo oq = output_quant(L.desc);
  Activation act = Activation::None;
  if (const auto* c = std::get_if<ConvDesc>(&L.desc)) act = c->activation;
  if (const auto* f = std::get_if<FcDesc>(&L.desc)) act = f->activation;
  if (const auto* a = std::get_if<AddDesc>(&L.desc)) act = a->activation;
  if (const auto* a = std::get_if<ActivationDesc>(&L.desc)) act = a->act;
  int bad = 0;
  std::ostringstream msg;
  double worst = 0.0;
  for (int64_t i = 0; i < got.size(); ++i) {
    const double want = ref[static_cast<size_t>(i)];
    double err, tol;
    if (oq.is_float()) {
      err = std::fabs(got.get_float(i) - want);
      tol = rel_tol * std::max(1.0, std::fabs(want));
    } else {
      const ClampRange cr = output_clamp(oq, act);
      const double clamped = std::clamp(want, static_cast<double>(cr.lo) * oq.scale, static_cast<double>(cr.hi) * oq.scale);
      err = std::fabs(static_cast<double>(got.get_int(i)) * oq.scale - clamped);
      tol = steps * oq.scale * (1.0 + 1e-5) + 1e-6 * std::fabs(clamped);
    }
    worst = std::max(worst, err / tol);
    if (err > tol) {
      if (bad < 5) msg << "\n  [" << i << "] got " << (oq.is_float() ? got.get_float(i) : got.get_int(i) * oq.scale)
                       << " want " << want;
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " outputs outside tolerance (worst "
                                       << worst << " x tol) on " << describe(L.desc) << msg.str();
}

// ---- shape sweeps for kernel-family testers ---------------------------------------------
// Calls fn(desc) for a grid of conv shapes around `base` (stride, padding,
// dilation, channel tails, groups); `full` adds larger spatial sizes.
template <class F>
void sweep_conv_shapes(const ConvDesc& base, F&& fn, bool full = false) {
  const int64_t channels[] = {1, 3, 8, 17, 32};
  const int strides[] = {1, 2};
  const int kernels[] = {1, 3};
  for (int64_t c : channels)
    for (int64_t oc : {int64_t{1}, int64_t{5}, int64_t{16}, int64_t{33}})
      for (int s : strides)
        for (int k : kernels)
          for (int pad : {0, 1}) {
            if (pad >= k) continue;
            ConvDesc d = base;
            d.C = c;
            d.OC = oc;
            d.KH = d.KW = k;
            d.stride_h = d.stride_w = s;
            d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = pad;
            d.groups = 1;
            d.H = full ? 13 : 5;
            d.W = full ? 11 : 6;
            fn(d);
          }
  // depthwise and grouped
  for (int64_t c : {int64_t{1}, int64_t{8}, int64_t{19}}) {
    ConvDesc d = base;
    d.C = d.OC = c;
    d.groups = static_cast<int>(c);
    d.KH = d.KW = 3;
    d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
    d.H = 7;
    d.W = 5;
    for (int s : strides) {
      d.stride_h = d.stride_w = s;
      fn(d);
    }
  }
  ConvDesc g = base;
  g.C = 8;
  g.OC = 12;
  g.groups = 4;
  g.KH = 3;
  g.KW = 2;
  g.H = 6;
  g.W = 7;
  g.dilation_h = 2;
  g.pad_top = 2;
  g.pad_bottom = 1;
  g.pad_left = 0;
  g.pad_right = 1;
  fn(g);
}

// Calls fn(desc) for fc shapes with every tail of 16/32/64-wide blocks up to the given maxima.
template <class F>
void sweep_fc_shapes(const FcDesc& base, F&& fn, int64_t max_k = 130, int64_t max_oc = 40) {
  const int64_t ks[] = {1, 2, 3, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 127, 128, 129, 256, 1000};
  const int64_t ocs[] = {1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100};
  for (int64_t k : ks) {
    if (k > max_k) continue;
    for (int64_t oc : ocs) {
      if (oc > max_oc) continue;
      FcDesc d = base;
      d.K = k;
      d.OC = oc;
      fn(d);
    }
  }
}

// The ISA caps this machine can run: reference, then every level of its own
// ladder up to its best (x86-64: avx2, avx512, avx512_vnni, amx; AArch64:
// neon, neon_dotprod).
inline std::vector<Isa> isa_caps() {
  const Isa machine = max_supported_isa(cpu_features());
  std::vector<Isa> caps = {Isa::Reference};
  for (Isa i : {Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI, Isa::AMX, Isa::NEON, Isa::NEON_DOTPROD})
    if (isa_at_most(i, machine)) caps.push_back(i);
  return caps;
}

// The lowest SIMD level of this machine's ladder (avx2 or neon), or reference.
inline Isa first_simd_isa() {
  const std::vector<Isa> caps = isa_caps();
  return caps.size() > 1 ? caps[1] : Isa::Reference;
}

}  // namespace bbits::kernels::testing
