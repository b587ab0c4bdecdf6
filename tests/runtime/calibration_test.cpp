// load_calibration: a calibration written in `bbits calibrate`'s format changes
// the kernel choice of models loaded afterwards; reset_calibration restores
// it; bad files are refused by name, through the C++ and the C API.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "bbits/bbits.h"
#include "bbits/runtime.h"
#include "lenet_builder.h"

namespace {

std::string write_file(const std::string& name, const std::string& text) {
  const auto p = std::filesystem::temp_directory_path() / (name + "." + std::to_string(::getpid()));
  std::ofstream(p) << text;
  return p.string();
}

std::string peaks_json(const std::string& kernel, double macs_per_s) {
  return std::string(R"({"version": 1, "isa": "avx512_vnni", "cpu": "test", "created": "now", "peaks": [)") +
         R"({"kernel": ")" + kernel + R"(", "op": "conv2d", "threads": 1, "macs_per_s": )" +
         std::to_string(macs_per_s) + "}," +
         R"({"kernel": ")" + kernel + R"(", "op": "conv2d", "threads": 2, "macs_per_s": 1e15}]})";
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
  const std::string c = write_file("bbits_cal_c.json", R"({"version": 1})");
  expect_error(c, "no \"peaks\"");
  const std::string d = write_file("bbits_cal_d.json", R"({"version": 1, "peaks": [{"kernel": "x", "op": "conv2d", "threads": 1}]})");
  expect_error(d, "peaks[0] has no \"macs_per_s\"");
  const std::string e = write_file("bbits_cal_e.json", R"({"version": 1, "peaks": [{"kernel": "x", "op": "conv2d", "threads": 1, "macs_per_s": -5}]})");
  expect_error(e, "not a positive number");
  // The C API reports the same.
  EXPECT_EQ(bbits_load_calibration(b.c_str()), -1);
  EXPECT_NE(std::string(bbits_last_error()).find("unsupported calibration version"), std::string::npos);
  EXPECT_EQ(bbits_load_calibration(nullptr), -1);
  for (const auto& p : {a, b, c, d, e}) std::remove(p.c_str());
}

}  // namespace
