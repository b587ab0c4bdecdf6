#include "bbits/bench/stats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace bb = bbits::bench;

TEST(Stats, QuantilesInterpolateLinearly) {
  const std::vector<double> s = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(bb::quantile_sorted(s, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(bb::quantile_sorted(s, 1.0), 4.0);
  EXPECT_DOUBLE_EQ(bb::quantile_sorted(s, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(bb::quantile_sorted(s, 0.25), 1.75);  // NumPy: 1.75
  EXPECT_DOUBLE_EQ(bb::quantile_sorted(s, 0.75), 3.25);
}

TEST(Stats, SummaryOfUnsortedSample) {
  const std::vector<double> s = {9, 1, 5, 3, 7};
  const bb::Summary r = bb::summarize(s);
  EXPECT_EQ(r.n, 5u);
  EXPECT_DOUBLE_EQ(r.median, 5);
  EXPECT_DOUBLE_EQ(r.q1, 3);
  EXPECT_DOUBLE_EQ(r.q3, 7);
  EXPECT_DOUBLE_EQ(r.iqr(), 4);
  EXPECT_DOUBLE_EQ(r.relative_iqr(), 0.8);
  EXPECT_DOUBLE_EQ(r.min, 1);
  EXPECT_DOUBLE_EQ(r.max, 9);
  EXPECT_DOUBLE_EQ(r.mean, 5);
}

TEST(Stats, SingleSample) {
  const std::vector<double> s = {42};
  const bb::Summary r = bb::summarize(s);
  EXPECT_DOUBLE_EQ(r.median, 42);
  EXPECT_DOUBLE_EQ(r.iqr(), 0);
}

TEST(Stats, MedianIsRobustToOutliers) {
  const std::vector<double> s = {10, 11, 10, 12, 1e6, 11, 10};
  EXPECT_DOUBLE_EQ(bb::summarize(s).median, 11);
}

TEST(Stats, RejectsBadSamples) {
  EXPECT_THROW(bb::summarize(std::vector<double>{}), std::invalid_argument);
  EXPECT_THROW(bb::summarize(std::vector<double>{1, std::numeric_limits<double>::quiet_NaN()}),
               std::invalid_argument);
  EXPECT_THROW(bb::quantile_sorted(std::vector<double>{1}, 1.5), std::invalid_argument);
}

TEST(Stats, SamplerHonoursWarmupAndRepeats) {
  int calls = 0;
  bb::TimingOptions o;
  o.warmup = 3;
  o.repeats = 4;
  o.min_sample_ns = 0;  // one call per sample
  const auto s = bb::sample_ns([&] { ++calls; }, o);
  EXPECT_EQ(s.size(), 4u);
  EXPECT_EQ(calls, 3 + 4);
  for (double v : s) EXPECT_GE(v, 0.0);
}

TEST(Stats, SamplerBatchesShortCalls) {
  int calls = 0;
  bb::TimingOptions o;
  o.warmup = 0;
  o.repeats = 2;
  o.min_sample_ns = 1e9;  // never reached: stops at max_inner
  o.max_inner = 8;
  bb::sample_ns([&] { ++calls; }, o);
  // Batch sizes 1, 2, 4, 8 while searching (the last is the first sample), then one more batch of 8.
  EXPECT_EQ(calls, 1 + 2 + 4 + 8 + 8);
}

TEST(Stats, SamplerRejectsBadOptions) {
  bb::TimingOptions o;
  o.repeats = 0;
  EXPECT_THROW(bb::sample_ns([] {}, o), std::invalid_argument);
  o.repeats = 1;
  o.warmup = -1;
  EXPECT_THROW(bb::sample_ns([] {}, o), std::invalid_argument);
}
