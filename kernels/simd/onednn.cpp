// bbits SIMD kernels — layers run by oneDNN:
//   int8: u8/s8 activations x s8 weights -> s32 (exact with VNNI), then our
//         epilogue (bias, requantization, clamp). 2/4-bit weights are widened
//         to int8 at create time, so a sub-byte layer can always run as int8.
//   f32:  float32 conv / fc (weights or activations at 32 bits); integer sides
//         are dequantized exactly as the reference does, an integer output is
//         quantized with quantize_to_grid.
// oneDNN's int8 kernels are bit-exact only on VNNI (without it they scale the
// weights to avoid vpmaddubsw saturation), so the int8 entries need
// Isa::AVX512_VNNI. oneDNN threads with OpenMP: run() sets the OpenMP thread
// count of the calling thread to the pool's size.
#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "bbits/kernels/cpu.h"
#include "bbits/kernels/thread_pool.h"
#include "simd_internal.h"
#include "simd_registry.h"

extern "C" void omp_set_num_threads(int);

namespace bbits::kernels::simd {
namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

size_t round64(size_t n) { return (n + 63) / 64 * 64; }


bool is_fc(const ConvDesc& c) {
  return c.H == 1 && c.W == 1 && c.KH == 1 && c.KW == 1 && c.groups == 1 && c.pad_top == 0 && c.pad_left == 0 &&
         c.pad_bottom == 0 && c.pad_right == 0;
}

void set_threads(ThreadPool* pool) { omp_set_num_threads(pool ? std::max(1, pool->num_threads()) : 1); }

// Builds a conv (or inner product when fc) primitive with the given types.
struct Prim {
  dnnl::primitive prim;
  memory::desc src_md, wei_md, dst_md, bias_md;
  memory weights;  // reordered, owned
  memory bias;     // f32 bias (float path) or empty
  size_t scratchpad = 0;
  memory::desc scratch_md;
};

Prim build(const ConvDesc& d, bool fc, dt src_t, dt wei_t, dt dst_t, const void* wdata, const float* bias,
           const dnnl::primitive_attr& attr) {
  Prim p;
  auto& eng = engine();
  const memory::dim N = d.N, C = d.C, OC = d.OC, G = d.groups;
  if (fc) {
    p.src_md = memory::desc({N, C}, src_t, tag::nc);
    p.dst_md = memory::desc({N, OC}, dst_t, tag::nc);
    const memory::desc wany({OC, C}, wei_t, tag::any);
    const memory::desc wuser({OC, C}, wei_t, tag::oi);
    if (bias) p.bias_md = memory::desc({OC}, dt::f32, tag::x);
    const auto desc = bias ? dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, p.src_md, wany,
                                                                 p.bias_md, p.dst_md)
                           : dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, p.src_md, wany,
                                                                 p.dst_md);
    dnnl::primitive_attr a = attr;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::inner_product_forward::primitive_desc pd(desc, a, eng);
    p.prim = dnnl::inner_product_forward(pd);
    p.wei_md = pd.weights_desc();
    p.scratch_md = pd.scratchpad_desc();
    memory user(wuser, eng, const_cast<void*>(wdata));
    p.weights = memory(p.wei_md, eng);
    dnnl::stream s(eng);
    dnnl::reorder(user, p.weights).execute(s, user, p.weights);
    s.wait();
  } else {
    p.src_md = memory::desc({N, C, d.H, d.W}, src_t, tag::nhwc);
    p.dst_md = memory::desc({N, OC, d.out_h(), d.out_w()}, dst_t, tag::nhwc);
    memory::desc wany, wuser;
    if (G == 1) {
      wany = memory::desc({OC, C, d.KH, d.KW}, wei_t, tag::any);
      wuser = memory::desc({OC, C, d.KH, d.KW}, wei_t, tag::ohwi);
    } else {
      wany = memory::desc({G, OC / G, C / G, d.KH, d.KW}, wei_t, tag::any);
      wuser = memory::desc({G, OC / G, C / G, d.KH, d.KW}, wei_t, tag::gohwi);
    }
    if (bias) p.bias_md = memory::desc({OC}, dt::f32, tag::x);
    const memory::dims strides{d.stride_h, d.stride_w}, dil{d.dilation_h - 1, d.dilation_w - 1},
        pl{d.pad_top, d.pad_left}, pr{d.pad_bottom, d.pad_right};
    const auto desc =
        bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                               p.src_md, wany, p.bias_md, p.dst_md, strides, dil, pl, pr)
             : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                               p.src_md, wany, p.dst_md, strides, dil, pl, pr);
    dnnl::primitive_attr a = attr;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::convolution_forward::primitive_desc pd(desc, a, eng);
    p.prim = dnnl::convolution_forward(pd);
    p.wei_md = pd.weights_desc();
    p.scratch_md = pd.scratchpad_desc();
    memory user(wuser, eng, const_cast<void*>(wdata));
    p.weights = memory(p.wei_md, eng);
    dnnl::stream s(eng);
    dnnl::reorder(user, p.weights).execute(s, user, p.weights);
    s.wait();
  }
  if (bias) {
    p.bias = memory(p.bias_md, eng);
    std::memcpy(p.bias.get_data_handle(), bias, static_cast<size_t>(d.OC) * sizeof(float));
  }
  p.scratchpad = p.scratch_md.get_size();
  return p;
}

void execute(const Prim& p, const void* src, void* dst, void* scratch) {
  auto& eng = engine();
  dnnl::stream s(eng);
  memory src_m(p.src_md, eng, const_cast<void*>(src));
  memory dst_m(p.dst_md, eng, dst);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, p.weights}, {DNNL_ARG_DST, dst_m}};
  if (p.bias) args.insert({DNNL_ARG_BIAS, p.bias});
  if (p.scratchpad > 0) args.insert({DNNL_ARG_SCRATCHPAD, memory(p.scratch_md, eng, scratch)});
  p.prim.execute(s, args);
  s.wait();
}

// ---- int8 -----------------------------------------------------------------------
bool int8_supports(const ConvDesc& c) {
  if (c.wbits != 2 && c.wbits != 4 && c.wbits != 8) return false;
  if (!(c.in.bits == 2 || c.in.bits == 4 || c.in.bits == 8)) return false;
  if (!(c.out.bits == 2 || c.out.bits == 4 || c.out.bits == 8 || c.out.bits == 16 || c.out.bits == 32)) return false;
  const int64_t K = c.K();
  const double wmax = static_cast<double>(qmax(c.wbits, true));
  const double imax = static_cast<double>(std::max(-qmin(c.in.bits, c.in.is_signed), qmax(c.in.bits, c.in.is_signed)));
  return K > 0 && wmax * imax * static_cast<double>(K) < 2147483647.0;
}

class OnednnInt8 final : public Kernel {
 public:
  OnednnInt8(std::string name, const ConvDesc& d, const Weights& w) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    if (!int8_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    if (!cpu_has(Isa::AVX512_VNNI)) throw std::invalid_argument(name_ + ": this CPU lacks avx512_vnni");
    const int64_t K = d_.K();
    const size_t row = packed_row_bytes(K, d_.wbits);
    const size_t need = row * static_cast<size_t>(d_.OC);
    if (w.data == nullptr || w.size < need)
      throw std::invalid_argument(name_ + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                  std::to_string(need) + " needed");
    std::vector<int8_t> w8(static_cast<size_t>(d_.OC * K));
    for (int64_t oc = 0; oc < d_.OC; ++oc)
      for (int64_t k = 0; k < K; ++k)
        w8[static_cast<size_t>(oc * K + k)] = static_cast<int8_t>(unpack_value(w.data + oc * row, k, d_.wbits));
    M_ = d_.N * d_.out_h() * d_.out_w();
    const int64_t OCp = (d_.OC + 15) / 16 * 16;
    // oneDNN returns the exact sum (its own s8-source compensation), so no
    // -128 * wsum term: pass zero sums.
    E_ = make_epilogue(d_.OC, OCp, K, d_.wbits, w, d_.in, d_.out, d_.activation,
                       std::vector<int32_t>(static_cast<size_t>(OCp), 0), name_);
    p_ = build(d_, is_fc(d_), d_.in.is_signed ? dt::s8 : dt::u8, dt::s8, dt::s32, w8.data(), nullptr, {});
  }
  std::string_view name() const override { return name_; }
  size_t scratch_bytes(int) const override {
    return round64(static_cast<size_t>(M_ * d_.OC) * 4) + round64(p_.scratchpad) + 64;
  }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    if (args.inputs.size() != 1 || args.inputs[0] == nullptr || args.output == nullptr)
      throw std::invalid_argument(name_ + ": expected 1 input and an output");
    if (args.scratch == nullptr || args.scratch_size < scratch_bytes(1))
      throw std::invalid_argument(name_ + ": scratch too small (" + std::to_string(args.scratch_size) + " < " +
                                  std::to_string(scratch_bytes(1)) + ")");
    auto* acc = static_cast<int32_t*>(args.scratch);
    void* dscratch = static_cast<uint8_t*>(args.scratch) + round64(static_cast<size_t>(M_ * d_.OC) * 4);
    {
      std::lock_guard<std::mutex> lock(mu_);  // one execution at a time per primitive
      set_threads(pool);
      execute(p_, args.inputs[0], acc, dscratch);
    }
    epilogue_rows_avx512(acc, M_, E_, args.output, pool);
  }

 private:
  std::string name_;
  ConvDesc d_;
  int64_t M_ = 0;
  Epilogue E_;
  Prim p_;
  mutable std::mutex mu_;
};

// ---- float32 ----------------------------------------------------------------------
bool f32_supports(const ConvDesc& c) {
  if (!(c.wbits == 32 || c.in.bits == 32)) return false;
  if (c.wbits != 32 && c.wbits != 2 && c.wbits != 4 && c.wbits != 8 && c.wbits != 16) return false;
  return c.in.bits == 32 || c.in.bits <= 8 || c.in.bits == 16;
}

class OnednnF32 final : public Kernel {
 public:
  OnednnF32(std::string name, const ConvDesc& d, const Weights& w) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    if (!f32_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    const int64_t K = d_.K();
    const auto OC = static_cast<size_t>(d_.OC);
    const size_t row = packed_row_bytes(K, d_.wbits);
    if (w.data == nullptr || w.size < row * OC)
      throw std::invalid_argument(name_ + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                  std::to_string(row * OC) + " needed");
    std::vector<float> wf(OC * static_cast<size_t>(K));
    if (d_.wbits == 32) {
      std::memcpy(wf.data(), w.data, wf.size() * sizeof(float));
    } else {
      if (w.scales.size() != 1 && w.scales.size() != OC)
        throw std::invalid_argument(name_ + ": expected " + std::to_string(OC) + " weight scales (or 1)");
      for (size_t oc = 0; oc < OC; ++oc) {
        const float s = w.scales[w.scales.size() == 1 ? 0 : oc];
        if (!(std::isfinite(s) && s > 0.0f)) throw std::invalid_argument(name_ + ": bad weight scale");
        for (int64_t k = 0; k < K; ++k)
          wf[oc * static_cast<size_t>(K) + static_cast<size_t>(k)] =
              static_cast<float>(unpack_value(w.data + oc * row, k, d_.wbits)) * s;
      }
    }
    if (!w.bias_q.empty() && w.bias_q.size() != OC) throw std::invalid_argument(name_ + ": bias_q size");
    if (!w.bias_f.empty() && w.bias_f.size() != OC) throw std::invalid_argument(name_ + ": bias_f size");
    std::vector<float> bias(OC, 0.0f);
    const double s_in = d_.in.is_float() ? 1.0 : static_cast<double>(d_.in.scale);
    for (size_t oc = 0; oc < OC; ++oc) {
      const double sw = d_.wbits == 32 ? 1.0 : static_cast<double>(w.scales[w.scales.size() == 1 ? 0 : oc]);
      if (!w.bias_f.empty()) bias[oc] = w.bias_f[oc];
      else if (!w.bias_q.empty()) bias[oc] = static_cast<float>(static_cast<double>(w.bias_q[oc]) * sw * s_in);
    }
    dnnl::primitive_attr attr;
    if (d_.activation != Activation::None) {
      dnnl::post_ops po;
      if (d_.activation == Activation::Relu) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
      else po.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, 0.0f, 6.0f);
      attr.set_post_ops(po);
    }
    M_ = d_.N * d_.out_h() * d_.out_w();
    in_count_ = d_.N * d_.H * d_.W * d_.C;
    if (!d_.out.is_float()) clamp_ = output_clamp(d_.out, d_.activation);
    p_ = build(d_, is_fc(d_), dt::f32, dt::f32, dt::f32, wf.data(), bias.data(), attr);
  }
  std::string_view name() const override { return name_; }
  size_t scratch_bytes(int) const override {
    return in_bytes() + out_bytes() + round64(p_.scratchpad) + 64;
  }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    if (args.inputs.size() != 1 || args.inputs[0] == nullptr || args.output == nullptr)
      throw std::invalid_argument(name_ + ": expected 1 input and an output");
    if (args.scratch_size < scratch_bytes(1) || args.scratch == nullptr)
      throw std::invalid_argument(name_ + ": scratch too small");
    auto* s = static_cast<uint8_t*>(args.scratch);
    const void* src = args.inputs[0];
    if (!d_.in.is_float()) {
      auto* f = reinterpret_cast<float*>(s);
      for (int64_t i = 0; i < in_count_; ++i) f[i] = static_cast<float>(load_int(src, i, d_.in)) * d_.in.scale;
      src = f;
    }
    float* dst = d_.out.is_float() ? static_cast<float*>(args.output) : reinterpret_cast<float*>(s + in_bytes());
    {
      std::lock_guard<std::mutex> lock(mu_);
      set_threads(pool);
      execute(p_, src, dst, s + in_bytes() + out_bytes());
    }
    if (!d_.out.is_float()) {
      const int64_t n = M_ * d_.OC;
      for (int64_t i = 0; i < n; ++i)
        store_int(args.output, i, d_.out, quantize_to_grid(dst[i], d_.out.scale, clamp_.lo, clamp_.hi));
    }
  }

 private:
  size_t in_bytes() const { return d_.in.is_float() ? 0 : round64(static_cast<size_t>(in_count_) * 4); }
  size_t out_bytes() const { return d_.out.is_float() ? 0 : round64(static_cast<size_t>(M_ * d_.OC) * 4); }
  std::string name_;
  ConvDesc d_;
  int64_t M_ = 0, in_count_ = 0;
  ClampRange clamp_{};
  Prim p_;
  mutable std::mutex mu_;
};

// Rates: MACs per ns on one thread (Zen 4, avx512_core_vnni), measured with
// bench/kernels; the calibration may replace them.
double onednn_cost(const std::string& name, const ConvDesc& c, double wbytes_per_weight) {
  const double rate = std::max(1e-3, kernel_rate(name));
  const double m = static_cast<double>(c.N * c.out_h() * c.out_w());
  const double wbytes = static_cast<double>(c.OC * c.K()) * wbytes_per_weight;
  const double bw = wbytes <= 1.0e6 ? 85.0 : wbytes <= 24.0e6 ? 40.0 : 24.0;
  const double stream = wbytes * std::min(m, 1.0) / bw;
  // s32 result written, read back and requantized by our epilogue pass.
  const double epi = m * static_cast<double>(c.OC) * 0.3;
  // Measured (Zen 4, one thread): oneDNN's dense int8 conv gets faster with
  // the reduction length (~217 MACs/ns at K = 576, ~263 at K = 4608, ~140 at
  // K = 147); its int8 depthwise runs far below (~20 MACs/ns).
  const double kscale = 1.0 + 0.07 * std::log2(std::max(1.0, static_cast<double>(c.K())) / 576.0);
  const double r = c.is_depthwise() ? std::min(rate, 20.0) : std::clamp(rate * kscale, 0.65 * rate, 1.25 * rate);
  return std::max(static_cast<double>(c.macs()) / r, stream) + epi + 3000.0;
}

void add(std::vector<KernelInfo>& t, OpKind op, bool int8) {
  KernelInfo k;
  const char* opn = op == OpKind::Conv2D ? "conv2d" : "fc";
  k.name = std::string(opn) + (int8 ? "_w8a8_u8s8s32_onednn" : "_w32a32_f32_onednn");
  k.op = op;
  k.weight_bits = int8 ? 8 : 32;
  k.act_bits = int8 ? 8 : 32;
  k.isa = int8 ? Isa::AVX512_VNNI : Isa::AVX2;
  set_default_rate(k.name, int8 ? (op == OpKind::Conv2D ? 217.0 : 60.0) : 4.0);
  auto as_conv = [op](const OpDesc& d) -> std::optional<ConvDesc> {
    if (op == OpKind::Conv2D) {
      if (const auto* c = std::get_if<ConvDesc>(&d)) return *c;
      return std::nullopt;
    }
    if (const auto* f = std::get_if<FcDesc>(&d)) return fc_as_conv(*f);
    return std::nullopt;
  };
  k.supports = [as_conv, int8, isa = k.isa](const OpDesc& d) {
    if (!cpu_has(isa)) return false;
    const auto c = as_conv(d);
    if (!c) return false;
    return int8 ? int8_supports(*c) : f32_supports(*c);
  };
  k.cost_ns = [as_conv, int8, name = k.name](const OpDesc& d) {
    const auto c = as_conv(d);
    return onednn_cost(name, *c, int8 ? 1.0 : 4.0);
  };
  k.create = [as_conv, int8, name = k.name](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
    const auto c = as_conv(d);
    if (!c) throw std::invalid_argument(name + ": cannot run " + describe(d));
    check_desc(d);
    if (int8) return std::make_unique<OnednnInt8>(name, *c, w);
    return std::make_unique<OnednnF32>(name, *c, w);
  };
  k.note = int8 ? "oneDNN int8 (s32 out) + fused-epilogue pass; sub-byte weights widened to int8"
                : "oneDNN float32; integer sides dequantized";
  t.push_back(std::move(k));
}

}  // namespace

void register_onednn_kernels(std::vector<KernelInfo>& table) {
  for (OpKind op : {OpKind::Conv2D, OpKind::FullyConnected}) {
    add(table, op, true);
    add(table, op, false);
  }
}

}  // namespace bbits::kernels::simd
