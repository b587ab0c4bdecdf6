// 16-bit SIMD conv / fc kernels (kernels/simd/gemm16*.cpp) and the SIMD
// average pool, global average pool, concat and softmax on 8-bit data
// (kernels/simd/ops2*.cpp) against the reference kernels: exact agreement over
// shape sweeps with every tail (K / OC, H/W/C, stride, padding, dilation),
// signed and unsigned grids, extreme values (+-32767, -32768, 65535) that
// stress the int32 block bound, every output kind, one and two threads, and
// the kernel chosen under each ISA cap this machine supports.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "../kernel_tester.h"
#include "bbits/kernels/cpu.h"
#include "bbits/kernels/kernels.h"
#include "bbits/kernels/thread_pool.h"

namespace bbits::kernels {
namespace {

// SIMD kernels of `op` this CPU runs whose name contains `needle`; depthwise
// kernels ("conv2d_dw_*", "dwconv2d_*") only when `depthwise`.
std::vector<const KernelInfo*> simd_kernels(OpKind op, const std::string& needle, bool depthwise = false) {
  std::vector<const KernelInfo*> out;
  const Isa machine = max_supported_isa(cpu_features());
  for (const auto& k : kernel_table())
    if (k.op == op && k.isa != Isa::Reference && isa_at_most(k.isa, machine) &&
        k.name.find(needle) != std::string::npos &&
        (k.name.rfind("dw", 0) == 0 || k.name.find("_dw_") != std::string::npos) == depthwise)
      out.push_back(&k);
  return out;
}

// Exact agreement with the reference; a layer the reference rejects (e.g. a
// requantization multiplier >= 2^31) must be rejected by the kernel too.
::testing::AssertionResult exact(const KernelInfo& k, const OpDesc& d, uint64_t seed, ThreadPool* pool = nullptr) {
  try {
    return testing::matches_reference(k, d, seed, pool);
  } catch (const std::invalid_argument& e) {
    const testing::TestLayer L = testing::make_layer(d, seed);
    try {
      (void)k.create(L.desc, L.weights.view());
    } catch (const std::invalid_argument&) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "reference rejected " << describe(d) << " (" << e.what() << ") but "
                                         << k.name << " accepted it";
  }
}

// The activation / weight widths a 16-bit kernel entry runs, from its name
// ("..._w16a8_..." runs w16 x a2/a4/a8).
struct Pair {
  int wb, ab;
};
std::vector<Pair> pairs_of(const KernelInfo& k) {
  if (k.weight_bits == 16 && k.act_bits == 16) return {{16, 16}};
  if (k.weight_bits == 16) return {{16, 8}, {16, 4}, {16, 2}};
  return {{8, 16}, {4, 16}, {2, 16}};
}

struct Quant {
  bool in_signed;
  QuantInfo out;
  Activation act;
};
const Quant kQuants[] = {
    {false, {8, false, 1.0f}, Activation::Relu},  {true, {8, true, 1.0f}, Activation::None},
    {false, {16, false, 1.0f}, Activation::Relu6}, {true, {16, true, 1.0f}, Activation::None},
    {false, {32, false, 1.0f}, Activation::Relu},  {true, {4, false, 1.0f}, Activation::Relu},
    {true, {32, false, 1.0f}, Activation::None},
};

QuantInfo in_quant(int ab, bool sgn) { return {ab, sgn, ab == 16 ? 1e-4f : 0.05f}; }

TEST(Simd16, FcSweepExact) {
  const auto kernels = simd_kernels(OpKind::FullyConnected, "s16s16");
  if (kernels.empty()) GTEST_SKIP() << "no 16-bit SIMD fc kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 1;
  int checked = 0;
  for (const auto* k : kernels)
    for (const Pair& p : pairs_of(*k))
      for (int64_t K : {1, 2, 3, 15, 16, 17, 33, 64, 129, 300})
        for (int64_t OC : {1, 5, 16, 17, 40, 64, 65, 130}) {
          if ((K * OC) % 3 != seed % 3 && K > 3 && OC > 5) {  // thin the grid, keep every tail somewhere
            ++seed;
            continue;
          }
          const Quant& q = kQuants[seed % std::size(kQuants)];
          FcDesc d;
          d.N = seed % 4 == 0 ? 3 : 1;
          d.K = K;
          d.OC = OC;
          d.wbits = p.wb;
          d.in = in_quant(p.ab, q.in_signed);
          d.out = q.out;
          d.activation = q.act;
          EXPECT_TRUE(k->supports(d)) << k->name << " " << describe(d);
          EXPECT_TRUE(exact(*k, d, seed, seed % 3 == 0 ? &pool : nullptr));
          ++seed;
          ++checked;
        }
  EXPECT_GT(checked, 60);
}

TEST(Simd16, ConvSweepExact) {
  const auto kernels = simd_kernels(OpKind::Conv2D, "s16s16");
  if (kernels.empty()) GTEST_SKIP() << "no 16-bit SIMD conv kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 500;
  int checked = 0;
  for (const auto* k : kernels)
    for (const Pair& p : pairs_of(*k)) {
      if (p.wb != 16 && p.wb != 8 && p.ab != 16) continue;
      for (int64_t C : {1, 3, 17, 32})
        for (int64_t OC : {5, 16, 33, 70})
          for (int kk : {1, 3}) {
            const Quant& q = kQuants[seed % std::size(kQuants)];
            ConvDesc d;
            d.N = seed % 5 == 0 ? 2 : 1;
            d.H = 5 + static_cast<int64_t>(seed % 3);
            d.W = 6 - static_cast<int64_t>(seed % 2);
            d.C = C;
            d.OC = OC;
            d.KH = d.KW = kk;
            d.stride_h = d.stride_w = 1 + static_cast<int>(seed % 2);
            const int pad = kk == 3 ? static_cast<int>((seed / 2) % 2) : 0;
            d.pad_top = d.pad_left = pad;
            d.pad_bottom = d.pad_right = kk == 3 ? static_cast<int>((seed / 3) % 2) : 0;
            if (kk == 3 && seed % 7 == 0) d.dilation_h = 2, d.H = 7;
            d.wbits = p.wb;
            d.in = in_quant(p.ab, q.in_signed);
            d.out = q.out;
            d.activation = q.act;
            EXPECT_TRUE(k->supports(d)) << k->name << " " << describe(d);
            EXPECT_TRUE(exact(*k, d, seed, seed % 3 == 0 ? &pool : nullptr));
            ++seed;
            ++checked;
          }
    }
  EXPECT_GT(checked, 100);
}

// A layer whose inputs and weights sit at the ends of their grids (and the
// raw code -32768 in the weights): every int32 block is near its bound.
testing::TestLayer extreme_layer(const OpDesc& d, uint64_t seed) {
  testing::TestLayer L = testing::make_layer(d, seed);
  std::mt19937_64 rng(seed * 7919 + 1);
  const QuantInfo iq = input_quant(L.desc, 0);
  const int64_t lo = qmin(iq.bits, iq.is_signed), hi = qmax(iq.bits, iq.is_signed);
  const int64_t xs[] = {lo, hi, hi, hi - 1, 0, lo + 1};
  for (int64_t i = 0; i < L.inputs[0].size(); ++i) L.inputs[0].set_int(i, xs[rng() % std::size(xs)]);
  auto& W = L.weights;
  const int64_t wm = qmax(W.bits, true);
  const int64_t ws[] = {wm, -wm, -wm - 1, wm, -wm, 1};
  // Mostly one sign per row (sums near the int32 bound and far past it), some mixed rows.
  for (int64_t r = 0; r < W.rows; ++r) {
    const bool mixed = r % 3 == 2;
    for (int64_t kk = 0; kk < W.k; ++kk) {
      int64_t v = mixed ? ws[rng() % std::size(ws)] : (r % 2 ? wm : -wm - 1);
      W.q[static_cast<size_t>(r * W.k + kk)] = static_cast<int32_t>(v);
    }
  }
  W.packed = testing::pack_rows(W.q, W.rows, W.k, W.bits);
  QuantInfo& oq = testing::output_quant_ref(L.desc);
  if (!oq.is_float()) {
    double mx = 0.0;
    for (double v : testing::float_reference(L)) mx = std::max(mx, std::fabs(v));
    if (!(mx > 0.0)) mx = 1.0;
    oq.scale = static_cast<float>(mx / (0.7 * static_cast<double>(qmax(oq.bits, oq.is_signed))));
  }
  return L;
}

::testing::AssertionResult exact_extreme(const KernelInfo& k, const OpDesc& d, uint64_t seed, ThreadPool* pool) {
  const testing::TestLayer L = extreme_layer(d, seed);
  if (!k.supports(L.desc)) return ::testing::AssertionFailure() << k.name << " does not support " << describe(L.desc);
  const testing::TestTensor want = testing::run_kernel(*reference_kernel(L.desc), L);
  const testing::TestTensor got = testing::run_kernel(k, L, pool);
  auto r = testing::same_output(got, want, 1e-6);
  if (!r) r << "\n  " << k.name << " on extreme values, " << describe(L.desc) << " seed " << seed;
  return r;
}

TEST(Simd16, DepthwiseSweepExact) {
  const auto kernels = simd_kernels(OpKind::Conv2D, "s16s16", true);
  if (kernels.empty()) GTEST_SKIP() << "no 16-bit SIMD depthwise kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 2000;
  int checked = 0;
  for (const auto* k : kernels)
    for (const Pair& p : pairs_of(*k))
      for (int64_t C : {2, 8, 15, 16, 17, 33, 70})
        for (int kk : {3, 5})
          for (int s : {1, 2}) {
            const Quant& q = kQuants[seed % std::size(kQuants)];
            ConvDesc d;
            d.N = seed % 5 == 0 ? 2 : 1;
            d.H = 7;
            d.W = 6;
            d.C = d.OC = C;
            d.groups = static_cast<int>(C);
            d.KH = d.KW = kk;
            d.stride_h = d.stride_w = s;
            d.pad_top = d.pad_left = kk / 2;
            d.pad_bottom = d.pad_right = s == 2 ? 0 : kk / 2;
            if (seed % 6 == 0) d.dilation_w = 2;
            d.wbits = p.wb;
            d.in = in_quant(p.ab, q.in_signed);
            d.out = q.out;
            d.activation = q.act;
            EXPECT_TRUE(k->supports(d)) << k->name << " " << describe(d);
            if (seed % 4 == 0) EXPECT_TRUE(exact_extreme(*k, d, seed, nullptr));
            else EXPECT_TRUE(exact(*k, d, seed, seed % 3 == 0 ? &pool : nullptr));
            ++seed;
            ++checked;
          }
  EXPECT_GT(checked, 100);
  // Windows of more than 64 taps (81).
  for (const auto* k : kernels) {
    ConvDesc d;
    d.H = d.W = 10;
    d.C = d.OC = d.groups = 20;
    d.KH = d.KW = 9;
    d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 4;
    d.wbits = 16;
    d.in = in_quant(16, false);
    d.out = {8, false, 1.0f};
    if (k->weight_bits != 16 || k->act_bits != 16) continue;
    EXPECT_TRUE(exact(*k, d, seed++));
  }
}

TEST(Simd16, ExtremeValuesExact) {
  ThreadPool pool(2);
  uint64_t seed = 900;
  int checked = 0;
  for (OpKind op : {OpKind::FullyConnected, OpKind::Conv2D})
    for (const auto* k : simd_kernels(op, "s16s16"))
      for (const Pair& p : pairs_of(*k)) {
        if (p.wb == 2 || p.ab == 2) continue;
        for (bool sgn : {false, true})
          for (int ob : {8, 16, 32}) {
            const QuantInfo out{ob, sgn, 1.0f};
            if (op == OpKind::FullyConnected) {
              for (int64_t K : {1, 255, 256, 257, 513, 1500}) {
                FcDesc d;
                d.N = 2;
                d.K = K;
                d.OC = 21;
                d.wbits = p.wb;
                d.in = in_quant(p.ab, sgn);
                d.out = out;
                const uint64_t sd = seed++;
                EXPECT_TRUE(exact_extreme(*k, d, sd, sd % 2 ? &pool : nullptr));
                ++checked;
              }
            } else {
              ConvDesc d;
              d.H = 6;
              d.W = 5;
              d.C = 70;  // K = 630 > 2 int32 blocks of the split mode
              d.OC = 18;
              d.KH = d.KW = 3;
              d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
              d.wbits = p.wb;
              d.in = in_quant(p.ab, sgn);
              d.out = out;
              d.activation = sgn ? Activation::None : Activation::Relu;
              EXPECT_TRUE(exact_extreme(*k, d, seed++, nullptr));
              ++checked;
            }
          }
      }
  if (checked == 0) GTEST_SKIP() << "no 16-bit SIMD kernel for this CPU";
}

// Output grids whose requantization multipliers sit around 2^-1 .. 2^2
// (shifts near 32): both epilogue regimes (shift >= 32 on every channel, and
// the int64 / 128-bit one) on small and huge sums.
TEST(Simd16, RequantShiftRegimesExact) {
  uint64_t seed = 1200;
  for (OpKind op : {OpKind::FullyConnected, OpKind::Conv2D})
    for (const auto* k : simd_kernels(op, "w16a16"))
      for (double f : {0.3, 0.7, 1.5, 3.0, 1e-6})
        for (int mode : {0, 1, 2}) {  // random, extreme, tiny inputs (small sums)
          OpDesc d;
          if (op == OpKind::FullyConnected) {
            FcDesc fd;
            fd.N = 2;
            fd.K = 77;
            fd.OC = 19;
            fd.wbits = 16;
            fd.in = in_quant(16, seed % 2 == 0);
            fd.out = {16, true, 1.0f};
            d = fd;
          } else {
            ConvDesc cd;
            cd.H = cd.W = 4;
            cd.C = 9;
            cd.OC = 20;
            cd.KH = cd.KW = 3;
            cd.pad_top = cd.pad_left = 1;
            cd.wbits = 16;
            cd.in = in_quant(16, false);
            cd.out = {8, false, 1.0f};
            cd.activation = Activation::Relu;
            d = cd;
          }
          testing::TestLayer L = mode == 1 ? extreme_layer(d, seed) : testing::make_layer(d, seed);
          if (mode == 2) {
            const QuantInfo iq = input_quant(L.desc, 0);
            // Sparse +-1 (0 / 1 unsigned): sums of a few weights, outputs inside the grid.
            for (int64_t i = 0; i < L.inputs[0].size(); ++i) {
              const uint64_t h = static_cast<uint64_t>(i) * 2654435761u + seed;
              L.inputs[0].set_int(i, h % 17 != 0 ? 0 : (iq.is_signed && (h / 17) % 2 ? -1 : 1));
            }
            for (auto& b : L.weights.bias_q) b %= 5000;  // small against the sums
          }
          const float sw = L.weights.scales[0];
          testing::output_quant_ref(L.desc).scale =
              static_cast<float>(f * static_cast<double>(sw) * static_cast<double>(input_quant(L.desc, 0).scale));
          ++seed;
          try {
            const testing::TestTensor want = testing::run_kernel(*reference_kernel(L.desc), L);
            const testing::TestTensor got = testing::run_kernel(*k, L, nullptr);
            EXPECT_TRUE(testing::same_output(got, want, 0.0)) << k->name << " f " << f << " " << describe(L.desc);
          } catch (const std::invalid_argument& e) {
            // A multiplier >= 2^31 on some channel: the reference rejects it; so must the kernel.
            EXPECT_THROW((void)k->create(L.desc, L.weights.view()), std::invalid_argument) << e.what();
          }
        }
}

// Under every ISA cap this machine supports, the kernel the table chooses for
// 16-bit layers computes exactly what the reference does, and above the
// reference cap it is a SIMD kernel.
TEST(Simd16, ChosenUnderEachCapExact) {
  uint64_t seed = 3000;
  for (Isa cap : testing::isa_caps()) {
    for (const Pair& p : {Pair{16, 16}, Pair{16, 8}, Pair{8, 16}, Pair{4, 16}}) {
      ConvDesc c;
      c.H = 9;
      c.W = 9;
      c.C = 24;
      c.OC = 40;
      c.KH = c.KW = 3;
      c.stride_h = c.stride_w = 2;
      c.pad_top = c.pad_left = c.pad_bottom = c.pad_right = 1;
      c.wbits = p.wb;
      c.in = in_quant(p.ab, false);
      c.out = {8, false, 1.0f};
      c.activation = Activation::Relu;
      const KernelInfo* kc = choose_kernel(c, cap).info;
      EXPECT_TRUE(isa_at_most(kc->isa, cap)) << kc->name;
      if (cap != Isa::Reference) EXPECT_NE(kc->isa, Isa::Reference) << "cap " << isa_name(cap) << ": " << kc->name;
      EXPECT_TRUE(exact(*kc, c, seed++));
      FcDesc f;
      f.K = 200;
      f.OC = 50;
      f.wbits = p.wb;
      f.in = in_quant(p.ab, true);
      f.out = {32, false, 1.0f};
      const KernelInfo* kf = choose_kernel(f, cap).info;
      EXPECT_TRUE(isa_at_most(kf->isa, cap)) << kf->name;
      if (cap != Isa::Reference) EXPECT_NE(kf->isa, Isa::Reference) << "cap " << isa_name(cap) << ": " << kf->name;
      EXPECT_TRUE(exact(*kf, f, seed++));
      ConvDesc dw = c;
      dw.OC = dw.C;
      dw.groups = static_cast<int>(dw.C);
      const KernelInfo* kd = choose_kernel(dw, cap).info;
      EXPECT_TRUE(isa_at_most(kd->isa, cap)) << kd->name;
      if (cap != Isa::Reference) EXPECT_NE(kd->isa, Isa::Reference) << "cap " << isa_name(cap) << ": " << kd->name;
      EXPECT_TRUE(exact(*kd, dw, seed++));
    }
  }
}

TEST(Simd16, RejectsWhatItCannotRun) {
  for (const auto* k : simd_kernels(OpKind::Conv2D, "s16s16")) {
    ConvDesc d;
    d.H = d.W = 5;
    d.C = d.OC = 8;
    d.groups = 8;  // depthwise: reference only
    d.KH = d.KW = 3;
    d.wbits = 16;
    d.in = {16, false, 1e-4f};
    d.out = {8, false, 1.0f};
    EXPECT_FALSE(k->supports(d)) << k->name;
    EXPECT_THROW((void)k->create(d, Weights{}), std::invalid_argument) << k->name;
    d.groups = 1;
    d.wbits = 8;
    d.in.bits = 8;  // int8 x int8: the 8-bit kernels' job
    EXPECT_FALSE(k->supports(d)) << k->name;
  }
  for (const auto* k : simd_kernels(OpKind::FullyConnected, "w16a16")) {
    FcDesc f;
    f.K = 10;
    f.OC = 4;
    f.wbits = 16;
    f.in = {16, true, 1e-3f};
    f.out = {8, true, 1.0f};
    std::vector<uint8_t> w(10);  // too few bytes
    std::vector<float> s(4, 0.01f);
    Weights wt;
    wt.data = w.data();
    wt.size = w.size();
    wt.scales = s;
    EXPECT_THROW((void)k->create(f, wt), std::invalid_argument) << k->name;
  }
}

// ---- average pool, global average pool, concat, softmax on 8-bit data ---------------------

// Bit-exact comparison (floats included) of a kernel and the reference on a given layer.
::testing::AssertionResult exact_layer(const KernelInfo& k, const testing::TestLayer& L, ThreadPool* pool) {
  if (!k.supports(L.desc)) return ::testing::AssertionFailure() << k.name << " does not support " << describe(L.desc);
  const testing::TestTensor want = testing::run_kernel(*reference_kernel(L.desc), L);
  const testing::TestTensor got = testing::run_kernel(k, L, pool);
  auto r = testing::same_output(got, want, 0.0);
  if (!r) r << "\n  " << k.name << " on " << describe(L.desc);
  return r;
}

TEST(SimdOps2, AvgPoolSweepExact) {
  const auto kernels = simd_kernels(OpKind::AvgPool2D, "avg_pool2d_a8_");
  if (kernels.empty()) GTEST_SKIP() << "no SIMD avg pool kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 5000;
  int checked = 0;
  for (const auto* k : kernels)
    for (int64_t C : {1, 7, 8, 16, 17, 33, 64, 65, 130})
      for (int kk : {2, 3, 5})
        for (int s : {1, 2}) {
          PoolDesc d;
          d.kind = PoolKind::Avg;
          d.N = seed % 5 == 0 ? 2 : 1;
          d.H = 7 + static_cast<int64_t>(seed % 3);
          d.W = 6;
          d.C = C;
          d.KH = d.KW = kk;
          d.stride_h = d.stride_w = s;
          d.pad_top = d.pad_left = static_cast<int>(seed % static_cast<uint64_t>(kk));
          d.pad_bottom = d.pad_right = static_cast<int>((seed / 2) % static_cast<uint64_t>(kk));
          d.count_include_pad = seed % 2 == 0;
          const bool sgn = (seed / 3) % 2 == 0;
          d.in = {seed % 7 == 0 ? 4 : 8, sgn, 0.05f};
          d.out = {8, (seed / 5) % 2 == 0 ? sgn : false, 0.05f};
          if (seed % 4 == 3) d.out = {32, false, 1.0f};  // the float path (f32 out)
          // Half on the input grid (exact integer average, ties), half requantized.
          const bool same = seed % 2 == 1;
          const testing::TestLayer L = testing::make_layer(d, seed, same);
          EXPECT_TRUE(exact_layer(*k, L, seed % 3 == 0 ? &pool : nullptr)) << "seed " << seed;
          ++seed;
          ++checked;
        }
  EXPECT_EQ(checked, 54 * static_cast<int>(kernels.size()));  // every shape on every kernel
}

TEST(SimdOps2, GlobalAvgPoolExact) {
  const auto kernels = simd_kernels(OpKind::GlobalAvgPool, "global_avg_pool_a8_");
  if (kernels.empty()) GTEST_SKIP() << "no SIMD global avg pool kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 6000;
  for (const auto* k : kernels)
    for (auto [H, W] : {std::pair<int64_t, int64_t>{1, 1}, {3, 5}, {7, 7}, {14, 14}, {56, 56}})
      for (int64_t C : {1, 9, 16, 31, 64, 100, 1280}) {
        if (H * W * C > 200000) continue;
        for (int v = 0; v < 4; ++v) {
          PoolDesc d;
          d.kind = PoolKind::GlobalAvg;
          d.N = v == 2 ? 2 : 1;
          d.H = H;
          d.W = W;
          d.C = C;
          d.in = {8, v == 1, 0.02f};
          d.out = {8, v == 1, 0.02f};
          if (v == 3) d.out = {32, false, 1.0f};  // float output (ResNet-18's pool before its fc)
          const testing::TestLayer L = testing::make_layer(d, seed, v == 0);
          EXPECT_TRUE(exact_layer(*k, L, v == 2 ? &pool : nullptr)) << "seed " << seed;
          // All inputs at the top (or bottom) of the grid.
          testing::TestLayer X = testing::make_layer(d, seed, true);
          for (int64_t i = 0; i < X.inputs[0].size(); ++i) X.inputs[0].set_int(i, v == 1 ? -127 : 255);
          EXPECT_TRUE(exact_layer(*k, X, nullptr)) << "extreme, seed " << seed;
          ++seed;
        }
      }
}

// Every window sum a count can produce, for many counts and grids: channel t
// of a global pool over H x W = count positions sums to t (or -t signed), so
// the division (exact ties included) is checked exhaustively.
TEST(SimdOps2, AvgDivisionAllSumsExact) {
  const auto kernels = simd_kernels(OpKind::GlobalAvgPool, "global_avg_pool_a8_");
  if (kernels.empty()) GTEST_SKIP() << "no SIMD global avg pool kernel for this CPU";
  uint64_t seed = 6500;
  for (const auto* k : kernels)
    for (auto [H, W] : {std::pair<int64_t, int64_t>{1, 1}, {1, 2}, {1, 3}, {2, 2}, {1, 5}, {2, 3}, {1, 7}, {2, 4},
                        {3, 3}, {2, 5}, {3, 4}, {2, 7}, {5, 5}, {7, 7}})
      for (int g = 0; g < 4; ++g) {
        const bool sgn = g == 1;
        const int64_t count = H * W, vmax = sgn ? 127 : 255;
        PoolDesc d;
        d.kind = PoolKind::GlobalAvg;
        d.H = H;
        d.W = W;
        d.C = vmax * count + 1;
        d.in = {8, sgn, 0.02f};
        // same grid, then output steps of 0.7x, 3x and 1/7x the input's
        const float f[] = {1.0f, 0.7f, 3.0f, 1.0f / 7.0f};
        d.out = {8, sgn, 0.02f * f[g]};
        testing::TestLayer L = testing::make_layer(d, seed++, true);
        for (int64_t t = 0; t < d.C; ++t) {
          int64_t left = t;
          for (int64_t pos = 0; pos < count; ++pos) {
            const int64_t v = std::min(left, vmax);
            left -= v;
            L.inputs[0].set_int(pos * d.C + t, sgn ? -v : v);
          }
        }
        EXPECT_TRUE(exact_layer(*k, L, nullptr)) << "count " << count << " grid " << g;
      }
}

TEST(SimdOps2, ConcatExact) {
  const auto kernels = simd_kernels(OpKind::Concat, "concat_a8_");
  if (kernels.empty()) GTEST_SKIP() << "no SIMD concat kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 7000;
  for (const auto* k : kernels)
    for (int64_t outer : {1, 3, 49})
      for (int64_t inner : {1, 5})
        for (int v = 0; v < 6; ++v) {
          ConcatDesc d;
          d.outer = outer;
          d.inner = inner;
          d.sizes = v % 2 ? std::vector<int64_t>{17, 64, 3} : std::vector<int64_t>{32, 1, 100, 7};
          d.out = {8, v == 3, 0.1f};
          for (size_t i = 0; i < d.sizes.size(); ++i) {
            QuantInfo q{8, false, 0.1f};
            if (v >= 2 && i == 1) q.scale = 0.037f;  // requantized
            if (v >= 3 && i == 0) q.is_signed = true;  // signed into unsigned clamps (v == 3: both signed)
            if (v == 5 && i == 2) q.bits = 4;
            if (v == 4) q.scale = 0.25f;  // every input requantized, multiplier > 1
            d.in.push_back(q);
          }
          const testing::TestLayer L = testing::make_layer(d, seed, true);
          EXPECT_TRUE(exact_layer(*k, L, v % 2 ? &pool : nullptr)) << "seed " << seed << " v " << v;
          ++seed;
        }
}

TEST(SimdOps2, SoftmaxExact) {
  const auto kernels = simd_kernels(OpKind::Softmax, "softmax_a8_");
  if (kernels.empty()) GTEST_SKIP() << "no SIMD softmax kernel for this CPU";
  ThreadPool pool(2);
  uint64_t seed = 8000;
  for (const auto* k : kernels)
    for (int64_t A : {1, 2, 7, 10, 31, 32, 33, 100, 255, 256, 1000, 3000})
      for (int v = 0; v < 4; ++v) {
        SoftmaxDesc d;
        d.outer = v == 2 ? 2 : 1;
        d.axis_size = A;
        d.inner = v == 3 ? 3 : 1;
        d.in = {8, v % 2 == 1, v == 0 ? 0.1f : 0.05f};
        if (v == 2) d.out = {8, false, 1.0f / 255.0f};
        if (v == 3) d.out = {16, false, 1.0f / 65535.0f};
        const testing::TestLayer L = testing::make_layer(d, seed, true);
        EXPECT_TRUE(exact_layer(*k, L, v == 1 ? &pool : nullptr)) << "seed " << seed;
        // Narrow value ranges (table by value) and constant rows.
        testing::TestLayer N = testing::make_layer(d, seed, true);
        for (int64_t i = 0; i < N.inputs[0].size(); ++i) N.inputs[0].set_int(i, v == 1 ? -127 + (i % 3) : 200 + (i * 7) % 5);
        EXPECT_TRUE(exact_layer(*k, N, nullptr)) << "narrow, seed " << seed;
        ++seed;
      }
}

TEST(SimdOps2, ChosenUnderEachCapExact) {
  uint64_t seed = 9000;
  for (Isa cap : testing::isa_caps()) {
    PoolDesc ap;
    ap.kind = PoolKind::Avg;
    ap.H = ap.W = 14;
    ap.C = 96;
    ap.KH = ap.KW = 3;
    ap.stride_h = ap.stride_w = 2;
    ap.pad_top = ap.pad_left = ap.pad_bottom = ap.pad_right = 1;
    ap.in = ap.out = {8, false, 0.03f};
    PoolDesc gp;
    gp.kind = PoolKind::GlobalAvg;
    gp.H = gp.W = 7;
    gp.C = 320;
    gp.in = {8, false, 0.03f};
    gp.out = {8, false, 0.01f};
    ConcatDesc cc;
    cc.outer = 28 * 28;
    cc.sizes = {64, 32};
    cc.in = {{8, false, 0.03f}, {8, false, 0.02f}};
    cc.out = {8, false, 0.03f};
    SoftmaxDesc sm;
    sm.axis_size = 1000;
    sm.in = {8, true, 0.1f};
    PoolDesc gf = gp;  // ResNet-18's global pool: 8-bit in, float out
    gf.C = 512;
    gf.out = {32, false, 1.0f};
    for (const OpDesc& d : {OpDesc{ap}, OpDesc{gp}, OpDesc{gf}, OpDesc{cc}, OpDesc{sm}}) {
      const KernelInfo* k = choose_kernel(d, cap).info;
      EXPECT_TRUE(isa_at_most(k->isa, cap)) << k->name;
      if (cap != Isa::Reference) EXPECT_NE(k->isa, Isa::Reference) << "cap " << isa_name(cap) << ": " << k->name;
      EXPECT_TRUE(exact_layer(*k, testing::make_layer(d, seed++, true), nullptr));
    }
  }
}

}  // namespace
}  // namespace bbits::kernels
