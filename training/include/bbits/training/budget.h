// bbits training — budgets instead of mu (docs/TRAINING.md, "Budgets"): the
// regularizer strength mu is adapted during training by dual ascent on the
// Lagrangian L = CE + mu (cost - target), in a multiplicative form
//   mu <- clamp(mu * exp(s), mu_min, mu_max),  r = ln(cost / target),
//   s = min(eta r, eta) over budget, max(10 eta r, -10 eta) under it,
//   s = 0 over budget while the cost falls by at least eta / 10 in log per step,
// so that mu stays positive, grows slowly while the model costs more than the
// budget and is released quickly once it costs less. The cost it sees is the
// budget signal (BudgetSignal). Torch-free.
#pragma once

#include <stdexcept>
#include <string>

#include "bbits/contract/cost_table.h"
#include "bbits/contract/graph.h"

namespace bbits::train {

class BudgetController {
 public:
  // target > 0; mu0 > 0 (the starting mu); eta > 0 (step of log mu per unit
  // of relative excess cost). Throws std::invalid_argument naming the bad value.
  BudgetController(double target, double mu0, double eta, double mu_min = 1e-6, double mu_max = 1e6);

  // One dual step with the current cost; returns the new mu.
  double update(double cost);
  static constexpr double kRelease = 10.0;  // how much faster mu falls than it rises
  static constexpr double kHold = 0.1;      // over budget, mu holds while ln(previous / cost) >= kHold x eta
  double mu() const { return mu_; }
  double target() const { return target_; }

 private:
  double target_, mu_, eta_, mu_min_, mu_max_;
  double previous_ = -1.0;  // the cost of the last update (< 0: none yet)
};

// What the controller sees as "the cost": the deterministic-gate model's
// (moves in steps, only when a gate crosses its threshold), the expected cost
// under the gate distributions (smooth, moves with every gate), or the lower
// of the two (`min`, the default): the expected cost while the gates close
// (it falls before any gate crosses, so mu stops rising and is released
// before the crossing), the deterministic one once it is lower (an overshoot
// releases mu at once).
enum class BudgetSignal { Deterministic, Expected, Min };
BudgetSignal parse_budget_signal(const std::string& s);  // "deterministic" | "expected" | "min"; else invalid_argument
const char* budget_signal_name(BudgetSignal s);
double budget_signal(BudgetSignal s, double expected, double deterministic);

// A budget that the network cannot meet: below what every learnable gate
// closed (2 bits, all prunable channels but one pruned) reaches, or above the
// unquantized network. Raised before training starts.
class BudgetError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Checks lo <= target <= hi; throws BudgetError with `what` (e.g. "--target-ms 0.01"),
// the bound and its meaning otherwise.
void check_budget(const std::string& what, double target, double lo, double hi, const std::string& unit);

// A cost table in BOP units for a graph: the time replaced by
// 100 x MACs(kept_out, kept_in) x b_w x b_a / BOPs at 32/32 (percent relative
// BOPs, as compute_costs counts them), so that ExpectedCost gives the expected
// relative BOPs. Torch-free.
contract::CostTable bop_cost_table(const contract::Graph& g);

}  // namespace bbits::train
