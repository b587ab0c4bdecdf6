// Budgets (training/budget.h): the multiplicative dual-ascent controller on
// toy problems, the reachability check, and the BOP-unit cost table against
// compute_costs. Torch-free.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "bbits/contract/zoo.h"
#include "bbits/training/budget.h"
#include "bbits/format/quant.h"
#include "bbits/training/cost.h"

using namespace bbits::train;

namespace {

bbits::contract::Graph lenet() {
  bbits::contract::ZooOptions zo;
  zo.input_shape = {1, 28, 28};
  zo.num_classes = 10;
  return bbits::contract::make_graph("lenet5", zo);
}

}  // namespace

// min_x (x - 5)^2 + mu * x  subject to  x <= 2: the controller finds mu = 6
// (stationarity 2 (x - 5) + mu = 0 at x = 2) by gradient descent on x and one
// dual step per primal step.
TEST(BudgetController, ConvergesOnAToyProblem) {
  BudgetController ctl(2.0, 0.1, 0.05);
  double x = 5.0, mu = ctl.mu();
  for (int step = 0; step < 4000; ++step) {
    x -= 0.05 * (2.0 * (x - 5.0) + mu);
    mu = ctl.update(x);
  }
  EXPECT_NEAR(x / 2.0, 1.0, 0.05);  // the budget met within 5%
  EXPECT_NEAR(mu, 6.0, 0.5);
}

// A discrete cost (as a deterministic-gate model's): cost = 8 bits while the
// "gate" parameter g > 0, else 4; the gate is pulled open by the loss and shut
// by mu. The budget 4 is met after the controller raises mu; a loose budget
// lets mu decay.
TEST(BudgetController, MeetsADiscreteBudgetAndRelaxesALooseOne) {
  BudgetController ctl(4.0, 0.01, 0.1);
  double g = 3.0, mu = ctl.mu();
  for (int step = 0; step < 2000; ++step) {
    g -= 0.01 * (-1.0 + mu);  // loss -g + mu g
    mu = ctl.update(g > 0 ? 8.0 : 4.0);
  }
  EXPECT_LE(g, 0.0);
  BudgetController loose(16.0, 1.0, 0.1);
  for (int step = 0; step < 200; ++step) loose.update(8.0);
  EXPECT_LT(loose.mu(), 1e-3);
}

TEST(BudgetController, RejectsBadSettings) {
  EXPECT_THROW(BudgetController(0.0, 0.1, 0.05), std::invalid_argument);
  EXPECT_THROW(BudgetController(1.0, 0.0, 0.05), std::invalid_argument);
  EXPECT_THROW(BudgetController(1.0, 0.1, -1.0), std::invalid_argument);
  BudgetController c(1.0, 0.1, 0.05);
  EXPECT_THROW(c.update(std::nan("")), std::invalid_argument);
}

TEST(Budget, UnreachableBudgetsAreRejectedNamingTheBound) {
  EXPECT_NO_THROW(check_budget("--target-ms 1", 1.0, 0.5, 2.0, "ms"));
  try {
    check_budget("--target-ms 0.1", 0.1, 0.5, 2.0, "ms");
    FAIL();
  } catch (const BudgetError& e) {
    EXPECT_NE(std::string(e.what()).find("--target-ms 0.1 is unreachable: below what full pruning"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("0.5 ms"), std::string::npos) << e.what();
  }
  try {
    check_budget("--target-rel-bops 50", 50, 0.01, 25, "% relative BOPs");
    FAIL();
  } catch (const BudgetError& e) {
    EXPECT_NE(std::string(e.what()).find("above the unquantized network (25 % relative BOPs)"), std::string::npos)
        << e.what();
  }
}

// The BOP-unit table predicts what compute_costs counts, for decisions where
// the pruned channels are removed from both sides.
TEST(Budget, BopTableAgreesWithComputeCosts) {
  const auto g = lenet();
  const auto t = bop_cost_table(g);
  t.check_graph(g);
  std::map<std::string, int> wb, ab_node, ab_layer;
  std::map<std::string, std::vector<bool>> keep;
  std::map<std::string, int64_t> kept;
  int i = 0;
  for (const auto& n : g.nodes) {
    if (!n.is_layer()) continue;
    wb[n.name] = (i % 2) ? 4 : 8;
    if (n.act_quant) ab_node[n.name] = (i % 2) ? 8 : 2;
    if (n.prune) {
      std::vector<bool> m(static_cast<size_t>(n.outputs()), true);
      const int64_t k = n.outputs() / 3 + 1;
      for (int64_t c = k; c < n.outputs(); ++c) m[static_cast<size_t>(c)] = false;
      keep[n.name] = m;
      kept[n.name] = k;
    }
    ++i;
  }
  for (const auto& L : t.layers) {
    const std::string f = bbits::contract::feeding_quantizer(g, g.node(L.name).inputs.at(0));
    ab_layer[L.name] = f == g.input.name ? 8 : ab_node.at(f);
  }
  const auto r = compute_costs(g, wb, ab_node, keep);
  EXPECT_NEAR(t.predict_us(wb, ab_layer, kept), 100.0 * r.relative, 1e-9 * 100.0 * r.relative);
}

// Over budget mu rises by at most e^eta per step; under budget it is released
// ten times as fast (a pruned gate cannot come back by itself).
TEST(BudgetController, RisesSlowlyAndReleasesQuickly) {
  BudgetController up(1.0, 1.0, 0.02);
  EXPECT_NEAR(up.update(100.0), std::exp(0.02), 1e-12);  // capped at eta
  EXPECT_NEAR(up.update(1.0), std::exp(0.02), 1e-12);    // on budget: unchanged
  BudgetController down(1.0, 1.0, 0.02);
  EXPECT_NEAR(down.update(0.01), std::exp(-0.2), 1e-12);  // capped at 10 eta
  BudgetController near(1.0, 1.0, 0.02);
  EXPECT_NEAR(near.update(0.99), std::exp(10 * 0.02 * std::log(0.99)), 1e-12);
}

namespace {

// The lockstep problem (docs/TRAINING.md, "Budgets"): every gate of a layer
// starts at the same log alpha and moves at the same rate, so the
// deterministic-gate cost does not move until all of them cross the
// threshold together. One shared log alpha `la` stands for all the gates of a
// layer: kept channels on both sides (q^2) times the expected bits of the
// nested bit gates, relative to the float layer; the data pull every gate
// open (loss -w q), the prior closes them (mu E). Gates move as under Adam
// with a steady gradient: a fixed step against the gradient's sign.
struct Lockstep {
  double peak_mu = 0;
  int peak_step = -1, first_crossing = -1;
  bool fell_while_over = false;  // mu fell while the deterministic model was over budget
  double lowest_la = 1e9, final_expected = 0;
};

double q_on(double la) { return 1.0 - bbits::gate_prob_zero(la); }
double expected_cost(double la) {
  const double q = q_on(la);
  const double p[5] = {1 - q, q * (1 - q), q * q * (1 - q), q * q * q * (1 - q), q * q * q * q};
  const double bits[5] = {2, 4, 8, 16, 32};
  double b = 0;
  for (int i = 0; i < 5; ++i) b += p[i] * bits[i];
  return q * q * b / 32.0;
}
double deterministic_cost(double la) {
  return bbits::gate_on(la) ? 1.0 : (1.0 / 64) * (1.0 / 64) * 2.0 / 32.0;  // all open, or 2 bits and one channel of 64
}

Lockstep run_lockstep(BudgetSignal signal, double target) {
  BudgetController ctl(target, 0.01, 0.02);
  double la = 6.0, mu = ctl.mu();
  Lockstep r;
  for (int step = 0; step < 3000; ++step) {
    const double h = 1e-5;
    const auto loss = [&](double x) { return -q_on(x) + mu * expected_cost(x); };
    const double g = (loss(la + h) - loss(la - h)) / (2 * h);
    if (std::abs(g) > 1e-12) la -= g > 0 ? 0.03 : -0.03;
    r.lowest_la = std::min(r.lowest_la, la);
    const double d = deterministic_cost(la);
    const double before = mu;
    mu = ctl.update(budget_signal(signal, expected_cost(la), d));
    if (mu < before && d > target) r.fell_while_over = true;
    if (mu > r.peak_mu) {
      r.peak_mu = mu;
      r.peak_step = step;
    }
    if (r.first_crossing < 0 && !bbits::gate_on(la)) r.first_crossing = step;
  }
  r.final_expected = expected_cost(la);
  return r;
}

}  // namespace

// On the deterministic cost the controller sees nothing until the gates
// cross, so mu rises all the way to the crossing and the gates overshoot. On
// the expected cost (or the lower of the two, the default) mu stops rising
// and falls while the deterministic model is still over budget, long before
// any crossing (the controller holds mu while the expected cost falls fast,
// and releases it once that is under budget); the gates overshoot less and
// settle with the expected cost on the budget.
TEST(BudgetController, TheExpectedCostSignalReactsBeforeTheGatesCross) {
  // Budget 0.1: below what the gates reach at their threshold (0.14), so they
  // must cross.
  const Lockstep det = run_lockstep(BudgetSignal::Deterministic, 0.1);
  const Lockstep low = run_lockstep(BudgetSignal::Min, 0.1);
  ASSERT_GT(det.first_crossing, 0);
  ASSERT_GT(low.first_crossing, 0);
  EXPECT_GE(det.peak_step, det.first_crossing - 1);  // mu rose until the crossing
  EXPECT_FALSE(det.fell_while_over);
  EXPECT_LT(low.peak_step, low.first_crossing - 50);  // ... here it peaked 50+ steps before
  EXPECT_LT(low.peak_mu, det.peak_mu / 5);
  EXPECT_GT(low.lowest_la, det.lowest_la + 0.2);  // less overshoot
  // Budget 0.25, above the cost at the threshold: on the expected cost the
  // gates stop before crossing with E on the budget (the projection then
  // makes the deterministic model meet it); on the deterministic cost they
  // cross anyway.
  const Lockstep det2 = run_lockstep(BudgetSignal::Deterministic, 0.25);
  const Lockstep exp2 = run_lockstep(BudgetSignal::Expected, 0.25);
  EXPECT_GT(det2.first_crossing, 0);
  EXPECT_FALSE(det2.fell_while_over);
  EXPECT_TRUE(exp2.fell_while_over);  // released while the deterministic model was still over budget
  EXPECT_NEAR(exp2.final_expected / 0.25, 1.0, 0.05);
  EXPECT_LT(exp2.peak_mu, det2.peak_mu / 5);
}

TEST(BudgetController, SignalNamesAndChoice) {
  EXPECT_EQ(parse_budget_signal("min"), BudgetSignal::Min);
  EXPECT_EQ(parse_budget_signal("expected"), BudgetSignal::Expected);
  EXPECT_EQ(parse_budget_signal("deterministic"), BudgetSignal::Deterministic);
  EXPECT_THROW(parse_budget_signal("mean"), std::invalid_argument);
  EXPECT_EQ(budget_signal(BudgetSignal::Min, 2.0, 3.0), 2.0);
  EXPECT_EQ(budget_signal(BudgetSignal::Min, 4.0, 3.0), 3.0);
  EXPECT_EQ(budget_signal(BudgetSignal::Expected, 4.0, 3.0), 4.0);
  EXPECT_EQ(budget_signal(BudgetSignal::Deterministic, 4.0, 3.0), 3.0);
}

// Over budget and falling fast, mu holds; falling slowly, it rises.
TEST(BudgetController, HoldsWhileTheCostFallsFast) {
  BudgetController c(1.0, 1.0, 0.02);
  c.update(4.0);
  const double m = c.mu();
  EXPECT_EQ(c.update(4.0 * std::exp(-0.01)), m);   // fell by 0.01 >= 0.1 eta: hold
  EXPECT_GT(c.update(4.0 * std::exp(-0.011)), m);  // fell by 0.001: rise
}
