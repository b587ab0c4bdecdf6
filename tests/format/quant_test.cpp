// The shared numbers: grids, the gated-sum identity, packing, requantization.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "bbits/format/cost.h"
#include "bbits/format/quant.h"

using namespace bbits;

TEST(Quant, GridBounds) {
  EXPECT_EQ(qmin(2, true), -1);
  EXPECT_EQ(qmax(2, true), 1);
  EXPECT_EQ(qmin(8, true), -127);
  EXPECT_EQ(qmax(8, true), 127);
  EXPECT_EQ(qmax(4, false), 15);
  EXPECT_EQ(qmax(16, false), 65535);
  EXPECT_EQ(qmax(16, true), 32767);
}

TEST(Quant, ScaleChainEqualsRangeOverLevels) {
  for (bool sgn : {false, true})
    for (int b : {2, 4, 8, 16}) {
      const double range = sgn ? 2.0 * 1.7 : 1.7;
      EXPECT_NEAR(grid_scale(1.7f, b, sgn), range / ((1 << b) - 1), 1e-6 * range / ((1 << b) - 1)) << b;
    }
}

TEST(Quant, XMaxNeverRoundsPastTheGrid) {
  for (bool sgn : {false, true})
    for (int b : {2, 4, 8, 16}) {
      EXPECT_EQ(quantize_value(3.0f, 3.0f, b, sgn), qmax(b, sgn));
      EXPECT_EQ(quantize_value(100.0f, 3.0f, b, sgn), qmax(b, sgn));
      EXPECT_EQ(quantize_value(-100.0f, 3.0f, b, sgn), qmin(b, sgn));
    }
}

// The gated residual sum with all gates up to b open equals rounding straight
// onto the b-bit grid (DESIGN.md), in exact float32 arithmetic up to ties.
// round_half_even against its definition on libm (std::round, std::trunc):
// the same float, sign of zero included, for every float whose magnitude lies
// in [2^-2, 2^24] in steps of 7 ulps, every half-integer and its neighbours
// up to 2^23, and the special values.
TEST(Quant, RoundHalfEvenMatchesItsLibmDefinition) {
  auto libm = [](float v) {
    float r = std::round(v);
    if (std::fabs(v - std::trunc(v)) == 0.5f) r = 2.0f * std::round(v * 0.5f);
    return r;
  };
  auto same = [](float a, float b) {
    uint32_t x, y;
    std::memcpy(&x, &a, 4);
    std::memcpy(&y, &b, 4);
    return x == y;
  };
  int64_t checked = 0, bad = 0;
  auto check = [&](float v) {
    ++checked;
    if (!same(round_half_even(v), libm(v)) && ++bad <= 10)
      ADD_FAILURE() << "round_half_even(" << v << ") = " << round_half_even(v) << ", libm gives " << libm(v);
  };
  uint32_t lo, hi;
  const float flo = 0.25f, fhi = 16777216.0f;
  std::memcpy(&lo, &flo, 4);
  std::memcpy(&hi, &fhi, 4);
  for (uint32_t u = lo; u <= hi; u += 7) {
    float v;
    std::memcpy(&v, &u, 4);
    check(v);
    check(-v);
  }
  for (int64_t i = 0; i < (int64_t{1} << 23); i += 1 + i / 64) {
    const float h = static_cast<float>(i) + 0.5f;
    for (float v : {h, std::nextafter(h, 0.0f), std::nextafter(h, 1e30f)}) {
      check(v);
      check(-v);
    }
  }
  for (float v : {0.0f, -0.0f, 0.49999997f, 0.5f, 1.5f, 2.5f, 1e-30f, 8388607.5f, 8388608.0f, 3e38f,
                  INFINITY, std::numeric_limits<float>::denorm_min()}) {
    check(v);
    check(-v);
  }
  EXPECT_TRUE(std::isnan(round_half_even(std::nanf(""))));
  EXPECT_EQ(bad, 0) << "of " << checked;
  EXPECT_GT(checked, 1000000);
}

// ValueQuantizer (constants once) gives quantize_value's results.
TEST(Quant, ValueQuantizerMatchesQuantizeValue) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (bool sgn : {false, true})
    for (int b : {2, 4, 8, 16}) {
      const float xmax = 1.37f;
      const ValueQuantizer q(xmax, b, sgn);
      const float s = grid_scale(xmax, b, sgn);
      for (int i = 0; i < 20000; ++i) {
        // Half of the values on exact ties of the grid.
        const float x = i % 2 == 0 ? u(rng) : (static_cast<float>(i % 301) - 150.0f + 0.5f) * s;
        const float c = clip_bound(xmax), lo = sgn ? -c : 0.0f;
        const float xc = std::isnan(x) ? 0.0f : std::min(std::max(x, lo), c);
        const double want = std::clamp<double>(std::nearbyint(xc / s), qmin(b, sgn), qmax(b, sgn));
        ASSERT_EQ(q(x), static_cast<int32_t>(want)) << x << " bits " << b;
        ASSERT_EQ(q(x), quantize_value(x, xmax, b, sgn));
      }
      EXPECT_EQ(q(std::nanf("")), 0);
    }
}

TEST(Quant, ResidualSumEqualsDirectRounding) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.5f, 2.5f);
  const float xmax = 2.0f;
  for (bool sgn : {false, true}) {
    const float c = clip_bound(xmax);
    for (int i = 0; i < 20000; ++i) {
      float x = u(rng);
      x = std::min(std::max(x, sgn ? -c : 0.0f), c);
      double xq = 0.0;
      float s = grid_scale(xmax, 2, sgn);
      double acc = s * round_half_even(x / s);
      int64_t direct_prev = static_cast<int64_t>(round_half_even(x / s));
      EXPECT_EQ(direct_prev, quantize_value(x, xmax, 2, sgn));
      for (int b : {4, 8, 16}) {
        const float sb = grid_scale(xmax, b, sgn);
        acc += sb * round_half_even(static_cast<float>((x - acc) / sb));
        xq = acc;
        const int32_t q = quantize_value(x, xmax, b, sgn);
        EXPECT_NEAR(xq, q * static_cast<double>(sb), 1.01 * sb) << "b=" << b << " x=" << x;
        // Exact except at rounding ties: the integer multiple matches.
        EXPECT_LE(std::fabs(xq / sb - q), 1.0 + 1e-3);
      }
    }
  }
}

TEST(Quant, GateRule) {
  EXPECT_TRUE(gate_on(-0.93));
  EXPECT_FALSE(gate_on(-0.94));
  EXPECT_EQ(bits_from_gates(6, 6, 6, 6), 32);
  EXPECT_EQ(bits_from_gates(6, 6, -1, 6), 8);
  EXPECT_EQ(bits_from_gates(-3, 6, 6, 6), 2);
  EXPECT_EQ(bits_from_gates(6, -2.0, 6, 6), 4);
}

TEST(Quant, PackRoundTrip) {
  std::mt19937 rng(1);
  for (int b : {2, 4, 8, 16})
    for (int k : {1, 3, 4, 5, 17, 64, 129}) {
      std::uniform_int_distribution<int> d(static_cast<int>(qmin(b, true)), static_cast<int>(qmax(b, true)));
      std::vector<int32_t> v(k);
      for (auto& x : v) x = d(rng);
      std::vector<uint8_t> row(packed_row_bytes(k, b) + 1, 0xAB);
      pack_row(v.data(), k, b, row.data());
      EXPECT_EQ(row.back(), 0xAB) << "wrote past the row";
      for (int i = 0; i < k; ++i) ASSERT_EQ(unpack_value(row.data(), i, b), v[i]) << b << " " << k << " " << i;
    }
}

TEST(Quant, PackIsLowBitsFirst) {
  const int32_t v[4] = {1, -1, 0, 1};  // 2-bit codes 01, 11, 00, 01
  uint8_t row[1];
  pack_row(v, 4, 2, row);
  EXPECT_EQ(row[0], 0b01001101);
  const int32_t w[2] = {-7, 3};  // 4-bit codes 1001, 0011
  pack_row(w, 2, 4, row);
  EXPECT_EQ(row[0], 0x39);
}

TEST(Quant, RequantMatchesRealArithmetic) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> ur(1e-6, 3.0);
  std::uniform_int_distribution<int64_t> ua(-(int64_t{1} << 30), int64_t{1} << 30);
  for (int i = 0; i < 10000; ++i) {
    const double r = ur(rng);
    const Requant q = make_requant(r);
    EXPECT_GE(q.multiplier, 1 << 30);
    const int64_t a = ua(rng);
    const int64_t got = apply_requant(a, q);
    EXPECT_LE(std::fabs(static_cast<double>(got) - a * r), 0.5 + 1e-6 * std::fabs(a * r) + 1e-3);
  }
  // Ties round towards +infinity.
  const Requant half = make_requant(0.5);
  EXPECT_EQ(apply_requant(3, half), 2);
  EXPECT_EQ(apply_requant(-3, half), -1);
  EXPECT_THROW(make_requant(0.0), std::invalid_argument);
  EXPECT_THROW(make_requant(std::ldexp(1.0, 40)), std::invalid_argument);
}

TEST(Cost, LeNet5HandCount) {
  // conv1 1->32 k5 on 28x28 -> 24x24; conv2 32->64 k5 on 12x12 -> 8x8.
  EXPECT_EQ(cost::conv2d_macs(24, 24, 32, 1, 5, 5), 460800);
  EXPECT_EQ(cost::conv2d_macs(8, 8, 64, 32, 5, 5), 3276800);
  EXPECT_EQ(cost::fc_macs(512, 1024), 524288);
  EXPECT_EQ(cost::bops(cost::fc_macs(10, 512), 4, 8), 5120 * 32);
  EXPECT_EQ(cost::weight_bytes(3, 5, 2), 3 * 2);
  // Absurd shapes saturate instead of overflowing.
  EXPECT_EQ(cost::bops(INT64_MAX / 4, 8, 8), INT64_MAX);
  EXPECT_EQ(cost::conv2d_macs(1 << 20, 1 << 20, 1 << 20, 1 << 10, 3, 3), INT64_MAX);
  EXPECT_EQ(cost::bops_fp32(INT64_MAX / 1000), INT64_MAX);
  EXPECT_EQ(cost::weight_bytes(INT64_MAX / 2, 16, 8), INT64_MAX);
  static_assert(cost::fc_macs(512, 1024) == 524288);
}
