// Torch-free parts of the training library: MAC and BOP counts, the IDX
// reader, learning-rate schedules (the graph and the model zoo: tests/contract).
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "bbits/training/cost.h"
#include "bbits/training/dataset.h"
#include "bbits/contract/zoo.h"
#include "bbits/training/schedule.h"

using namespace bbits::train;

TEST(Cost, LeNet5MacsAndBopsByHand) {
  const Graph g = bbits::contract::make_graph("lenet5");
  const auto m = layer_macs(g);
  EXPECT_EQ(m.at("features.0"), 24 * 24 * 32 * 1 * 25);
  EXPECT_EQ(m.at("features.2"), 8 * 8 * 64 * 32 * 25);
  EXPECT_EQ(m.at("classifier.0"), 512 * 1024);
  EXPECT_EQ(m.at("classifier.1"), 10 * 512);
  // Activation quantizers are charged the MACs of the layers they feed.
  const auto q = quantizer_macs(g);
  EXPECT_EQ(q.at("input"), m.at("features.0"));
  EXPECT_EQ(q.at("features.0"), m.at("features.2"));
  EXPECT_EQ(q.at("features.2"), m.at("classifier.0"));
  EXPECT_EQ(q.at("classifier.0"), m.at("classifier.1"));

  // Everything at 32/32, nothing pruned: relative BOPs from 8-bit input only.
  const int64_t fp = (460800 + 3276800 + 524288 + 5120) * int64_t{1024};
  auto r = compute_costs(g, {}, {}, {});
  EXPECT_EQ(r.bops_fp32, fp);
  EXPECT_EQ(r.bops, 460800 * 32 * 8 + (3276800 + 524288 + 5120) * int64_t{1024});

  // Mixed bits with pruning, counted by hand.
  std::map<std::string, int> wb{{"features.0", 4}, {"features.2", 2}, {"classifier.0", 8}, {"classifier.1", 8}};
  std::map<std::string, int> ab{{"input", 8}, {"features.0", 4}, {"features.2", 8}, {"classifier.0", 2}};
  std::map<std::string, std::vector<bool>> keep;
  keep["features.0"] = std::vector<bool>(32, false);
  for (int i = 0; i < 16; ++i) keep["features.0"][i] = true;
  keep["features.2"] = std::vector<bool>(64, false);
  for (int i = 0; i < 32; ++i) keep["features.2"][2 * i] = true;
  keep["classifier.0"] = std::vector<bool>(512, false);
  for (int i = 0; i < 100; ++i) keep["classifier.0"][i * 5] = true;
  r = compute_costs(g, wb, ab, keep);
  const int64_t c0 = 24 * 24 * 16 * 1 * 25;        // 16 kept outputs
  const int64_t c2 = 8 * 8 * 32 * 16 * 25;         // 32 kept outputs, 16 kept inputs
  const int64_t f0 = 100 * (32 * 16);              // 100 kept outputs, 32 kept channels x 4 x 4
  const int64_t f1 = 10 * 100;                     // 100 kept inputs
  EXPECT_EQ(r.layers[0].macs, c0);
  EXPECT_EQ(r.layers[1].macs, c2);
  EXPECT_EQ(r.layers[2].macs, f0);
  EXPECT_EQ(r.layers[3].macs, f1);
  EXPECT_EQ(r.bops, c0 * 4 * 8 + c2 * 2 * 4 + f0 * 8 * 8 + f1 * 8 * 2);
  EXPECT_DOUBLE_EQ(r.relative, static_cast<double>(r.bops) / static_cast<double>(fp));
  EXPECT_EQ(r.layers[1].kept, 32);
  EXPECT_EQ(r.layers[1].total, 64);
  // A fully pruned layer costs nothing and reports 0 weight bits.
  keep["classifier.0"] = std::vector<bool>(512, false);
  r = compute_costs(g, wb, ab, keep);
  EXPECT_EQ(r.layers[2].weight_bits, 0);
  EXPECT_EQ(r.layers[2].bops, 0);
  EXPECT_EQ(r.layers[3].macs, 0);
  EXPECT_NE(layer_table(r).find("classifier.0"), std::string::npos);
}

namespace {
void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}
}  // namespace

TEST(Dataset, ReadsGzippedIdxAndRejectsBadFiles) {
  const auto dir = std::filesystem::temp_directory_path() / ("bbits_idx_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::vector<uint8_t> img = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
  for (int i = 0; i < 12; ++i) img.push_back(static_cast<uint8_t>(i * 20));
  std::vector<uint8_t> lab = {0, 0, 8, 1, 0, 0, 0, 2, 7, 3};
  write_gz((dir / "i.gz").string(), img);
  write_gz((dir / "l.gz").string(), lab);
  const ImageSet s = read_idx_images((dir / "i.gz").string(), (dir / "l.gz").string());
  EXPECT_EQ(s.count, 2);
  EXPECT_EQ(s.rows, 2);
  EXPECT_EQ(s.cols, 3);
  EXPECT_EQ(s.pixels[7], 140);
  EXPECT_EQ(s.labels[1], 3);
  img.pop_back();  // truncated
  write_gz((dir / "t.gz").string(), img);
  EXPECT_THROW(read_idx_images((dir / "t.gz").string(), (dir / "l.gz").string()), std::runtime_error);
  try {
    load_fashion_mnist("train", (dir / "missing").string());
    FAIL() << "missing files accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("dataset-fashion-mnist"), std::string::npos);
  }
  EXPECT_THROW(load_fashion_mnist("validation", dir.string()), std::invalid_argument);
  std::filesystem::remove_all(dir);
}

TEST(Dataset, FashionMnistTestSplitWhenInstalled) {
  if (!std::filesystem::exists(std::string(kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const ImageSet s = load_fashion_mnist("test");
  EXPECT_EQ(s.count, 10000);
  EXPECT_EQ(s.rows, 28);
  EXPECT_EQ(s.cols, 28);
  EXPECT_EQ(take(s, 10).labels.size(), 10u);
}

// --pad: zeros around every image, the pixels and labels unchanged inside.
TEST(Dataset, PadAddsZerosOnEachSide) {
  ImageSet s;
  s.count = 2;
  s.rows = 2;
  s.cols = 3;
  s.pixels = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  s.labels = {3, 4};
  const ImageSet p = pad(s, 2);
  EXPECT_EQ(p.count, 2);
  EXPECT_EQ(p.rows, 6);
  EXPECT_EQ(p.cols, 7);
  EXPECT_EQ(p.labels, s.labels);
  ASSERT_EQ(p.pixels.size(), 2u * 6 * 7);
  int nonzero = 0;
  for (uint8_t v : p.pixels) nonzero += v != 0;
  EXPECT_EQ(nonzero, 12);
  EXPECT_EQ(p.pixels[(0 * 6 + 2) * 7 + 2], 1);
  EXPECT_EQ(p.pixels[(0 * 6 + 3) * 7 + 4], 6);
  EXPECT_EQ(p.pixels[(1 * 6 + 2) * 7 + 2], 7);
  EXPECT_EQ(p.pixels[(1 * 6 + 3) * 7 + 4], 12);
  EXPECT_EQ(pad(s, 0).pixels, s.pixels);
  EXPECT_THROW(pad(s, -1), std::invalid_argument);
}

// The schedules against the reference's formulas, by hand.
TEST(Schedule, LinearTailIsTheReferenceMakeLrScheduler) {
  // make_lr_scheduler(1e-3, 15): ep_sched = int(2/3 * 15) = 10; LambdaLR at
  // epoch e > 10 gives (e - 15) / (10 - 15). Only the weights move.
  const LrSchedule s = LrSchedule::parse("linear-tail");
  for (int64_t t : {0, 5, 10}) EXPECT_DOUBLE_EQ(s.lr(1e-3, t, 15, true), 1e-3) << t;
  EXPECT_DOUBLE_EQ(s.lr(1e-3, 11, 15, true), 1e-3 * 4.0 / 5.0);
  EXPECT_DOUBLE_EQ(s.lr(1e-3, 14, 15, true), 1e-3 * 1.0 / 5.0);
  EXPECT_DOUBLE_EQ(s.lr(1e-2, 14, 15, false), 1e-2);  // gates, ranges: constant
  // 3 epochs: ep_sched = 2 and t runs 0..2, so the rate never decays.
  EXPECT_DOUBLE_EQ(s.lr(1e-3, 2, 3, true), 1e-3);
  EXPECT_EQ(s.to_string(), "linear-tail");
}

TEST(Schedule, MultiStepAndCosine) {
  // MultiStepLR(milestones [10, 20], gamma 0.1), stepped once per epoch: every group.
  const LrSchedule m = LrSchedule::parse("multistep:10:20");
  EXPECT_DOUBLE_EQ(m.lr(3e-3, 9, 30, true), 3e-3);
  EXPECT_DOUBLE_EQ(m.lr(3e-3, 10, 30, true), 3e-4);
  EXPECT_DOUBLE_EQ(m.lr(1e-3, 19, 30, false), 1e-4);
  EXPECT_NEAR(m.lr(1e-3, 20, 30, false), 1e-5, 1e-20);
  EXPECT_EQ(m.to_string(), "multistep:10:20");
  // CosineAnnealingLR: eta + (base - eta) (1 + cos(pi t / T)) / 2; weights to
  // eta_min, the other groups to 0.
  const LrSchedule c = LrSchedule::parse("cosine:0");
  EXPECT_DOUBLE_EQ(c.lr(1e-4, 0, 8, true), 1e-4);
  EXPECT_NEAR(c.lr(1e-4, 2, 8, true), 1e-4 * (1 + std::sqrt(0.5)) / 2, 1e-18);  // cos(pi/4)
  EXPECT_NEAR(c.lr(1e-4, 4, 8, false), 5e-5, 1e-18);
  EXPECT_NEAR(c.lr(1e-4, 8, 8, true), 0.0, 1e-18);
  const LrSchedule e = LrSchedule::parse("cosine:1e-5");
  EXPECT_NEAR(e.lr(1e-4, 8, 8, true), 1e-5, 1e-18);
  EXPECT_NEAR(e.lr(1e-4, 8, 8, false), 0.0, 1e-18);
  EXPECT_NEAR(e.lr(1e-4, 4, 8, true), 1e-5 + 9e-5 / 2, 1e-18);
  EXPECT_EQ(LrSchedule::parse("cosine").eta_min, 0.0);
  EXPECT_DOUBLE_EQ(LrSchedule::parse("constant").lr(0.5, 99, 100, true), 0.5);
}

TEST(Schedule, BadSpecificationsNameTheProblem) {
  for (const char* bad : {"", "cosin", "multistep", "multistep:20:10", "multistep:0", "multistep:a", "cosine:x",
                          "cosine:-1", "constant:3", "cosine:0:1"}) {
    try {
      LrSchedule::parse(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(optimizer_from_name("SGD"), OptimizerKind::Sgd);
  EXPECT_EQ(optimizer_from_name("Adam"), OptimizerKind::Adam);
  EXPECT_THROW(optimizer_from_name("rmsprop"), std::invalid_argument);
  OptimizerPlan sgd{OptimizerKind::Sgd, 1e-4, 0.0};
  EXPECT_DOUBLE_EQ(sgd.momentum(), 0.9);
  EXPECT_TRUE(sgd.nesterov());
}
