// The latency prior (training/latency.h): the expected time against finite
// differences in every log alpha, against the table's prediction when the
// gates are saturated, and the trainer-facing checks (a table of another
// network, unreachable budgets).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "bbits/contract/zoo.h"
#include "bbits/training/latency.h"
#include "bbits/training/network.h"
#include "bbits/training/trainer.h"

using namespace bbits::train;
using bbits::contract::CostTable;

namespace {

Graph make(const std::string& arch, double width = 1.0) {
  return bbits::contract::make_graph(arch, model_options({1, 28, 28}, width));
}

// A table for g whose times are not bilinear in the kept counts (so the
// interpolation matters) but non-decreasing in them.
CostTable curved_table(const Graph& g) {
  CostTable t = bop_cost_table(g);
  for (auto& L : t.layers) {
    for (size_t wi = 0; wi < t.weight_bits.size(); ++wi)
      for (size_t ai = 0; ai < L.act_bits.size(); ++ai)
        for (size_t oi = 0; oi < L.kept_out.size(); ++oi)
          for (size_t ii = 0; ii < L.kept_in.size(); ++ii) {
            const double wb = t.weight_bits[wi], ab = L.act_bits[ai];
            L.us[L.index(wi, ai, oi, ii)] = wb == 0 ? 0.0
                                                    : (1.0 + 0.1 * wb + 0.03 * ab + 0.002 * wb * ab) *
                                                          (1.0 + std::pow(static_cast<double>(L.kept_out[oi]), 0.7)) *
                                                          (1.0 + std::sqrt(static_cast<double>(L.kept_in[ii])));
          }
  }
  t.other = {{"pools", "maxpool", 1.5, -1}};
  t.call_us = 0.25;
  return CostTable::from_json(t.to_json());
}

void randomize_gates(Net& net, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-2.5f, 2.5f);
  at::NoGradGuard ng;
  for (auto& [name, q] : net.quantizers())
    for (auto& p : q->gate_parameters()) {
      auto a = p.accessor<float, 1>();
      for (int64_t i = 0; i < p.size(0); ++i) a[i] = u(rng);
    }
}

}  // namespace

TEST(LatencyPrior, GradientMatchesFiniteDifferencesInEveryLogAlpha) {
  const Graph g = make("lenet5");
  Net net(g, QuantSetup{});
  randomize_gates(net, 7);
  ExpectedCost ec(net, curved_table(g));
  at::Tensor e = ec.expected();
  const double e0 = e.item<double>();
  EXPECT_GT(e0, 0.0);
  const auto params = net.gate_parameters();
  ASSERT_FALSE(params.empty());
  for (auto& p : params)
    if (p.grad().defined()) p.grad().zero_();
  e.backward();
  int checked = 0, with_gradient = 0;
  for (auto& p : params) {
    ASSERT_TRUE(p.grad().defined());
    const int64_t n = p.numel();
    // every bit gate, and up to 6 pruning gates per layer
    for (int64_t i = 0; i < std::min<int64_t>(n, 6); ++i) {
      const double h = 1e-2;
      double fp, fm;
      {
        at::NoGradGuard ng;
        const float v = p.data_ptr<float>()[i];
        p.data_ptr<float>()[i] = v + static_cast<float>(h);
        fp = ec.expected().item<double>();
        p.data_ptr<float>()[i] = v - static_cast<float>(h);
        fm = ec.expected().item<double>();
        p.data_ptr<float>()[i] = v;
      }
      const double fd = (fp - fm) / (2 * h);
      const double ad = p.grad().data_ptr<float>()[i];
      EXPECT_NEAR(ad, fd, 2e-3 * std::max(1.0, std::fabs(fd))) << "parameter of size " << n << " element " << i;
      ++checked;
      with_gradient += std::fabs(ad) > 1e-9;
    }
  }
  EXPECT_GT(checked, 20);
  EXPECT_GT(with_gradient, checked / 2);  // the prior reaches the gates
}

TEST(LatencyPrior, SaturatedGatesGiveTheTablesPrediction) {
  const Graph g = make("lenet5");
  Net net(g, QuantSetup{});
  randomize_gates(net, 3);
  {  // saturate every gate at its current decision (+-20)
    at::NoGradGuard ng;
    for (auto& [name, q] : net.quantizers())
      for (auto& p : q->gate_parameters()) {
        auto a = p.accessor<float, 1>();
        for (int64_t i = 0; i < p.size(0); ++i) a[i] = a[i] > -0.9353f ? 20.0f : -20.0f;
      }
  }
  ExpectedCost ec(net, curved_table(g));
  const double det = ec.deterministic();
  EXPECT_NEAR(ec.expected().item<double>(), det, 1e-6 * det);
  EXPECT_LE(ec.lowest(), det);
  EXPECT_GE(ec.highest(), det);
  EXPECT_LT(ec.lowest(), ec.highest());
}

TEST(LatencyPrior, ExpectedTimeFallsWhenChannelsArePruned) {
  const Graph g = make("lenet5");
  Net net(g, QuantSetup{});
  ExpectedCost ec(net, curved_table(g));
  const double full = ec.expected().item<double>();
  {
    at::NoGradGuard ng;
    net.layer(g.nodes.front().name)->wq->log_alpha_2.fill_(-20.0f);  // conv1: every channel off
  }
  const double pruned = ec.expected().item<double>();
  EXPECT_LT(pruned, full);  // conv1's outputs and conv2's inputs shrink
}

TEST(LatencyPrior, ATableOfAnotherNetworkIsRejected) {
  const Graph g = make("lenet5");
  Net net(g, QuantSetup{});
  const CostTable other = curved_table(make("vgg7", 0.25));
  EXPECT_THROW(ExpectedCost(net, other), bbits::contract::CostTableError);
}

TEST(LatencyPrior, CostModelRejectsUnreachableBudgetsAndMissingTables) {
  const Graph g = make("lenet5");
  Net net(g, QuantSetup{});
  const auto path = (std::filesystem::temp_directory_path() / "bbits_latency_test_table.json").string();
  const CostTable t = curved_table(g);
  t.save(path);
  CostSetup s;
  s.cost = "latency";
  EXPECT_THROW(CostModel(net, s, 0.1), std::invalid_argument);  // no table
  s.table = path;
  CostModel ok(net, s, 0.1);
  EXPECT_FALSE(ok.has_budget());
  EXPECT_GT(ok.regularizer().item<double>(), 0.0);
  ExpectedCost ec(net, t);
  s.target_ms = ec.lowest() * 1e-3 * 0.5;
  EXPECT_THROW(CostModel(net, s, 0.1), BudgetError);
  s.target_ms = ec.highest() * 1e-3 * 1.5;
  EXPECT_THROW(CostModel(net, s, 0.1), BudgetError);
  s.target_ms = (ec.lowest() + ec.highest()) * 0.5e-3;
  CostModel b(net, s, 0.1);
  EXPECT_TRUE(b.has_budget());
  EXPECT_EQ(b.unit(), "ms");
  const double mu0 = b.mu();
  EXPECT_GT(b.update(), mu0);  // all gates open: above the budget, mu grows
  s = CostSetup{};
  s.target_rel_bops = 1e-6;
  EXPECT_THROW(CostModel(net, s, 0.1), BudgetError);
  s.target_rel_bops = 200.0;
  EXPECT_THROW(CostModel(net, s, 0.1), BudgetError);
  std::filesystem::remove(path);
}

// How many single steps up (a quantizer's next bit width, one pruned channel
// of a layer) would keep the model within the budget.
static int steps_that_fit(Net& net, const CostModel& cm) {
  at::NoGradGuard ng;
  int fit = 0;
  for (auto& [name, q] : net.quantizers()) {
    if (!q->enabled() || !q->regularized) continue;
    std::vector<at::Tensor> saved;
    for (const auto& g : q->gate_parameters()) saved.push_back(g.clone());
    const int b = q->bits();
    if (q->bit_gates_learned() && b < 32) {
      at::Tensor las[4] = {q->log_alpha_4, q->log_alpha_8, q->log_alpha_16, q->log_alpha_32};
      const int next = b == 2 ? 0 : b == 4 ? 1 : b == 8 ? 2 : 3;
      las[next].fill_(kGateOn);
      if (next < 3) las[next + 1].fill_(kGateOff);
      EXPECT_EQ(q->bits(), 2 * b) << name;
      fit += cm.deterministic() <= cm.target();
    }
    const auto gp = q->gate_parameters();
    for (size_t i = 0; i < gp.size(); ++i) gp[i].copy_(saved[i]);
    if (q->prune_gates_learned()) {
      const auto k = q->keep();
      const auto it = std::find(k.begin(), k.end(), false);
      if (it != k.end()) {
        q->log_alpha_2[it - k.begin()].fill_(kGateOn);
        fit += cm.deterministic() <= cm.target();
        for (size_t i = 0; i < gp.size(); ++i) gp[i].copy_(saved[i]);
      }
    }
  }
  return fit;
}

TEST(LatencyPrior, ProjectionPutsTheModelOntoTheBudget) {
  const Graph g = make("lenet5");
  const auto path = (std::filesystem::temp_directory_path() / "bbits_latency_test_projection.json").string();
  const CostTable t = curved_table(g);
  t.save(path);
  for (double frac : {0.3, 0.6, 0.9}) {
    Net net(g, QuantSetup{});
    randomize_gates(net, 11);
    ExpectedCost ec(net, t);
    CostSetup s;
    s.cost = "latency";
    s.table = path;
    s.target_ms = (ec.lowest() + frac * (ec.highest() - ec.lowest())) * 1e-3;
    CostModel cm(net, s, 0.1);
    const Projection p = project_to_budget(net, cm);
    EXPECT_NEAR(p.after, cm.deterministic(), 1e-12);
    EXPECT_LE(p.after, *s.target_ms) << frac;
    // Within 5% below the budget, or no single step fits any more (here: the
    // remaining steps are float32 layers the budget cannot pay for).
    if (p.after < 0.95 * *s.target_ms) EXPECT_EQ(steps_that_fit(net, cm), 0) << frac;
    EXPECT_GT(p.closed + p.opened, 0) << p.before << " " << p.closed << " " << p.opened;
  }
  std::filesystem::remove(path);
}

namespace {

// Every learned bit gate at `bits`; of every learned pruning gate the first
// `kept_frac` of the channels kept (log alpha 5), the rest pruned (-5).
void set_gates(Net& net, int bits, double kept_frac) {
  at::NoGradGuard ng;
  for (auto& [name, q] : net.quantizers()) {
    if (!q->enabled()) continue;
    if (q->bit_gates_learned()) {
      q->log_alpha_4.fill_(bits >= 4 ? kGateOn : kGateOff);
      q->log_alpha_8.fill_(bits >= 8 ? kGateOn : kGateOff);
      q->log_alpha_16.fill_(bits >= 16 ? kGateOn : kGateOff);
      q->log_alpha_32.fill_(bits >= 32 ? kGateOn : kGateOff);
    }
    if (q->prune_gates_learned()) {
      auto a = q->log_alpha_2.accessor<float, 1>();
      const int64_t n = q->log_alpha_2.size(0), k = std::max<int64_t>(1, static_cast<int64_t>(kept_frac * n));
      for (int64_t c = 0; c < n; ++c) a[c] = c < k ? 5.0f : -5.0f;
    }
  }
}

void expect_8_bits_and_every_channel(const Net& net) {
  for (const auto& [name, q] : net.quantizers()) {
    if (!q->enabled() || !q->regularized) continue;
    if (q->bit_gates_learned()) EXPECT_EQ(q->bits(), 8) << name;
    if (q->prune_gates_learned()) {
      const auto k = q->keep();
      EXPECT_EQ(std::count(k.begin(), k.end(), true), static_cast<int64_t>(k.size())) << name;
    }
  }
}

}  // namespace

// The projection's worth of a move: narrow steps are worth far more than wide
// ones, and a channel of even a 512-channel layer more than a step beyond 8 bits.
TEST(LatencyPrior, ProjectionWorthOfMoves) {
  EXPECT_GT(bit_step_value(2, 4), bit_step_value(4, 8));
  EXPECT_GT(bit_step_value(4, 8), bit_step_value(8, 16));
  EXPECT_GT(bit_step_value(8, 16), bit_step_value(16, 32));
  EXPECT_GT(bit_step_value(16, 32), 0.0);
  EXPECT_DOUBLE_EQ(bit_step_value(4, 2), bit_step_value(2, 4));
  EXPECT_NEAR(bit_step_value(2, 4), 1.0 / 9 - 1.0 / 225, 1e-15);
  EXPECT_GT(channel_value(512), 100 * bit_step_value(8, 16));
  EXPECT_DOUBLE_EQ(channel_value(64), 1.0 / 64);
}

// Reopening: with every layer at 8 bits and half its channels pruned, and a
// budget that all channels at 8 bits meet, the projection restores channels
// and does not widen any quantizer to 16 or 32 bits (the rule it replaced
// reopened bit gates first). Closing: from the float network down to the cost
// of every layer at 8 bits with all channels, it narrows the bit widths (the
// steps beyond 8 bits are worth almost nothing) and prunes no channel.
TEST(LatencyPrior, ProjectionPrefersChannelsToWideBits) {
  const Graph g = make("lenet5");
  const auto path = (std::filesystem::temp_directory_path() / "bbits_latency_test_projection_rule.json").string();
  const CostTable t = curved_table(g);
  t.save(path);
  Net net(g, QuantSetup{});
  set_gates(net, 8, 1.0);
  const double all8 = ExpectedCost(net, t).deterministic();
  CostSetup s;
  s.cost = "latency";
  s.table = path;
  s.target_ms = all8 * 1e-3;
  {
    set_gates(net, 8, 0.5);
    CostModel cm(net, s, 0.1);
    ASSERT_LT(cm.deterministic(), *s.target_ms);
    const Projection p = project_to_budget(net, cm);
    EXPECT_EQ(p.closed, 0);
    EXPECT_GT(p.opened, 0);
    EXPECT_LE(p.after, *s.target_ms);
    expect_8_bits_and_every_channel(net);
  }
  {
    set_gates(net, 32, 1.0);
    CostModel cm(net, s, 0.1);
    ASSERT_GT(cm.deterministic(), *s.target_ms);
    const Projection p = project_to_budget(net, cm);
    EXPECT_LE(p.after, *s.target_ms);
    expect_8_bits_and_every_channel(net);
  }
  std::filesystem::remove(path);
}
