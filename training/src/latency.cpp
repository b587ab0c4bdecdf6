#include "bbits/training/latency.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <utility>

#include "bbits/format/cost.h"
#include "bbits/format/quant.h"
#include "bbits/training/cost.h"

namespace bbits::train {

using contract::CostTable;
using contract::CostTableError;
using contract::OpKind;

namespace {

constexpr int kBits[5] = {2, 4, 8, 16, 32};

at::Tensor dvec(const std::vector<double>& v) {
  return at::tensor(at::ArrayRef<double>(v.data(), v.size()), at::TensorOptions().dtype(at::kDouble));
}

// P(b) for b = 2, 4, 8, 16, 32 from the nested gates z4, z8, z16, z32 (a
// float quantizer: all mass on 32).
at::Tensor bit_distribution(const BBQuantizer& q) {
  if (!q.enabled()) return dvec({0, 0, 0, 0, 1});
  const at::Tensor q4 = gate_prob_on(q.log_alpha_4).to(at::kDouble).reshape({});
  const at::Tensor q8 = gate_prob_on(q.log_alpha_8).to(at::kDouble).reshape({});
  const at::Tensor q16 = gate_prob_on(q.log_alpha_16).to(at::kDouble).reshape({});
  const at::Tensor q32 = gate_prob_on(q.log_alpha_32).to(at::kDouble).reshape({});
  const at::Tensor p4 = q4, p48 = q4 * q8, p4816 = p48 * q16;
  return at::stack({1.0 - q4, p4 * (1.0 - q8), p48 * (1.0 - q16), p4816 * (1.0 - q32), p4816 * q32});
}

// Piecewise-linear (hat) weights of x on a grid: g, g_prev and g_next hold
// each point and its neighbours (one beyond the ends), so that
//   w_j = clamp(min((x - g_prev_j) / (g_j - g_prev_j), (g_next_j - x) / (g_next_j - g_j)), 0, 1)
// with x clamped to the grid: at most two non-zero weights summing to 1.
at::Tensor hat_weights(const at::Tensor& x, const std::vector<int64_t>& grid, const at::Tensor& g, const at::Tensor& gp,
                       const at::Tensor& gn) {
  if (grid.size() == 1) return at::ones({1}, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor xc = x.clamp(static_cast<double>(grid.front()), static_cast<double>(grid.back()));
  return at::clamp(at::minimum((xc - gp) / (g - gp), (gn - xc) / (gn - g)), 0.0, 1.0);
}

void grids(const std::vector<int64_t>& k, at::Tensor& g, at::Tensor& gp, at::Tensor& gn) {
  std::vector<double> a(k.begin(), k.end()), p(k.size()), n(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    p[i] = i == 0 ? a[0] - 1.0 : a[i - 1];
    n[i] = i + 1 == k.size() ? a[i] + 1.0 : a[i + 1];
  }
  g = dvec(a);
  gp = dvec(p);
  gn = dvec(n);
}

size_t pos(const std::vector<int>& v, int b) {
  return static_cast<size_t>(std::find(v.begin(), v.end(), b) - v.begin());
}

std::shared_ptr<BBQuantizer> quantizer_named(const Net& net, const std::string& prefix) {
  for (const auto& [name, q] : net.quantizers())
    if (name == prefix) return q;
  return nullptr;
}

}  // namespace

ExpectedCost::ExpectedCost(const Net& net, CostTable table) : net_(net), table_(std::move(table)) {
  const Graph& g = net.graph();
  table_.check_graph(g);
  for (const contract::CostLayer& L : table_.layers) {
    Layer l;
    const auto ql = net.layer(L.name);
    if (!ql) throw CostTableError("cost table: layer '" + L.name + "' is not a weight layer of the network");
    l.wq = ql->wq;
    const std::string f = contract::feeding_quantizer(g, g.node(L.name).inputs.at(0));
    if (L.act_bits.size() > 1) {
      if (f.empty() || f == g.input.name)
        throw CostTableError("cost table: layer '" + L.name + "' has an activation-bit grid but no learned quantizer feeds it");
      l.aq = quantizer_named(net, f + ".aq");
      if (!l.aq) throw CostTableError("cost table: no quantizer '" + f + ".aq' for layer '" + L.name + "'");
      if (L.act_bits != std::vector<int>(std::begin(kBits), std::end(kBits)))
        throw CostTableError("cost table: layer '" + L.name + "' needs the activation grid 2, 4, 8, 16, 32");
    }
    l.in_from = L.in_from.empty() ? -1 : table_.layer_index(L.in_from);
    const int64_t no = static_cast<int64_t>(L.kept_out.size()), ni = static_cast<int64_t>(L.kept_in.size());
    const int64_t na = static_cast<int64_t>(L.act_bits.size());
    std::vector<double> v;
    v.reserve(static_cast<size_t>(5 * na * no * ni));
    for (int b : kBits) {
      const size_t wi = pos(table_.weight_bits, b);
      for (size_t ai = 0; ai < L.act_bits.size(); ++ai)
        for (size_t oi = 0; oi < L.kept_out.size(); ++oi)
          for (size_t ii = 0; ii < L.kept_in.size(); ++ii) v.push_back(L.us[L.index(wi, ai, oi, ii)]);
    }
    l.values = dvec(v).reshape({5, na, no, ni});
    grids(L.kept_out, l.gout, l.gout_prev, l.gout_next);
    grids(L.kept_in, l.gin, l.gin_prev, l.gin_next);
    layers_.push_back(std::move(l));
  }
}

at::Tensor ExpectedCost::expected() const {
  const auto dopt = at::TensorOptions().dtype(at::kDouble);
  std::vector<at::Tensor> kept(layers_.size());
  at::Tensor total = at::full({}, table_.other_us(), dopt);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const contract::CostLayer& L = table_.layers[i];
    if (L.out_removable && l.wq && l.wq->has_prune() && l.wq->enabled())
      kept[i] = gate_prob_on(l.wq->log_alpha_2).to(at::kDouble).sum();
    else
      kept[i] = at::full({}, static_cast<double>(L.out_channels), dopt);
    const at::Tensor ki = l.in_from >= 0 ? kept[static_cast<size_t>(l.in_from)] * static_cast<double>(L.in_per_channel)
                                         : at::full({}, static_cast<double>(L.in_channels), dopt);
    const at::Tensor pw = l.wq ? bit_distribution(*l.wq) : dvec({0, 0, 0, 0, 1});
    const at::Tensor pa = l.aq ? bit_distribution(*l.aq) : at::ones({1}, dopt);
    const at::Tensor wo = hat_weights(kept[i], L.kept_out, l.gout, l.gout_prev, l.gout_next);
    const at::Tensor wi = hat_weights(ki, L.kept_in, l.gin, l.gin_prev, l.gin_next);
    total = total + at::einsum("w,a,o,i,waoi->", {pw, pa, wo, wi, l.values});
  }
  return total;
}

double ExpectedCost::predict(int mode) const {
  const Graph& g = net_.graph();
  const auto wb = net_.weight_bits();
  const auto ab = net_.act_bits();
  const auto keep = net_.keep_masks();
  std::map<std::string, int> w, a;
  std::map<std::string, int64_t> k;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const contract::CostLayer& L = table_.layers[i];
    const bool wlearn = l.wq && l.wq->enabled() && l.wq->bit_gates_learned();
    w[L.name] = !l.wq || !l.wq->enabled() ? 32 : (mode == 1 && wlearn) ? 2 : (mode >= 2 && wlearn) ? 32 : wb.at(L.name);
    if (mode == 3) w[L.name] = 32;
    if (L.act_bits.size() == 1) {
      a[L.name] = L.act_bits.front();
    } else {
      const bool alearn = l.aq->enabled() && l.aq->bit_gates_learned();
      const std::string f = contract::feeding_quantizer(g, g.node(L.name).inputs.at(0));
      a[L.name] = !l.aq->enabled() ? 32 : (mode == 1 && alearn) ? 2 : (mode >= 2 && alearn) ? 32 : ab.at(f);
      if (mode == 3) a[L.name] = 32;
    }
    auto it = keep.find(L.name);
    if (it != keep.end()) {
      const bool plearn = l.wq && l.wq->prune_gates_learned();
      const int64_t now = std::count(it->second.begin(), it->second.end(), true);
      k[L.name] = (mode == 1 && plearn) ? 1 : (mode >= 2 && plearn) || mode == 3 ? L.out_channels : now;
    }
  }
  return table_.predict_us(w, a, k);
}

double ExpectedCost::deterministic() const { return predict(0); }
double ExpectedCost::lowest() const { return predict(1); }
double ExpectedCost::highest() const { return predict(2); }

// ---------------------------------------------------------------------------
CostModel::CostModel(const Net& net, const CostSetup& s, double mu0) : net_(net) {
  if (s.cost != "bops" && s.cost != "latency") throw std::invalid_argument("--cost must be bops or latency, not '" + s.cost + "'");
  latency_ = s.cost == "latency";
  if (s.target_ms && s.target_rel_bops) throw std::invalid_argument("give --target-ms or --target-rel-bops, not both");
  latency_budget_ = s.target_ms.has_value();
  bops_budget_ = s.target_rel_bops.has_value();
  if ((latency_ || latency_budget_) && s.table.empty())
    throw std::invalid_argument(latency_ ? "--cost latency needs --cost-table (written by `bbits profile`)"
                                         : "--target-ms needs --cost-table (written by `bbits profile`)");
  if (!s.table.empty()) {
    time_ = std::make_unique<ExpectedCost>(net, CostTable::load(s.table));
    t_full_us_ = time_->table().predict_us({}, {}, {});  // everything at 32 bits (or its grid's widest), nothing pruned
  }
  bops_ = std::make_unique<ExpectedCost>(net, bop_cost_table(net.graph()));
  mu_ = mu0;
  signal_ = parse_budget_signal(s.signal);
  if (latency_budget_) {
    check_budget(fmt::format("--target-ms {:g}", *s.target_ms), *s.target_ms, time_->lowest() * 1e-3,
                 t_full_us_ * 1e-3, "ms on the cost table");
    controller_.emplace(*s.target_ms, mu0, s.eta);
  } else if (bops_budget_) {
    check_budget(fmt::format("--target-rel-bops {:g}", *s.target_rel_bops), *s.target_rel_bops, bops_->lowest(),
                 bops_->table().predict_us({}, {}, {}), "% relative BOPs");
    controller_.emplace(*s.target_rel_bops, mu0, s.eta);
  }
  if (controller_) mu_ = controller_->mu();
}

at::Tensor CostModel::regularizer() const {
  if (!latency_) return net_.regularizer();
  return (time_->expected() * (100.0 / t_full_us_)).to(at::kFloat);
}

double CostModel::expected() const {
  at::NoGradGuard ng;
  if (unit() == "ms") return time_->expected().item<double>() * 1e-3;
  return bops_->expected().item<double>();
}

double CostModel::deterministic() const {
  if (unit() == "ms") return time_->deterministic() * 1e-3;
  return 100.0 * compute_costs(net_.graph(), net_.weight_bits(), net_.act_bits(), net_.keep_masks()).relative;
}

double CostModel::update() {
  if (controller_) {
    const double e = signal_ == BudgetSignal::Deterministic ? 0.0 : expected();
    const double d = signal_ == BudgetSignal::Expected ? 0.0 : deterministic();
    mu_ = controller_->update(budget_signal(signal_, e, d));
  }
  return mu_;
}

std::string CostModel::describe() const {
  std::string s = latency_ ? fmt::format("latency prior (100 x E[T] / {:.1f} us of the unquantized network)", t_full_us_)
                           : std::string("BOP prior");
  if (controller_)
    s += fmt::format(", budget {:g} {} (mu adapted from {:g} on the {} cost)", controller_->target(), unit(),
                     controller_->mu(), budget_signal_name(signal_));
  return s;
}

namespace {
// The relative error variance of a b-bit grid (0 for float32).
double grid_error(int bits) {
  if (bits >= 32) return 0.0;
  const double levels = std::ldexp(1.0, bits) - 1.0;
  return 1.0 / (levels * levels);
}
}  // namespace

double bit_step_value(int from_bits, int to_bits) { return std::abs(grid_error(from_bits) - grid_error(to_bits)); }

double channel_value(int64_t channels) { return 1.0 / static_cast<double>(std::max<int64_t>(channels, 1)); }

namespace {

int next_wider(int b) { return b >= 32 ? 32 : b * 2; }
int next_narrower(int b) { return b <= 2 ? 2 : b / 2; }

// One gate decision the projection can flip: the gates it writes (log alpha
// elements) and what the flip is worth in the accuracy proxy.
struct Move {
  struct Write {
    at::Tensor la;
    int64_t index;
    float value, old;
  };
  std::vector<Write> writes;
  double value = 0;   // proxy gained (reopening) or lost (closing), times the gate's confidence
  bool wide = false;  // reopening to 16 or 32 bits
  void apply() const {
    for (const auto& w : writes) w.la.data_ptr<float>()[w.index] = w.value;
  }
  void undo() const {
    for (auto it = writes.rbegin(); it != writes.rend(); ++it) it->la.data_ptr<float>()[it->index] = it->old;
  }
};

float at_index(const at::Tensor& la, int64_t i) { return la.data_ptr<float>()[i]; }
double confidence(float la) { return std::max(1.0 - bbits::gate_prob_zero(la), 0.01); }

// The moves of one quantizer: one bit-width step (the widest open bit gate
// closed, or the gate above it opened with the one above that closed, so that
// the width moves by exactly one step) and one channel (the least confident
// kept channel, never the last, or the most confident pruned one).
std::vector<Move> moves(const Net& net, bool closing) {
  std::vector<Move> r;
  for (const auto& [name, q] : net.quantizers()) {
    if (!q->enabled() || !q->regularized) continue;
    const int b = q->bits();  // 2, 4, 8, 16, 32
    if (q->bit_gates_learned()) {
      const at::Tensor las[4] = {q->log_alpha_4, q->log_alpha_8, q->log_alpha_16, q->log_alpha_32};
      const int open = b == 2 ? -1 : b == 4 ? 0 : b == 8 ? 1 : b == 16 ? 2 : 3;  // widest open gate
      if (closing && open >= 0) {
        Move m;
        m.writes.push_back({las[open], 0, static_cast<float>(kGateOff), at_index(las[open], 0)});
        m.value = confidence(at_index(las[open], 0)) * bit_step_value(b, next_narrower(b));
        r.push_back(std::move(m));
      }
      if (!closing && open < 3) {
        Move m;
        m.writes.push_back({las[open + 1], 0, static_cast<float>(kGateOn), at_index(las[open + 1], 0)});
        if (open + 2 <= 3) m.writes.push_back({las[open + 2], 0, static_cast<float>(kGateOff), at_index(las[open + 2], 0)});
        m.value = confidence(at_index(las[open + 1], 0)) * bit_step_value(b, next_wider(b));
        m.wide = next_wider(b) >= 16;
        r.push_back(std::move(m));
      }
    }
    if (q->prune_gates_learned()) {
      const auto keep = q->keep();
      const int64_t kept = std::count(keep.begin(), keep.end(), true);
      if (closing && kept <= 1) continue;
      int64_t best = -1;
      for (size_t c = 0; c < keep.size(); ++c) {
        if (keep[c] != closing) continue;
        const float v = at_index(q->log_alpha_2, static_cast<int64_t>(c));
        if (best < 0 || (closing ? v < at_index(q->log_alpha_2, best) : v > at_index(q->log_alpha_2, best)))
          best = static_cast<int64_t>(c);
      }
      if (best < 0) continue;
      Move m;
      const float old = at_index(q->log_alpha_2, best);
      m.writes.push_back({q->log_alpha_2, best, static_cast<float>(closing ? kGateOff : kGateOn), old});
      m.value = confidence(old) * channel_value(static_cast<int64_t>(keep.size()));
      r.push_back(std::move(m));
    }
  }
  return r;
}

}  // namespace

namespace {

// Every gate of the network, to try a sequence of moves and take it back.
std::vector<std::pair<at::Tensor, at::Tensor>> snapshot(const Net& net) {
  std::vector<std::pair<at::Tensor, at::Tensor>> r;
  for (const auto& [name, q] : net.quantizers())
    for (const at::Tensor& g : q->gate_parameters()) r.emplace_back(g, g.clone());
  return r;
}
void restore(const std::vector<std::pair<at::Tensor, at::Tensor>>& s) {
  for (const auto& [g, v] : s) g.copy_(v);
}

// The cheapest move in worth per unit of cost saved (closing) or the best in
// worth per unit of cost added that fits within `target` (reopening).
struct Choice {
  const Move* move = nullptr;
  double cost = 0;
};
Choice best_closing(const std::vector<Move>& c, const CostModel& cost, double now) {
  Choice best;
  double best_score = 0;
  for (const Move& m : c) {
    m.apply();
    const double after = cost.deterministic();
    m.undo();
    const double saved = now - after;
    if (!(saved > 0)) continue;  // closing it would not make the model cheaper
    const double score = m.value / saved;
    if (!best.move || score < best_score) {
      best = {&m, after};
      best_score = score;
    }
  }
  return best;
}
Choice best_reopening(const std::vector<Move>& c, const CostModel& cost, double now, double target) {
  // Ranked by (not to 16/32 bits, costs nothing, worth per unit of cost or,
  // for a move that costs nothing, worth).
  Choice best;
  std::tuple<bool, bool, double> best_key{false, false, 0.0};
  for (const Move& m : c) {
    m.apply();
    const double after = cost.deterministic();
    m.undo();
    if (after > target) continue;
    const double extra = after - now;
    const std::tuple<bool, bool, double> key{!m.wide, extra <= 0, extra <= 0 ? m.value : m.value / extra};
    if (!best.move || key > best_key) {
      best = {&m, after};
      best_key = key;
    }
  }
  return best;
}

}  // namespace

Projection project_to_budget(Net& net, const CostModel& cost) {
  if (!cost.has_budget()) throw std::logic_error("project_to_budget: no budget");
  at::NoGradGuard ng;
  Projection p;
  const double target = cost.target();
  p.before = p.after = cost.deterministic();
  // Closes the cheapest moves until the model is within the budget; returns
  // the worth lost.
  auto close_to_target = [&](int& closed) {
    double lost = 0;
    while (p.after > target) {
      const auto c = moves(net, true);
      const Choice b = best_closing(c, cost, p.after);
      if (!b.move) break;
      b.move->apply();
      lost += b.move->value;
      ++closed;
      p.after = b.cost;
    }
    return lost;
  };
  // Reopens the best moves that fit until none does.
  auto fill = [&] {
    for (;;) {
      const auto c = moves(net, false);
      const Choice b = best_reopening(c, cost, p.after, target);
      if (!b.move) break;
      b.move->apply();
      ++p.opened;
      p.after = b.cost;
    }
  };
  close_to_target(p.closed);
  fill();
  // Exchanges: a step up to 8 bits that does not fit is taken if closing the
  // cheapest moves to make room for it loses less worth than it gains (a
  // wide layer's few channels for a 2-bit layer's next width, say); then the
  // budget is filled again. At most 64 exchanges.
  for (int exchanges = 0; exchanges < 64;) {
    auto c = moves(net, false);
    std::sort(c.begin(), c.end(), [](const Move& a, const Move& b) { return a.value > b.value; });
    bool taken = false;
    for (const Move& m : c) {
      if (m.wide) continue;
      const auto saved = snapshot(net);
      const double before = p.after;
      m.apply();
      p.after = cost.deterministic();
      int closed = 0;
      const double lost = close_to_target(closed);
      if (p.after <= target && m.value > lost * (1.0 + 1e-9)) {
        ++p.opened;
        p.closed += closed;
        taken = true;
        break;
      }
      restore(saved);
      p.after = before;
    }
    if (!taken) break;
    ++exchanges;
    fill();
  }
  return p;
}

}  // namespace bbits::train
