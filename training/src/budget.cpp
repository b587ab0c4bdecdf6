#include "bbits/training/budget.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "bbits/format/cost.h"
#include "bbits/training/cost.h"

namespace bbits::train {

BudgetController::BudgetController(double target, double mu0, double eta, double mu_min, double mu_max)
    : target_(target), mu_(mu0), eta_(eta), mu_min_(mu_min), mu_max_(mu_max) {
  if (!(target > 0) || !std::isfinite(target)) throw std::invalid_argument(fmt::format("budget: target must be positive, got {}", target));
  if (!(mu_min > 0) || !(mu_max > mu_min) || !std::isfinite(mu_max))
    throw std::invalid_argument("budget: need 0 < mu_min < mu_max");
  if (!(mu0 > 0) || !std::isfinite(mu0))
    throw std::invalid_argument(fmt::format("budget: the starting mu must be positive (--mu), got {}", mu0));
  if (!(eta > 0) || !std::isfinite(eta)) throw std::invalid_argument(fmt::format("budget: --budget-eta must be positive, got {}", eta));
  mu_ = std::clamp(mu0, mu_min_, mu_max_);
}

double BudgetController::update(double cost) {
  if (!std::isfinite(cost) || cost < 0) throw std::invalid_argument(fmt::format("budget: cost {} is not a time or share", cost));
  // Over budget: up by eta x ln(cost / target), at most eta per update (the
  // gates move a bounded step per optimiser step under Adam, so a mu that runs
  // ahead of them only makes them overshoot). Under budget: down ten times as
  // fast, since overshooting is nearly irreversible: a pruned channel's gate,
  // sampled at exactly 0, gets no gradient from the data to reopen it.
  const double r = std::log(std::max(cost, 1e-12 * target_) / target_);
  double step = r > 0 ? std::min(eta_ * r, eta_) : std::max(kRelease * eta_ * r, -kRelease * eta_);
  // Over budget but already falling fast towards it (the gates are moving):
  // hold mu, so that it does not keep rising until the gates overshoot.
  if (r > 0 && previous_ > 0 && cost > 0 && std::log(previous_ / cost) >= kHold * eta_) step = 0;
  previous_ = cost;
  mu_ = std::clamp(mu_ * std::exp(step), mu_min_, mu_max_);
  return mu_;
}

BudgetSignal parse_budget_signal(const std::string& s) {
  if (s == "deterministic") return BudgetSignal::Deterministic;
  if (s == "expected") return BudgetSignal::Expected;
  if (s == "min") return BudgetSignal::Min;
  throw std::invalid_argument("--budget-signal must be deterministic, expected or min, not '" + s + "'");
}

const char* budget_signal_name(BudgetSignal s) {
  switch (s) {
    case BudgetSignal::Deterministic: return "deterministic";
    case BudgetSignal::Expected: return "expected";
    case BudgetSignal::Min: return "min";
  }
  return "?";
}

double budget_signal(BudgetSignal s, double expected, double deterministic) {
  switch (s) {
    case BudgetSignal::Deterministic: return deterministic;
    case BudgetSignal::Expected: return expected;
    case BudgetSignal::Min: return std::min(expected, deterministic);
  }
  return deterministic;
}

void check_budget(const std::string& what, double target, double lo, double hi, const std::string& unit) {
  if (!(target > 0) || !std::isfinite(target)) throw BudgetError(fmt::format("{}: the budget must be positive", what));
  if (target < lo)
    throw BudgetError(fmt::format(
        "{} is unreachable: below what full pruning and the narrowest bit widths reach ({:.6g} {}; every learnable "
        "gate closed, one channel kept per prunable layer)",
        what, lo, unit));
  if (target > hi)
    throw BudgetError(fmt::format("{} is above the unquantized network ({:.6g} {}): there is nothing to trade; train "
                                  "without a budget",
                                  what, hi, unit));
}

using contract::CostTable;
using contract::OpKind;

CostTable bop_cost_table(const Graph& g) {
  const auto shapes = contract::infer_shapes(g);
  CostTable t;
  t.created = "bops";
  t.cpu = t.isa = t.commit = t.calibration = "";
  t.arch = g.model;
  t.input = g.input.shape;
  const double fp32 = [&] {
    double s = 0;
    for (const auto& [name, m] : layer_macs(g)) s += static_cast<double>(bbits::cost::bops_fp32(m));
    return s;
  }();
  for (const auto& n : g.nodes) {
    if (!n.is_layer()) continue;
    contract::CostLayer L;
    L.name = n.name;
    L.op = n.op == OpKind::Conv2d ? "conv2d" : "linear";
    L.out_channels = n.outputs();
    L.in_channels = n.op == OpKind::Conv2d ? n.in_channels : n.in_features;
    L.out_removable = n.prune && n.weight_quant;
    // compute_costs' rule: the input shrinks with a pruned producer reached
    // through pooling, flatten and standalone activations.
    const std::string cur = contract::channel_source(g, n.inputs.at(0));
    if (cur != g.input.name) {
      const auto& p = g.node(cur);
      if (p.is_layer() && p.prune && p.weight_quant && (n.op == OpKind::Linear || n.groups == 1) &&
          L.in_channels % p.outputs() == 0) {
        L.in_from = p.name;
        L.in_per_channel = L.in_channels / p.outputs();
      }
    }
    const std::string f = contract::feeding_quantizer(g, n.inputs.at(0));
    L.act_bits = f.empty() ? std::vector<int>{32} : f == g.input.name ? std::vector<int>{8} : std::vector<int>{2, 4, 8, 16, 32};
    L.kept_out = L.out_removable ? contract::kept_grid(L.out_channels) : std::vector<int64_t>{L.out_channels};
    if (L.in_from.empty()) {
      L.kept_in = {L.in_channels};
    } else {
      for (int64_t k : contract::kept_grid(g.node(L.in_from).outputs())) L.kept_in.push_back(k * L.in_per_channel);
    }
    // MACs per (output, input) unit pair.
    double per = 1.0;
    if (n.op == OpKind::Conv2d) {
      const auto& y = shapes.of(g, n.name);
      per = static_cast<double>(y[1] * y[2] * n.kernel_h * n.kernel_w);
      if (n.groups != 1) per /= static_cast<double>(n.groups);  // grouped: inputs per group
    }
    for (int wb : t.weight_bits)
      for (int ab : L.act_bits)
        for (int64_t ko : L.kept_out)
          for (int64_t ki : L.kept_in)
            L.us.push_back(100.0 * per * static_cast<double>(ko) * static_cast<double>(ki) * wb * ab / fp32);
    L.kernels.assign(t.weight_bits.size() * L.act_bits.size(), "bops");
    t.layers.push_back(std::move(L));
  }
  return t;
}

}  // namespace bbits::train
