// The calibration file (bbits/runtime/calibration.h): schema, reader, writer
// and lookups.
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "bbits/format/model_file.h"
#include "bbits/runtime/calibration.h"

namespace bbits {
namespace {

using nlohmann::json;

// Errors of from_json carry this prefix; load() replaces it with the file's name.
constexpr const char* kPrefix = "calibration: ";

[[noreturn]] void fail(const std::string& what) { throw CalibrationError(kPrefix + what); }

template <class T>
T field(const json& j, const char* key, const std::string& where) {
  if (!j.is_object()) fail(where + " is not an object");
  const auto it = j.find(key);
  if (it == j.end()) fail(where + " has no \"" + key + "\"");
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail(where + "." + key + " has the wrong type");
  }
}

// An optional boolean field (absent: false).
bool optional_flag(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) return false;
  if (!j[key].is_boolean()) fail(where + "." + key + " must be true or false");
  return j[key].get<bool>();
}

// An optional array of the file (absent: empty).
json optional_array(const json& j, const char* key) {
  if (!j.contains(key)) return json::array();
  if (!j[key].is_array()) fail(std::string("\"") + key + "\" must be an array");
  return j[key];
}

double positive(double v, const std::string& what) {
  if (!std::isfinite(v) || v <= 0) fail(what + " is not a positive number");
  return v;
}

std::string at(const char* array, size_t i) { return std::string(array) + "[" + std::to_string(i) + "]"; }

}  // namespace

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

Calibration Calibration::from_json(const json& j) {
  Calibration c;
  if (!j.is_object()) fail("not a calibration (expected a JSON object)");
  const int version = field<int>(j, "version", "file");
  if (version != kVersion)
    fail("unsupported calibration version " + std::to_string(version) + " (expected " + std::to_string(kVersion) +
         "; run `bbits calibrate` again)");
  c.created = field<std::string>(j, "created", "file");
  c.cpu = field<std::string>(j, "cpu", "file");
  c.commit = field<std::string>(j, "commit", "file");
  c.isa = field<std::string>(j, "isa", "file");
  c.read_loop = field<std::string>(j, "read_loop", "file");
  const auto caches = field<json>(j, "caches", "file");
  if (!caches.is_array()) fail("\"caches\" must be an array");
  for (size_t i = 0; i < caches.size(); ++i) {
    const std::string where = at("caches", i);
    CacheLevel cl;
    cl.level = field<int>(caches[i], "level", where);
    cl.bytes = field<int64_t>(caches[i], "bytes", where);
    cl.shared_by = field<int>(caches[i], "shared_by", where);
    if (cl.level < 1 || cl.bytes <= 0 || cl.shared_by < 1) fail(where + " has a non-positive field");
    c.caches.push_back(cl);
  }
  const auto bw = field<json>(j, "bandwidth", "file");
  if (!bw.is_array() || bw.empty()) fail("\"bandwidth\" must be a non-empty array");
  for (size_t i = 0; i < bw.size(); ++i) {
    const std::string where = at("bandwidth", i);
    BandwidthLevel b;
    b.threads = field<int>(bw[i], "threads", where);
    b.level = field<std::string>(bw[i], "level", where);
    b.capacity = field<int64_t>(bw[i], "capacity", where);
    b.probe_bytes = field<int64_t>(bw[i], "probe_bytes", where);
    b.bytes_per_s = positive(field<double>(bw[i], "bytes_per_s", where), where + ".bytes_per_s");
    b.iqr = field<double>(bw[i], "iqr", where);
    if (b.threads < 1) fail(where + ".threads must be at least 1");
    if (b.capacity < 0) fail(where + ".capacity is negative");
    c.bandwidth.push_back(b);
  }
  const auto peaks = field<json>(j, "peaks", "file");
  if (!peaks.is_array()) fail("\"peaks\" must be an array");
  for (size_t i = 0; i < peaks.size(); ++i) {
    const std::string where = at("peaks", i);
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
    p.k = peaks[i].contains("k") ? field<int64_t>(peaks[i], "k", where) : 0;
    p.n = peaks[i].contains("n") ? field<int64_t>(peaks[i], "n", where) : 0;
    p.m = peaks[i].contains("m") ? field<int64_t>(peaks[i], "m", where) : 0;
    p.compute_macs_per_s =
        peaks[i].contains("compute_macs_per_s") ? field<double>(peaks[i], "compute_macs_per_s", where) : 0.0;
    p.in_signed = optional_flag(peaks[i], "in_signed", where);
    p.out_float = optional_flag(peaks[i], "out_float", where);
    if (!(p.compute_macs_per_s >= 0) || !std::isfinite(p.compute_macs_per_s))
      fail(where + ".compute_macs_per_s must not be negative");
    if (p.k < 0 || p.n < 0 || p.m < 0) fail(where + ".k / n / m must not be negative");
    if (p.threads < 1) fail(where + ".threads must be at least 1");
    c.peaks.push_back(p);
  }
  {
    const json d = optional_array(j, "dispatch");
    for (size_t i = 0; i < d.size(); ++i) {
      const std::string where = at("dispatch", i);
      DispatchCost dc;
      dc.threads = field<int>(d[i], "threads", where);
      dc.runtime = field<std::string>(d[i], "runtime", where);
      dc.ns = field<double>(d[i], "ns", where);
      if (dc.threads < 1 || !(dc.ns >= 0) || !std::isfinite(dc.ns)) fail(where + " has a bad thread count or time");
      c.dispatch.push_back(dc);
    }
  }
  if (j.contains("probe_ns")) {
    if (!j["probe_ns"].is_number()) fail("probe_ns must be a number");
    c.probe_ns = j["probe_ns"].get<double>();
    if (!(c.probe_ns > 0) || !std::isfinite(c.probe_ns)) fail("probe_ns must be positive and finite");
  }
  {
    const json ru = optional_array(j, "reuse");
    for (size_t i = 0; i < ru.size(); ++i) {
      const std::string where = at("reuse", i);
      ReuseBandwidth r;
      r.threads = field<int>(ru[i], "threads", where);
      r.distance = field<int64_t>(ru[i], "distance", where);
      r.bytes_per_s = field<double>(ru[i], "bytes_per_s", where);
      if (r.threads < 1 || r.distance < 0 || !(r.bytes_per_s > 0) || !std::isfinite(r.bytes_per_s))
        fail(where + " has a bad thread count, distance or bandwidth");
      for (const auto& o : c.reuse)
        if (o.threads == r.threads && o.distance == r.distance)
          fail(where + " repeats threads " + std::to_string(r.threads) + " distance " + std::to_string(r.distance));
      c.reuse.push_back(r);
    }
  }
  {
    const json sc = optional_array(j, "scaling");
    for (size_t i = 0; i < sc.size(); ++i) {
      const std::string where = at("scaling", i);
      ThreadScaling ts;
      ts.threads = field<int>(sc[i], "threads", where);
      ts.speedup = field<double>(sc[i], "speedup", where);
      if (ts.threads < 2 || !(ts.speedup > 0) || !std::isfinite(ts.speedup))
        fail(where + " has a bad thread count or speedup");
      c.scaling.push_back(ts);
    }
  }
  {
    const json o = optional_array(j, "overheads");
    for (size_t i = 0; i < o.size(); ++i) {
      const std::string where = at("overheads", i);
      KernelOverhead ko;
      ko.kernel = field<std::string>(o[i], "kernel", where);
      ko.op = field<std::string>(o[i], "op", where);
      ko.threads = field<int>(o[i], "threads", where);
      ko.ns = field<double>(o[i], "ns", where);
      ko.shape = o[i].contains("shape") ? field<std::string>(o[i], "shape", where) : std::string();
      if (ko.threads < 1 || !(ko.ns >= 0) || !std::isfinite(ko.ns)) fail(where + " has a bad thread count or time");
      c.overheads.push_back(ko);
    }
  }
  return c;
}

void Calibration::save(const std::string& path) const {
  namespace fs = std::filesystem;
  if (path.empty()) throw CalibrationError("calibration: empty output path");
  const fs::path p(path);
  if (p.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    if (ec)
      throw CalibrationError("calibration '" + path + "': cannot create directory '" + p.parent_path().string() +
                             "': " + ec.message());
  }
  const std::string text = to_json().dump(2) + "\n";
  try {
    format::write_file_atomic(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  } catch (const std::exception& e) {
    throw CalibrationError("calibration '" + path + "': " + e.what());
  }
}

Calibration Calibration::load(const std::string& path) {
  const std::string who = "calibration '" + path + "': ";
  std::ifstream f(path, std::ios::binary);
  if (!f) throw CalibrationError(who + "cannot open the file: " + std::strerror(errno) + " (`bbits calibrate` writes one)");
  std::stringstream ss;
  ss << f.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    throw CalibrationError(who + "not valid JSON (" + e.what() + ")");
  }
  try {
    return from_json(j);
  } catch (const CalibrationError& e) {
    std::string m = e.what();
    if (m.rfind(kPrefix, 0) == 0) m.erase(0, std::strlen(kPrefix));
    throw CalibrationError(who + m);
  }
}

std::vector<int> Calibration::bandwidth_threads() const {
  std::set<int> s;
  for (const auto& b : bandwidth) s.insert(b.threads);
  return {s.begin(), s.end()};
}

const BandwidthLevel& Calibration::level_for(int64_t working_set, int threads) const {
  const auto ts = bandwidth_threads();
  if (ts.empty()) fail("no bandwidth entries");
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

}  // namespace bbits
