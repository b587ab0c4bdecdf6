// bbits bench — read bandwidth of this machine per working-set size, the
// memory side of the roofline.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bbits/bench/stats.h"

namespace bbits::bench {

// A team of `n` threads (the caller is thread 0) that run one function
// together and wait for each other; spinning, so that short parallel
// sections are not dominated by wake-up latency.
class ThreadTeam {
 public:
  explicit ThreadTeam(int n);
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;
  int size() const { return n_; }
  // Runs fn(thread_index) on every thread and returns when all are done.
  void run(const std::function<void(int)>& fn);

 private:
  struct State;
  int n_;
  std::unique_ptr<State> state_;
};

// Which vector width the read loop uses ("avx512", "avx2" or "scalar").
std::string read_loop_isa();

// Median read bandwidth (bytes per second, all threads together) of `threads`
// threads each streaming repeatedly through its own buffer of
// `bytes_per_thread` bytes with the widest vector loads this CPU has.
// Throws std::invalid_argument for a size under 1 KiB or threads < 1.
Summary measure_read_bandwidth(int64_t bytes_per_thread, int threads, const TimingOptions& opts);

// Read bandwidth (bytes per second, all threads together) of data read again
// after `distance` bytes of other data went through the caches: `threads`
// threads each read their share of a 1 MiB buffer, stream their share of
// `distance` other bytes, then the buffer is read again and timed (median of
// opts.repeats). What a layer's weights come back at inside a session, where
// a whole run passes between two uses; cache capacities alone do not say it
// (a last-level cache shared with other tenants, victim caches).
// Throws std::invalid_argument for distance < 0 or threads < 1.
Summary measure_reuse_bandwidth(int64_t distance, int threads, const TimingOptions& opts);

}  // namespace bbits::bench
