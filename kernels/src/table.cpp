// The kernel table, candidate search and the explanation of a choice.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "bbits/kernels/kernels.h"
#include "reference/ref_util.h"

#include "bbits/kernels/simd.h"

namespace bbits::kernels {

namespace {
std::vector<KernelInfo> build_table() {
  std::vector<KernelInfo> t;
  ref::register_all(t);
  register_simd_kernels(t);
  return t;
}

double safe_cost(const KernelInfo& k, const OpDesc& d) {
  if (!k.cost_ns) return std::numeric_limits<double>::infinity();
  const double c = k.cost_ns(d);
  return std::isnan(c) || c < 0.0 ? std::numeric_limits<double>::infinity() : c;
}

std::string format_ns(double ns) {
  char buf[64];
  if (!std::isfinite(ns)) return "unknown";
  if (ns < 1e3) std::snprintf(buf, sizeof buf, "%.0f ns", ns);
  else if (ns < 1e6) std::snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
  else if (ns < 1e9) std::snprintf(buf, sizeof buf, "%.2f ms", ns / 1e6);
  else std::snprintf(buf, sizeof buf, "%.2f s", ns / 1e9);
  return buf;
}

bool is_reference_for(const KernelInfo& k, const OpDesc& d) {
  return k.isa == Isa::Reference && k.supports && k.supports(d);
}
}  // namespace

const std::vector<KernelInfo>& kernel_table() {
  static const std::vector<KernelInfo> table = build_table();
  return table;
}

std::vector<const KernelInfo*> candidates(const OpDesc& desc, Isa max_isa) {
  check_desc(desc);
  const auto& table = kernel_table();
  struct Entry {
    const KernelInfo* k;
    double cost;
    size_t order;
  };
  std::vector<Entry> found;
  for (size_t i = 0; i < table.size(); ++i) {
    const KernelInfo& k = table[i];
    if (!isa_at_most(k.isa, max_isa) || !k.supports || !k.supports(desc)) continue;
    found.push_back({&k, safe_cost(k, desc), i});
  }
  std::stable_sort(found.begin(), found.end(), [](const Entry& a, const Entry& b) {
    if (a.cost != b.cost) return a.cost < b.cost;
    if (a.k->isa != b.k->isa) return static_cast<int>(a.k->isa) > static_cast<int>(b.k->isa);
    return a.order < b.order;
  });
  std::vector<const KernelInfo*> out;
  out.reserve(found.size());
  for (const auto& e : found) out.push_back(e.k);
  if (out.empty())  // cannot happen for a valid desc: every op and bit width has a reference kernel
    throw std::logic_error("kernel table: no kernel for " + describe(desc));
  return out;
}

const KernelInfo* reference_kernel(const OpDesc& desc) {
  check_desc(desc);
  for (const auto& k : kernel_table())
    if (is_reference_for(k, desc)) return &k;
  throw std::logic_error("kernel table: no reference kernel for " + describe(desc));
}

const KernelInfo* find_kernel(std::string_view name) {
  for (const auto& k : kernel_table())
    if (k.name == name) return &k;
  return nullptr;
}

KernelChoice choose_kernel(const OpDesc& desc, Isa max_isa) {
  const auto c = candidates(desc, max_isa);
  return {c.front(), safe_cost(*c.front(), desc)};
}

std::string explain_choice(const OpDesc& desc, std::span<const KernelInfo* const> cands, Isa max_isa) {
  std::ostringstream s;
  if (cands.empty()) {
    s << "no kernel can run " << describe(desc);
    return s.str();
  }
  const KernelInfo& best = *cands.front();
  const double best_cost = safe_cost(best, desc);
  s << best.name << " [" << isa_name(best.isa) << ", est. " << format_ns(best_cost) << "]: ";
  if (cands.size() == 1) {
    s << "the only kernel";
  } else {
    s << "cheapest of " << cands.size() << " candidates";
  }
  const int wb = weight_bits(desc);
  if (wb > 0 && best.weight_bits != kAnyBits && best.weight_bits != wb)
    s << "; runs the " << wb << "-bit weights on a " << best.weight_bits << "-bit kernel";
  if (best.isa == Isa::Reference && cands.size() == 1) s << " (reference; no faster kernel supports this layer)";
  if (!best.note.empty()) s << " (" << best.note << ")";
  if (cands.size() > 1) {
    s << "; others:";
    const size_t shown = std::min<size_t>(cands.size(), 5);
    for (size_t i = 1; i < shown; ++i) s << ' ' << cands[i]->name << '=' << format_ns(safe_cost(*cands[i], desc));
    if (cands.size() > shown) s << " (+" << cands.size() - shown << " more)";
  }
  // Kernels excluded only by the ISA cap.
  size_t capped = 0;
  double capped_best = std::numeric_limits<double>::infinity();
  for (const auto& k : kernel_table()) {
    if (isa_at_most(k.isa, max_isa) || !k.supports || !k.supports(desc)) continue;
    ++capped;
    capped_best = std::min(capped_best, safe_cost(k, desc));
  }
  if (capped > 0) {
    s << "; " << capped << " kernel(s) above the ISA cap " << isa_name(max_isa) << " excluded";
    if (capped_best < best_cost) s << " (fastest est. " << format_ns(capped_best) << ")";
  }
  s << "; layer: " << describe(desc);
  return s.str();
}

}  // namespace bbits::kernels
