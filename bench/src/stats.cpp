#include "bbits/bench/stats.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

namespace bbits::bench {

double quantile_sorted(std::span<const double> sorted, double p) {
  if (sorted.empty()) throw std::invalid_argument("quantile: empty sample");
  if (!(p >= 0.0 && p <= 1.0)) throw std::invalid_argument("quantile: p must be in [0, 1]");
  const double h = p * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = h - static_cast<double>(lo);
  return sorted[lo] + frac * (sorted[hi] - sorted[lo]);
}

Summary summarize(std::span<const double> samples) {
  if (samples.empty()) throw std::invalid_argument("summarize: empty sample");
  std::vector<double> s(samples.begin(), samples.end());
  double sum = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!std::isfinite(s[i]))
      throw std::invalid_argument("summarize: sample " + std::to_string(i) + " is not finite");
    sum += s[i];
  }
  std::sort(s.begin(), s.end());
  Summary r;
  r.n = s.size();
  r.median = quantile_sorted(s, 0.5);
  r.q1 = quantile_sorted(s, 0.25);
  r.q3 = quantile_sorted(s, 0.75);
  r.min = s.front();
  r.max = s.back();
  r.mean = sum / static_cast<double>(s.size());
  return r;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::vector<double> sample_ns(const std::function<void()>& fn, const TimingOptions& opts) {
  if (opts.repeats < 1) throw std::invalid_argument("timing: repeats must be at least 1");
  if (opts.warmup < 0) throw std::invalid_argument("timing: warm-up must not be negative");
  if (opts.max_inner < 1) throw std::invalid_argument("timing: max_inner must be at least 1");
  if (!fn) throw std::invalid_argument("timing: no function to time");
  for (int i = 0; i < opts.warmup; ++i) fn();
  // Find the batch size: double until one batch lasts min_sample_ns.
  int inner = 1;
  double first = -1;
  while (true) {
    const int64_t t0 = now_ns();
    for (int i = 0; i < inner; ++i) fn();
    const double dt = static_cast<double>(now_ns() - t0);
    if (dt >= opts.min_sample_ns || inner >= opts.max_inner) {
      first = dt / inner;
      break;
    }
    inner *= 2;
  }
  std::vector<double> out;
  out.reserve(static_cast<size_t>(opts.repeats));
  out.push_back(first);
  for (int r = 1; r < opts.repeats; ++r) {
    const int64_t t0 = now_ns();
    for (int i = 0; i < inner; ++i) fn();
    out.push_back(static_cast<double>(now_ns() - t0) / inner);
  }
  return out;
}

Summary time_ns(const std::function<void()>& fn, const TimingOptions& opts) {
  const auto s = sample_ns(fn, opts);
  return summarize(s);
}

}  // namespace bbits::bench
