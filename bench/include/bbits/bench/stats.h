// bbits bench — robust timing statistics: warm-up, repetitions, median and
// interquartile range. Times are nanoseconds throughout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace bbits::bench {

// Summary of a sample. Quantiles use linear interpolation between order
// statistics (Hyndman-Fan type 7, the default of R and NumPy).
struct Summary {
  size_t n = 0;
  double median = 0;
  double q1 = 0;  // 25th percentile
  double q3 = 0;  // 75th percentile
  double min = 0;
  double max = 0;
  double mean = 0;
  double iqr() const { return q3 - q1; }
  // IQR relative to the median (0 when the median is 0).
  double relative_iqr() const { return median != 0 ? iqr() / median : 0.0; }
};

// p-quantile (0 <= p <= 1) of an ascending sorted, non-empty sample.
// Throws std::invalid_argument on an empty sample or p outside [0, 1].
double quantile_sorted(std::span<const double> sorted, double p);

// Summary of a non-empty sample of finite values; throws std::invalid_argument
// naming the problem otherwise.
Summary summarize(std::span<const double> samples);

struct TimingOptions {
  int warmup = 2;          // untimed calls before sampling
  int repeats = 15;        // samples kept
  // A sample times `inner` back-to-back calls and records the mean per call,
  // where `inner` is the smallest power of two making a sample last at least
  // this long (so that short layers are not lost in clock resolution).
  double min_sample_ns = 20'000;
  int max_inner = 1 << 16;
};

// Raw per-call times (ns) of `fn`: warm-up, then `repeats` samples.
// Validates the options (repeats >= 1, warmup >= 0) and throws on bad ones.
std::vector<double> sample_ns(const std::function<void()>& fn, const TimingOptions& opts);

// summarize(sample_ns(fn, opts)).
Summary time_ns(const std::function<void()>& fn, const TimingOptions& opts);

// Monotonic clock in nanoseconds.
int64_t now_ns();

}  // namespace bbits::bench
