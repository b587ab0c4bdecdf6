#include "bbits/bench/calibration.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <set>

#include "bbits/bench/bandwidth.h"
#include "bbits/bench/report.h"

namespace bbits::bench {
namespace {

using nlohmann::json;

template <class T>
T field(const json& j, const char* key, const std::string& where) {
  if (!j.is_object()) throw CalibrationError(fmt::format("calibration: {} is not an object", where));
  const auto it = j.find(key);
  if (it == j.end()) throw CalibrationError(fmt::format("calibration: {} has no '{}'", where, key));
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw CalibrationError(fmt::format("calibration: {}.{} has the wrong type", where, key));
  }
}

// An optional boolean field (absent: false).
bool optional_flag(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) return false;
  if (!j[key].is_boolean()) throw CalibrationError(fmt::format("calibration: {}.{} must be true or false", where, key));
  return j[key].get<bool>();
}

// An optional array of the file (absent: empty; older files).
json optional_array(const json& j, const char* key) {
  if (!j.contains(key)) return json::array();
  if (!j[key].is_array()) throw CalibrationError(fmt::format("calibration: '{}' must be an array", key));
  return j[key];
}

double positive(double v, const std::string& what) {
  if (!std::isfinite(v) || v <= 0) throw CalibrationError(fmt::format("calibration: {} must be positive", what));
  return v;
}

}  // namespace

int64_t effective_capacity(const CacheLevel& c, int threads) {
  return c.shared_by <= 1 ? c.bytes * std::max(threads, 1) : c.bytes;
}

json Calibration::to_json() const {
  json j;
  j["version"] = kVersion;
  j["created"] = created;
  j["cpu"] = cpu;
  j["commit"] = commit;
  j["isa"] = isa;
  j["read_loop"] = read_loop;
  j["caches"] = json::array();
  for (const auto& c : caches) j["caches"].push_back({{"level", c.level}, {"bytes", c.bytes}, {"shared_by", c.shared_by}});
  j["bandwidth"] = json::array();
  for (const auto& b : bandwidth)
    j["bandwidth"].push_back({{"threads", b.threads},
                              {"level", b.level},
                              {"capacity", b.capacity},
                              {"probe_bytes", b.probe_bytes},
                              {"bytes_per_s", b.bytes_per_s},
                              {"iqr", b.iqr}});
  j["peaks"] = json::array();
  for (const auto& p : peaks)
    j["peaks"].push_back({{"kernel", p.kernel},
                          {"op", p.op},
                          {"wbits", p.wbits},
                          {"abits", p.abits},
                          {"isa", p.isa},
                          {"threads", p.threads},
                          {"macs_per_s", p.macs_per_s},
                          {"compute_macs_per_s", p.compute_macs_per_s},
                          {"iqr", p.iqr},
                          {"shape", p.shape},
                          {"k", p.k},
                          {"n", p.n},
                          {"m", p.m},
                          {"in_signed", p.in_signed},
                          {"out_float", p.out_float}});
  j["dispatch"] = json::array();
  for (const auto& d : dispatch) j["dispatch"].push_back({{"threads", d.threads}, {"runtime", d.runtime}, {"ns", d.ns}});
  j["overheads"] = json::array();
  for (const auto& o : overheads)
    j["overheads"].push_back({{"kernel", o.kernel}, {"op", o.op}, {"threads", o.threads}, {"ns", o.ns}, {"shape", o.shape}});
  if (probe_ns > 0) j["probe_ns"] = probe_ns;
  j["reuse"] = json::array();
  for (const auto& r : reuse)
    j["reuse"].push_back({{"threads", r.threads}, {"distance", r.distance}, {"bytes_per_s", r.bytes_per_s}});
  j["scaling"] = json::array();
  for (const auto& s : scaling) j["scaling"].push_back({{"threads", s.threads}, {"speedup", s.speedup}});
  return j;
}

std::optional<double> Calibration::reuse_bytes_per_s(int64_t distance, int threads) const {
  if (reuse.empty()) return std::nullopt;
  int use = -1, smallest = INT_MAX;
  for (const auto& r : reuse) {
    smallest = std::min(smallest, r.threads);
    if (r.threads <= threads) use = std::max(use, r.threads);
  }
  if (use < 0) use = smallest;
  std::vector<std::pair<int64_t, double>> pts;
  for (const auto& r : reuse)
    if (r.threads == use) pts.emplace_back(r.distance, r.bytes_per_s);
  std::sort(pts.begin(), pts.end());
  if (distance <= pts.front().first) return pts.front().second;
  for (size_t i = 1; i < pts.size(); ++i)
    if (distance <= pts[i].first) {
      const double f = static_cast<double>(distance - pts[i - 1].first) /
                       static_cast<double>(pts[i].first - pts[i - 1].first);
      return pts[i - 1].second + f * (pts[i].second - pts[i - 1].second);
    }
  return pts.back().second;
}

std::optional<double> Calibration::scaling_for(int threads) const {
  for (const auto& s : scaling)
    if (s.threads == threads) return s.speedup;
  return std::nullopt;
}

std::optional<double> Calibration::overhead_ns(const std::string& kernel, const std::string& op, int threads) const {
  for (const auto& o : overheads)
    if (o.kernel == kernel && o.op == op && o.threads == threads) return o.ns;
  return std::nullopt;
}

double Calibration::dispatch_ns(const std::string& runtime, int threads) const {
  if (threads <= 1) return 0.0;
  for (const auto& d : dispatch)
    if (d.runtime == runtime && d.threads == threads) return d.ns;
  return 0.0;
}

Calibration Calibration::from_json(const json& j) {
  Calibration c;
  const int version = field<int>(j, "version", "file");
  if (version != kVersion)
    throw CalibrationError(fmt::format("calibration: version {} is not supported (expected {}); run `bbits calibrate` again",
                                       version, kVersion));
  c.created = field<std::string>(j, "created", "file");
  c.cpu = field<std::string>(j, "cpu", "file");
  c.commit = field<std::string>(j, "commit", "file");
  c.isa = field<std::string>(j, "isa", "file");
  c.read_loop = field<std::string>(j, "read_loop", "file");
  const auto caches = field<json>(j, "caches", "file");
  if (!caches.is_array()) throw CalibrationError("calibration: 'caches' must be an array");
  for (size_t i = 0; i < caches.size(); ++i) {
    const std::string where = fmt::format("caches[{}]", i);
    CacheLevel cl;
    cl.level = field<int>(caches[i], "level", where);
    cl.bytes = field<int64_t>(caches[i], "bytes", where);
    cl.shared_by = field<int>(caches[i], "shared_by", where);
    if (cl.level < 1 || cl.bytes <= 0 || cl.shared_by < 1)
      throw CalibrationError(fmt::format("calibration: {} has a non-positive field", where));
    c.caches.push_back(cl);
  }
  const auto bw = field<json>(j, "bandwidth", "file");
  if (!bw.is_array() || bw.empty()) throw CalibrationError("calibration: 'bandwidth' must be a non-empty array");
  for (size_t i = 0; i < bw.size(); ++i) {
    const std::string where = fmt::format("bandwidth[{}]", i);
    BandwidthLevel b;
    b.threads = field<int>(bw[i], "threads", where);
    b.level = field<std::string>(bw[i], "level", where);
    b.capacity = field<int64_t>(bw[i], "capacity", where);
    b.probe_bytes = field<int64_t>(bw[i], "probe_bytes", where);
    b.bytes_per_s = positive(field<double>(bw[i], "bytes_per_s", where), where + ".bytes_per_s");
    b.iqr = field<double>(bw[i], "iqr", where);
    if (b.threads < 1) throw CalibrationError(fmt::format("calibration: {}.threads must be at least 1", where));
    if (b.capacity < 0) throw CalibrationError(fmt::format("calibration: {}.capacity is negative", where));
    c.bandwidth.push_back(b);
  }
  const auto peaks = field<json>(j, "peaks", "file");
  if (!peaks.is_array()) throw CalibrationError("calibration: 'peaks' must be an array");
  for (size_t i = 0; i < peaks.size(); ++i) {
    const std::string where = fmt::format("peaks[{}]", i);
    KernelPeak p;
    p.kernel = field<std::string>(peaks[i], "kernel", where);
    p.op = field<std::string>(peaks[i], "op", where);
    p.wbits = field<int>(peaks[i], "wbits", where);
    p.abits = field<int>(peaks[i], "abits", where);
    p.isa = field<std::string>(peaks[i], "isa", where);
    p.threads = field<int>(peaks[i], "threads", where);
    p.macs_per_s = positive(field<double>(peaks[i], "macs_per_s", where), where + ".macs_per_s");
    p.iqr = field<double>(peaks[i], "iqr", where);
    p.shape = field<std::string>(peaks[i], "shape", where);
    p.k = peaks[i].value("k", int64_t{0});
    p.n = peaks[i].value("n", int64_t{0});
    p.m = peaks[i].value("m", int64_t{0});
    p.compute_macs_per_s = peaks[i].value("compute_macs_per_s", 0.0);
    p.in_signed = optional_flag(peaks[i], "in_signed", where);
    p.out_float = optional_flag(peaks[i], "out_float", where);
    if (!(p.compute_macs_per_s >= 0) || !std::isfinite(p.compute_macs_per_s))
      throw CalibrationError(fmt::format("calibration: {}.compute_macs_per_s must not be negative", where));
    if (p.k < 0 || p.n < 0 || p.m < 0)
      throw CalibrationError(fmt::format("calibration: {}.k / n / m must not be negative", where));
    if (p.threads < 1) throw CalibrationError(fmt::format("calibration: {}.threads must be at least 1", where));
    c.peaks.push_back(p);
  }
  {
    const json d = optional_array(j, "dispatch");
    for (size_t i = 0; i < d.size(); ++i) {
      const std::string where = fmt::format("dispatch[{}]", i);
      DispatchCost dc;
      dc.threads = field<int>(d[i], "threads", where);
      dc.runtime = field<std::string>(d[i], "runtime", where);
      dc.ns = field<double>(d[i], "ns", where);
      if (dc.threads < 1 || !(dc.ns >= 0) || !std::isfinite(dc.ns))
        throw CalibrationError(fmt::format("calibration: {} has a bad thread count or time", where));
      c.dispatch.push_back(dc);
    }
  }
  if (j.contains("probe_ns")) {
    if (!j["probe_ns"].is_number()) throw CalibrationError("calibration: probe_ns must be a number");
    c.probe_ns = j["probe_ns"].get<double>();
    if (!(c.probe_ns > 0) || !std::isfinite(c.probe_ns))
      throw CalibrationError("calibration: probe_ns must be positive and finite");
  }
  {
    const json ru = optional_array(j, "reuse");
    for (size_t i = 0; i < ru.size(); ++i) {
      const std::string where = fmt::format("reuse[{}]", i);
      ReuseBandwidth r;
      r.threads = field<int>(ru[i], "threads", where);
      r.distance = field<int64_t>(ru[i], "distance", where);
      r.bytes_per_s = field<double>(ru[i], "bytes_per_s", where);
      if (r.threads < 1 || r.distance < 0 || !(r.bytes_per_s > 0) || !std::isfinite(r.bytes_per_s))
        throw CalibrationError(fmt::format("calibration: {} has a bad thread count, distance or bandwidth", where));
      for (const auto& o : c.reuse)
        if (o.threads == r.threads && o.distance == r.distance)
          throw CalibrationError(fmt::format("calibration: {} repeats threads {} distance {}", where, r.threads,
                                             r.distance));
      c.reuse.push_back(r);
    }
  }
  {
    const json sc = optional_array(j, "scaling");
    for (size_t i = 0; i < sc.size(); ++i) {
      const std::string where = fmt::format("scaling[{}]", i);
      ThreadScaling ts;
      ts.threads = field<int>(sc[i], "threads", where);
      ts.speedup = field<double>(sc[i], "speedup", where);
      if (ts.threads < 2 || !(ts.speedup > 0) || !std::isfinite(ts.speedup))
        throw CalibrationError(fmt::format("calibration: {} has a bad thread count or speedup", where));
      c.scaling.push_back(ts);
    }
  }
  {
    const json o = optional_array(j, "overheads");
    for (size_t i = 0; i < o.size(); ++i) {
      const std::string where = fmt::format("overheads[{}]", i);
      KernelOverhead ko;
      ko.kernel = field<std::string>(o[i], "kernel", where);
      ko.op = field<std::string>(o[i], "op", where);
      ko.threads = field<int>(o[i], "threads", where);
      ko.ns = field<double>(o[i], "ns", where);
      ko.shape = o[i].value("shape", std::string());
      if (ko.threads < 1 || !(ko.ns >= 0) || !std::isfinite(ko.ns))
        throw CalibrationError(fmt::format("calibration: {} has a bad thread count or time", where));
      c.overheads.push_back(ko);
    }
  }
  return c;
}

void Calibration::save(const std::string& path) const { write_text_atomic(path, to_json().dump(2) + "\n"); }

Calibration Calibration::load(const std::string& path) {
  std::string text;
  try {
    text = read_text(path);
  } catch (const std::exception& e) {
    throw CalibrationError(fmt::format("{} (run `bbits calibrate` first, or pass --calibration FILE)", e.what()));
  }
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw CalibrationError(fmt::format("calibration '{}' is not valid JSON: {}", path, e.what()));
  }
  try {
    return from_json(j);
  } catch (const CalibrationError& e) {
    throw CalibrationError(fmt::format("'{}': {}", path, e.what()));
  }
}

std::vector<int> Calibration::bandwidth_threads() const {
  std::set<int> s;
  for (const auto& b : bandwidth) s.insert(b.threads);
  return {s.begin(), s.end()};
}

const BandwidthLevel& Calibration::level_for(int64_t working_set, int threads) const {
  const auto ts = bandwidth_threads();
  if (ts.empty()) throw CalibrationError("calibration: no bandwidth entries");
  int use = ts.front();
  for (int t : ts)
    if (t <= threads) use = t;
  std::vector<const BandwidthLevel*> levels;
  for (const auto& b : bandwidth)
    if (b.threads == use) levels.push_back(&b);
  // Cache levels ascending by capacity, DRAM (capacity 0) last.
  std::stable_sort(levels.begin(), levels.end(), [](const BandwidthLevel* a, const BandwidthLevel* b) {
    const int64_t ca = a->capacity == 0 ? INT64_MAX : a->capacity;
    const int64_t cb = b->capacity == 0 ? INT64_MAX : b->capacity;
    return ca < cb;
  });
  for (const auto* b : levels)
    if (b->capacity == 0 || working_set <= b->capacity) return *b;
  return *levels.back();
}

std::optional<double> Calibration::peak_macs_per_s(const std::string& kernel, const std::string& op, int threads,
                                                   int64_t k, int64_t n, int wbits, int64_t m, int in_signed,
                                                   int out_float) const {
  // Thread count: exact when measured, else the nearest (ties: fewer), scaled.
  int best_t = -1;
  for (const auto& p : peaks) {
    if (p.kernel != kernel || (!op.empty() && p.op != op)) continue;
    if (best_t < 0 || std::abs(p.threads - threads) < std::abs(best_t - threads) ||
        (std::abs(p.threads - threads) == std::abs(best_t - threads) && p.threads < best_t))
      best_t = p.threads;
  }
  if (best_t < 0) return std::nullopt;
  const double scale = static_cast<double>(threads) / static_cast<double>(best_t);
  std::vector<const KernelPeak*> cand;
  for (const auto& p : peaks)
    if (p.kernel == kernel && (op.empty() || p.op == op) && p.threads == best_t) cand.push_back(&p);
  if (wbits > 0) {
    std::vector<const KernelPeak*> same;
    for (const auto* p : cand)
      if (p->wbits == wbits) same.push_back(p);
    if (!same.empty()) {
      cand = same;
    } else {  // not measured at this width: the kernel's native width (the first measured)
      const int w0 = cand.front()->wbits;
      std::erase_if(cand, [&](const KernelPeak* p) { return p->wbits != w0; });
    }
  }
  // A property measured both ways: the entries with the layer's value, else
  // the default (false) ones.
  auto prefer = [&](int wanted, bool KernelPeak::*field) {
    if (wanted < 0) return;
    const bool want = wanted != 0;
    const bool any = std::any_of(cand.begin(), cand.end(), [&](const KernelPeak* p) { return p->*field == want; });
    std::erase_if(cand, [&](const KernelPeak* p) { return p->*field != (any ? want : false); });
  };
  prefer(in_signed, &KernelPeak::in_signed);
  prefer(out_float, &KernelPeak::out_float);
  if (cand.empty()) return std::nullopt;
  // The rate at one (k, n) point from its entries measured over m: linear in
  // log m between the two measured m around the layer's (clamped); without m,
  // the entry measured at the largest m (the compute-heavy shape).
  auto rate_of = [&](const std::vector<const KernelPeak*>& pts) -> double {
    std::vector<const KernelPeak*> v = pts;
    std::sort(v.begin(), v.end(), [](const KernelPeak* a, const KernelPeak* b) { return a->m < b->m; });
    if (m <= 0 || v.size() == 1 || v.front()->m <= 0) return v.back()->rate();
    const double lm = std::log2(static_cast<double>(m));
    if (lm <= std::log2(static_cast<double>(v.front()->m))) return v.front()->rate();
    for (size_t i = 1; i < v.size(); ++i) {
      const double l0 = std::log2(static_cast<double>(v[i - 1]->m)), l1 = std::log2(static_cast<double>(v[i]->m));
      if (lm <= l1) {
        const double t = l1 > l0 ? (lm - l0) / (l1 - l0) : 1.0;
        return v[i - 1]->rate() + t * (v[i]->rate() - v[i - 1]->rate());
      }
    }
    return v.back()->rate();
  };
  const KernelPeak* first = cand.front();
  if (k <= 0 || n <= 0 || first->k <= 0 || first->n <= 0) return rate_of(cand) * scale;
  // Grid coordinates in log2 space.
  std::set<double> ks, ns;
  for (const auto* p : cand)
    if (p->k > 0 && p->n > 0) {
      ks.insert(std::log2(static_cast<double>(p->k)));
      ns.insert(std::log2(static_cast<double>(p->n)));
    }
  const double lk = std::clamp(std::log2(static_cast<double>(k)), *ks.begin(), *ks.rbegin());
  const double ln = std::clamp(std::log2(static_cast<double>(n)), *ns.begin(), *ns.rbegin());
  auto bracket = [](const std::set<double>& s, double v, double& lo, double& hi) {
    lo = *s.begin();
    hi = *s.rbegin();
    for (double x : s) {
      if (x <= v) lo = x;
      if (x >= v) {
        hi = x;
        break;
      }
    }
  };
  double k0, k1, n0, n1;
  bracket(ks, lk, k0, k1);
  bracket(ns, ln, n0, n1);
  auto at = [&](double kk, double nn) -> std::optional<double> {
    std::vector<const KernelPeak*> pts;
    for (const auto* p : cand)
      if (p->k > 0 && p->n > 0 && std::log2(static_cast<double>(p->k)) == kk &&
          std::log2(static_cast<double>(p->n)) == nn)
        pts.push_back(p);
    if (pts.empty()) return std::nullopt;
    return rate_of(pts);
  };
  const auto a = at(k0, n0), b = at(k1, n0), c = at(k0, n1), d = at(k1, n1);
  if (a && b && c && d) {
    const double tk = k1 > k0 ? (lk - k0) / (k1 - k0) : 0.0;
    const double tn = n1 > n0 ? (ln - n0) / (n1 - n0) : 0.0;
    const double v0 = *a + tk * (*b - *a);
    const double v1 = *c + tk * (*d - *c);
    return (v0 + tn * (v1 - v0)) * scale;
  }
  // Nearest measured (k, n) point.
  double best_k = 0, best_n = 0, dist = -1;
  for (const auto* p : cand) {
    if (p->k <= 0 || p->n <= 0) continue;
    const double pk = std::log2(static_cast<double>(p->k)), pn = std::log2(static_cast<double>(p->n));
    const double dd = (pk - lk) * (pk - lk) + (pn - ln) * (pn - ln);
    if (dist < 0 || dd < dist) {
      best_k = pk;
      best_n = pn;
      dist = dd;
    }
  }
  if (dist < 0) return first->rate() * scale;
  return *at(best_k, best_n) * scale;
}

std::string default_calibration_path() {
  if (const char* p = std::getenv("BBITS_CALIBRATION"); p && *p) return p;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/bbits/calibration.json";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/bbits/calibration.json";
  return "calibration.json";
}

std::vector<ReuseBandwidth> calibrate_reuse(const std::vector<CacheLevel>& caches,
                                            const BandwidthCalibrationOptions& opts) {
  if (opts.threads.empty()) throw std::invalid_argument("reuse calibration: no thread counts");
  int64_t llc = 0;
  for (const auto& c : caches) llc = std::max(llc, c.bytes);
  if (llc <= 0) llc = 32ll << 20;
  std::vector<ReuseBandwidth> out;
  for (int t : opts.threads) {
    if (t < 1) throw std::invalid_argument("reuse calibration: thread counts must be at least 1");
    for (double f : {0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0}) {
      const auto d = static_cast<int64_t>(f * static_cast<double>(llc));
      double best = 0;
      for (int k = 0; k < 2; ++k) best = std::max(best, measure_reuse_bandwidth(d, t, opts.timing).median);
      out.push_back({t, d, best});
    }
  }
  return out;
}

std::vector<BandwidthLevel> calibrate_bandwidth(const std::vector<CacheLevel>& caches,
                                                const BandwidthCalibrationOptions& opts) {
  if (opts.threads.empty()) throw std::invalid_argument("bandwidth calibration: no thread counts");
  if (opts.fills.empty()) throw std::invalid_argument("bandwidth calibration: no probe fractions");
  for (double f : opts.fills)
    if (!(f > 0 && f <= 1)) throw std::invalid_argument("bandwidth calibration: probe fractions must be in (0, 1]");
  std::vector<BandwidthLevel> out;
  for (int t : opts.threads) {
    if (t < 1) throw std::invalid_argument("bandwidth calibration: thread counts must be at least 1");
    int64_t last = 0;
    for (const auto& c : caches) {
      const int64_t cap = effective_capacity(c, t);
      BandwidthLevel best{t, fmt::format("L{}", c.level), cap, 0, 0, 0};
      for (double f : opts.fills) {
        const int64_t probe = static_cast<int64_t>(f * static_cast<double>(cap));
        if (probe <= last) continue;  // would still fit the previous level
        const int64_t per_thread = std::max<int64_t>(probe / t, 4096);
        const Summary s = measure_read_bandwidth(per_thread, t, opts.timing);
        if (s.median > best.bytes_per_s) {
          best.probe_bytes = per_thread * t;
          best.bytes_per_s = s.median;
          best.iqr = s.iqr();
        }
      }
      if (best.bytes_per_s == 0) {  // every fraction fell below the previous level
        const int64_t per_thread = std::max<int64_t>((last + cap) / 2 / t, 4096);
        const Summary s = measure_read_bandwidth(per_thread, t, opts.timing);
        best.probe_bytes = per_thread * t;
        best.bytes_per_s = s.median;
        best.iqr = s.iqr();
      }
      out.push_back(best);
      last = cap;
    }
    const int64_t dram = std::max<int64_t>(static_cast<int64_t>(opts.dram_factor * static_cast<double>(last)), opts.dram_min_bytes);
    const Summary s = measure_read_bandwidth(dram / t, t, opts.timing);
    out.push_back({t, "DRAM", 0, dram / t * t, s.median, s.iqr()});
  }
  return out;
}

}  // namespace bbits::bench
