// bbits training — the hardware-aware prior (docs/TRAINING.md, "The latency
// prior"): the expected time of a network under its gate distributions, read
// from a cost table (bbits/contract/cost_table.h, written by `bbits profile`),
//   E[T] = other + sum over layers l, sum over (b_w, b_a) of
//          P_w,l(b_w) P_a,l(b_a) T_l(b_w, b_a, E[kept_out,l], E[kept_in,l])
// with P from the same gate probabilities the BOP prior uses, E[kept_out] the
// sum of the pruning gates' on-probabilities (where the converter removes
// pruned channels) and E[kept_in] the producer's E[kept_out]; T_l piecewise
// linear in the kept counts. Differentiable in every log alpha. Also the
// trainer's choice of prior and budget (CostModel). Uses LibTorch.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "bbits/contract/cost_table.h"
#include "bbits/training/budget.h"
#include "bbits/training/network.h"

namespace bbits::train {

class ExpectedCost {
 public:
  // Throws contract::CostTableError when the table does not describe the net's graph.
  ExpectedCost(const Net& net, contract::CostTable table);

  // E[T] in the table's unit (us), a double scalar differentiable in the log alphas.
  at::Tensor expected() const;
  // The table's prediction for the network's test-time decisions.
  double deterministic() const;
  // Bounds of what training can reach: every learned bit gate at 2 bits (at
  // 32), every learned pruning gate keeping one channel (all); fixed gates as
  // they are.
  double lowest() const;
  double highest() const;
  const contract::CostTable& table() const { return table_; }

 private:
  struct Layer {
    std::shared_ptr<BBQuantizer> wq, aq;  // aq null: the layer's input is not quantized
    int in_from = -1;                     // index into layers_
    at::Tensor values;                    // [5 weight bits 2..32][act bits][kept_out][kept_in], double
    at::Tensor gout, gout_prev, gout_next, gin, gin_prev, gin_next;  // grids for the hat weights
  };
  double predict(int mode) const;  // 0: decisions, 1: lowest, 2: highest
  const Net& net_;
  contract::CostTable table_;
  std::vector<Layer> layers_;
};

struct CostSetup {
  std::string cost = "bops";   // bops | latency
  std::string table;           // --cost-table
  std::optional<double> target_ms, target_rel_bops;
  double eta = 0.02;           // --budget-eta
  std::string signal = "min";  // --budget-signal (BudgetSignal)
};

// The regularizer the trainer adds (mu x regularizer()), the costs it logs and
// the budget controller. Validates the options and the budget's reachability
// before training starts (BudgetError, contract::CostTableError,
// std::invalid_argument naming the flag).
class CostModel {
 public:
  CostModel(const Net& net, const CostSetup& s, double mu0);

  // bops: the reference's BOP prior (Net::regularizer, unchanged); latency:
  // 100 x E[T] / T(unquantized network), the expected time in percent of the
  // float network's.
  at::Tensor regularizer() const;
  // The cost the budget is set in: ms for latency (E[T] and the table's
  // prediction of the deterministic-gate model), percent relative BOPs otherwise.
  double expected() const;
  double deterministic() const;
  std::string unit() const { return latency_budget_ || (!bops_budget_ && latency_) ? "ms" : "% BOPs"; }

  bool has_budget() const { return controller_.has_value(); }
  double target() const { return controller_ ? controller_->target() : 0.0; }
  double mu() const { return mu_; }
  // One dual step after an optimiser step (budgets only) on the budget
  // signal of expected() and deterministic(); returns mu.
  double update();
  std::string describe() const;

 private:
  const Net& net_;
  bool latency_ = false, latency_budget_ = false, bops_budget_ = false;
  std::unique_ptr<ExpectedCost> time_, bops_;
  double t_full_us_ = 1.0;
  double mu_ = 0.0;
  BudgetSignal signal_ = BudgetSignal::Min;
  std::optional<BudgetController> controller_;
};

// The end of the gated phase with a budget: the deterministic-gate model is
// moved onto the budget greedily by cost-effectiveness (docs/TRAINING.md,
// "The projection"). Each move flips one gate decision: one bit-width step of
// a quantizer (closing its widest open bit gate, or opening the one above) or
// one output channel (pruning the least confident kept channel, never a
// layer's last, or restoring the most confident pruned one). A move is worth
// its accuracy proxy times the gate's confidence P(on) (at least 0.01): a
// bit step b -> b' is worth |e(b) - e(b')| with e(b) = 1 / (2^b - 1)^2 (the
// grid's relative error variance; e(32) = 0), a channel of a layer with C
// outputs 1 / C. While the model costs more than the target, the move that
// loses the least worth per unit of cost saved is made; then, while any move
// keeps it within the target, the move that gains the most worth per unit of
// cost (moves that cost nothing first; steps to 16 or 32 bits only when
// nothing else fits); then exchanges: a step up to 8 bits that does not fit,
// with the cheapest closings that make room for it, when they lose less
// worth than it gains.
double bit_step_value(int from_bits, int to_bits);
double channel_value(int64_t channels);
struct Projection {
  double before = 0, after = 0;  // deterministic cost, budget unit
  int closed = 0, opened = 0;
};
Projection project_to_budget(Net& net, const CostModel& cost);

}  // namespace bbits::train
