// Budgets (training/budget.h): the multiplicative dual-ascent controller on
// toy problems, the reachability check, and the BOP-unit cost table against
// compute_costs. Torch-free.
#include <gtest/gtest.h>

#include <cmath>

#include "bbits/contract/zoo.h"
#include "bbits/training/budget.h"
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
