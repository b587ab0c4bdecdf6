#include "bbits/training/latency.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

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
  if (controller_) mu_ = controller_->update(deterministic());
  return mu_;
}

std::string CostModel::describe() const {
  std::string s = latency_ ? fmt::format("latency prior (100 x E[T] / {:.1f} us of the unquantized network)", t_full_us_)
                           : std::string("BOP prior");
  if (controller_)
    s += fmt::format(", budget {:g} {} (mu adapted from {:g})", controller_->target(), unit(), controller_->mu());
  return s;
}

namespace {

// One gate decision the projection can flip: element `index` of `la`.
// Reopening a bit gate also closes the one above it (`next`), so that the
// width grows by one step even when that gate was on behind a closed one.
struct GateRef {
  at::Tensor la;
  int64_t index = 0;
  at::Tensor next;  // bit gates: the gate above (undefined for z32 and pruning gates)
  float value() const { return la.data_ptr<float>()[index]; }
  void set(float v) const { la.data_ptr<float>()[index] = v; }
};

// kinds: 1 bit gates, 2 pruning gates, 3 both.
std::vector<GateRef> candidates(const Net& net, bool closing, int kinds = 3) {
  std::vector<GateRef> r;
  for (const auto& [name, q] : net.quantizers()) {
    if (!q->enabled() || !q->regularized) continue;
    if ((kinds & 1) && q->bit_gates_learned()) {
      const at::Tensor las[4] = {q->log_alpha_4, q->log_alpha_8, q->log_alpha_16, q->log_alpha_32};
      const int b = q->bits();  // 2, 4, 8, 16, 32
      const int open = b == 2 ? -1 : b == 4 ? 0 : b == 8 ? 1 : b == 16 ? 2 : 3;  // widest open gate
      if (closing && open >= 0) r.push_back({las[open], 0});
      if (!closing && open < 3) r.push_back({las[open + 1], 0, open + 2 <= 3 ? las[open + 2] : at::Tensor()});
    }
    if ((kinds & 2) && q->prune_gates_learned()) {
      const auto keep = q->keep();
      const int64_t kept = std::count(keep.begin(), keep.end(), true);
      for (size_t c = 0; c < keep.size(); ++c)
        if (keep[c] == closing && (!closing || kept > 1)) r.push_back({q->log_alpha_2, static_cast<int64_t>(c)});
    }
  }
  return r;
}

}  // namespace

Projection project_to_budget(Net& net, const CostModel& cost) {
  if (!cost.has_budget()) throw std::logic_error("project_to_budget: no budget");
  at::NoGradGuard ng;
  Projection p;
  const double target = cost.target();
  p.before = p.after = cost.deterministic();
  // Close the least confident open gates until the model is within the budget.
  while (p.after > target) {
    auto c = candidates(net, true);
    if (c.empty()) break;
    const auto it = std::min_element(c.begin(), c.end(), [](const GateRef& a, const GateRef& b) { return a.value() < b.value(); });
    it->set(static_cast<float>(kGateOff));
    ++p.closed;
    p.after = cost.deterministic();
  }
  // Reopen the most confident closed gates while that keeps the model within it.
  // Passes over the closed gates (a reopened bit gate makes the next one a
  // candidate) until one reopens nothing: bit gates first (coarse steps),
  // then pruning gates (one channel each) to fill up to the target.
  for (int kinds : {1, 2})
  for (bool more = true; more && p.after < 0.95 * target;) {
    more = false;
    auto c = candidates(net, false, kinds);
    std::sort(c.begin(), c.end(), [](const GateRef& a, const GateRef& b) { return a.value() > b.value(); });
    for (const GateRef& g : c) {
      if (p.after >= 0.95 * target) break;
      const float old = g.value();
      const float old_next = g.next.defined() ? g.next.item<float>() : 0.0f;
      g.set(static_cast<float>(kGateOn));
      if (g.next.defined()) g.next.fill_(static_cast<float>(kGateOff));
      const double now = cost.deterministic();
      if (now <= target) {
        p.after = now;
        ++p.opened;
        more = true;
      } else {
        g.set(old);
        if (g.next.defined()) g.next.fill_(old_next);
      }
    }
  }
  return p;
}

}  // namespace bbits::train
