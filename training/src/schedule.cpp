#include "bbits/training/schedule.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include <fmt/format.h>

namespace bbits::train {

OptimizerKind optimizer_from_name(const std::string& s) {
  if (s == "adam" || s == "Adam") return OptimizerKind::Adam;
  if (s == "sgd" || s == "SGD") return OptimizerKind::Sgd;
  throw std::invalid_argument("unknown optimizer '" + s + "' (known: adam, sgd)");
}

const char* optimizer_name(OptimizerKind k) { return k == OptimizerKind::Sgd ? "sgd" : "adam"; }

namespace {
[[noreturn]] void bad(const std::string& s, const std::string& why) {
  throw std::invalid_argument("learning-rate schedule '" + s + "': " + why +
                              " (known: linear-tail, constant, multistep:E1:E2:..., cosine or cosine:ETA_MIN)");
}

double parse_number(const std::string& s, const std::string& part) {
  char* end = nullptr;
  const double v = std::strtod(part.c_str(), &end);
  if (part.empty() || end != part.c_str() + part.size() || !std::isfinite(v)) bad(s, "'" + part + "' is not a number");
  return v;
}
}  // namespace

LrSchedule LrSchedule::parse(const std::string& s) {
  LrSchedule r;
  std::vector<std::string> parts;
  size_t begin = 0;
  while (true) {
    const size_t colon = s.find(':', begin);
    parts.push_back(s.substr(begin, colon == std::string::npos ? std::string::npos : colon - begin));
    if (colon == std::string::npos) break;
    begin = colon + 1;
  }
  const std::string& name = parts[0];
  if (name == "linear-tail" || name == "constant") {
    if (parts.size() != 1) bad(s, "takes no arguments");
    r.kind = name == "constant" ? Kind::Constant : Kind::LinearTail;
  } else if (name == "multistep") {
    if (parts.size() < 2) bad(s, "needs at least one milestone");
    r.kind = Kind::MultiStep;
    for (size_t i = 1; i < parts.size(); ++i) {
      const double v = parse_number(s, parts[i]);
      if (v < 1 || v != std::floor(v)) bad(s, "milestones must be positive integers");
      if (!r.milestones.empty() && static_cast<int64_t>(v) <= r.milestones.back()) bad(s, "milestones must increase");
      r.milestones.push_back(static_cast<int64_t>(v));
    }
  } else if (name == "cosine") {
    if (parts.size() > 2) bad(s, "takes at most one argument");
    r.kind = Kind::Cosine;
    if (parts.size() == 2) r.eta_min = parse_number(s, parts[1]);
    if (r.eta_min < 0) bad(s, "eta_min must be >= 0");
  } else {
    bad(s, "unknown kind '" + name + "'");
  }
  return r;
}

std::string LrSchedule::to_string() const {
  switch (kind) {
    case Kind::LinearTail: return "linear-tail";
    case Kind::Constant: return "constant";
    case Kind::MultiStep: {
      std::string s = "multistep";
      for (auto m : milestones) s += ":" + std::to_string(m);
      return s;
    }
    case Kind::Cosine: return fmt::format("cosine:{}", eta_min);
  }
  return "?";
}

double LrSchedule::lr(double base, int64_t t, int64_t T, bool weights) const {
  switch (kind) {
    case Kind::Constant:
      return base;
    case Kind::LinearTail: {
      // make_lr_scheduler: ep_sched = int((2.0 / 3.0) * epochs); for epoch >
      // ep_sched the factor is (epoch - epochs) / (ep_sched - epochs).
      if (!weights) return base;
      const int64_t sched = static_cast<int64_t>((2.0 / 3.0) * static_cast<double>(T));
      if (t <= sched || T <= sched) return base;
      return base * static_cast<double>(T - t) / static_cast<double>(T - sched);
    }
    case Kind::MultiStep: {
      double f = 1.0;
      for (auto m : milestones)
        if (t >= m) f *= gamma;
      return base * f;
    }
    case Kind::Cosine: {
      if (T <= 0) return base;
      const double eta = weights ? eta_min : 0.0;
      return eta + (base - eta) * (1.0 + std::cos(M_PI * static_cast<double>(t) / static_cast<double>(T))) / 2.0;
    }
  }
  return base;
}

}  // namespace bbits::train
