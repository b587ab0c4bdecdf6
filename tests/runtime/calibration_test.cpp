// load_calibration: a calibration written in `bbits calibrate`'s format (the
// runtime's Calibration, bbits/runtime/calibration.h) changes the kernel
// choice of models loaded afterwards; reset_calibration restores it; bad files
// are refused by name, through the C++ and the C API.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "bbits/bbits.h"
#include "bbits/runtime.h"
#include "bbits/runtime/calibration.h"
#include "lenet_builder.h"

namespace {

std::string write_file(const std::string& name, const std::string& text) {
  const auto p = std::filesystem::temp_directory_path() / (name + "." + std::to_string(::getpid()));
  std::ofstream(p) << text;
  return p.string();
}

// A calibration with one bandwidth level and `kernel`'s convolution peak at
// one and two threads.
bbits::Calibration calibration(const std::string& kernel, double macs_per_s) {
  bbits::Calibration c;
  c.created = "now";
  c.cpu = "test";
  c.isa = "avx512_vnni";
  c.bandwidth = {{.threads = 1, .level = "L1", .capacity = 32768, .probe_bytes = 16384, .bytes_per_s = 1e11}};
  bbits::KernelPeak p;
  p.kernel = kernel;
  p.op = "conv2d";
  p.wbits = p.abits = 8;
  p.threads = 1;
  p.macs_per_s = macs_per_s;
  c.peaks.push_back(p);
  p.threads = 2;
  p.macs_per_s = 1e15;
  c.peaks.push_back(p);
  return c;
}

std::string peaks_json(const std::string& kernel, double macs_per_s) {
  return calibration(kernel, macs_per_s).to_json().dump();
}

TEST(Calibration, ChangesTheKernelChoiceAndResets) {
  bbits::testing::LenetSpec spec;
  const auto lm = bbits::testing::build_lenet(spec);
  auto first = bbits::Model::from_memory(lm.bytes.data(), lm.bytes.size());
  const std::string chosen = first->info().layers[0].kernel;  // conv1
  if (chosen.find("ref") != std::string::npos) GTEST_SKIP() << "no SIMD kernel on this CPU for conv1";

  // The chosen kernel measured a million times slower than its built-in rate:
  // conv1 moves to another kernel.
  const std::string slow = write_file("bbits_cal_slow.json", peaks_json(chosen, 1e3));
  const bbits::CalibrationResult r = bbits::load_calibration(slow);
  ASSERT_EQ(r.rates.size(), 1u);
  EXPECT_EQ(r.rates[0].first, chosen);
  EXPECT_DOUBLE_EQ(r.rates[0].second, 1e-6);  // threads=2 entries do not count
  EXPECT_EQ(r.cpu, "test");
  auto second = bbits::Model::from_memory(lm.bytes.data(), lm.bytes.size());
  EXPECT_NE(second->info().layers[0].kernel, chosen);
  // Results do not depend on the kernel.
  const auto in = bbits::testing::lenet_random_input(lm, 3);
  bbits::QuantizedTensor q;
  q.shape = {1, spec.in_c, spec.in_h, spec.in_w};
  q.data = in;
  bbits::Session s1(first), s2(second);
  const auto o1 = s1.run_quantized({q}), o2 = s2.run_quantized({q});
  EXPECT_EQ(o1[0].float_data, o2[0].float_data);

  bbits::reset_calibration();
  auto third = bbits::Model::from_memory(lm.bytes.data(), lm.bytes.size());
  EXPECT_EQ(third->info().layers[0].kernel, chosen);
  std::remove(slow.c_str());
}

TEST(Calibration, BadFilesAreRefusedByName) {
  auto expect_error = [](const std::string& path, const std::string& what) {
    try {
      bbits::load_calibration(path);
      ADD_FAILURE() << "accepted " << path;
    } catch (const bbits::Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(path), std::string::npos) << m;
      EXPECT_NE(m.find(what), std::string::npos) << m;
    }
  };
  expect_error("/nonexistent/calibration.json", "cannot open");
  const std::string a = write_file("bbits_cal_a.json", "{not json");
  expect_error(a, "not valid JSON");
  const std::string b = write_file("bbits_cal_b.json", R"({"version": 7, "peaks": []})");
  expect_error(b, "unsupported calibration version");
  auto doc = calibration("x", 1e9).to_json();
  doc.erase("peaks");
  const std::string c = write_file("bbits_cal_c.json", doc.dump());
  expect_error(c, "no \"peaks\"");
  doc = calibration("x", 1e9).to_json();
  doc["peaks"][0].erase("macs_per_s");
  const std::string d = write_file("bbits_cal_d.json", doc.dump());
  expect_error(d, "peaks[0] has no \"macs_per_s\"");
  doc = calibration("x", 1e9).to_json();
  doc["peaks"][0]["macs_per_s"] = -5;
  const std::string e = write_file("bbits_cal_e.json", doc.dump());
  expect_error(e, "not a positive number");
  // The writer's file reads back the same (one schema for `bbits calibrate`,
  // the bench and the runtime).
  const std::string f = write_file("bbits_cal_f.json", "");
  calibration("x", 1e9).save(f);
  EXPECT_EQ(bbits::Calibration::load(f).to_json(), calibration("x", 1e9).to_json());
  // The C API reports the same.
  EXPECT_EQ(bbits_load_calibration(b.c_str()), -1);
  EXPECT_NE(std::string(bbits_last_error()).find("unsupported calibration version"), std::string::npos);
  EXPECT_EQ(bbits_load_calibration(nullptr), -1);
  for (const auto& p : {a, b, c, d, e, f}) std::remove(p.c_str());
}

}  // namespace
