// The cost table (contract/cost_table.h): round trip, interpolation over kept
// channels, whole-model prediction, and the rejection of malformed or
// mismatched tables with a message naming the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "bbits/contract/cost_table.h"
#include "bbits/contract/zoo.h"

namespace bbits::contract {
namespace {

using nlohmann::json;

// A two-layer table: conv "a" (4 -> 8 channels, removable outputs) feeding
// linear "b" (8 * 2 inputs -> 3) through a flatten; times
// T_a = wbits * abits * kept_out / 8, T_b = (wbits + abits) * kept_in / 16 + 1.
CostTable toy() {
  CostTable t;
  t.created = "2026-01-01T00:00:00Z";
  t.cpu = "test cpu";
  t.isa = "scalar";
  t.commit = "abc";
  t.calibration = "cal.json";
  t.arch = "toy";
  t.input = {4, 1, 2};
  t.call_us = 0.5;
  CostLayer a;
  a.name = "a";
  a.op = "conv2d";
  a.out_channels = 8;
  a.in_channels = 4;
  a.out_removable = true;
  a.act_bits = {8};
  a.kept_out = kept_grid(8);
  a.kept_in = {4};
  for (int wb : t.weight_bits)
    for (int ab : a.act_bits)
      for (int64_t ko : a.kept_out) {
        a.us.push_back(wb * ab * static_cast<double>(ko) / 8.0);
        (void)ab;
      }
  for (size_t i = 0; i < t.weight_bits.size() * a.act_bits.size(); ++i) a.kernels.push_back("k");
  CostLayer b;
  b.name = "b";
  b.op = "linear";
  b.out_channels = 3;
  b.in_channels = 16;
  b.in_from = "a";
  b.in_per_channel = 2;
  b.act_bits = {2, 4, 8, 16, 32};
  b.kept_out = {3};
  for (int64_t k : kept_grid(8)) b.kept_in.push_back(2 * k);
  for (int wb : t.weight_bits)
    for (int ab : b.act_bits)
      for (int64_t ki : b.kept_in) b.us.push_back(wb == 0 ? 0.0 : (wb + ab) * static_cast<double>(ki) / 16.0 + 1.0);
  for (size_t i = 0; i < t.weight_bits.size() * b.act_bits.size(); ++i) b.kernels.push_back("k");
  t.layers = {a, b};
  t.other = {{"flatten", "flatten", 0.25, -1}};
  return t;
}

std::string error_of(const json& j) {
  try {
    CostTable::from_json(j);
  } catch (const CostTableError& e) {
    return e.what();
  }
  return "";
}

TEST(CostTable, KeptGrid) {
  EXPECT_EQ(kept_grid(512), (std::vector<int64_t>{1, 64, 128, 256, 384, 512}));
  EXPECT_EQ(kept_grid(6), (std::vector<int64_t>{1, 2, 3, 5, 6}));
  EXPECT_EQ(kept_grid(1), (std::vector<int64_t>{1}));
}

TEST(CostTable, InterpolationWeightsArePiecewiseLinearAndClamped) {
  const std::vector<int64_t> g{1, 4, 8};
  EXPECT_EQ(interp_weights(g, 0.2), (std::vector<double>{1, 0, 0}));
  EXPECT_EQ(interp_weights(g, 9.0), (std::vector<double>{0, 0, 1}));
  EXPECT_EQ(interp_weights(g, 4.0), (std::vector<double>{0, 1, 0}));
  const auto w = interp_weights(g, 5.0);
  EXPECT_DOUBLE_EQ(w[1], 0.75);
  EXPECT_DOUBLE_EQ(w[2], 0.25);
  EXPECT_DOUBLE_EQ(w[0], 0.0);
}

TEST(CostTable, RoundTripAndPrediction) {
  const CostTable t = toy();
  const CostTable r = CostTable::from_json(t.to_json());
  EXPECT_EQ(r.to_json(), t.to_json());
  // Everything kept: a at w4a8 = 4*8*8/8 = 32; b at w2a4 with 16 inputs = 6*16/16+1 = 7; other 0.25 + call 0.5.
  EXPECT_DOUBLE_EQ(r.predict_us({{"a", 4}, {"b", 2}}, {{"a", 8}, {"b", 4}}, {}), 32 + 7 + 0.75);
  // 5 of a's 8 outputs kept: T_a linear in kept (exact between grid points 2..6), b's inputs 10 of 16.
  EXPECT_DOUBLE_EQ(r.predict_us({{"a", 4}, {"b", 2}}, {{"a", 8}, {"b", 4}}, {{"a", 5}}), 4 * 8 * 5 / 8.0 + 6 * 10 / 16.0 + 1 + 0.75);
  // Monotone: fewer kept channels never cost more.
  double prev = 0;
  for (int64_t k = 1; k <= 8; ++k) {
    const double v = r.predict_us({{"a", 8}, {"b", 8}}, {{"a", 8}, {"b", 8}}, {{"a", k}});
    EXPECT_GE(v, prev);
    prev = v;
  }
  EXPECT_THROW(r.predict_us({{"a", 3}}, {{"a", 8}}, {}), CostTableError);   // 3 bits: not on the grid
  EXPECT_THROW(r.predict_us({{"a", 8}}, {{"a", 4}}, {}), CostTableError);   // a's input is fixed at 8
}

TEST(CostTable, SaveIsAtomicAndLoadNamesThePath) {
  const std::string path = (std::filesystem::temp_directory_path() / "bbits_cost_table_test.json").string();
  toy().save(path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(CostTable::load(path).to_json(), toy().to_json());
  { std::ofstream(path) << "{\"format\": 1"; }
  try {
    CostTable::load(path);
    FAIL();
  } catch (const CostTableError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
  EXPECT_THROW(CostTable::load(path), CostTableError);
}

TEST(CostTable, MalformedTablesAreRejectedNamingTheProblem) {
  const json good = toy().to_json();
  ASSERT_EQ(error_of(good), "");
  auto expect = [&](json j, const std::string& needle) {
    const std::string e = error_of(j);
    EXPECT_NE(e.find(needle), std::string::npos) << "got: '" << e << "', expected it to mention '" << needle << "'";
  };
  {
    json j = good;
    j["version"] = 2;
    expect(j, "version 2 is not supported");
  }
  {
    json j = good;
    j["priced_by"] = "measured";  // the toy table holds no measurements
    expect(j, "priced_by is measured but the table holds no measurements");
  }
  {
    json j = good;
    j["format"] = "other";
    expect(j, "format is 'other'");
  }
  {
    json j = good;
    j.erase("layers");
    expect(j, "field 'layers' is missing");
  }
  {
    json j = good;
    j["layers"][0]["us"][2][0][3][0] = -1.0;  // w4, a8, kept_out index 3 (6 channels)
    expect(j, "layer 'a': us[w4a8] at kept_out 6, kept_in 4 is -1");
  }
  {
    json j = good;
    j["layers"][0]["us"][3][0][2][0] = 1000.0;  // w8a8 at kept_out 4 above kept_out 6
    expect(j, "layer 'a': us[w8a8] decreases from kept_out 4 to 6");
  }
  {
    json j = good;
    j["layers"][1]["us"][1][0][0].erase(4);  // a missing kept_in grid point
    expect(j, "missing grid points");
  }
  {
    json j = good;
    j["layers"][1]["us"][1][0][0][2] = nullptr;
    expect(j, "is missing (null)");
  }
  {
    json j = good;
    j["layers"][0]["kept_out"] = {1, 2, 4, 6, 7};
    expect(j, "kept_out ends at 7");
  }
  {
    json j = good;
    j["layers"][1]["in_from"] = "zzz";
    expect(j, "in_from 'zzz' is not an earlier layer");
  }
  {
    json j = good;
    j["layers"][1]["name"] = "a";
    expect(j, "layer 'a' appears twice");
  }
  {
    json j = good;
    j["weight_bits"] = {0, 2, 4, 8, 16};
    expect(j, "misses grid point 32");
  }
  {
    json j = good;
    j["layers"][1]["act_bits"] = {2, 3, 8, 16, 32};
    expect(j, "act_bits holds 3");
  }
}

TEST(CostTable, CheckGraphNamesTheMismatch) {
  ZooOptions zo;
  zo.input_shape = {1, 28, 28};
  zo.num_classes = 10;
  const Graph g = make_graph("lenet5", zo);
  CostTable t = toy();
  t.input = {1, 28, 28};
  try {
    t.check_graph(g);
    FAIL();
  } catch (const CostTableError& e) {
    EXPECT_NE(std::string(e.what()).find("layer names do not match the graph"), std::string::npos) << e.what();
  }
  t.input = {3, 32, 32};
  try {
    t.check_graph(g);
    FAIL();
  } catch (const CostTableError& e) {
    EXPECT_NE(std::string(e.what()).find("input [3, 32, 32]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bbits::contract
