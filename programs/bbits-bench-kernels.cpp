// bbits kernel microbenchmarks (Google Benchmark): batch 1, one thread.
//
//   fc/<OC>x<K>/<kernel>        our fully connected kernels at W8A8/W4A8/W2A8
//                               (weight GB/s reported) beside oneDNN int8
//                               (u8s8 -> u8, output scales + ReLU fused) and
//                               oneDNN f32 on the same shape;
//   conv/<model>/<layer>/<k>    the real conv / fc layers of LeNet-5 (28x28),
//                               ResNet-18 and MobileNetV2 (224x224), batch 1:
//                               our GEMM kernel at each weight width, the
//                               kernel the table chooses, and oneDNN int8;
//   bandwidth/<bytes>           single-thread read bandwidth at the fc working
//                               set sizes (the ceiling for weight streaming);
//   wide/..., ops/...           16-bit conv / fc and 8-bit avg pool, global avg
//                               pool, concat, softmax (see register_wide_and_ops);
//   fc_f32/<OC>x<K>/...         fc with packed 2/4/8-bit weights on float32 input
//                               beside oneDNN float32 (see register_fc_f32).
//
// Run: bbits-bench-kernels --benchmark_format=json --benchmark_out=k.json, then
// bench/kernels/ratios.py k.json prints the target ratios.
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "bbits/kernels/cpu.h"
#include "bbits/kernels/kernels.h"

extern "C" void omp_set_num_threads(int);

namespace bk = bbits::kernels;

namespace {

struct Buf {
  explicit Buf(size_t n) : size(n) {
    p = static_cast<uint8_t*>(std::aligned_alloc(64, (n + 127) / 64 * 64));
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, (n + 127) / 64 * 64);
  }
  ~Buf() { std::free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  uint8_t* p = nullptr;
  size_t size = 0;
};

void fill_random(uint8_t* p, size_t n, uint64_t seed, uint8_t mask = 0xff) {
  std::mt19937_64 rng(seed);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(p + i, &v, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
  if (mask != 0xff)
    for (size_t j = 0; j < n; ++j) p[j] &= mask;
}

// ---- our kernels through the table --------------------------------------------
struct Layer {
  std::string model, name;
  bk::ConvDesc conv;  // fc layers: 1x1 conv on a 1x1 image are expressed as FcDesc below
  bool fc = false;
  int64_t K = 0, OC = 0;
};

bk::OpDesc make_desc(const Layer& L, int wbits) {
  if (L.fc) {
    bk::FcDesc f;
    f.N = 1;
    f.K = L.K;
    f.OC = L.OC;
    f.wbits = wbits;
    f.in = {8, false, 0.02f};
    f.out = {8, false, 0.05f};
    f.activation = bk::Activation::Relu;
    return f;
  }
  bk::ConvDesc c = L.conv;
  c.wbits = wbits;
  c.in = {8, false, 0.02f};
  c.out = {8, false, 0.05f};
  c.activation = bk::Activation::Relu;
  return c;
}

struct Prepared {
  std::unique_ptr<bk::Kernel> kernel;
  std::unique_ptr<Buf> weights, in, out, scratch;
  std::vector<float> scales;
  std::vector<int32_t> bias;
  size_t weight_bytes = 0;
};

std::unique_ptr<Prepared> prepare(const bk::KernelInfo& info, const bk::OpDesc& d) {
  auto p = std::make_unique<Prepared>();
  int64_t rows = 0, k = 0;
  if (const auto* c = std::get_if<bk::ConvDesc>(&d)) rows = c->OC, k = c->K();
  if (const auto* f = std::get_if<bk::FcDesc>(&d)) rows = f->OC, k = f->K;
  const int wb = bk::weight_bits(d);
  p->weight_bytes = static_cast<size_t>(rows) * bbits::packed_row_bytes(k, wb);
  p->weights = std::make_unique<Buf>(p->weight_bytes);
  fill_random(p->weights->p, p->weight_bytes, 7);
  if (wb == 8)  // stay on the signed 8-bit grid (no -128)
    for (size_t i = 0; i < p->weight_bytes; ++i)
      if (p->weights->p[i] == 0x80) p->weights->p[i] = 0x81;
  p->scales.assign(static_cast<size_t>(rows), 0.0005f);
  p->bias.assign(static_cast<size_t>(rows), 100);
  bk::Weights w;
  w.data = p->weights->p;
  w.size = p->weight_bytes;
  w.scales = p->scales;
  w.bias_q = p->bias;
  p->kernel = info.create(d, w);
  p->in = std::make_unique<Buf>(static_cast<size_t>(bk::input_elements(d, 0)));
  fill_random(p->in->p, p->in->size, 11);
  if (const auto* f = std::get_if<bk::FcDesc>(&d); f && f->in.bits < 8)  // values on the input grid
    for (size_t i = 0; i < p->in->size; ++i) p->in->p[i] &= static_cast<uint8_t>((1u << f->in.bits) - 1u);
  p->out = std::make_unique<Buf>(static_cast<size_t>(bk::output_elements(d)) * 4);
  p->scratch = std::make_unique<Buf>(std::max<size_t>(64, p->kernel->scratch_bytes(1)));
  return p;
}

void run_ours(benchmark::State& st, const bk::KernelInfo* info, bk::OpDesc d) {
  std::unique_ptr<Prepared> p;
  try {
    p = prepare(*info, d);
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    return;
  }
  const void* ins[1] = {p->in->p};
  bk::KernelArgs a;
  a.inputs = ins;
  a.output = p->out->p;
  a.scratch = p->scratch->p;
  a.scratch_size = p->scratch->size;
  for (auto _ : st) {
    p->kernel->run(a, nullptr);
    benchmark::ClobberMemory();
  }
  const double macs = static_cast<double>(bk::op_work(d));
  st.counters["GMAC/s"] = benchmark::Counter(macs * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["wGB/s"] =
      benchmark::Counter(static_cast<double>(p->weight_bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(std::string(p->kernel->name()));
}

// ---- oneDNN baselines -------------------------------------------------------------
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct OnednnLayer {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::primitive prim;
  std::unordered_map<int, memory> args;
};

// int8: u8 src, s8 weights, u8 dst with per-channel output scales and ReLU
// (a complete quantized layer); f32: float src/weights/dst with bias + ReLU.
std::unique_ptr<OnednnLayer> onednn_layer(const Layer& L, bool int8) {
  auto o = std::make_unique<OnednnLayer>();
  const dt st = int8 ? dt::u8 : dt::f32, wt = int8 ? dt::s8 : dt::f32, dst_t = int8 ? dt::u8 : dt::f32;
  dnnl::primitive_attr attr;
  dnnl::post_ops po;
  po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
  attr.set_post_ops(po);
  const int64_t OC = L.fc ? L.OC : L.conv.OC;
  if (int8) attr.set_output_scales(2, std::vector<float>(static_cast<size_t>(OC), 0.0002f));
  memory::desc src, wei, bias, dst;
  if (L.fc) {
    src = memory::desc({1, L.K}, st, tag::nc);
    wei = memory::desc({L.OC, L.K}, wt, tag::any);
    bias = memory::desc({L.OC}, dt::f32, tag::x);
    dst = memory::desc({1, L.OC}, dst_t, tag::nc);
    dnnl::inner_product_forward::primitive_desc pd(
        dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, src, wei, bias, dst), attr, o->eng);
    o->prim = dnnl::inner_product_forward(pd);
    wei = pd.weights_desc();
  } else {
    const bk::ConvDesc& c = L.conv;
    const int64_t G = c.groups;
    src = memory::desc({1, c.C, c.H, c.W}, st, tag::nhwc);
    wei = G == 1 ? memory::desc({c.OC, c.C, c.KH, c.KW}, wt, tag::any)
                 : memory::desc({G, c.OC / G, c.C / G, c.KH, c.KW}, wt, tag::any);
    bias = memory::desc({c.OC}, dt::f32, tag::x);
    dst = memory::desc({1, c.OC, c.out_h(), c.out_w()}, dst_t, tag::nhwc);
    dnnl::convolution_forward::primitive_desc pd(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
                                        wei, bias, dst, {c.stride_h, c.stride_w}, {0, 0}, {c.pad_top, c.pad_left},
                                        {c.pad_bottom, c.pad_right}),
        attr, o->eng);
    o->prim = dnnl::convolution_forward(pd);
    wei = pd.weights_desc();
  }
  memory ms(src, o->eng), mw(wei, o->eng), mb(bias, o->eng), md(dst, o->eng);
  fill_random(static_cast<uint8_t*>(ms.get_data_handle()), src.get_size(), 3, int8 ? 0xff : 0x3f);
  fill_random(static_cast<uint8_t*>(mw.get_data_handle()), wei.get_size(), 5, int8 ? 0xff : 0x3f);
  std::memset(mb.get_data_handle(), 0, bias.get_size());
  o->args = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_BIAS, mb}, {DNNL_ARG_DST, md}};
  return o;
}

void run_onednn(benchmark::State& st, Layer L, bool int8) {
  std::unique_ptr<OnednnLayer> o;
  try {
    o = onednn_layer(L, int8);
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    return;
  }
  for (auto _ : st) {
    o->prim.execute(o->strm, o->args);
    o->strm.wait();
  }
  const double macs = L.fc ? static_cast<double>(L.K * L.OC) : static_cast<double>(L.conv.macs());
  const double wbytes = (L.fc ? static_cast<double>(L.K * L.OC) : static_cast<double>(L.conv.OC * L.conv.K())) *
                        (int8 ? 1.0 : 4.0);
  st.counters["GMAC/s"] = benchmark::Counter(macs * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["wGB/s"] = benchmark::Counter(wbytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(int8 ? "onednn u8s8u8" : "onednn f32");
}

// ---- read bandwidth ---------------------------------------------------------------
__attribute__((target("avx512f"))) uint64_t read_avx512(const uint8_t* p, size_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 256 <= n; i += 256) {
    a0 = _mm512_xor_si512(a0, _mm512_load_si512(p + i));
    a1 = _mm512_xor_si512(a1, _mm512_load_si512(p + i + 64));
    a2 = _mm512_xor_si512(a2, _mm512_load_si512(p + i + 128));
    a3 = _mm512_xor_si512(a3, _mm512_load_si512(p + i + 192));
  }
  const __m512i x = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
  return static_cast<uint64_t>(_mm512_reduce_add_epi64(x));
}
__attribute__((target("avx2"))) uint64_t read_avx2(const uint8_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0;
  for (size_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm256_xor_si256(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_xor_si256(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
  }
  alignas(32) uint64_t v[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), _mm256_xor_si256(a0, a1));
  return v[0] ^ v[1] ^ v[2] ^ v[3];
}

// The same read as 4 streams, one per quarter of the buffer, interleaved in
// one loop (more misses in flight than one sequential stream).
__attribute__((target("avx512f"))) uint64_t read4_avx512(const uint8_t* p, size_t n) {
  const size_t q = n / 4 / 64 * 64;
  const uint8_t *p0 = p, *p1 = p + q, *p2 = p + 2 * q, *p3 = p + 3 * q;
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 128 <= q; i += 128) {
    a0 = _mm512_xor_si512(a0, _mm512_xor_si512(_mm512_load_si512(p0 + i), _mm512_load_si512(p0 + i + 64)));
    a1 = _mm512_xor_si512(a1, _mm512_xor_si512(_mm512_load_si512(p1 + i), _mm512_load_si512(p1 + i + 64)));
    a2 = _mm512_xor_si512(a2, _mm512_xor_si512(_mm512_load_si512(p2 + i), _mm512_load_si512(p2 + i + 64)));
    a3 = _mm512_xor_si512(a3, _mm512_xor_si512(_mm512_load_si512(p3 + i), _mm512_load_si512(p3 + i + 64)));
  }
  const __m512i x = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
  return static_cast<uint64_t>(_mm512_reduce_add_epi64(x));
}

void run_bandwidth4(benchmark::State& st, size_t bytes) {
  if (!bk::cpu_features().avx512f) {
    st.SkipWithError("needs AVX-512");
    return;
  }
  Buf b(bytes);
  fill_random(b.p, bytes, 1);
  for (auto _ : st) {
    uint64_t r = read4_avx512(b.p, bytes);
    benchmark::DoNotOptimize(r);
  }
  st.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel("avx512 loads, 4 streams");
}

void run_bandwidth(benchmark::State& st, size_t bytes) {
  Buf b(bytes);
  fill_random(b.p, bytes, 1);
  const bool avx512 = bk::cpu_features().avx512f;
  for (auto _ : st) {
    uint64_t r = avx512 ? read_avx512(b.p, bytes) : read_avx2(b.p, bytes);
    benchmark::DoNotOptimize(r);
  }
  st.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(avx512 ? "avx512 loads" : "avx2 loads");
}

// ---- vpdpbusd throughput ------------------------------------------------------------
// Register-only loops (no memory traffic) of 16 independent accumulators: the
// compute ceiling of the VNNI kernels, in MACs per ns. dp: vpdpbusd zmm (64
// MACs). dp_and: a vpandd feeding each vpdpbusd (the field mask of the 2-bit
// GEMV). The others show which instructions share execution ports with
// vpdpbusd: vpmaddubsw + vpaddw (64 MACs, int16 sums) and vpermw + vpaddw (a
// 32-lane int16 table lookup of 2 two-bit weights: 64 MACs), alone and
// interleaved half and half with vpdpbusd. A mix that beats dp alone would use
// ports vpdpbusd leaves idle.
#define BB_DP(a, t) "vpdpbusd %%zmm1, %%zmm2, %%zmm" #a "\n\t"
#define BB_DPY(a, t) "vpdpbusd %%ymm1, %%ymm2, %%ymm" #a "\n\t"
#define BB_DPAND(a, t) "vpandd %%zmm3, %%zmm4, %%zmm" #t "\n\tvpdpbusd %%zmm" #t ", %%zmm2, %%zmm" #a "\n\t"
#define BB_MADD(a, t) "vpmaddubsw %%zmm4, %%zmm1, %%zmm" #t "\n\tvpaddw %%zmm" #t ", %%zmm" #a ", %%zmm" #a "\n\t"
#define BB_PERM(a, t) "vpermw %%zmm3, %%zmm4, %%zmm" #t "\n\tvpaddw %%zmm" #t ", %%zmm" #a ", %%zmm" #a "\n\t"
#define BB_PERMB(a, t) "vpermb %%zmm3, %%zmm4, %%zmm" #t "\n\tvpaddb %%zmm" #t ", %%zmm" #a ", %%zmm" #a "\n\t"
#define BB_SHUFB(a, t) "vpshufb %%zmm3, %%zmm4, %%zmm" #t "\n\tvpaddb %%zmm" #t ", %%zmm" #a ", %%zmm" #a "\n\t"
#define BB_16(S)                                                                                                \
  S(16, 5) S(17, 6) S(18, 7) S(19, 8) S(20, 9) S(21, 10) S(22, 11) S(23, 12) S(24, 5) S(25, 6) S(26, 7) S(27, 8) \
      S(28, 9) S(29, 10) S(30, 11) S(31, 12)
#define BB_8_8(S, T) \
  S(16, 5) T(17, 6) S(18, 7) T(19, 8) S(20, 9) T(21, 10) S(22, 11) T(23, 12) S(24, 5) T(25, 6) S(26, 7) T(27, 8) \
      S(28, 9) T(29, 10) S(30, 11) T(31, 12)
#define BB_SETUP                                                                                                    \
  "vpxord %%zmm16, %%zmm16, %%zmm16\n\tvmovdqa64 %%zmm16, %%zmm17\n\tvmovdqa64 %%zmm16, %%zmm18\n\t"               \
  "vmovdqa64 %%zmm16, %%zmm19\n\tvmovdqa64 %%zmm16, %%zmm20\n\tvmovdqa64 %%zmm16, %%zmm21\n\t"                     \
  "vmovdqa64 %%zmm16, %%zmm22\n\tvmovdqa64 %%zmm16, %%zmm23\n\tvmovdqa64 %%zmm16, %%zmm24\n\t"                     \
  "vmovdqa64 %%zmm16, %%zmm25\n\tvmovdqa64 %%zmm16, %%zmm26\n\tvmovdqa64 %%zmm16, %%zmm27\n\t"                     \
  "vmovdqa64 %%zmm16, %%zmm28\n\tvmovdqa64 %%zmm16, %%zmm29\n\tvmovdqa64 %%zmm16, %%zmm30\n\t"                     \
  "vmovdqa64 %%zmm16, %%zmm31\n\tvpternlogd $0xff, %%zmm1, %%zmm1, %%zmm1\n\tvpabsb %%zmm1, %%zmm1\n\t"           \
  "vmovdqa64 %%zmm1, %%zmm2\n\tvmovdqa64 %%zmm1, %%zmm3\n\tvmovdqa64 %%zmm1, %%zmm4\n\t"
#define BB_LOOP(BODY)                                                                                            \
  asm volatile(BB_SETUP "1:\n\t" BODY "dec %0\n\tjnz 1b\n\t"                                                     \
               : "+r"(iters)                                                                                     \
               :                                                                                                 \
               : "cc", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
                 "xmm12", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24",        \
                 "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31")

enum class DpMix { Dp, DpYmm, DpAnd, Madd, DpMadd, Perm, DpPerm, PermB, ShufB };

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi"))) void dp_loop(int64_t iters, DpMix mix) {
  switch (mix) {
    case DpMix::Dp: BB_LOOP(BB_16(BB_DP)); break;
    case DpMix::DpYmm: BB_LOOP(BB_16(BB_DPY)); break;
    case DpMix::DpAnd: BB_LOOP(BB_16(BB_DPAND)); break;
    case DpMix::Madd: BB_LOOP(BB_16(BB_MADD)); break;
    case DpMix::DpMadd: BB_LOOP(BB_8_8(BB_DP, BB_MADD)); break;
    case DpMix::Perm: BB_LOOP(BB_16(BB_PERM)); break;
    case DpMix::DpPerm: BB_LOOP(BB_8_8(BB_DP, BB_PERM)); break;
    case DpMix::PermB: BB_LOOP(BB_16(BB_PERMB)); break;
    case DpMix::ShufB: BB_LOOP(BB_16(BB_SHUFB)); break;
  }
}
#undef BB_DP
#undef BB_DPY
#undef BB_DPAND
#undef BB_MADD
#undef BB_PERM
#undef BB_PERMB
#undef BB_SHUFB
#undef BB_16
#undef BB_8_8
#undef BB_SETUP
#undef BB_LOOP

void run_vnni_peak(benchmark::State& st, DpMix mix) {
  constexpr int64_t kIters = 4096;  // 16 steps of 64 MACs (32 for ymm) per iteration
  for (auto _ : st) dp_loop(kIters, mix);
  const double macs = static_cast<double>(kIters) * 16.0 * (mix == DpMix::DpYmm ? 32.0 : 64.0);
  st.counters["MACs/ns"] = benchmark::Counter(macs * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GHz_at_1dp"] = benchmark::Counter(static_cast<double>(kIters) * 16.0 * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// ---- the real layer shapes -----------------------------------------------------------
Layer conv(const std::string& model, const std::string& name, int64_t HW, int64_t C, int64_t OC, int k, int s,
           int groups = 1) {
  Layer L;
  L.model = model;
  L.name = name;
  bk::ConvDesc& c = L.conv;
  c.N = 1;
  c.H = c.W = HW;
  c.C = C;
  c.OC = OC;
  c.KH = c.KW = k;
  c.stride_h = c.stride_w = s;
  const int pad = k / 2;
  c.pad_top = c.pad_left = c.pad_bottom = c.pad_right = pad;
  c.groups = groups;
  return L;
}
Layer fc(const std::string& model, const std::string& name, int64_t K, int64_t OC) {
  Layer L;
  L.model = model;
  L.name = name;
  L.fc = true;
  L.K = K;
  L.OC = OC;
  return L;
}

std::vector<Layer> model_layers() {
  std::vector<Layer> v;
  // LeNet-5 on 28x28 (conv1 padded to keep 28x28).
  v.push_back(conv("lenet5", "conv1_5x5_1to6_28", 28, 1, 6, 5, 1));
  {
    Layer L = conv("lenet5", "conv2_5x5_6to16_14", 14, 6, 16, 5, 1);
    L.conv.pad_top = L.conv.pad_left = L.conv.pad_bottom = L.conv.pad_right = 0;
    v.push_back(L);
  }
  v.push_back(fc("lenet5", "fc1_400to120", 400, 120));
  v.push_back(fc("lenet5", "fc2_120to84", 120, 84));
  v.push_back(fc("lenet5", "fc3_84to10", 84, 10));
  // ResNet-18, 224x224.
  v.push_back(conv("resnet18", "conv1_7x7s2_3to64_224", 224, 3, 64, 7, 2));
  v.push_back(conv("resnet18", "l1_3x3_64to64_56", 56, 64, 64, 3, 1));
  v.push_back(conv("resnet18", "l2a_3x3s2_64to128_56", 56, 64, 128, 3, 2));
  v.push_back(conv("resnet18", "l2b_3x3_128to128_28", 28, 128, 128, 3, 1));
  v.push_back(conv("resnet18", "l2ds_1x1s2_64to128_56", 56, 64, 128, 1, 2));
  v.push_back(conv("resnet18", "l3a_3x3s2_128to256_28", 28, 128, 256, 3, 2));
  v.push_back(conv("resnet18", "l3b_3x3_256to256_14", 14, 256, 256, 3, 1));
  v.push_back(conv("resnet18", "l3ds_1x1s2_128to256_28", 28, 128, 256, 1, 2));
  v.push_back(conv("resnet18", "l4a_3x3s2_256to512_14", 14, 256, 512, 3, 2));
  v.push_back(conv("resnet18", "l4b_3x3_512to512_7", 7, 512, 512, 3, 1));
  v.push_back(conv("resnet18", "l4ds_1x1s2_256to512_14", 14, 256, 512, 1, 2));
  v.push_back(fc("resnet18", "fc_512to1000", 512, 1000));
  // MobileNetV2, 224x224 (the distinct shapes).
  v.push_back(conv("mobilenetv2", "stem_3x3s2_3to32_224", 224, 3, 32, 3, 2));
  v.push_back(conv("mobilenetv2", "dw_3x3_32_112", 112, 32, 32, 3, 1, 32));
  v.push_back(conv("mobilenetv2", "pw_32to16_112", 112, 32, 16, 1, 1));
  v.push_back(conv("mobilenetv2", "pw_16to96_112", 112, 16, 96, 1, 1));
  v.push_back(conv("mobilenetv2", "dw_3x3s2_96_112", 112, 96, 96, 3, 2, 96));
  v.push_back(conv("mobilenetv2", "pw_96to24_56", 56, 96, 24, 1, 1));
  v.push_back(conv("mobilenetv2", "pw_24to144_56", 56, 24, 144, 1, 1));
  v.push_back(conv("mobilenetv2", "dw_3x3_144_56", 56, 144, 144, 3, 1, 144));
  v.push_back(conv("mobilenetv2", "pw_144to32_28", 28, 144, 32, 1, 1));
  v.push_back(conv("mobilenetv2", "pw_32to192_28", 28, 32, 192, 1, 1));
  v.push_back(conv("mobilenetv2", "pw_192to64_14", 14, 192, 64, 1, 1));
  v.push_back(conv("mobilenetv2", "pw_64to384_14", 14, 64, 384, 1, 1));
  v.push_back(conv("mobilenetv2", "dw_3x3_384_14", 14, 384, 384, 3, 1, 384));
  v.push_back(conv("mobilenetv2", "pw_384to96_14", 14, 384, 96, 1, 1));
  v.push_back(conv("mobilenetv2", "pw_576to160_7", 7, 576, 160, 1, 1));
  v.push_back(conv("mobilenetv2", "pw_160to960_7", 7, 160, 960, 1, 1));
  v.push_back(conv("mobilenetv2", "dw_3x3_960_7", 7, 960, 960, 3, 1, 960));
  v.push_back(conv("mobilenetv2", "pw_960to320_7", 7, 960, 320, 1, 1));
  v.push_back(conv("mobilenetv2", "pw_320to1280_7", 7, 320, 1280, 1, 1));
  v.push_back(fc("mobilenetv2", "fc_1280to1000", 1280, 1000));
  return v;
}

const char* isa_tag(bk::Isa isa) { return isa == bk::Isa::AVX512_VNNI ? "avx512vnni" : "avx2"; }

// W2A2 fc (2-bit unsigned activations): the lookup-table kernel beside the
// 2-bit VNNI kernel on the same layer, and the table's choice.
void register_w2a2(const std::string& base, const Layer& L, bk::Isa isa) {
  const bool has_vnni = bk::isa_at_most(bk::Isa::AVX512_VNNI, isa);
  bk::OpDesc a2 = make_desc(L, 2);
  std::get<bk::FcDesc>(a2).in = {2, false, 0.3f};
  const std::string k2 = std::string("fc_w2a8_u8s2_") + isa_tag(isa) + (has_vnni ? "_4x64" : "_2x32");
  for (auto [tag, kn] : {std::pair<const char*, std::string>{"w2a2_lut", "fc_w2a2_u2s2_avx512vbmi_lut"},
                         {"w2a2_ours", k2}}) {
    const bk::KernelInfo* info = bk::find_kernel(kn);
    if (info && info->supports(a2))
      benchmark::RegisterBenchmark((base + tag).c_str(), run_ours, info, a2)->Unit(benchmark::kMicrosecond);
  }
  benchmark::RegisterBenchmark((base + "w2a2_chosen").c_str(), run_ours, bk::choose_kernel(a2, isa).info, a2)
      ->Unit(benchmark::kMicrosecond);
}

void register_all() {
  const bk::Isa isa = bk::detect_isa();
  const bool has_vnni = bk::isa_at_most(bk::Isa::AVX512_VNNI, isa);
  // The big fully connected layers.
  for (auto [oc, k] : {std::pair<int64_t, int64_t>{4096, 4096}, {11008, 4096}}) {
    const Layer L = fc("fc", std::to_string(oc) + "x" + std::to_string(k), k, oc);
    const std::string base = "fc/" + L.name + "/";
    for (int wb : {8, 4, 2}) {
      const std::string kn = "fc_w" + std::to_string(wb) + "a8_u8s" + std::to_string(wb) + "_" + isa_tag(isa) +
                             (has_vnni ? "_4x64" : "_2x32");
      const bk::KernelInfo* info = bk::find_kernel(kn);
      if (!info) continue;
      benchmark::RegisterBenchmark((base + "w" + std::to_string(wb) + "a8_ours").c_str(), run_ours, info,
                                   make_desc(L, wb))
          ->Unit(benchmark::kMicrosecond);
    }
    if (has_vnni)
      benchmark::RegisterBenchmark((base + "w8a8_onednn").c_str(), run_onednn, L, true)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((base + "f32_onednn").c_str(), run_onednn, L, false)->Unit(benchmark::kMicrosecond);
    register_w2a2(base, L, isa);
  }
  // vpdpbusd throughput (the compute ceiling of the VNNI fc / conv kernels).
  if (has_vnni)
    for (auto [n, mix] : {std::pair<const char*, DpMix>{"dp", DpMix::Dp}, {"dp_ymm", DpMix::DpYmm},
                          {"dp_and", DpMix::DpAnd}, {"maddubsw", DpMix::Madd}, {"dp_maddubsw", DpMix::DpMadd},
                          {"vpermw", DpMix::Perm}, {"dp_vpermw", DpMix::DpPerm}, {"vpermb", DpMix::PermB},
                          {"vpshufb", DpMix::ShufB}})
      benchmark::RegisterBenchmark((std::string("vnni/") + n).c_str(), run_vnni_peak, mix)
          ->Unit(benchmark::kMicrosecond);
  // Read bandwidth at the fc working sets (weights at 8, 4, 2 bits) and in cache.
  for (size_t bytes : {size_t{4096} * 4096, size_t{4096} * 4096 / 2, size_t{4096} * 4096 / 4, size_t{11008} * 4096,
                       size_t{11008} * 4096 / 2, size_t{11008} * 4096 / 4, size_t{1} << 20})
  {
    benchmark::RegisterBenchmark(("bandwidth/" + std::to_string(bytes)).c_str(), run_bandwidth, bytes)
        ->Unit(benchmark::kMicrosecond);
    if (bk::cpu_features().avx512f)
      benchmark::RegisterBenchmark(("bandwidth/" + std::to_string(bytes) + "/streams:4").c_str(), run_bandwidth4,
                                   bytes)
          ->Unit(benchmark::kMicrosecond);
  }
  // Model layers.
  for (const Layer& L : model_layers()) {
    const std::string base = "layer/" + L.model + "/" + L.name + "/";
    for (int wb : {8, 4, 2}) {
      const bk::OpDesc d = make_desc(L, wb);
      const bool dw = !L.fc && L.conv.groups > 1;
      const std::string kn =
          dw ? std::string("dwconv2d_w8a8_u8s8_") + isa_tag(isa) + (has_vnni ? "_c64" : "_c32")
             : std::string(L.fc ? "fc" : "conv2d") + "_w" + std::to_string(wb) + "a8_u8s" + std::to_string(wb) + "_" +
                   isa_tag(isa) + (has_vnni ? "_4x64" : "_2x32");
      const bk::KernelInfo* info = bk::find_kernel(kn);
      if (info && info->supports(d))
        benchmark::RegisterBenchmark((base + "w" + std::to_string(wb) + "a8_ours").c_str(), run_ours, info, d)
            ->Unit(benchmark::kMicrosecond);
      const bk::KernelInfo* chosen = bk::choose_kernel(d, isa).info;
      benchmark::RegisterBenchmark((base + "w" + std::to_string(wb) + "a8_chosen").c_str(), run_ours, chosen, d)
          ->Unit(benchmark::kMicrosecond);
    }
    if (L.fc) register_w2a2(base, L, isa);
    if (has_vnni) {
      benchmark::RegisterBenchmark((base + "w8a8_onednn").c_str(), run_onednn, L, true)->Unit(benchmark::kMicrosecond);
      // The table's exact oneDNN wrapper (s32 result + our requantization pass).
      const bk::KernelInfo* wrap = bk::find_kernel(L.fc ? "fc_w8a8_u8s8s32_onednn" : "conv2d_w8a8_u8s8s32_onednn");
      if (wrap)
        benchmark::RegisterBenchmark((base + "w8a8_onednn_exact").c_str(), run_ours, wrap, make_desc(L, 8))
            ->Unit(benchmark::kMicrosecond);
    }
  }
}

// ---- 16-bit conv / fc and 8-bit pool / concat / softmax (issue 5) --------------------
// wide/<model>/<layer>/<wXaY>_{ours,ref}   16-bit layers (depthwise included):
//     the SIMD kernel the table chooses (vpdpwssd / vpmaddwd GEMM, vpmuldq
//     depthwise) and the reference kernel, beside oneDNN f32 (oneDNN has no
//     int16 conv / inner product) on the same shape.
// ops/<op>/<shape>/{ours,ref,onednn}       8-bit avg / global avg pool, concat
//     (oneDNN u8 where it has the op) and softmax (oneDNN f32 softmax).
struct WideRun {
  std::unique_ptr<bk::Kernel> kernel;
  std::vector<std::unique_ptr<Buf>> ins;
  std::unique_ptr<Buf> weights, out, scratch;
  std::vector<float> scales;
  std::vector<int32_t> bias;
};

// Random data of any op desc: activations and weights on their grids.
std::unique_ptr<WideRun> prepare_any(const bk::KernelInfo& info, const bk::OpDesc& d) {
  auto r = std::make_unique<WideRun>();
  std::mt19937_64 rng(17);
  for (int i = 0; i < bk::num_inputs(d); ++i) {
    const bk::QuantInfo q = bk::input_quant(d, i);
    const int64_t n = bk::input_elements(d, i);
    auto b = std::make_unique<Buf>(static_cast<size_t>(n) * bk::element_bytes(q.bits));
    std::uniform_int_distribution<int64_t> dist(bbits::qmin(q.bits, q.is_signed), bbits::qmax(q.bits, q.is_signed));
    for (int64_t j = 0; j < n; ++j) bk::store_int(b->p, j, q, dist(rng));
    r->ins.push_back(std::move(b));
  }
  bk::Weights w;
  const int wb = bk::weight_bits(d);
  if (wb > 0) {
    int64_t rows = 0, k = 0;
    if (const auto* c = std::get_if<bk::ConvDesc>(&d)) rows = c->OC, k = c->K();
    if (const auto* f = std::get_if<bk::FcDesc>(&d)) rows = f->OC, k = f->K;
    const size_t rb = bbits::packed_row_bytes(k, wb);
    r->weights = std::make_unique<Buf>(rb * static_cast<size_t>(rows));
    std::uniform_int_distribution<int32_t> dist(static_cast<int32_t>(-bbits::qmax(wb, true)),
                                                static_cast<int32_t>(bbits::qmax(wb, true)));
    std::vector<int32_t> row(static_cast<size_t>(k));
    for (int64_t o = 0; o < rows; ++o) {
      for (auto& v : row) v = dist(rng);
      bbits::pack_row(row.data(), k, wb, r->weights->p + static_cast<size_t>(o) * rb);
    }
    r->scales.assign(static_cast<size_t>(rows), 1.0f / static_cast<float>(bbits::qmax(wb, true)));
    r->bias.assign(static_cast<size_t>(rows), 100);
    w.data = r->weights->p;
    w.size = r->weights->size;
    w.scales = r->scales;
    w.bias_q = r->bias;
  }
  r->kernel = info.create(d, w);
  const bk::QuantInfo oq = bk::output_quant(d);
  r->out = std::make_unique<Buf>(static_cast<size_t>(bk::output_elements(d)) * bk::element_bytes(oq.bits));
  r->scratch = std::make_unique<Buf>(std::max<size_t>(64, r->kernel->scratch_bytes(1)));
  return r;
}

void run_any(benchmark::State& st, const bk::KernelInfo* info, bk::OpDesc d) {
  std::unique_ptr<WideRun> r;
  try {
    r = prepare_any(*info, d);
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    return;
  }
  std::vector<const void*> ins;
  for (const auto& b : r->ins) ins.push_back(b->p);
  bk::KernelArgs a;
  a.inputs = ins;
  a.output = r->out->p;
  a.scratch = r->scratch->p;
  a.scratch_size = r->scratch->size;
  for (auto _ : st) {
    r->kernel->run(a, nullptr);
    benchmark::ClobberMemory();
  }
  st.counters["Gop/s"] =
      benchmark::Counter(static_cast<double>(bk::op_work(d)) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(std::string(r->kernel->name()));
}

// A 16-bit layer of the model shapes: weights at wb, activations at ab
// (16-bit activations signed after a conv without ReLU: use the unsigned grid
// of a ReLU output here, the harder case for the kernel's offset).
bk::OpDesc wide_desc(const Layer& L, int wb, int ab) {
  const bk::QuantInfo in{ab, false, ab == 16 ? 1e-4f : 0.02f};
  const bk::QuantInfo out{ab, false, ab == 16 ? 2e-3f : 0.05f};
  if (L.fc) {
    bk::FcDesc f;
    f.K = L.K;
    f.OC = L.OC;
    f.wbits = wb;
    f.in = in;
    f.out = out;
    f.activation = bk::Activation::Relu;
    return f;
  }
  bk::ConvDesc c = L.conv;
  c.wbits = wb;
  c.in = in;
  c.out = out;
  c.activation = bk::Activation::Relu;
  return c;
}

// oneDNN u8 pooling / concat, f32 softmax on the shapes below.
struct OnednnOp {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::primitive prim;
  std::unordered_map<int, memory> args;
};

std::unique_ptr<OnednnOp> onednn_op(const bk::OpDesc& d) {
  auto o = std::make_unique<OnednnOp>();
  if (const auto* p = std::get_if<bk::PoolDesc>(&d)) {
    const bool global = p->kind == bk::PoolKind::GlobalAvg;
    const int64_t KH = global ? p->H : p->KH, KW = global ? p->W : p->KW;
    const memory::desc src({p->N, p->C, p->H, p->W}, dt::u8, tag::nhwc);
    const memory::desc dst({p->N, p->C, p->out_h(), p->out_w()}, dt::u8, tag::nhwc);
    const auto alg = p->count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                          : dnnl::algorithm::pooling_avg_exclude_padding;
    const memory::dims strides = global ? memory::dims{1, 1} : memory::dims{p->stride_h, p->stride_w};
    const memory::dims pl = global ? memory::dims{0, 0} : memory::dims{p->pad_top, p->pad_left};
    const memory::dims pr = global ? memory::dims{0, 0} : memory::dims{p->pad_bottom, p->pad_right};
    dnnl::pooling_forward::primitive_desc pd(
        dnnl::pooling_forward::desc(dnnl::prop_kind::forward_inference, alg, src, dst, strides, {KH, KW}, pl, pr),
        o->eng);
    o->prim = dnnl::pooling_forward(pd);
    memory ms(src, o->eng), md(dst, o->eng);
    fill_random(static_cast<uint8_t*>(ms.get_data_handle()), src.get_size(), 3);
    o->args = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DST, md}};
  } else if (const auto* c = std::get_if<bk::ConcatDesc>(&d)) {
    std::vector<memory::desc> srcs;
    for (int64_t s : c->sizes) srcs.emplace_back(memory::dims{c->outer, s}, dt::u8, tag::nc);
    dnnl::concat::primitive_desc pd(1, srcs, o->eng);
    o->prim = dnnl::concat(pd);
    for (size_t i = 0; i < srcs.size(); ++i) {
      memory m(srcs[i], o->eng);
      fill_random(static_cast<uint8_t*>(m.get_data_handle()), srcs[i].get_size(), 5 + i);
      o->args.insert({DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), m});
    }
    o->args.insert({DNNL_ARG_DST, memory(pd.dst_desc(), o->eng)});
  } else if (const auto* sm = std::get_if<bk::SoftmaxDesc>(&d)) {
    const memory::desc md({sm->outer, sm->axis_size}, dt::f32, tag::nc);
    dnnl::softmax_forward::primitive_desc pd(dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, md, 1),
                                             o->eng);
    o->prim = dnnl::softmax_forward(pd);
    memory ms(md, o->eng), mo(md, o->eng);
    fill_random(static_cast<uint8_t*>(ms.get_data_handle()), md.get_size(), 3, 0x3f);
    o->args = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DST, mo}};
  } else {
    throw std::invalid_argument("no oneDNN baseline for " + bk::describe(d));
  }
  return o;
}

void run_onednn_op(benchmark::State& st, bk::OpDesc d, std::string label) {
  std::unique_ptr<OnednnOp> o;
  try {
    o = onednn_op(d);
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    return;
  }
  for (auto _ : st) {
    o->prim.execute(o->strm, o->args);
    o->strm.wait();
  }
  st.counters["Gop/s"] =
      benchmark::Counter(static_cast<double>(bk::op_work(d)) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(label);
}

void register_wide_and_ops() {
  const bk::Isa isa = bk::detect_isa();
  // 16-bit conv / fc: the ResNet-18 / MobileNetV2 shapes and a 4096x4096 fc.
  std::vector<Layer> wide;
  for (const Layer& L : model_layers())
    if ((L.model == "resnet18" && L.name.rfind("conv1", 0) != 0) ||
        (L.model == "mobilenetv2" && (L.name.rfind("pw_", 0) == 0 || L.name.rfind("dw_", 0) == 0 || L.fc)) ||
        L.model == "lenet5")
      wide.push_back(L);
  wide.push_back(fc("fc", "4096x4096", 4096, 4096));
  for (const Layer& L : wide) {
    const std::string base = "wide/" + L.model + "/" + L.name + "/";
    for (auto [wb, ab] : {std::pair{16, 16}, std::pair{16, 8}, std::pair{8, 16}}) {
      const bk::OpDesc d = wide_desc(L, wb, ab);
      const std::string tagwa = "w" + std::to_string(wb) + "a" + std::to_string(ab);
      benchmark::RegisterBenchmark((base + tagwa + "_ours").c_str(), run_any, bk::choose_kernel(d, isa).info, d)
          ->Unit(benchmark::kMicrosecond);
      // The reference at ~2 MACs/ns: only where one run stays short.
      if (bk::op_work(d) <= 120'000'000)
        benchmark::RegisterBenchmark((base + tagwa + "_ref").c_str(), run_any, bk::reference_kernel(d), d)
            ->Unit(benchmark::kMicrosecond);
    }
    benchmark::RegisterBenchmark((base + "f32_onednn").c_str(), run_onednn, L, false)->Unit(benchmark::kMicrosecond);
  }
  // 8-bit pool / concat / softmax.
  std::vector<std::pair<std::string, bk::OpDesc>> ops;
  auto avg = [](int64_t HW, int64_t C, int k, int s, int pad, bool include_pad) {
    bk::PoolDesc p;
    p.kind = bk::PoolKind::Avg;
    p.H = p.W = HW;
    p.C = C;
    p.KH = p.KW = k;
    p.stride_h = p.stride_w = s;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = pad;
    p.count_include_pad = include_pad;
    p.in = {8, false, 0.02f};
    p.out = {8, false, 0.02f};
    return p;
  };
  ops.emplace_back("avg_pool/3x3s1p1_28x28x192", avg(28, 192, 3, 1, 1, false));
  ops.emplace_back("avg_pool/2x2s2_56x56x64", avg(56, 64, 2, 2, 0, false));
  ops.emplace_back("avg_pool/3x3s2p1_incpad_56x56x96", avg(56, 96, 3, 2, 1, true));
  for (auto [HW, C] : {std::pair<int64_t, int64_t>{7, 512}, {7, 1280}, {14, 1024}}) {
    bk::PoolDesc g;
    g.kind = bk::PoolKind::GlobalAvg;
    g.H = g.W = HW;
    g.C = C;
    g.in = {8, false, 0.02f};
    g.out = {8, false, 0.01f};
    ops.emplace_back("global_avg_pool/" + std::to_string(HW) + "x" + std::to_string(HW) + "x" + std::to_string(C), g);
  }
  {
    bk::ConcatDesc c;
    c.outer = 28 * 28;
    c.sizes = {64, 128, 32, 32};
    c.in.assign(4, bk::QuantInfo{8, false, 0.02f});
    c.out = {8, false, 0.02f};
    ops.emplace_back("concat/same_grid_28x28x(64+128+32+32)", c);
    c.in[1].scale = 0.03f;
    c.in[3].scale = 0.015f;
    ops.emplace_back("concat/requant_28x28x(64+128+32+32)", c);
  }
  for (int64_t A : {10, 1000}) {
    bk::SoftmaxDesc sm;
    sm.axis_size = A;
    sm.in = {8, true, 0.1f};
    ops.emplace_back("softmax/a8_to_f32_" + std::to_string(A), sm);
  }
  for (const auto& [name, d] : ops) {
    const std::string base = "ops/" + name + "/";
    benchmark::RegisterBenchmark((base + "ours").c_str(), run_any, bk::choose_kernel(d, isa).info, d)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((base + "ref").c_str(), run_any, bk::reference_kernel(d), d)
        ->Unit(benchmark::kMicrosecond);
    const bool concat_requant = name.rfind("concat/requant", 0) == 0;  // oneDNN concat only copies
    if (!concat_requant)
      benchmark::RegisterBenchmark((base + "onednn").c_str(), run_onednn_op, d,
                                   std::holds_alternative<bk::SoftmaxDesc>(d) ? "onednn f32" : "onednn u8")
          ->Unit(benchmark::kMicrosecond);
  }
}


// ---- fc on float32 input, packed 2/4/8-bit weights (fc_f32/...) -------------------
// fc_f32/<OC>x<K>/<kernel>[/cold]: the classifiers behind a float global
// average pool (ResNet-18 512 -> 1000, MobileNetV2 1280 -> 1000), batch 1,
// float output: fc_w{8,4,2}a32_f32_* (weights kept packed) beside the table's
// oneDNN float32 wrapper (weights dequantized to float32 at load) on the same
// layer. /cold cycles through enough copies of the layer (>= 64 MB of the
// kernels' own weights) that every run streams its weights from DRAM, as a
// classifier does inside a session.
void run_fc_f32(benchmark::State& st, const bk::KernelInfo* info, bk::FcDesc d, bool cold) {
  std::mt19937_64 rng(23);
  const size_t rb = bbits::packed_row_bytes(d.K, d.wbits), oc = static_cast<size_t>(d.OC);
  Buf w(rb * oc);
  std::uniform_int_distribution<int32_t> qd(-static_cast<int32_t>(bbits::qmax(d.wbits, true)),
                                            static_cast<int32_t>(bbits::qmax(d.wbits, true)));
  std::vector<int32_t> row(static_cast<size_t>(d.K));
  for (size_t o = 0; o < oc; ++o) {
    for (auto& v : row) v = qd(rng);
    bbits::pack_row(row.data(), d.K, d.wbits, w.p + o * rb);
  }
  std::vector<float> scales(oc, 0.01f), bias(oc, 0.1f), x(static_cast<size_t>(d.N * d.K)), y(oc * d.N);
  std::uniform_real_distribution<float> xd(0.0f, 2.0f);
  for (auto& v : x) v = xd(rng);
  bk::Weights wt;
  wt.data = w.p;
  wt.size = w.size;
  wt.scales = scales;
  wt.bias_f = bias;
  const double own = static_cast<double>(d.OC * d.K) * (info->weight_bits == 32 ? 4.0 : d.wbits / 8.0);
  const size_t copies = cold ? static_cast<size_t>(std::min(256.0, std::ceil(64e6 / own))) : 1;
  std::vector<std::unique_ptr<bk::Kernel>> ks;
  try {
    for (size_t i = 0; i < copies; ++i) ks.push_back(info->create(d, wt));
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    return;
  }
  Buf scratch(std::max<size_t>(64, ks[0]->scratch_bytes(1)));
  const void* ins[1] = {x.data()};
  bk::KernelArgs a;
  a.inputs = ins;
  a.output = y.data();
  a.scratch = scratch.p;
  a.scratch_size = scratch.size;
  size_t i = 0;
  for (auto _ : st) {
    ks[i]->run(a, nullptr);
    benchmark::ClobberMemory();
    if (++i == copies) i = 0;
  }
  st.counters["wGB/s"] = benchmark::Counter(own * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(std::string(ks[0]->name()));
}

void register_fc_f32() {
  for (auto [K, OC] : {std::pair<int64_t, int64_t>{512, 1000}, {1280, 1000}}) {
    const std::string base = "fc_f32/" + std::to_string(OC) + "x" + std::to_string(K) + "/";
    for (int wb : {8, 4, 2}) {
      bk::FcDesc d;
      d.K = K;
      d.OC = OC;
      d.wbits = wb;
      d.in = d.out = {32, false, 1.0f};
      const std::string tag = "w" + std::to_string(wb) + "/";
      std::vector<const bk::KernelInfo*> ks;
      for (const char* isa : {"avx512", "avx2"})
        ks.push_back(bk::find_kernel("fc_w" + std::to_string(wb) + "a32_f32_" + isa));
      if (wb == 8) ks.push_back(bk::find_kernel("fc_w32a32_f32_onednn"));  // dequantized: the same at any width
      for (const bk::KernelInfo* info : ks)
        if (info && info->supports(d))
          for (bool cold : {false, true})
            benchmark::RegisterBenchmark((base + (info->weight_bits == 32 ? "" : tag) + info->name + (cold ? "/cold" : ""))
                                             .c_str(),
                                         run_fc_f32, info, d, cold)
                ->Unit(benchmark::kMicrosecond);
    }
  }
}
}  // namespace

int main(int argc, char** argv) {
  omp_set_num_threads(1);  // one thread for oneDNN too
  benchmark::Initialize(&argc, argv);
  register_all();
  register_wide_and_ops();
  register_fc_f32();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
