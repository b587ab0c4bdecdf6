#include "bbits/bench/bandwidth.h"
#include "bbits/bench/roofline.h"
#include "bbits/bench/peaks.h"
#include "bbits/bench/report.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <unistd.h>

namespace bb = bbits::bench;

namespace {

// A made-up machine: L1 32 KiB and L2 1 MiB private, L3 32 MiB shared.
bb::Calibration machine() {
  bb::Calibration c;
  c.created = "2026-01-01T00:00:00Z";
  c.cpu = "test cpu";
  c.commit = "test";
  c.isa = "reference";
  c.read_loop = "scalar";
  c.caches = {{1, 32 << 10, 1}, {2, 1 << 20, 1}, {3, 32 << 20, 2}};
  for (int t : {1, 2}) {
    c.bandwidth.push_back({t, "L1", (32 << 10) * t, 16 << 10, 100e9 * t, 0});
    c.bandwidth.push_back({t, "L2", (1 << 20) * t, 512 << 10, 50e9 * t, 0});
    c.bandwidth.push_back({t, "L3", 32 << 20, 16 << 20, 25e9 * t, 0});
    c.bandwidth.push_back({t, "DRAM", 0, 128 << 20, 10e9, 0});
  }
  c.peaks.push_back({"conv_w4a8", "conv2d", 4, 8, "avx512_vnni", 1, 100e9, 0, "3x3 64->64 28x28"});
  c.peaks.push_back({"conv_w4a8", "conv2d", 4, 8, "avx512_vnni", 2, 190e9, 0, "3x3 64->64 28x28"});
  c.peaks.push_back({"fc_w8a8", "fully_connected", 8, 8, "avx2", 1, 40e9, 0, "1024->1024"});
  c.dispatch = {{2, "pool", 9000}, {2, "openmp", 8000}};
  c.overheads = {{"conv_w4a8", "conv2d", 1, 500, "tiny"}, {"conv_w4a8", "conv2d", 2, 3000, "tiny"}};
  return c;
}

}  // namespace

TEST(Roofline, ComputeBoundLayer) {
  bb::LayerCost l;
  l.macs = 100'000'000;  // 1 ms at 100 GMAC/s
  l.weight_bytes = 8 << 10;
  l.input_bytes = 4 << 10;
  l.output_bytes = 4 << 10;  // 16 KiB: L1, 16384 / 100e9 s = 163.84 ns
  const auto p = bb::roofline(l, 100e9, machine(), 1);
  EXPECT_EQ(p.level, "L1");
  EXPECT_DOUBLE_EQ(p.compute_ns, 1e6);
  EXPECT_NEAR(p.memory_ns, 163.84, 1e-9);
  EXPECT_DOUBLE_EQ(p.time_ns, 1e6);
  EXPECT_TRUE(p.compute_bound());
}

TEST(Roofline, MemoryBoundLayerPicksTheLevelHoldingTheWorkingSet) {
  bb::LayerCost l;
  l.macs = 1000;
  l.weight_bytes = 2 << 20;  // 2 MiB + a bit: beyond L2 for one thread, within L2 for two
  l.input_bytes = 1000;
  l.output_bytes = 1000;
  const auto p1 = bb::roofline(l, 100e9, machine(), 1);
  EXPECT_EQ(p1.level, "L3");
  EXPECT_NEAR(p1.memory_ns, static_cast<double>(l.bytes()) / 25e9 * 1e9, 1e-6);
  EXPECT_FALSE(p1.compute_bound());
  const auto p2 = bb::roofline(l, 100e9, machine(), 2);
  EXPECT_EQ(p2.level, "L3");  // 2 MiB + 2000 bytes > 2 x 1 MiB
  l.weight_bytes = (2 << 20) - 4000;
  EXPECT_EQ(bb::roofline(l, 100e9, machine(), 2).level, "L2");
  l.weight_bytes = 64 << 20;
  EXPECT_EQ(bb::roofline(l, 100e9, machine(), 1).level, "DRAM");
  // A layer without MACs (pooling) is bandwidth only and needs no peak.
  l.macs = 0;
  const auto p = bb::roofline(l, 0, machine(), 1);
  EXPECT_EQ(p.compute_ns, 0);
  EXPECT_DOUBLE_EQ(p.time_ns, p.memory_ns);
}

TEST(Roofline, ElementOperationsUseTheKernelPeak) {
  bb::LayerCost l;  // an add of 100k elements: no MACs, 100k element operations
  l.work = 100'000;
  l.input_bytes = 200'000;
  l.output_bytes = 100'000;
  EXPECT_EQ(l.compute_work(), 100'000);
  const auto p = bb::roofline(l, 1e9, machine(), 1);  // 1 G element ops/s: 100 us
  EXPECT_DOUBLE_EQ(p.compute_ns, 100'000);
  EXPECT_EQ(p.level, "L2");
  EXPECT_TRUE(p.compute_bound());
  EXPECT_THROW(bb::roofline(l, 0, machine(), 1), std::invalid_argument);
}

TEST(Roofline, DispatchCostIsAddedOnSeveralThreads) {
  const auto c = machine();
  EXPECT_EQ(c.dispatch_ns("pool", 1), 0);
  EXPECT_EQ(c.dispatch_ns("pool", 2), 9000);
  EXPECT_EQ(c.dispatch_ns("openmp", 2), 8000);
  EXPECT_EQ(c.dispatch_ns("pool", 4), 0);  // not measured
  bb::LayerCost l;
  l.input_bytes = 1000;  // 10 ns at 100 GB/s
  const auto p = bb::roofline(l, 0, c, 2, c.dispatch_ns("pool", 2));
  EXPECT_DOUBLE_EQ(p.overhead_ns, 9000);
  EXPECT_DOUBLE_EQ(p.time_ns, p.memory_ns + 9000);
  EXPECT_THROW(bb::roofline(l, 0, c, 2, -1), std::invalid_argument);
}

// Inside a session with the calibration's reuse bandwidths: the weights come
// back at the reuse bandwidth for the run's distance (interpolated), added to
// the max of compute and activations; on 2 threads half the input crosses
// from the other core through the shared L3. Without reuse entries the weights
// come from the level holding the run.
TEST(Roofline, InsideASessionWeightsComeBackAtTheReuseBandwidth) {
  auto c = machine();
  c.reuse = {{1, 0, 80e9}, {1, 16 << 20, 40e9}, {1, 32 << 20, 20e9}, {2, 0, 160e9}, {2, 32 << 20, 40e9}};
  EXPECT_DOUBLE_EQ(*c.reuse_bytes_per_s(8 << 20, 1), 60e9);    // halfway between 80 and 40
  EXPECT_DOUBLE_EQ(*c.reuse_bytes_per_s(64 << 20, 1), 20e9);   // clamped to the last distance
  EXPECT_DOUBLE_EQ(*c.reuse_bytes_per_s(16 << 20, 2), 100e9);  // 2 threads: its own entries
  EXPECT_DOUBLE_EQ(*c.reuse_bytes_per_s(16 << 20, 4), 100e9);  // 4 threads: the 2-thread entries
  bb::LayerCost l;
  l.macs = 100'000'000;  // 1 ms at 100 GMAC/s
  l.weight_bytes = 600'000;
  l.input_bytes = 100'000;
  l.output_bytes = 100'000;
  const auto p = bb::roofline(l, 100e9, c, 1, 0, 16 << 20);
  EXPECT_EQ(p.weights_level, "reuse");
  EXPECT_DOUBLE_EQ(p.cold_ns, 600'000 / 40e9 * 1e9);  // 15 us
  EXPECT_DOUBLE_EQ(p.cross_ns, 0);
  EXPECT_DOUBLE_EQ(p.time_ns, 1e6 + 15'000);
  const auto q = bb::roofline(l, 190e9, c, 2, 0, 16 << 20);
  EXPECT_DOUBLE_EQ(q.cold_ns, 600'000 / 100e9 * 1e9);           // 6 us
  EXPECT_DOUBLE_EQ(q.cross_ns, 100'000 * 0.5 / 50e9 * 1e9);    // half the input at the 2-thread L3 rate: 1 us
  EXPECT_NEAR(q.time_ns, 100e6 / 190e9 * 1e9 + 6'000 + 1'000, 1e-6);
  // A layer run alone (no reuse distance), and a calibration without reuse entries: unchanged.
  EXPECT_DOUBLE_EQ(bb::roofline(l, 100e9, c, 1).time_ns, 1e6);
  c.reuse.clear();
  EXPECT_FALSE(c.reuse_bytes_per_s(1, 1).has_value());
  const auto o = bb::roofline(l, 100e9, c, 1, 0, 16 << 20);
  EXPECT_EQ(o.weights_level, "L3");
  EXPECT_DOUBLE_EQ(o.cold_ns, 0);
  EXPECT_DOUBLE_EQ(o.time_ns, 1e6);
}

TEST(Roofline, BoundaryBelongsToTheSmallerLevel) {
  bb::LayerCost l;
  l.input_bytes = 32 << 10;
  EXPECT_EQ(bb::roofline(l, 0, machine(), 1).level, "L1");
  l.input_bytes += 1;
  EXPECT_EQ(bb::roofline(l, 0, machine(), 1).level, "L2");
}

TEST(Roofline, RejectsMissingPeakAndNegativeCosts) {
  bb::LayerCost l;
  l.macs = 10;
  EXPECT_THROW(bb::roofline(l, 0, machine(), 1), std::invalid_argument);
  l.macs = -1;
  EXPECT_THROW(bb::roofline(l, 1e9, machine(), 1), std::invalid_argument);
  bb::Calibration empty = machine();
  empty.bandwidth.clear();
  l.macs = 0;
  EXPECT_THROW(bb::roofline(l, 1e9, empty, 1), bb::CalibrationError);
}

TEST(Roofline, PeakLookupScalesUnmeasuredThreadCounts) {
  const auto c = machine();
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("conv_w4a8", "conv2d", 2), 190e9);
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("conv_w4a8", "", 1), 100e9);
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("fc_w8a8", "fully_connected", 2), 80e9);  // only 1 thread measured
  EXPECT_FALSE(c.peak_macs_per_s("conv_w4a8", "depthwise", 1).has_value());
  EXPECT_FALSE(c.peak_macs_per_s("nope", "", 1).has_value());
}

TEST(Roofline, PeakInterpolatesOverTheShapeGrid) {
  bb::Calibration c = machine();
  c.peaks.clear();
  auto add = [&](int64_t k, int64_t n, double v) { c.peaks.push_back({"g", "pointwise", 8, 8, "x", 1, v, 0, "", k, n}); };
  add(16, 16, 10);
  add(64, 16, 30);
  add(16, 64, 20);
  add(64, 64, 40);
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 32, 32), 25);  // middle in log space
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 64, 16), 30);  // a grid point
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 4096, 4096), 40);  // clamped
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 2, 16, 16), 20);  // scaled by threads
  // Measured at several weight widths: the layer's width wins.
  c.peaks.push_back({"g", "pointwise", 2, 8, "x", 1, 5, 0, "", 16, 16});
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 16, 16, 2), 5);
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 16, 16, 8), 10);
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 16, 16, 4), 10);  // not measured: native width
  c.peaks.pop_back();
  c.peaks.pop_back();  // corner (64, 64) missing: nearest point
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 60, 20), 30);
}

TEST(Roofline, PeakInterpolatesOverOutputPixels) {
  bb::Calibration c = machine();
  c.peaks.clear();
  auto add = [&](int64_t k, int64_t n, int64_t m, double v) {
    c.peaks.push_back({"g", "pointwise", 8, 8, "x", 1, v, 0, "", k, n, m});
  };
  for (int64_t k : {16, 64})
    for (int64_t n : {16, 64}) {
      add(k, n, 49, 10);
      add(k, n, 784, 20);
    }
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 32, 32, 0, 196), 15);  // log-middle of 49 and 784
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 32, 32, 0, 7), 10);    // clamped below
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 32, 32, 0, 1 << 20), 20);  // clamped above
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 32, 32), 20);  // m unknown: the largest m measured
  // Entries measured on signed inputs are used for signed layers only.
  bb::KernelPeak sg{"g", "pointwise", 8, 8, "x", 1, 3, 0, "", 16, 16, 49};
  sg.in_signed = true;
  c.peaks.push_back(sg);
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 16, 16, 0, 49, 1), 3);
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 16, 16, 0, 49, 0), 10);
  c.peaks.pop_back();
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 16, 16, 0, 49, 1), 10);  // none signed: unsigned ones
  bb::KernelPeak fl{"g", "pointwise", 8, 8, "x", 1, 4, 0, "", 16, 16, 49};
  fl.out_float = true;
  c.peaks.push_back(fl);
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 16, 16, 0, 49, -1, 1), 4);
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 16, 16, 0, 49, -1, 0), 10);
  c.peaks.pop_back();
  // The rate with the per-call cost taken out is preferred when recorded.
  for (auto& p : c.peaks) p.compute_macs_per_s = 2 * p.macs_per_s;
  EXPECT_DOUBLE_EQ(*c.peak_macs_per_s("g", "pointwise", 1, 32, 32, 0, 49), 20);
}

TEST(Roofline, PerCallCostAndScratchRoundTrip) {
  const auto c = machine();
  EXPECT_DOUBLE_EQ(*c.overhead_ns("conv_w4a8", "conv2d", 1), 500);
  EXPECT_FALSE(c.overhead_ns("conv_w4a8", "pointwise", 1).has_value());
  EXPECT_DOUBLE_EQ(bb::call_overhead_ns(c, "conv_w4a8", "conv2d", 1, "pool"), 500);
  // Two threads: at least the one-thread cost plus waking the worker.
  EXPECT_DOUBLE_EQ(bb::call_overhead_ns(c, "conv_w4a8", "conv2d", 2, "pool"), 500 + 9000);
  // Not measured for the kernel: the dispatch cost alone.
  EXPECT_DOUBLE_EQ(bb::call_overhead_ns(c, "fc_w8a8", "fully_connected", 2, "openmp"), 8000);
  EXPECT_DOUBLE_EQ(bb::call_overhead_ns(c, "fc_w8a8", "fully_connected", 1, "pool"), 0);

  bb::LayerCost l;
  l.macs = 1'000'000;           // 10 us at 100 GMAC/s
  l.input_bytes = 1000;
  l.scratch_bytes = 512 << 10;  // L2: 2 x 512 KiB at 50 GB/s
  const auto p = bb::roofline(l, 100e9, c, 1, 500);
  EXPECT_DOUBLE_EQ(p.epilogue_ns, 2.0 * (512 << 10) / 50e9 * 1e9);
  EXPECT_DOUBLE_EQ(p.time_ns, p.compute_ns + p.epilogue_ns + 500);
  EXPECT_EQ(p.dominant(), "epilogue");
  l.scratch_bytes = 0;
  EXPECT_EQ(bb::roofline(l, 100e9, c, 1, 500).dominant(), "compute");
  EXPECT_EQ(bb::roofline(l, 100e9, c, 1, 50'000).dominant(), "call");
  l.scratch_bytes = -1;
  EXPECT_THROW(bb::roofline(l, 100e9, c, 1), std::invalid_argument);
}

TEST(Roofline, ColdWeightsComeFromTheLevelHoldingTheReuseDistance) {
  bb::LayerCost l;
  l.weight_bytes = 1'000'000;  // L2 on its own
  l.input_bytes = 1000;
  const auto hot = bb::roofline(l, 0, machine(), 1);
  EXPECT_EQ(hot.weights_level, "L2");
  EXPECT_DOUBLE_EQ(hot.memory_ns, 1'001'000 / 50e9 * 1e9);
  // 64 MiB touched by the rest of the run between two calls: DRAM for the
  // weights, the activations still from the working set's level.
  const auto cold = bb::roofline(l, 0, machine(), 1, 0, 64 << 20);
  EXPECT_EQ(cold.level, "L2");
  EXPECT_EQ(cold.weights_level, "DRAM");
  EXPECT_DOUBLE_EQ(cold.memory_ns, 1000 / 50e9 * 1e9 + 1'000'000 / 10e9 * 1e9);
  EXPECT_THROW(bb::roofline(l, 0, machine(), 1, 0, -1), std::invalid_argument);
}

TEST(Peaks, ShapeGridAndTinyShapes) {
  // Conv families are measured over output pixels too, within the MAC cap.
  const auto pw = bb::calibration_shapes("pointwise", 8, 8, false);
  std::set<int64_t> ms;
  for (const auto& d : pw) {
    EXPECT_NO_THROW(bbits::kernels::check_desc(d));
    const auto& c = std::get<bbits::kernels::ConvDesc>(d);
    ms.insert(bb::gemm_m(d));
    if (c.H > 7) EXPECT_LE(static_cast<double>(c.macs()), bb::kMaxCalibrationMacs);
  }
  EXPECT_EQ(ms, (std::set<int64_t>{49, 196, 784, 3136, 12544}));
  const auto sg = bb::calibration_shapes("pointwise", 8, 8, false, true);
  ASSERT_FALSE(sg.empty());
  for (const auto& d : sg) EXPECT_TRUE(std::get<bbits::kernels::ConvDesc>(d).in.is_signed);
  EXPECT_TRUE(bb::calibration_shapes("fully_connected", 8, 8, false, true).empty());
  EXPECT_TRUE(bb::calibration_shapes("pointwise", 32, 32, false, true).empty());
  for (const auto& fam : bb::peak_families()) {
    const auto d = bb::tiny_desc(fam, 8, 8);
    EXPECT_NO_THROW(bbits::kernels::check_desc(d)) << fam;
    EXPECT_LE(bbits::kernels::op_work(d), 16 * 16 * 144) << fam;  // 4x4 pixels, 16 -> 16 channels, 3x3
  }
}

TEST(Bops, SpeedupAgainstReferences) {
  bb::LayerCost l;
  l.macs = 750;  // a quarter of the channels pruned
  l.macs_unpruned = 1000;
  l.wbits = 4;
  l.abits = 8;
  EXPECT_EQ(bb::layer_bops(l), 750 * 32);
  EXPECT_DOUBLE_EQ(bb::bop_speedup(l, 32, 32), 1000.0 * 1024 / (750 * 32));
  EXPECT_DOUBLE_EQ(bb::bop_speedup(l, 8, 8), 1000.0 * 64 / (750 * 32));
  l.macs = 0;
  EXPECT_TRUE(std::isnan(bb::bop_speedup(l, 8, 8)));
}

TEST(Bops, RelativeError) {
  EXPECT_DOUBLE_EQ(bb::relative_error(125, 100), 0.25);
  EXPECT_DOUBLE_EQ(bb::relative_error(75, 100), -0.25);
  EXPECT_TRUE(std::isnan(bb::relative_error(1, 0)));
  EXPECT_TRUE(std::isnan(bb::relative_error(-1, 1)));
}

TEST(Bops, ActivationBytes) {
  EXPECT_EQ(bb::activation_bytes(2), 1);
  EXPECT_EQ(bb::activation_bytes(8), 1);
  EXPECT_EQ(bb::activation_bytes(16), 2);
  EXPECT_EQ(bb::activation_bytes(32), 4);
  EXPECT_THROW(bb::activation_bytes(3), std::invalid_argument);
}

TEST(Calibration, JsonRoundTripAndValidation) {
  namespace fs = std::filesystem;
  const auto c = machine();
  const std::string path =
      (fs::temp_directory_path() / ("bbits_cal_test_" + std::to_string(::getpid())) / "cal.json").string();
  c.save(path);
  const auto back = bb::Calibration::load(path);
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_EQ(back.bandwidth_threads(), (std::vector<int>{1, 2}));

  auto j = c.to_json();
  j["version"] = 99;
  EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
  j = c.to_json();
  j["bandwidth"][0]["bytes_per_s"] = -1.0;
  try {
    bb::Calibration::from_json(j);
    FAIL() << "negative bandwidth accepted";
  } catch (const bb::CalibrationError& e) {
    EXPECT_NE(std::string(e.what()).find("bandwidth[0]"), std::string::npos);
  }
  j = c.to_json();
  j["dispatch"][0]["ns"] = -5.0;
  EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
  j = c.to_json();
  j.erase("dispatch");  // optional
  EXPECT_TRUE(bb::Calibration::from_json(j).dispatch.empty());
  j = c.to_json();
  j["overheads"][0]["ns"] = -1.0;
  EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
  j = c.to_json();
  j.erase("overheads");  // optional
  EXPECT_TRUE(bb::Calibration::from_json(j).overheads.empty());
  // Thread scaling: round trip, lookup, validation, optional.
  {
    bb::Calibration s = c;
    s.scaling = {{2, 1.9}, {4, 3.5}};
    const auto sb = bb::Calibration::from_json(nlohmann::json::parse(s.to_json().dump()));
    ASSERT_EQ(sb.scaling.size(), 2u);
    EXPECT_EQ(sb.scaling_for(2), 1.9);
    EXPECT_EQ(sb.scaling_for(4), 3.5);
    EXPECT_FALSE(sb.scaling_for(3).has_value());
    j = s.to_json();
    j["scaling"][0]["speedup"] = -1.0;
    EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
    j = s.to_json();
    j["scaling"][1]["threads"] = 1;
    EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
    j = s.to_json();
    j.erase("scaling");  // optional
    EXPECT_TRUE(bb::Calibration::from_json(j).scaling.empty());
    s.probe_ns = 512000;
    EXPECT_DOUBLE_EQ(bb::Calibration::from_json(nlohmann::json::parse(s.to_json().dump())).probe_ns, 512000);
    j = s.to_json();
    j["probe_ns"] = -1.0;
    EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
    j = s.to_json();
    j["probe_ns"] = "fast";
    EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
  }
  // Reuse bandwidths: round trip, validation, duplicates, optional.
  {
    bb::Calibration r = c;
    r.reuse = {{1, 0, 90e9}, {1, 16 << 20, 50e9}};
    const auto rb = bb::Calibration::from_json(nlohmann::json::parse(r.to_json().dump()));
    ASSERT_EQ(rb.reuse.size(), 2u);
    EXPECT_DOUBLE_EQ(*rb.reuse_bytes_per_s(16 << 20, 1), 50e9);
    j = r.to_json();
    j["reuse"][0]["bytes_per_s"] = 0.0;
    EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
    j = r.to_json();
    j["reuse"][1]["distance"] = -1;
    EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
    j = r.to_json();
    j["reuse"][1]["distance"] = 0;  // the same point twice
    EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
    j = r.to_json();
    j.erase("reuse");  // optional
    EXPECT_TRUE(bb::Calibration::from_json(j).reuse.empty());
  }
  j = c.to_json();
  j["peaks"][0]["m"] = -3;
  EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
  j = c.to_json();
  j["peaks"][0].erase("kernel");
  EXPECT_THROW(bb::Calibration::from_json(j), bb::CalibrationError);
  bb::write_text_atomic(path, "{not json");
  EXPECT_THROW(bb::Calibration::load(path), bb::CalibrationError);
  fs::remove_all(fs::path(path).parent_path());
  EXPECT_THROW(bb::Calibration::load(path), bb::CalibrationError);
}

TEST(Calibration, EffectiveCapacity) {
  EXPECT_EQ(bb::effective_capacity({2, 1 << 20, 1}, 2), 2 << 20);
  EXPECT_EQ(bb::effective_capacity({3, 32 << 20, 2}, 2), 32 << 20);
}

// The reuse probe itself: bad arguments are refused; a small run measures
// a positive rate on 1 and 2 threads.
TEST(Bandwidth, ReuseProbe) {
  const bb::TimingOptions o{.warmup = 0, .repeats = 3};
  EXPECT_THROW(bb::measure_reuse_bandwidth(-1, 1, o), std::invalid_argument);
  EXPECT_THROW(bb::measure_reuse_bandwidth(0, 0, o), std::invalid_argument);
  for (int t : {1, 2}) {
    const bb::Summary s = bb::measure_reuse_bandwidth(2 << 20, t, o);
    EXPECT_GT(s.median, 1e8) << t << " threads";
    EXPECT_TRUE(std::isfinite(s.median));
  }
}

// The calibration's probe retries while the vCPUs scale below 75% of linear
// (they may share one physical core for seconds), keeps the best speedup and
// the fastest 1-thread time, and stops as soon as the scaling is plausible.
TEST(Calibration, SettledProbeWaitsOutSharedCores) {
  std::vector<bb::MachineProbe> seq = {{510, 1.02}, {500, 1.05}, {505, 1.96}, {400, 2.0}};
  size_t calls = 0;
  int pauses = 0;
  auto probe = [&] { return seq.at(calls++); };
  auto pause = [&] { ++pauses; };
  bb::MachineProbe p = bb::settled_probe(2, probe, pause, 60);
  EXPECT_EQ(calls, 3u);  // 1.96 >= 1.5: no fourth probe
  EXPECT_EQ(pauses, 2);
  EXPECT_DOUBLE_EQ(p.speedup, 1.96);
  EXPECT_DOUBLE_EQ(p.one_thread_ns, 500);
  // A machine that never scales: max_tries probes, the best of them.
  calls = 0;
  pauses = 0;
  seq = {{510, 1.1}, {500, 1.3}, {505, 1.2}};
  p = bb::settled_probe(2, probe, pause, 3);
  EXPECT_EQ(calls, 3u);
  EXPECT_EQ(pauses, 2);
  EXPECT_DOUBLE_EQ(p.speedup, 1.3);
  // One thread: a single probe, no waiting.
  calls = 0;
  seq = {{480, 1.0}};
  p = bb::settled_probe(1, probe, pause, 60);
  EXPECT_EQ(calls, 1u);
  EXPECT_DOUBLE_EQ(p.one_thread_ns, 480);
  EXPECT_THROW(bb::settled_probe(0, probe, pause, 1), std::invalid_argument);
}
