// Packing, requantization edge cases, CPU detection and BBITS_MAX_ISA, the
// thread pool, the kernel table and descriptor validation.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <set>

#include "bbits/kernels/cpu.h"
#include "kernel_tester.h"

namespace bbits::kernels {
namespace {

using testing::make_layer;
using testing::run_kernel;
using testing::same_output;

// ---- packing ------------------------------------------------------------------------------
TEST(Packing, RoundTripEveryWidthAndOddLengths) {
  std::mt19937_64 rng(42);
  for (int bits : {2, 4, 8, 16}) {
    const int64_t m = qmax(bits, true);
    std::uniform_int_distribution<int64_t> d(-m, m);
    for (int64_t k : {1, 2, 3, 5, 7, 8, 9, 31, 33, 100}) {
      std::vector<int32_t> q(static_cast<size_t>(k));
      for (auto& v : q) v = static_cast<int32_t>(d(rng));
      q[0] = static_cast<int32_t>(-m);  // both ends of the grid
      q.back() = static_cast<int32_t>(m);
      std::vector<uint8_t> row(packed_row_bytes(k, bits) + 1, 0xEE);
      pack_row(q.data(), k, bits, row.data());
      EXPECT_EQ(row.back(), 0xEE) << "pack_row wrote past the row, bits " << bits << " k " << k;
      for (int64_t i = 0; i < k; ++i) ASSERT_EQ(unpack_value(row.data(), i, bits), q[static_cast<size_t>(i)]);
      // Padding bits of the last byte are zero.
      if (bits < 8 && (k * bits) % 8 != 0) {
        const int used = static_cast<int>((k * bits) % 8);
        EXPECT_EQ(row[packed_row_bytes(k, bits) - 1] >> used, 0);
      }
    }
  }
}

TEST(Packing, RowsArePaddedToWholeBytes) {
  EXPECT_EQ(packed_row_bytes(3, 2), 1u);
  EXPECT_EQ(packed_row_bytes(5, 2), 2u);
  EXPECT_EQ(packed_row_bytes(3, 4), 2u);
  EXPECT_EQ(packed_row_bytes(3, 8), 3u);
  EXPECT_EQ(packed_row_bytes(3, 16), 6u);
  EXPECT_EQ(packed_row_bytes(3, 32), 12u);
}

// Kernels read rows at their padded offsets: a 2-bit layer with K = 5 (2 bytes
// per row, 6 bits of padding) gives the same result as the unpacked sum.
TEST(Packing, KernelsHonourRowPadding) {
  FcDesc d;
  d.K = 5;
  d.OC = 3;
  d.wbits = 2;
  d.in = {8, false, 1.0f};
  d.out = {32, false, 1.0f};
  auto L = make_layer(d, 5);
  const auto out = run_kernel(*reference_kernel(L.desc), L);
  for (int64_t oc = 0; oc < 3; ++oc) {
    int64_t acc = 0;
    for (int64_t k = 0; k < 5; ++k) acc += L.weights.q[static_cast<size_t>(oc * 5 + k)] * L.inputs[0].get_int(k);
    const double want = static_cast<double>(acc) * L.weights.scales[static_cast<size_t>(oc)] + L.weights.bias(oc, 1.0);
    EXPECT_NEAR(out.get_float(oc), want, 1e-5 * std::max(1.0, std::fabs(want)));
  }
}

// ---- requantization ----------------------------------------------------------------------
TEST(Requant, IdentityIsExact) {
  const Requant r = make_requant(1.0);
  for (int64_t v : {int64_t{0}, int64_t{1}, int64_t{-1}, int64_t{12345}, int64_t{-65535}, int64_t{1} << 40})
    EXPECT_EQ(apply_requant(v, r), v);
}

TEST(Requant, RoundsHalfTowardsPlusInfinity) {
  const Requant half = make_requant(0.5);
  EXPECT_EQ(apply_requant(3, half), 2);    // 1.5
  EXPECT_EQ(apply_requant(-3, half), -1);  // -1.5
  EXPECT_EQ(apply_requant(1, half), 1);    // 0.5
  EXPECT_EQ(apply_requant(-1, half), 0);   // -0.5
  EXPECT_EQ(apply_requant(5, make_requant(0.25)), 1);   // 1.25
  EXPECT_EQ(apply_requant(-7, make_requant(0.25)), -2);  // -1.75
}

TEST(Requant, MultiplierNormalisation) {
  for (double r : {3e-7, 0.1, 0.3333333, 0.999999999, 1.0, 1.5, 7.0, 1000.0, 2147483647.0 / 2}) {
    const Requant q = make_requant(r);
    EXPECT_GE(q.multiplier, 1 << 30) << r;
    EXPECT_GE(q.shift, 0);
    EXPECT_LE(q.shift, 62);
    EXPECT_NEAR(std::ldexp(static_cast<double>(q.multiplier), -q.shift), r, r * std::ldexp(1.0, -30)) << r;
  }
  // Below 2^-32 the shift is capped at 62 and the multiplier loses bits.
  const Requant t = make_requant(1e-12);
  EXPECT_EQ(t.shift, 62);
  EXPECT_LT(t.multiplier, 1 << 30);
  EXPECT_NEAR(std::ldexp(static_cast<double>(t.multiplier), -62), 1e-12, 1e-12 * 1e-6);
  // A multiplier just below 1 rounds up to exactly 1 (carry).
  const Requant c = make_requant(1.0 - 1e-12);
  EXPECT_EQ(apply_requant(1000, c), 1000);
}

TEST(Requant, TinyMultipliersUnderflowToZero) {
  const Requant r = make_requant(1e-30);
  EXPECT_EQ(apply_requant(int64_t{1} << 40, r), 0);
  EXPECT_EQ(apply_requant(-(int64_t{1} << 40), r), 0);
}

TEST(Requant, RejectsBadMultipliers) {
  EXPECT_THROW(make_requant(0.0), std::invalid_argument);
  EXPECT_THROW(make_requant(-1.0), std::invalid_argument);
  EXPECT_THROW(make_requant(std::nan("")), std::invalid_argument);
  EXPECT_THROW(make_requant(std::ldexp(1.0, 31)), std::invalid_argument);
}

TEST(Requant, ExtremeAccumulatorsDoNotOverflow) {
  // acc * m needs more than 64 bits here: (2^60 + 1) / 2 = 2^59 + 0.5 -> 2^59 + 1.
  const Requant half = make_requant(0.5);
  EXPECT_EQ(apply_requant((int64_t{1} << 60) + 1, half), (int64_t{1} << 59) + 1);
  EXPECT_EQ(apply_requant(-(int64_t{1} << 60) - 1, half), -(int64_t{1} << 59));
  const Requant big = make_requant(1000.0);
  EXPECT_EQ(apply_requant(int64_t{1} << 50, big), (int64_t{1} << 50) * 1000);
}

TEST(Requant, OutputClampWithActivations) {
  const QuantInfo s8{8, true, 0.1f}, u4{4, false, 0.5f};
  EXPECT_EQ(output_clamp(s8, Activation::None).lo, -127);
  EXPECT_EQ(output_clamp(s8, Activation::None).hi, 127);
  EXPECT_EQ(output_clamp(s8, Activation::Relu).lo, 0);
  EXPECT_EQ(output_clamp(s8, Activation::Relu6).hi, 60);  // round(6 / 0.1)
  EXPECT_EQ(output_clamp(u4, Activation::Relu6).hi, 12);
  EXPECT_EQ(output_clamp(QuantInfo{4, false, 1.0f}, Activation::Relu6).hi, 6);
  EXPECT_EQ(output_clamp(QuantInfo{2, false, 1.0f}, Activation::Relu6).hi, 3);  // grid narrower than 6
}

TEST(Requant, QuantizeToGridRoundsHalfToEven) {
  EXPECT_EQ(quantize_to_grid(2.5f, 1.0f, -10, 10), 2);
  EXPECT_EQ(quantize_to_grid(3.5f, 1.0f, -10, 10), 4);
  EXPECT_EQ(quantize_to_grid(-2.5f, 1.0f, -10, 10), -2);
  EXPECT_EQ(quantize_to_grid(100.0f, 1.0f, -10, 10), 10);
  EXPECT_EQ(quantize_to_grid(-std::numeric_limits<float>::infinity(), 1.0f, -10, 10), -10);
  EXPECT_EQ(quantize_to_grid(std::nanf(""), 1.0f, 1, 10), 1);
  // Agrees with the format's quantize_value for in-range values.
  const float xmax = 2.0f, s = grid_scale(xmax, 4, true);
  for (float x = -2.5f; x <= 2.5f; x += 0.01f)
    EXPECT_EQ(quantize_to_grid(x, s, qmin(4, true), qmax(4, true)), quantize_value(x, xmax, 4, true)) << x;
}

TEST(Requant, AddRequantUsesOneMultiplierPerInput) {
  const AddRequant r = add_requant({8, false, 0.5f}, {8, true, 0.25f}, {8, true, 1.0f});
  EXPECT_EQ(apply_requant(3, r.a), 2);
  EXPECT_EQ(apply_requant(-2, r.b), 0);
  EXPECT_THROW(add_requant({32, false, 1.0f}, {8, true, 0.25f}, {8, true, 1.0f}), std::invalid_argument);
}

// ---- cpu ----------------------------------------------------------------------------------
TEST(Cpu, MaxIsaFromFeatures) {
  CpuFeatures f;
  EXPECT_EQ(max_supported_isa(f), Isa::Reference);
  f.avx2 = f.fma = true;
  EXPECT_EQ(max_supported_isa(f), Isa::AVX2);
  f.avx512f = f.avx512bw = f.avx512vl = true;
  EXPECT_EQ(max_supported_isa(f), Isa::AVX2) << "AVX512 needs DQ too";
  f.avx512dq = true;
  EXPECT_EQ(max_supported_isa(f), Isa::AVX512);
  f.avx512_vnni = true;
  EXPECT_EQ(max_supported_isa(f), Isa::AVX512_VNNI);
  f.amx_tile = f.amx_int8 = true;
  EXPECT_EQ(max_supported_isa(f), Isa::AVX512_VNNI) << "AMX without the OS permission";
  f.amx_permitted = true;
  EXPECT_EQ(max_supported_isa(f), Isa::AMX);
  CpuFeatures a;  // AArch64
  a.asimd = true;
  EXPECT_EQ(max_supported_isa(a), Isa::NEON);
  a.asimd_dp = true;
  EXPECT_EQ(max_supported_isa(a), Isa::NEON_DOTPROD);
  EXPECT_EQ(isa_family_of(a), IsaFamily::Arm);
  EXPECT_EQ(isa_family_of(f), IsaFamily::X86);
}

// Each architecture has its own ladder: a level of the other one is never
// "at most" a cap, and the reference kernels are under every cap.
TEST(Cpu, IsaLaddersPerArchitecture) {
  EXPECT_TRUE(isa_at_most(Isa::NEON, Isa::NEON_DOTPROD));
  EXPECT_FALSE(isa_at_most(Isa::NEON_DOTPROD, Isa::NEON));
  EXPECT_TRUE(isa_at_most(Isa::AVX2, Isa::AVX512_VNNI));
  for (Isa x86 : {Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI, Isa::AMX})
    for (Isa arm : {Isa::NEON, Isa::NEON_DOTPROD}) {
      EXPECT_FALSE(isa_at_most(x86, arm)) << isa_name(x86) << " vs " << isa_name(arm);
      EXPECT_FALSE(isa_at_most(arm, x86)) << isa_name(arm) << " vs " << isa_name(x86);
    }
  for (Isa cap : {Isa::Reference, Isa::AVX2, Isa::AMX, Isa::NEON, Isa::NEON_DOTPROD})
    EXPECT_TRUE(isa_at_most(Isa::Reference, cap));
  EXPECT_FALSE(isa_at_most(Isa::NEON, Isa::Reference));
}

TEST(Cpu, DetectIsaHonoursTheCap) {
  CpuFeatures f;
  f.avx2 = f.fma = f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512_vnni = true;
  EXPECT_EQ(detect_isa(f, nullptr), Isa::AVX512_VNNI);
  EXPECT_EQ(detect_isa(f, ""), Isa::AVX512_VNNI);
  EXPECT_EQ(detect_isa(f, "reference"), Isa::Reference);
  EXPECT_EQ(detect_isa(f, "avx2"), Isa::AVX2);
  EXPECT_EQ(detect_isa(f, "AVX512"), Isa::AVX512);
  EXPECT_EQ(detect_isa(f, "avx512_vnni"), Isa::AVX512_VNNI);
  EXPECT_EQ(detect_isa(f, "amx"), Isa::AVX512_VNNI) << "a cap never raises the level";
  try {
    detect_isa(f, "sse9");
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("sse9"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("avx512_vnni"), std::string::npos) << e.what();
  }
  // AArch64 features: the NEON ladder; an x86 level is an error naming this CPU's levels.
  CpuFeatures a;
  a.asimd = a.asimd_dp = true;
  EXPECT_EQ(detect_isa(a, nullptr), Isa::NEON_DOTPROD);
  EXPECT_EQ(detect_isa(a, "neon"), Isa::NEON);
  EXPECT_EQ(detect_isa(a, "NEON_DOTPROD"), Isa::NEON_DOTPROD);
  EXPECT_EQ(detect_isa(a, "reference"), Isa::Reference);
  a.asimd_dp = false;
  EXPECT_EQ(detect_isa(a, "neon_dotprod"), Isa::NEON) << "a cap never raises the level";
  for (const char* foreign : {"avx2", "avx512_vnni"}) {
    try {
      detect_isa(a, foreign);
      ADD_FAILURE() << "no exception for " << foreign << " on AArch64";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("neon_dotprod"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(detect_isa(f, "neon"), std::invalid_argument);
}

TEST(Cpu, DetectIsaReadsTheEnvironment) {
  const char* old = std::getenv("BBITS_MAX_ISA");
  const std::string saved = old ? old : "";
  const Isa best = max_supported_isa(cpu_features());
  unsetenv("BBITS_MAX_ISA");
  EXPECT_EQ(detect_isa(), best);
  setenv("BBITS_MAX_ISA", "reference", 1);
  EXPECT_EQ(detect_isa(), Isa::Reference);
  const bool arm = isa_family_of(cpu_features()) == IsaFamily::Arm;
  setenv("BBITS_MAX_ISA", arm ? "neon" : "avx2", 1);
  EXPECT_TRUE(isa_at_most(detect_isa(), arm ? Isa::NEON : Isa::AVX2));
  setenv("BBITS_MAX_ISA", "bogus", 1);
  EXPECT_THROW(detect_isa(), std::invalid_argument);
  if (old) setenv("BBITS_MAX_ISA", saved.c_str(), 1);
  else unsetenv("BBITS_MAX_ISA");
}

TEST(Cpu, FeaturesAreConsistent) {
  const CpuFeatures& f = cpu_features();
  // The ISA ladder implies its parts; AMX is only claimed with the permission.
  const Isa best = max_supported_isa(f);
  if (isa_at_most(Isa::AVX512, best)) EXPECT_TRUE(f.avx512f && f.avx512bw && f.avx2);
  if (best == Isa::AMX) EXPECT_TRUE(f.amx_permitted);
  if (!f.amx_tile) EXPECT_NE(best, Isa::AMX);
  EXPECT_FALSE(f.to_string().empty());
  std::printf("cpu: %s | %s | best isa %s\n", f.brand.c_str(), f.to_string().c_str(), isa_name(best));
}

// BBITS_EXPECT_ISA (set by scripts/test-arm64.sh for each emulated CPU): the
// level this machine must detect, so that a run on a CPU without the dot
// product really takes the plain NEON kernels (and one with it the sdot ones).
TEST(Cpu, DetectsTheExpectedIsa) {
  const char* want = std::getenv("BBITS_EXPECT_ISA");
  if (want == nullptr || *want == '\0') GTEST_SKIP() << "BBITS_EXPECT_ISA not set";
  const auto isa = parse_isa(want);
  ASSERT_TRUE(isa.has_value()) << "BBITS_EXPECT_ISA=" << want;
  EXPECT_EQ(max_supported_isa(cpu_features()), *isa) << cpu_features().to_string();
  // The table's choice for an 8-bit conv is a kernel of that level.
  ConvDesc c;
  c.H = c.W = 8;
  c.C = 32;
  c.OC = 64;
  c.KH = c.KW = 3;
  c.wbits = 8;
  c.in = {8, false, 0.02f};
  c.out = {8, false, 0.05f};
  const auto* k = choose_kernel(c, max_supported_isa(cpu_features())).info;
  EXPECT_EQ(k->isa, *isa) << k->name;
}

TEST(Cpu, IsaNamesRoundTrip) {
  for (Isa i : {Isa::Reference, Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI, Isa::AMX, Isa::NEON, Isa::NEON_DOTPROD})
    EXPECT_EQ(parse_isa(isa_name(i)), i);
  EXPECT_EQ(parse_isa("neon-dotprod"), Isa::NEON_DOTPROD);
  EXPECT_EQ(parse_isa("neondot"), Isa::NEON_DOTPROD);
  EXPECT_EQ(parse_isa("avx512-vnni"), Isa::AVX512_VNNI);
  EXPECT_EQ(parse_isa("ref"), Isa::Reference);
  EXPECT_FALSE(parse_isa("avx3").has_value());
}

// ---- thread pool ----------------------------------------------------------------------------
TEST(ThreadPool, CoversTheRangeOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 3, 7, 100, 1001}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    std::atomic<int> bad_index{0};
    pool.parallel_for(n, [&](int64_t b, int64_t e, int t) {
      if (t < 0 || t >= 3) ++bad_index;
      for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
    }, 4);
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    EXPECT_EQ(bad_index.load(), 0);
  }
}

TEST(ThreadPool, RethrowsAndStaysUsable) {
  ThreadPool pool(2);
  EXPECT_THROW(pool.parallel_for(100, [](int64_t b, int64_t, int) {
    if (b > 0) throw std::runtime_error("boom");
  }), std::runtime_error);
  std::atomic<int64_t> sum{0};
  pool.parallel_for(10, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 45);
}

TEST(ThreadPool, NestedCallsRunInline) {
  ThreadPool pool(2);
  std::atomic<int64_t> count{0};
  pool.parallel_for(4, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) pool.parallel_for(5, [&](int64_t bb, int64_t ee, int) { count += ee - bb; });
  });
  EXPECT_EQ(count.load(), 20);
}

TEST(ThreadPool, KernelsGiveTheSameResultWithThreads) {
  ThreadPool pool(3);
  ConvDesc d;
  d.N = 2, d.H = 7, d.W = 6, d.C = 5, d.OC = 9, d.KH = d.KW = 3, d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
  d.wbits = 4;
  d.in = {8, false, 0.02f};
  d.out = {8, false, 0.1f};
  d.activation = Activation::Relu;
  ConvDesc df = d;
  df.in = {32, false, 1.0f};
  SoftmaxDesc s;
  s.outer = 9, s.axis_size = 11, s.in = {8, true, 0.1f};
  AddDesc a;
  a.count = 10000, a.a = {8, false, 0.1f}, a.b = {4, true, 0.3f}, a.out = {8, true, 0.2f};
  // (built in place: GCC 12 warns falsely on std::variant push_back here)
  const std::vector<OpDesc> descs{OpDesc{std::in_place_type<ConvDesc>, d}, OpDesc{std::in_place_type<ConvDesc>, df},
                                  OpDesc{std::in_place_type<SoftmaxDesc>, s}, OpDesc{std::in_place_type<AddDesc>, a}};
  for (const auto& desc : descs) {
    const auto L = make_layer(desc, 77);
    const KernelInfo& k = *reference_kernel(L.desc);
    EXPECT_TRUE(same_output(run_kernel(k, L, &pool), run_kernel(k, L), 0.0)) << k.name;
  }
}

// The tester's sweeps and matches_reference(), run on the reference kernels
// themselves with a thread pool (what a SIMD tester does with its kernels).
TEST(KernelTester, SweepsRunAgainstTheReference) {
  ThreadPool pool(2);
  uint64_t seed = 1;
  int shapes = 0;
  ConvDesc cb;
  cb.wbits = 4;
  cb.in = {8, false, 0.02f};
  cb.out = {8, false, 0.1f};
  cb.activation = Activation::Relu;
  testing::sweep_conv_shapes(cb, [&](const ConvDesc& d) {
    ++shapes;
    EXPECT_TRUE(testing::matches_reference(*reference_kernel(d), d, ++seed, &pool));
  });
  FcDesc fb;
  fb.wbits = 2;
  fb.in = {8, false, 0.02f};
  fb.out = {16, true, 0.1f};
  testing::sweep_fc_shapes(fb, [&](const FcDesc& d) {
    ++shapes;
    EXPECT_TRUE(testing::matches_reference(*reference_kernel(d), d, ++seed, &pool));
  }, 65, 17);
  EXPECT_GT(shapes, 100);
  // A kernel that does not support the desc is reported, not run.
  FcDesc other = fb;
  other.K = 8, other.OC = 2, other.wbits = 8;
  EXPECT_FALSE(testing::matches_reference(*find_kernel("fc_ref_w2a8"), other, 1));
}

// ---- table -----------------------------------------------------------------------------------
TEST(Table, NamesAreUniqueAndComplete) {
  std::set<std::string> names;
  for (const auto& k : kernel_table()) {
    EXPECT_TRUE(names.insert(k.name).second) << "duplicate " << k.name;
    EXPECT_TRUE(k.supports && k.cost_ns && k.create) << k.name;
  }
  for (int wb : kWeightBits)
    for (int ab : kActBits) {
      const std::string s = "w" + std::to_string(wb) + "a" + std::to_string(ab);
      EXPECT_TRUE(find_kernel("conv2d_ref_" + s)) << s;
      EXPECT_TRUE(find_kernel("fc_ref_" + s)) << s;
    }
  for (const char* op : {"relu", "relu6", "max_pool2d", "avg_pool2d", "global_avg_pool", "add", "concat", "reshape",
                         "softmax"})
    for (int ab : kActBits) EXPECT_TRUE(find_kernel(std::string(op) + "_ref_a" + std::to_string(ab))) << op << ab;
  EXPECT_EQ(find_kernel("no_such_kernel"), nullptr);
}

TEST(Table, ReferenceIsAlwaysACandidateAndCostsAreSorted) {
  FcDesc f;
  f.K = 64, f.OC = 16;
  for (int wb : kWeightBits)
    for (int ab : kActBits)
      for (Isa cap : {Isa::Reference, Isa::AMX}) {
        f.wbits = wb;
        f.in = {ab, false, 0.1f};
        f.out = {8, false, 0.1f};
        const auto c = candidates(f, cap);
        ASSERT_FALSE(c.empty());
        const KernelInfo* ref = reference_kernel(f);
        EXPECT_NE(std::find(c.begin(), c.end(), ref), c.end()) << ref->name;
        for (size_t i = 1; i < c.size(); ++i) EXPECT_LE(c[i - 1]->cost_ns(f), c[i]->cost_ns(f));
        for (const KernelInfo* k : c) EXPECT_TRUE(isa_at_most(k->isa, cap)) << k->name;
        const KernelChoice ch = choose_kernel(f, cap);
        EXPECT_EQ(ch.info, c.front());
        EXPECT_GT(ch.cost_ns, 0.0);
      }
}

TEST(Table, CostsGrowWithWork) {
  FcDesc small, big;
  small.K = 64, small.OC = 16, big.K = 4096, big.OC = 4096;
  const KernelInfo* k = reference_kernel(small);
  EXPECT_LT(k->cost_ns(small) * 100, k->cost_ns(big));
}

TEST(Table, ExplainChoiceNamesTheKernelAndTheLayer) {
  ConvDesc d;
  d.H = d.W = 28, d.C = 1, d.OC = 6, d.KH = d.KW = 5, d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 2;
  d.wbits = 4;
  d.in = {8, false, 1.0f / 255};
  d.out = {8, false, 0.02f};
  d.activation = Activation::Relu;
  const auto c = candidates(d, Isa::Reference);
  const std::string why = explain_choice(d, c, Isa::Reference);
  EXPECT_NE(why.find(c.front()->name), std::string::npos) << why;
  EXPECT_NE(why.find("conv2d 1x28x28x1 -> 1x28x28x6"), std::string::npos) << why;
  EXPECT_NE(why.find("est."), std::string::npos) << why;
  std::printf("%s\n", why.c_str());
}

// ---- validation ---------------------------------------------------------------------------------
void expect_invalid(const OpDesc& d, const std::string& needle) {
  try {
    check_desc(d);
    ADD_FAILURE() << "accepted " << describe(d);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  EXPECT_THROW(candidates(d, Isa::AMX), std::invalid_argument);
}

TEST(Validation, BadDescriptorsGetClearErrors) {
  ConvDesc c;
  c.H = c.W = 4, c.C = 3, c.OC = 4, c.KH = c.KW = 3;
  ConvDesc b = c;
  b.groups = 2;
  expect_invalid(b, "groups");
  b = c;
  b.KH = 9;
  expect_invalid(b, "empty");
  b = c;
  b.wbits = 3;
  expect_invalid(b, "weight bits 3");
  b = c;
  b.in.bits = 1;
  expect_invalid(b, "input activation bits 1");
  b = c;
  b.out.scale = 0.0f;
  expect_invalid(b, "output scale");
  b = c;
  b.stride_h = 0;
  expect_invalid(b, "stride_h");
  b = c;
  b.H = int64_t{1} << 30, b.W = int64_t{1} << 30;
  expect_invalid(b, "too many elements");
  FcDesc f;
  f.K = 0, f.OC = 3;
  expect_invalid(f, "K = 0");
  PoolDesc p;
  p.H = p.W = 4, p.C = 1, p.KH = p.KW = 2, p.pad_top = 2;
  expect_invalid(p, "padding");
  ConcatDesc cc;
  cc.sizes = {1, 2};
  cc.in = {QuantInfo{}};
  expect_invalid(cc, "quant infos");
  ActivationDesc a;
  a.count = 3, a.act = Activation::None;
  expect_invalid(a, "relu");
}

TEST(Validation, CreateRejectsBadWeights) {
  FcDesc f;
  f.K = 10, f.OC = 4, f.wbits = 4;
  const KernelInfo* k = reference_kernel(f);
  const std::vector<uint8_t> bytes(4 * 5);
  const std::vector<float> scales(4, 0.1f), bad_scales(3, 0.1f), neg_scales(4, -1.0f);
  const std::vector<int32_t> bias(2, 0);
  Weights w;
  w.data = bytes.data();
  w.size = bytes.size();
  w.scales = scales;
  EXPECT_NO_THROW(k->create(f, w));
  Weights s = w;
  s.size = 19;
  EXPECT_THROW(k->create(f, s), std::invalid_argument);
  s = w;
  s.data = nullptr;
  EXPECT_THROW(k->create(f, s), std::invalid_argument);
  s = w;
  s.scales = bad_scales;
  EXPECT_THROW(k->create(f, s), std::invalid_argument);
  s = w;
  s.scales = neg_scales;
  EXPECT_THROW(k->create(f, s), std::invalid_argument);
  s = w;
  s.bias_q = bias;
  EXPECT_THROW(k->create(f, s), std::invalid_argument);
  // A kernel refuses a desc it does not support.
  FcDesc other = f;
  other.wbits = 8;
  EXPECT_THROW(k->create(other, w), std::invalid_argument);
}

TEST(Validation, RunChecksItsArguments) {
  AddDesc a;
  a.count = 4;
  const auto L = make_layer(a, 3);
  auto kern = reference_kernel(a)->create(L.desc, {});
  std::vector<uint8_t> out(4);
  const void* one[] = {L.inputs[0].data()};
  KernelArgs args;
  args.inputs = one;
  args.output = out.data();
  EXPECT_THROW(kern->run(args, nullptr), std::invalid_argument);
  SoftmaxDesc s;
  s.axis_size = 4;
  auto ks = reference_kernel(s)->create(s, {});
  ASSERT_GT(ks->scratch_bytes(1), 0u);
  std::vector<float> fo(4);
  args.output = fo.data();
  EXPECT_THROW(ks->run(args, nullptr), std::invalid_argument) << "no scratch";
}

}  // namespace
}  // namespace bbits::kernels
