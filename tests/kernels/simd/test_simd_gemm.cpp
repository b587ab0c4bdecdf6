// SIMD conv / fully connected kernels (kernels/simd/) against the reference
// kernels: exact integer agreement over shape sweeps (every K / OC tail, H/W/C,
// stride, padding, dilation), signed and unsigned inputs, every output kind,
// fused activations, one and two threads — for every SIMD kernel this CPU can
// run (each kernel is one ISA: AVX2 and AVX-512 VNNI are both exercised).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "../kernel_tester.h"
#include "bbits/kernels/cpu.h"
#include "bbits/kernels/kernels.h"
#include "bbits/kernels/simd.h"
#include "bbits/kernels/thread_pool.h"
#include "simd/common.h"

// OpenMP's setter when the kernels link an OpenMP runtime (oneDNN's OpenMP
// build); null in a lean build.
extern "C" __attribute__((weak)) void omp_set_num_threads(int);

namespace bbits::kernels {
namespace {

// Exact agreement with the reference; when the random layer is degenerate
// (e.g. an output scale so small that the requantization multiplier reaches
// 2^31) the reference rejects it, and so must the SIMD kernel.
::testing::AssertionResult matches_reference(const KernelInfo& k, const OpDesc& d, uint64_t seed,
                                             ThreadPool* pool = nullptr, double tol = 1e-4) {
  try {
    return testing::matches_reference(k, d, seed, pool, tol);
  } catch (const std::invalid_argument& e) {
    const testing::TestLayer L = testing::make_layer(d, seed);
    try {
      (void)k.create(L.desc, L.weights.view());
    } catch (const std::invalid_argument&) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "reference rejected the layer (" << e.what() << ") but " << k.name
                                         << " accepted it";
  }
}

std::vector<const KernelInfo*> simd_kernels(OpKind op) {
  std::vector<const KernelInfo*> out;
  const Isa machine = max_supported_isa(cpu_features());
  for (const auto& k : kernel_table())
    if (k.op == op && k.isa != Isa::Reference && isa_at_most(k.isa, machine)) out.push_back(&k);
  return out;
}

struct Quant {
  QuantInfo in, out;
  Activation act;
};

std::vector<Quant> quant_cases() {
  return {
      {{8, false, 0.02f}, {8, false, 1.0f}, Activation::Relu},
      {{8, true, 0.03f}, {8, true, 1.0f}, Activation::None},
      {{4, false, 0.1f}, {4, false, 1.0f}, Activation::Relu6},
      {{2, false, 0.3f}, {16, true, 1.0f}, Activation::None},
      {{8, false, 0.05f}, {32, false, 1.0f}, Activation::Relu},
  };
}

// Every SIMD level of this machine's ladder (AVX2 up, or NEON up) has a
// kernel of its own width for 2-, 4- and 8-bit weights, and a cap excludes
// every kernel above it.
TEST(SimdGemm, TableHasKernelsForEveryWeightWidth) {
  const std::vector<Isa> caps = testing::isa_caps();
  if (caps.size() < 2) GTEST_SKIP() << "no SIMD level on this CPU";
  for (int wb : {2, 4, 8}) {
    FcDesc f;
    f.K = 64;
    f.OC = 32;
    f.wbits = wb;
    f.in = {8, false, 0.1f};
    f.out = {8, false, 0.1f};
    for (Isa cap : caps) {
      bool native = false;
      for (const auto* k : candidates(f, cap)) {
        EXPECT_TRUE(isa_at_most(k->isa, cap)) << k->name << " above cap " << isa_name(cap);
        native |= k->isa != Isa::Reference && k->weight_bits == wb;
        if (cap == Isa::Reference) EXPECT_EQ(k->isa, Isa::Reference) << k->name;
      }
      if (cap != Isa::Reference) EXPECT_TRUE(native) << "no SIMD kernel for w" << wb << " at " << isa_name(cap);
    }
  }
}

TEST(SimdGemm, FullyConnectedSweepExact) {
  const auto kernels = simd_kernels(OpKind::FullyConnected);
  if (kernels.empty()) GTEST_SKIP() << "no SIMD fc kernel for this CPU";
  int checked = 0;
  uint64_t seed = 1;
  for (const auto* k : kernels) {
    if (k->weight_bits == 32) continue;  // float kernels: FloatKernelsWithinRounding
    for (const Quant& q : quant_cases()) {
      for (int wb : {2, 4, 8}) {
        FcDesc base;
        base.N = (seed % 3 == 0) ? 3 : 1;
        base.wbits = wb;
        base.in = q.in;
        base.out = q.out;
        base.activation = q.act;
        testing::sweep_fc_shapes(base, [&](const FcDesc& d) {
          if (!k->supports(d)) return;
          EXPECT_TRUE(matches_reference(*k, d, seed++));
          ++checked;
        }, 200, 70);
      }
    }
  }
  EXPECT_GT(checked, 1000);
}

TEST(SimdGemm, ConvSweepExact) {
  const auto kernels = simd_kernels(OpKind::Conv2D);
  if (kernels.empty()) GTEST_SKIP() << "no SIMD conv kernel for this CPU";
  int checked = 0;
  uint64_t seed = 1000;
  for (const auto* k : kernels) {
    if (k->weight_bits == 32) continue;
    const auto qs = quant_cases();
    for (int wb : {2, 4, 8}) {
      const Quant& q = qs[static_cast<size_t>(wb + seed) % qs.size()];
      ConvDesc base;
      base.wbits = wb;
      base.in = q.in;
      base.out = q.out;
      base.activation = q.act;
      testing::sweep_conv_shapes(base, [&](const ConvDesc& d) {
        if (!k->supports(d)) return;
        EXPECT_TRUE(matches_reference(*k, d, seed++));
        ++checked;
      });
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(SimdGemm, LargerShapesWithThreads) {
  ThreadPool pool(2);
  uint64_t seed = 5000;
  for (const auto* k : simd_kernels(OpKind::Conv2D)) {
    if (k->weight_bits == 32) continue;
    for (int wb : {2, 4, 8}) {
      ConvDesc d;
      d.N = 2;
      d.H = 9;
      d.W = 10;
      d.C = 48;
      d.OC = 80;
      d.KH = d.KW = 3;
      d.stride_h = d.stride_w = 2;
      d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
      d.dilation_w = 2;
      d.wbits = wb;
      d.in = {8, true, 0.05f};
      d.out = {8, false, 1.0f};
      d.activation = Activation::Relu;
      if (!k->supports(d)) continue;
      EXPECT_TRUE(matches_reference(*k, d, seed++, &pool));
      ConvDesc u = d;  // unsigned input: the implicit (no im2col) convolution path
      u.in = {8, false, 0.05f};
      u.dilation_w = 1;
      u.dilation_h = 2;
      u.pad_bottom = 0;
      EXPECT_TRUE(matches_reference(*k, u, seed++, &pool));
      u.KH = u.KW = 1;  // 1x1 stride 2
      u.dilation_h = 1;
      u.pad_top = u.pad_left = u.pad_bottom = u.pad_right = 0;
      EXPECT_TRUE(matches_reference(*k, u, seed++, &pool));
      ConvDesc p = d;  // 1x1 pointwise, direct (no im2col) path
      p.KH = p.KW = 1;
      p.stride_h = p.stride_w = 1;
      p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = 0;
      p.dilation_w = 1;
      p.C = 64;
      p.in = {8, false, 0.05f};
      EXPECT_TRUE(matches_reference(*k, p, seed++, &pool));
    }
  }
  for (const auto* k : simd_kernels(OpKind::FullyConnected)) {
    if (k->weight_bits == 32) continue;
    for (int wb : {2, 4, 8}) {
      FcDesc f;
      f.N = 1;
      f.K = 1030;
      f.OC = 300;
      f.wbits = wb;
      f.in = {8, false, 0.01f};
      f.out = {8, true, 1.0f};
      if (!k->supports(f)) continue;
      EXPECT_TRUE(matches_reference(*k, f, seed++, &pool));
    }
  }
}

TEST(SimdGemm, FloatKernelsWithinRounding) {
  uint64_t seed = 9000;
  for (OpKind op : {OpKind::Conv2D, OpKind::FullyConnected})
    for (const auto* k : simd_kernels(op)) {
      if (k->weight_bits != 32) continue;
      if (op == OpKind::FullyConnected) {
        FcDesc f;
        f.N = 2;
        f.wbits = 32;
        f.in = {32, false, 1.0f};
        f.out = {32, false, 1.0f};
        f.activation = Activation::Relu;
        testing::sweep_fc_shapes(f, [&](const FcDesc& d) {
          EXPECT_TRUE(matches_reference(*k, d, seed++, nullptr, 1e-4));
        }, 130, 17);
        f.wbits = 4;
        f.K = 40;
        f.OC = 9;
        EXPECT_TRUE(matches_reference(*k, f, seed++, nullptr, 1e-4));
      } else {
        ConvDesc c;
        c.wbits = 32;
        c.in = {32, true, 1.0f};
        c.out = {8, true, 1.0f};
        c.activation = Activation::Relu6;
        testing::sweep_conv_shapes(c, [&](const ConvDesc& d) {
          if (!k->supports(d)) return;
          // Integer outputs of a float layer may differ by one step where the
          // float sum lands on a rounding boundary: compare to the float truth.
          const auto L = testing::make_layer(d, seed++);
          const auto got = testing::run_kernel(*k, L);
          EXPECT_TRUE(testing::within_float_tolerance(L, got, 1.0));
        });
      }
    }
}

// Under every ISA cap this machine supports, the kernel the table chooses
// (and BBITS_MAX_ISA's parsing of the cap) computes exactly what the reference does.
TEST(SimdGemm, ChosenKernelExactUnderEveryIsaCap) {
  for (Isa cap : testing::isa_caps()) {
    EXPECT_EQ(detect_isa(cpu_features(), isa_name(cap)), cap);
    uint64_t seed = 7000 + static_cast<uint64_t>(cap);
    for (int wb : {2, 4, 8}) {
      ConvDesc c;
      c.H = 10;
      c.W = 9;
      c.C = 24;
      c.OC = 40;
      c.KH = c.KW = 3;
      c.pad_top = c.pad_left = c.pad_bottom = c.pad_right = 1;
      c.wbits = wb;
      c.in = {8, false, 0.02f};
      c.out = {8, false, 1.0f};
      c.activation = Activation::Relu;
      const auto* k = choose_kernel(c, cap).info;
      EXPECT_TRUE(isa_at_most(k->isa, cap)) << k->name;
      EXPECT_TRUE(matches_reference(*k, c, seed++)) << k->name;
      FcDesc f;
      f.K = 300;
      f.OC = 70;
      f.wbits = wb;
      f.in = {8, false, 0.02f};
      f.out = {8, true, 1.0f};
      const auto* kf = choose_kernel(f, cap).info;
      EXPECT_TRUE(isa_at_most(kf->isa, cap)) << kf->name;
      EXPECT_TRUE(matches_reference(*kf, f, seed++)) << kf->name;
      ConvDesc dw = c;
      dw.C = dw.OC = 40;
      dw.groups = 40;
      const auto* kd = choose_kernel(dw, cap).info;
      EXPECT_TRUE(isa_at_most(kd->isa, cap)) << kd->name;
      EXPECT_TRUE(matches_reference(*kd, dw, seed++)) << kd->name;
    }
  }
}

// Exact agreement at a given output scale. mult_max 0: the scale make_layer
// calibrates, which keeps every requantization multiplier far below 1;
// otherwise the output scale that makes the largest multiplier s_w * s_in /
// s_out about mult_max: kNearOne gives multipliers just under 1 (shifts
// below 32), values above 1 give requantized sums that leave int32 before
// the output clamp (2-bit weights with ReLU6 outputs have them).
constexpr double kNearOne = 1.0 / 1.0001;
::testing::AssertionResult matches_at_out_scale(const KernelInfo& k, ConvDesc d, uint64_t seed, ThreadPool* pool,
                                                double mult_max) {
  testing::TestLayer L = testing::make_layer(d, seed, /*keep_out_scale=*/mult_max <= 0.0);
  if (mult_max > 0.0) {
    float mx = 0.0f;
    for (float s : L.weights.scales) mx = std::max(mx, s);
    std::get<ConvDesc>(L.desc).out.scale = static_cast<float>(static_cast<double>(mx) * d.in.scale / mult_max);
  }
  if (!k.supports(L.desc)) return ::testing::AssertionFailure() << k.name << " does not support " << describe(L.desc);
  const testing::TestTensor want = testing::run_kernel(*reference_kernel(L.desc), L);
  const testing::TestTensor got = testing::run_kernel(k, L, pool);
  auto r = testing::same_output(got, want);
  if (!r) r << "\n  kernel " << k.name << " on " << describe(L.desc) << " seed " << seed;
  return r;
}

// The oneDNN int8 wrapper on layers whose int32 result exceeds one slab
// (128 KB: OW * OC * 4 bytes per output row): several primitives (top slab
// with the top padding, middle slabs, a shorter bottom slab with the bottom
// padding), odd heights, strides, dilation, uneven padding on every side,
// batches, two threads; then the flat requantization on its own (channel
// counts whose period is not one vector, every tail) and at multipliers near 1.
TEST(SimdGemm, OnednnSlabsAndFlatEpilogueExact) {
  const KernelInfo* k = find_kernel("conv2d_w8a8_u8s8s32_onednn");
  if (k == nullptr || !isa_at_most(k->isa, max_supported_isa(cpu_features()))) GTEST_SKIP() << "no oneDNN int8 kernel";
  ThreadPool pool(2);
  uint64_t seed = 11000;
  const auto qs = quant_cases();
  int checked = 0;
  for (size_t qi = 0; qi < qs.size(); ++qi) {
    const Quant& q = qs[qi];
    ConvDesc d;  // 3x3 stride 1, padding 1: OH = 13 rows of 64 KB -> 7 slabs (2, ..., 2, 1)
    d.H = 13;
    d.W = 64;
    d.C = 8;
    d.OC = 256;
    d.KH = d.KW = 3;
    d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
    d.wbits = qi % 2 == 0 ? 8 : 4;
    d.in = q.in;
    d.out = q.out;
    d.activation = q.act;
    EXPECT_TRUE(matches_reference(*k, d, seed++, qi % 2 == 0 ? nullptr : &pool));
    ++checked;
    ConvDesc s = d;  // 5x5 stride 2, dilated rows, uneven padding: OW = 64, OH = 9
    s.H = 23;
    s.W = 130;
    s.C = 4;
    s.KH = s.KW = 5;
    s.stride_h = s.stride_w = 2;
    s.dilation_h = 2;
    s.pad_top = 2;
    s.pad_bottom = 1;
    s.pad_left = 2;
    s.pad_right = 0;
    s.N = qi == 0 ? 2 : 1;
    EXPECT_TRUE(matches_reference(*k, s, seed++, qi % 2 == 0 ? &pool : nullptr));
    ++checked;
  }
  // Padding larger than one slab's input rows (3 output rows per slab).
  ConvDesc p;
  p.H = 10;
  p.W = 43;
  p.C = 3;
  p.OC = 256;
  p.KH = p.KW = 7;
  p.pad_top = 3;
  p.pad_bottom = 2;
  p.pad_left = p.pad_right = 3;
  p.wbits = 8;
  p.in = {8, false, 0.02f};
  p.out = {8, false, 1.0f};
  p.activation = Activation::Relu;
  EXPECT_TRUE(matches_reference(*k, p, seed++));
  // Flat requantization: channel counts 6, 24, 40, 144 (periods of 192, 192,
  // 320, 576 values), 1000 (row epilogue), odd pixel counts.
  for (int64_t oc : {6, 24, 40, 144, 1000}) {
    for (int near_one = 0; near_one < 2; ++near_one) {
      ConvDesc f;
      f.H = 7;
      f.W = 5;
      f.C = 8;
      f.OC = oc;
      f.KH = f.KW = 1;
      f.wbits = 2;
      f.in = {2, false, 0.25f};
      f.out = {8, near_one == 1, 1.0f};
      f.activation = near_one == 1 ? Activation::None : Activation::Relu;
      EXPECT_TRUE(matches_at_out_scale(*k, f, seed++, nullptr, near_one == 1 ? kNearOne : 0.0));
      f.out = {4, false, 1.0f};  // clamp to [0, 15] after the saturating packs
      f.activation = Activation::Relu6;
      EXPECT_TRUE(matches_at_out_scale(*k, f, seed++, oc == 144 ? &pool : nullptr, near_one == 1 ? kNearOne : 0.0));
      checked += 2;
      // Multipliers above 1: clamped in 64 bits before the 32-bit blend.
      f.out = {8, near_one == 1, 1.0f};
      f.activation = near_one == 1 ? Activation::Relu6 : Activation::None;
      for (double mult : {3.0, 1.0e6}) {
        EXPECT_TRUE(matches_at_out_scale(*k, f, seed++, oc == 40 ? &pool : nullptr, mult));
        ++checked;
      }
    }
  }
  EXPECT_GE(checked, 30);
}

// Kernels that report finished output ranges (KernelArgs::done, used to fuse
// residual adds): every output element is reported exactly once, and when a
// range is reported its values are already the final ones. Layers large
// enough for the oneDNN wrapper's row slabs, and small ones that split
// channel panels over two threads; the output is exact against the reference.
TEST(SimdGemm, FinishedOutputRangesReportedOnceAndFinal) {
  ThreadPool pool(2);
  uint64_t seed = 14000;
  int checked = 0;
  std::vector<const KernelInfo*> ks = simd_kernels(OpKind::Conv2D);
  for (const KernelInfo* k : simd_kernels(OpKind::FullyConnected)) ks.push_back(k);
  for (const KernelInfo* k : ks) {
    for (int variant = 0; variant < 3; ++variant) {
      OpDesc d;
      if (k->op == OpKind::FullyConnected) {
        FcDesc f;
        f.N = variant == 0 ? 1 : 9;
        f.K = 96;
        f.OC = 40;
        f.wbits = k->weight_bits == 32 ? 8 : k->weight_bits;
        f.in = {8, false, 0.02f};
        f.out = {8, false, 1.0f};
        d = f;
      } else {
        ConvDesc c;
        c.H = c.W = variant == 0 ? 56 : variant == 1 ? 7 : 13;
        c.C = variant == 1 ? 256 : 32;
        c.OC = variant == 1 ? 256 : 64;
        c.KH = c.KW = variant == 1 ? 1 : 3;
        c.pad_top = c.pad_left = c.pad_bottom = c.pad_right = c.KH / 2;
        c.wbits = k->weight_bits == 32 ? 8 : k->weight_bits;
        c.in = {8, false, 0.02f};
        c.out = {8, variant == 2, 1.0f};
        c.activation = variant == 2 ? Activation::None : Activation::Relu;
        d = c;
      }
      if (!k->supports(d)) continue;
      const testing::TestLayer L = testing::make_layer(d, seed++);
      const auto kernel = k->create(L.desc, L.weights.view());
      if (!kernel->reports_done()) break;
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        const int64_t n = output_elements(L.desc);
        const size_t esz = element_bytes(output_quant(L.desc).bits);
        testing::TestTensor out(output_quant(L.desc), n);
        out.fill(0x5A);
        std::vector<uint8_t> seen(static_cast<size_t>(n) * esz, 0), count(static_cast<size_t>(n), 0);
        std::mutex mu;
        struct Ctx {
          const uint8_t* out;
          size_t esz;
          std::vector<uint8_t>* seen;
          std::vector<uint8_t>* count;
          std::mutex* mu;
        } ctx{static_cast<const uint8_t*>(out.data()), esz, &seen, &count, &mu};
        DoneFn done;
        done.ctx = &ctx;
        done.fn = [](const void* c, int64_t b, int64_t e) {
          const auto* x = static_cast<const Ctx*>(c);
          std::lock_guard<std::mutex> lock(*x->mu);
          for (int64_t i = b; i < e; ++i) ++(*x->count)[static_cast<size_t>(i)];
          std::memcpy(x->seen->data() + b * x->esz, x->out + b * x->esz, static_cast<size_t>(e - b) * x->esz);
        };
        testing::run_kernel_into(*kernel, L, out, p, &done);
        int64_t wrong = 0;
        for (uint8_t c : count) wrong += c != 1;
        EXPECT_EQ(wrong, 0) << k->name << " " << describe(L.desc) << ": elements not reported exactly once";
        EXPECT_EQ(std::memcmp(seen.data(), out.data(), seen.size()), 0)
            << k->name << " " << describe(L.desc) << ": a range was reported before it was final";
        EXPECT_TRUE(testing::same_output(out, testing::run_kernel(*reference_kernel(L.desc), L)))
            << k->name << " " << describe(L.desc);
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0);
}

// Threads of this process (Linux: /proc/self/task), -1 where unknown.
int process_threads() {
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/self/task", ec);
  if (ec) return -1;
  int n = 0;
  for (; it != std::filesystem::directory_iterator(); ++it) ++n;
  return n;
}

// The kernels built on oneDNN (the OpenMP build) run on the threads they are
// given and no others: with no pool on the calling thread alone, with a pool
// of 2 on the caller and its one worker, however many threads OpenMP is set
// to use (4 here: any OpenMP region would start 3 more). Results exact.
TEST(SimdGemm, OnednnKernelsRunOnlyOnTheThreadsTheyAreGiven) {
  const int before = process_threads();
  if (before < 0) GTEST_SKIP() << "no /proc/self/task";
  std::vector<const KernelInfo*> ks;
  for (const char* name : {"conv2d_w8a8_u8s8s32_onednn", "fc_w8a8_u8s8s32_onednn", "conv2d_w32a32_f32_onednn",
                           "fc_w32a32_f32_onednn"}) {
    const KernelInfo* k = find_kernel(name);
    if (k != nullptr && isa_at_most(k->isa, max_supported_isa(cpu_features()))) ks.push_back(k);
  }
  if (ks.empty()) GTEST_SKIP() << "no oneDNN kernels";
  if (omp_set_num_threads != nullptr) omp_set_num_threads(4);
  uint64_t seed = 13000;
  auto run_all = [&](ThreadPool* pool) {
    for (const KernelInfo* k : ks) {
      const bool f32 = k->weight_bits == 32;
      OpDesc d;
      if (k->op == OpKind::Conv2D) {
        ConvDesc c;  // large enough that oneDNN would split it: 64 output rows
        c.H = c.W = 64;
        c.C = 32;
        c.OC = 64;
        c.KH = c.KW = 3;
        c.pad_top = c.pad_left = c.pad_bottom = c.pad_right = 1;
        c.wbits = f32 ? 32 : 8;
        c.in = {f32 ? 32 : 8, false, 0.02f};
        c.out = {8, false, 1.0f};
        c.activation = Activation::Relu;
        d = c;
      } else {
        FcDesc f;
        f.N = 4;
        f.K = 1024;
        f.OC = 512;
        f.wbits = f32 ? 32 : 8;
        f.in = {f32 ? 32 : 8, false, 0.02f};
        f.out = {8, false, 1.0f};
        d = f;
      }
      if (f32) {
        const testing::TestLayer L = testing::make_layer(d, seed++);
        const testing::TestTensor out = testing::run_kernel(*k, L, pool);
        EXPECT_EQ(out.size(), output_elements(L.desc));
      } else {
        EXPECT_TRUE(matches_reference(*k, d, seed++, pool)) << k->name;
      }
    }
  };
  run_all(nullptr);
  EXPECT_EQ(process_threads(), before) << "a oneDNN kernel started threads of its own on one thread";
  {
    ThreadPool pool(2);
    run_all(&pool);
    EXPECT_EQ(process_threads(), before + 1) << "a oneDNN kernel started threads beside the pool's worker";
  }
}

// The oneDNN int8 wrapper on layers below one slab, run on 2 and 3 threads:
// one row slab per thread (a top and a bottom primitive sharing the layer's
// weights), heights that do not divide (7 rows on 2 and 3 threads, 1 row),
// strides, dilation, uneven padding, depthwise, batches (2 images: one slab
// each on 2 threads, 2 each on 3), and the same kernel object alternating between
// thread counts (each count keeps its own slab plan), every output exact.
TEST(SimdGemm, OnednnSmallLayersSplitOverThreadsExact) {
  const KernelInfo* k = find_kernel("conv2d_w8a8_u8s8s32_onednn");
  if (k == nullptr || !isa_at_most(k->isa, max_supported_isa(cpu_features()))) GTEST_SKIP() << "no oneDNN int8 kernel";
  ThreadPool two(2), three(3);
  uint64_t seed = 11500;
  const auto qs = quant_cases();
  int checked = 0;
  for (int64_t oh : {1, 2, 7, 14}) {
    for (int variant = 0; variant < 4; ++variant) {
      const Quant& q = qs[static_cast<size_t>(variant + oh) % qs.size()];
      ConvDesc d;
      d.H = oh;
      d.W = 9;
      d.C = 16;
      d.OC = 24;
      d.KH = d.KW = 3;
      d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
      d.wbits = variant % 2 == 0 ? 8 : 4;
      d.in = q.in;
      d.out = q.out;
      d.activation = q.act;
      if (variant == 1) {  // stride 2, dilated rows, uneven padding
        d.H = 2 * oh + 3;
        d.stride_h = d.stride_w = 2;
        d.dilation_h = 2;
        d.pad_top = 2;
        d.pad_bottom = 0;
      } else if (variant == 2) {  // depthwise
        d.C = d.OC = 32;
        d.groups = 32;
      } else if (variant == 3) {  // a batch, 1x1
        d.N = 2;
        d.KH = d.KW = 1;
        d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 0;
      }
      const testing::TestLayer L = testing::make_layer(d, seed++);
      testing::TestTensor want;
      try {
        want = testing::run_kernel(*reference_kernel(L.desc), L);
      } catch (const std::invalid_argument&) {
        continue;  // a degenerate random layer (see matches_reference)
      }
      const auto kernel = k->create(L.desc, L.weights.view());
      for (ThreadPool* pool : {&two, static_cast<ThreadPool*>(nullptr), &three, &two}) {
        const int threads = pool ? pool->num_threads() : 1;
        EXPECT_TRUE(testing::same_output(testing::run_kernel(*kernel, L, pool), want))
            << describe(L.desc) << " on " << threads << " threads";
        ++checked;
      }
    }
  }
  EXPECT_GE(checked, 48);
}

// The packed-byte tile epilogue of the GEMM conv kernels (8-bit outputs):
// rows of 16 / 32 / 48 / 64 channels per panel (whole stores) and of other
// counts (one masked store), every output kind, multipliers far below,
// just under and above 1, 8-bit and sub-byte weights (row corrections).
TEST(SimdGemm, GemmTileEpilogueExact) {
  ThreadPool pool(2);
  uint64_t seed = 12000;
  int checked = 0;
  for (const auto* k : simd_kernels(OpKind::Conv2D)) {
    if (k->weight_bits == 32 || k->name.find("onednn") != std::string::npos) continue;
    for (int64_t oc : {32, 64, 128, 96, 80, 24, 40, 48, 113}) {
      for (int variant = 0; variant < 4; ++variant) {
        ConvDesc d;
        d.H = 9;
        d.W = 7;
        d.C = 8;
        d.OC = oc;
        d.KH = d.KW = variant == 3 ? 3 : 1;
        d.stride_h = d.stride_w = variant == 2 ? 2 : 1;
        d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = variant == 3 ? 1 : 0;
        d.wbits = k->weight_bits;
        d.in = {2, false, 0.25f};
        d.out = {8, variant % 2 == 1, 1.0f};
        d.activation = variant == 1 ? Activation::None : Activation::Relu;
        if (variant == 2) d.out = {4, false, 1.0f};
        if (!k->supports(d)) continue;
        EXPECT_TRUE(matches_at_out_scale(*k, d, seed++, variant == 3 ? &pool : nullptr, 0.0));
        EXPECT_TRUE(matches_at_out_scale(*k, d, seed++, nullptr, kNearOne));
        EXPECT_TRUE(matches_at_out_scale(*k, d, seed++, variant == 0 ? &pool : nullptr, 3.0));
        EXPECT_TRUE(matches_at_out_scale(*k, d, seed++, nullptr, 1.0e6));
        checked += 4;
      }
    }
  }
  if (!simd_kernels(OpKind::Conv2D).empty()) EXPECT_GT(checked, 40);
}

// A random layer whose output scale makes the largest channel's real
// multiplier about `mult` (s_w,max * s_in / s_out).
testing::TestLayer layer_at_multiplier(const OpDesc& d, uint64_t seed, double mult, bool float_bias = false) {
  testing::TestLayer L = testing::make_layer(d, seed, /*keep_out_scale=*/false, float_bias);
  float mx = 0.0f;
  for (float sc : L.weights.scales) mx = std::max(mx, sc);
  std::visit(
      [&](auto& x) {
        if constexpr (requires { x.out.scale; x.in.scale; })
          x.out.scale = static_cast<float>(static_cast<double>(mx) * x.in.scale / mult);
      },
      L.desc);
  return L;
}

// Requantization multipliers above 1 (their 64-bit results may leave int32
// before the output clamp) on every SIMD conv, depthwise and fc kernel with
// 8-bit outputs: the fused tile and GEMV epilogues, the row epilogue, the
// oneDNN wrapper's flat requantization; signed and unsigned outputs, ReLU6.
TEST(SimdGemm, MultipliersAboveOneExact) {
  ThreadPool pool(2);
  uint64_t seed = 13000;
  int checked = 0;
  auto check = [&](const KernelInfo& k, OpDesc d, double mult, ThreadPool* p) {
    if (!k.supports(d)) return;
    const testing::TestLayer L = layer_at_multiplier(d, seed++, mult);
    const testing::TestTensor want = testing::run_kernel(*reference_kernel(L.desc), L);
    const testing::TestTensor got = testing::run_kernel(k, L, p);
    EXPECT_TRUE(testing::same_output(got, want)) << k.name << " on " << describe(L.desc) << " seed " << seed - 1;
    ++checked;
  };
  for (const auto* k : simd_kernels(OpKind::Conv2D)) {
    if (k->weight_bits == 32) continue;
    for (int variant = 0; variant < 4; ++variant) {
      ConvDesc d;
      d.H = 9;
      d.W = 11;
      d.C = variant == 3 ? 48 : 16;
      d.OC = variant == 3 ? 48 : 72;
      d.groups = variant == 3 ? 48 : 1;
      d.KH = d.KW = variant == 0 ? 1 : 3;
      d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = variant == 0 ? 0 : 1;
      d.stride_h = d.stride_w = variant == 2 ? 2 : 1;
      d.wbits = k->weight_bits;
      d.in = {8, variant == 1, 0.05f};
      d.out = {8, variant % 2 == 1, 1.0f};
      d.activation = variant % 2 == 1 ? Activation::None : Activation::Relu6;
      for (double mult : {1.5, 3.0, 1.0e6}) check(*k, d, mult, variant == 2 ? &pool : nullptr);
    }
  }
  for (const auto* k : simd_kernels(OpKind::FullyConnected)) {
    if (k->weight_bits == 32) continue;
    for (int64_t oc : {24, 64, 320}) {
      FcDesc f;
      f.N = oc == 64 ? 3 : 1;
      f.K = 200;
      f.OC = oc;
      f.wbits = k->weight_bits;
      f.in = {8, oc == 24, 0.05f};
      f.out = {8, oc == 320, 1.0f};
      f.activation = oc == 320 ? Activation::None : Activation::Relu6;
      for (double mult : {1.5, 3.0, 1.0e6}) check(*k, f, mult, oc == 320 ? &pool : nullptr);
    }
  }
  EXPECT_GT(checked, 40);
}

// 2- and 4-bit weights on the int8 kernels (the GEMM's w8 instances, the
// oneDNN wrapper), which widen them times a power of two per channel
// (weight_upshifts) so that multipliers above 1 drop below it: exact against
// the reference for multipliers from below 1/2 (no upshift) through 1.5..40
// (partial and full upshifts) to 10^6 (capped by int8), with integer and
// float biases (the bias fraction scales too), signed and unsigned inputs and
// outputs, ReLU6, one and two threads; and the upshifts themselves.
TEST(SimdGemm, WidenedSubByteWeightsUpshiftedExact) {
  ThreadPool pool(2);
  uint64_t seed = 15000;
  int checked = 0;
  std::vector<const KernelInfo*> ks;
  for (OpKind op : {OpKind::Conv2D, OpKind::FullyConnected})
    for (const KernelInfo* k : simd_kernels(op))
      if (k->weight_bits == 8) ks.push_back(k);
  for (const KernelInfo* k : ks) {
    for (int wb : {2, 4}) {
      for (int variant = 0; variant < 4; ++variant) {
        OpDesc d;
        if (k->op == OpKind::Conv2D) {
          ConvDesc c;
          c.H = 9;
          c.W = 11;
          c.C = 16;
          c.OC = variant == 3 ? 40 : 72;
          c.KH = c.KW = variant == 0 ? 1 : 3;
          c.pad_top = c.pad_left = c.pad_bottom = c.pad_right = variant == 0 ? 0 : 1;
          c.stride_h = c.stride_w = variant == 2 ? 2 : 1;
          c.wbits = wb;
          c.in = {8, variant == 1, 0.05f};
          c.out = {8, variant % 2 == 1, 1.0f};
          c.activation = variant % 2 == 1 ? Activation::None : Activation::Relu6;
          d = c;
        } else {
          FcDesc f;
          f.N = variant == 2 ? 3 : 1;
          f.K = 200;
          f.OC = variant == 3 ? 24 : 64;
          f.wbits = wb;
          f.in = {8, variant == 1, 0.05f};
          f.out = {8, variant % 2 == 1, 1.0f};
          f.activation = variant % 2 == 1 ? Activation::None : Activation::Relu6;
          d = f;
        }
        if (!k->supports(d)) continue;
        for (double mult : {0.3, 1.5, 3.0, 40.0, 1.0e6}) {
          const testing::TestLayer L = layer_at_multiplier(d, seed++, mult, /*float_bias=*/variant >= 2);
          const testing::TestTensor want = testing::run_kernel(*reference_kernel(L.desc), L);
          ThreadPool* p = variant == 2 ? &pool : nullptr;
          const testing::TestTensor got = testing::run_kernel(*k, L, p);
          EXPECT_TRUE(testing::same_output(got, want))
              << k->name << " on " << describe(L.desc) << " multiplier " << mult << " seed " << seed - 1;
          ++checked;
          // The upshifts: none when every multiplier is below 1/2, else
          // within what int8 holds (2^(8 - bits)).
          const ConvDesc c = k->op == OpKind::Conv2D ? std::get<ConvDesc>(L.desc) : fc_as_conv(std::get<FcDesc>(L.desc));
          const std::vector<int> up = simd::weight_upshifts(c.OC, c.K(), wb, L.weights.view(), c.in, c.out);
          if (mult < 0.5) {
            EXPECT_TRUE(up.empty());
          } else {
            ASSERT_EQ(up.size(), static_cast<size_t>(c.OC));
            for (int j : up) EXPECT_TRUE(j >= 0 && j <= 8 - wb) << j;
            // The channel of the largest multiplier: shift 32 reached (j =
            // 1 + ceil(log2 mult)) unless int8 or int32 hold less.
            const int jmax = *std::max_element(up.begin(), up.end());
            EXPECT_GE(jmax, 1);
            EXPECT_LE(jmax, std::min(8 - wb, 1 + static_cast<int>(std::ceil(std::log2(mult)))));
          }
        }
      }
    }
  }
  if (!ks.empty()) EXPECT_GT(checked, 40);
}

TEST(SimdGemm, BadWeightsRejected) {
  for (const auto* k : simd_kernels(OpKind::FullyConnected)) {
    FcDesc f;
    f.K = 64;
    f.OC = 8;
    f.wbits = k->weight_bits == 32 ? 32 : k->weight_bits;
    f.in = {8, false, 0.1f};
    f.out = {8, false, 0.1f};
    if (!k->supports(f)) continue;
    std::vector<uint8_t> small(10);
    std::vector<float> scales(8, 0.1f);
    Weights w;
    w.data = small.data();
    w.size = small.size();
    w.scales = scales;
    EXPECT_THROW(k->create(f, w), std::invalid_argument) << k->name;
  }
}

// Batch-1 fc layers wide enough for the GEMV to run several full panels of
// 64 channels as parallel weight streams (up to 4 at 8 and 4 bits), with a
// partial last panel or none, rows 1 and 2, threads splitting the panels.
TEST(SimdGemm, FcParallelPanelStreamsExact) {
  ThreadPool pool(2);
  uint64_t seed = 8000;
  int checked = 0;
  for (const auto* k : simd_kernels(OpKind::FullyConnected)) {
    if (k->weight_bits == 32) continue;
    for (int wb : {8, 4, 2}) {
      if (wb > k->weight_bits) continue;
      for (int64_t OC : {128, 192, 255, 256, 257, 320, 448})
        for (int64_t K : {4, 37, 256}) {
          FcDesc f;
          f.N = 1 + (seed % 2);
          f.K = K;
          f.OC = OC;
          f.wbits = wb;
          f.in = {8, false, 0.02f};
          f.out = seed % 3 == 0 ? QuantInfo{8, true, 1.0f} : QuantInfo{8, false, 1.0f};
          f.activation = seed % 3 == 0 ? Activation::None : Activation::Relu;
          if (!k->supports(f)) continue;
          EXPECT_TRUE(matches_reference(*k, f, seed, seed % 4 == 1 ? &pool : nullptr));
          ++seed;
          ++checked;
        }
    }
  }
  EXPECT_GT(checked, 20);
}

// Layers whose weights exceed the GEMV's DRAM threshold (12 MiB) take the
// weight streams with software prefetches; the last panels are partial.
TEST(SimdGemm, FcFarWeightStreamsExact) {
  int checked = 0;
  uint64_t seed = 9100;
  for (const auto* k : simd_kernels(OpKind::FullyConnected)) {
    // The GEMV with weight streams is the AVX-512 VNNI kernels'.
    if (k->weight_bits == 32 || k->name.find("avx512vnni") == std::string::npos) continue;
    for (int wb : {8, 4}) {
      if (wb != k->weight_bits) continue;
      FcDesc f;
      f.N = 1;
      f.K = wb == 8 ? 4096 : 8192;
      f.OC = 3232;  // 50 full panels of 64 channels and a partial one
      f.wbits = wb;
      f.in = {8, false, 0.02f};
      f.out = QuantInfo{8, false, 1.0f};
      f.activation = Activation::Relu;
      if (!k->supports(f)) continue;
      ASSERT_GT(f.K * f.OC * wb / 8, int64_t{12} << 20);
      EXPECT_TRUE(matches_reference(*k, f, seed++, nullptr));
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "no AVX-512 VNNI fc kernel (the weight streams are its GEMV's)";
}

// ---- lookup-table fc (2-bit weights x 2-bit unsigned activations) -------------------
constexpr const char* kLutFc = "fc_w2a2_u2s2_avx512vbmi_lut";

FcDesc lut_desc(int64_t N, int64_t K, int64_t OC, int variant) {
  FcDesc f;
  f.N = N;
  f.K = K;
  f.OC = OC;
  f.wbits = 2;
  f.in = {2, false, 0.25f};
  switch (variant % 5) {
    case 0: f.out = {8, false, 1.0f}, f.activation = Activation::Relu; break;
    case 1: f.out = {16, true, 1.0f}, f.activation = Activation::None; break;
    case 2: f.out = {32, false, 1.0f}, f.activation = Activation::None; break;
    case 3: f.out = {4, false, 1.0f}, f.activation = Activation::Relu6; break;
    default: f.out = {8, true, 1.0f}, f.activation = Activation::None; break;
  }
  return f;
}

const KernelInfo* lut_kernel_or_null() {
  const KernelInfo* k = find_kernel(kLutFc);
  if (k == nullptr || !k->supports(lut_desc(1, 16, 16, 0))) return nullptr;
  return k;
}

// Every K tail (quads of 4, chunks of 7 quads, 64-value input vectors), every
// OC tail (blocks of 64, panels of 4 blocks), 1 and 2 rows, every output kind,
// one and two threads.
TEST(SimdGemm, LutFcSweepExact) {
  const KernelInfo* k = lut_kernel_or_null();
  if (k == nullptr) GTEST_SKIP() << "no AVX-512 VBMI";
  ThreadPool pool(2);
  uint64_t seed = 9000;
  int variant = 0;
  for (int64_t K : {1, 2, 3, 4, 5, 7, 8, 27, 28, 29, 63, 64, 65, 129, 256, 257, 1000})
    for (int64_t OC : {1, 2, 17, 63, 64, 65, 129, 255, 256, 257, 300}) {
      const FcDesc f = lut_desc(1 + variant % 2, K, OC, variant);
      ++variant;
      EXPECT_TRUE(matches_reference(*k, f, seed++, variant % 3 == 0 ? &pool : nullptr));
    }
}

// A reduction long enough to carry the 16-bit sums into 32 bits (more than
// 256 chunks of 7 quads), and the largest sums (every activation 3, every
// weight +1 or -2) that the byte and 16-bit lanes must hold without overflow.
TEST(SimdGemm, LutFcLongReductionAndExtremeValues) {
  const KernelInfo* k = lut_kernel_or_null();
  if (k == nullptr) GTEST_SKIP() << "no AVX-512 VBMI";
  EXPECT_TRUE(matches_reference(*k, lut_desc(1, 7300, 70, 0), 9500));
  EXPECT_TRUE(matches_reference(*k, lut_desc(2, 7300, 70, 1), 9501));
  for (int32_t wv : {1, -2})
    for (int64_t K : {7300, 28}) {
      testing::TestLayer L = testing::make_layer(lut_desc(1, K, 130, 2), 9600 + static_cast<uint64_t>(K));
      L.inputs[0].fill(3);
      std::fill(L.weights.q.begin(), L.weights.q.end(), wv);
      L.weights.packed = testing::pack_rows(L.weights.q, L.weights.rows, L.weights.k, 2);
      const testing::TestTensor want = testing::run_kernel(*reference_kernel(L.desc), L);
      const testing::TestTensor got = testing::run_kernel(*k, L);
      EXPECT_TRUE(testing::same_output(got, want, 1e-6)) << "w = " << wv << ", K = " << K;
      // The sum itself: 3 * w * K per channel, scaled by s_w * s_in plus the bias.
      EXPECT_NE(want.get_float(0), 0.0f);
    }
}

TEST(SimdGemm, LutFcRejectsWhatItCannotRun) {
  const KernelInfo* k = lut_kernel_or_null();
  if (k == nullptr) GTEST_SKIP() << "no AVX-512 VBMI";
  FcDesc f = lut_desc(1, 64, 8, 0);
  f.in = {8, false, 0.1f};
  EXPECT_FALSE(k->supports(f));
  f.in = {2, true, 0.1f};
  EXPECT_FALSE(k->supports(f));
  f = lut_desc(1, 64, 8, 0);
  f.wbits = 4;
  EXPECT_FALSE(k->supports(f));
  // Too few weight bytes.
  f = lut_desc(1, 64, 8, 0);
  std::vector<uint8_t> small(10);
  std::vector<float> scales(8, 0.1f);
  Weights w;
  w.data = small.data();
  w.size = small.size();
  w.scales = scales;
  EXPECT_THROW(k->create(f, w), std::invalid_argument);
  // An input value outside the 2-bit grid is an error, not a wrong result.
  testing::TestLayer L = testing::make_layer(lut_desc(1, 100, 20, 0), 9700);
  L.inputs[0].set_int(77, 4);
  try {
    (void)testing::run_kernel(*k, L);
    ADD_FAILURE() << "no error for an input value of 4";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("index 77"), std::string::npos) << e.what();
  }
}

// The plan takes the lookup-table kernel for a large batch-1 W2A2 layer (its
// default rate, measured, is above the 2-bit VNNI GEMV's), never for 8-bit
// activations, and never above the ISA cap.
TEST(SimdGemm, LutFcChosenWhereItIsCheaper) {
  const KernelInfo* k = lut_kernel_or_null();
  if (k == nullptr) GTEST_SKIP() << "no AVX-512 VBMI";
  const Isa machine = max_supported_isa(cpu_features());
  FcDesc f = lut_desc(1, 4096, 4096, 0);
  EXPECT_EQ(choose_kernel(f, machine).info->name, kLutFc);
  EXPECT_NE(choose_kernel(f, Isa::AVX2).info->name, kLutFc);
  f.in = {8, false, 0.02f};
  EXPECT_NE(choose_kernel(f, machine).info->name, kLutFc);
}

// W2A2 fc layers under every ISA cap this machine supports: whichever kernel
// the table chooses (the LUT kernel from the AVX-512 cap up) is exact.
TEST(SimdGemm, W2A2FcChosenExactUnderEveryIsaCap) {
  uint64_t seed = 9800;
  for (Isa cap : testing::isa_caps()) {
    for (int64_t N : {1, 2})
      for (auto [K, OC] : {std::pair<int64_t, int64_t>{300, 70}, {1000, 257}}) {
        const FcDesc f = lut_desc(N, K, OC, static_cast<int>(seed));
        const auto* k = choose_kernel(f, cap).info;
        EXPECT_TRUE(isa_at_most(k->isa, cap)) << k->name;
        EXPECT_TRUE(matches_reference(*k, f, seed++)) << k->name << " under cap " << isa_name(cap);
      }
  }
}

}  // namespace
}  // namespace bbits::kernels
