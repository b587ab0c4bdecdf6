#include "bbits/bench/bandwidth.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

namespace bbits::bench {

// ---- ThreadTeam ---------------------------------------------------------------
struct ThreadTeam::State {
  std::vector<std::thread> workers;
  std::atomic<uint64_t> generation{0};
  std::atomic<int> remaining{0};
  std::atomic<bool> stop{false};
  const std::function<void(int)>* fn = nullptr;
};

ThreadTeam::ThreadTeam(int n) : n_(n), state_(std::make_unique<State>()) {
  if (n < 1) throw std::invalid_argument("thread team: need at least one thread");
  for (int t = 1; t < n; ++t) {
    state_->workers.emplace_back([this, t] {
      uint64_t seen = 0;
      while (true) {
        uint64_t g;
        int spins = 0;
        while ((g = state_->generation.load(std::memory_order_acquire)) == seen) {
          if (state_->stop.load(std::memory_order_acquire)) return;
          // Spin briefly, then yield: the machine may be shared.
          if (++spins < 20000)
            _mm_pause();
          else
            std::this_thread::yield();
        }
        seen = g;
        if (state_->stop.load(std::memory_order_acquire)) return;
        (*state_->fn)(t);
        state_->remaining.fetch_sub(1, std::memory_order_acq_rel);
      }
    });
  }
}

ThreadTeam::~ThreadTeam() {
  state_->stop.store(true, std::memory_order_release);
  state_->generation.fetch_add(1, std::memory_order_acq_rel);
  for (auto& w : state_->workers) w.join();
}

void ThreadTeam::run(const std::function<void(int)>& fn) {
  state_->fn = &fn;
  state_->remaining.store(n_ - 1, std::memory_order_release);
  state_->generation.fetch_add(1, std::memory_order_acq_rel);
  fn(0);
  int spins = 0;
  while (state_->remaining.load(std::memory_order_acquire) != 0) {
    if (++spins < 20000)
      _mm_pause();
    else
      std::this_thread::yield();
  }
}

// ---- read loops ------------------------------------------------------------------
namespace {

__attribute__((target("avx512f"))) uint64_t read_avx512(const uint8_t* p, size_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    a0 = _mm512_xor_si512(a0, _mm512_load_si512(p + i));
    a1 = _mm512_xor_si512(a1, _mm512_load_si512(p + i + 64));
    a2 = _mm512_xor_si512(a2, _mm512_load_si512(p + i + 128));
    a3 = _mm512_xor_si512(a3, _mm512_load_si512(p + i + 192));
  }
  a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, a0);
  uint64_t r = 0;
  for (uint64_t v : lanes) r ^= v;
  return r;
}

__attribute__((target("avx2"))) uint64_t read_avx2(const uint8_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    a0 = _mm256_xor_si256(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_xor_si256(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_xor_si256(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_xor_si256(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), a0);
  return lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3];
}

uint64_t read_scalar(const uint8_t* p, size_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
    uint64_t v[4];
    std::memcpy(v, p + i, 32);
    a0 ^= v[0];
    a1 ^= v[1];
    a2 ^= v[2];
    a3 ^= v[3];
  }
  return a0 ^ a1 ^ a2 ^ a3;
}

using ReadFn = uint64_t (*)(const uint8_t*, size_t);

ReadFn pick_read() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return read_avx512;
  if (__builtin_cpu_supports("avx2")) return read_avx2;
  return read_scalar;
}

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};

}  // namespace

std::string read_loop_isa() {
  const ReadFn f = pick_read();
  return f == read_avx512 ? "avx512" : f == read_avx2 ? "avx2" : "scalar";
}

Summary measure_read_bandwidth(int64_t bytes_per_thread, int threads, const TimingOptions& opts) {
  if (bytes_per_thread < 1024) throw std::invalid_argument("bandwidth: working set must be at least 1 KiB");
  if (threads < 1) throw std::invalid_argument("bandwidth: threads must be at least 1");
  const size_t n = static_cast<size_t>(bytes_per_thread) / 256 * 256;
  const ReadFn read = pick_read();
  std::vector<std::unique_ptr<uint8_t, AlignedFree>> bufs;
  ThreadTeam team(threads);
  bufs.resize(static_cast<size_t>(threads));
  // Each thread allocates and touches its own buffer (first touch places pages).
  team.run([&](int t) {
    void* p = std::aligned_alloc(64, n);
    if (p) std::memset(p, t + 1, n);
    bufs[static_cast<size_t>(t)].reset(static_cast<uint8_t*>(p));
  });
  for (const auto& b : bufs)
    if (!b) throw std::runtime_error("bandwidth: out of memory");
  std::vector<uint64_t> sink(static_cast<size_t>(threads) * 8, 0);
  // One sample = every thread reads its buffer `passes` times without
  // synchronising in between (about 16 MiB per thread, >= 100 us), so that
  // hand-off costs do not count as memory time.
  const size_t passes = std::max<size_t>(1, (size_t{16} << 20) / n);
  auto once = [&] {
    team.run([&](int t) {
      const uint8_t* b = bufs[static_cast<size_t>(t)].get();
      uint64_t acc = 0;
      for (size_t p = 0; p < passes; ++p) acc ^= read(b, n) + p;
      sink[static_cast<size_t>(t) * 8] ^= acc;
    });
  };
  TimingOptions o = opts;
  o.min_sample_ns = 0;
  const auto ns = sample_ns(once, o);
  std::vector<double> bps;
  bps.reserve(ns.size());
  const double bytes = static_cast<double>(n) * static_cast<double>(passes) * threads;
  for (double t : ns) bps.push_back(bytes / (t * 1e-9));
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep ^ v;
  (void)keep;
  return summarize(bps);
}

Summary measure_reuse_bandwidth(int64_t distance, int threads, const TimingOptions& opts) {
  if (distance < 0) throw std::invalid_argument("reuse bandwidth: distance must not be negative");
  if (threads < 1) throw std::invalid_argument("reuse bandwidth: threads must be at least 1");
  const size_t x = (size_t{1} << 20) / static_cast<size_t>(threads) / 256 * 256;
  const size_t y = static_cast<size_t>(distance) / static_cast<size_t>(threads) / 256 * 256;
  const ReadFn read = pick_read();
  std::vector<std::unique_ptr<uint8_t, AlignedFree>> xs(static_cast<size_t>(threads)), ys(static_cast<size_t>(threads));
  ThreadTeam team(threads);
  team.run([&](int t) {
    void* p = std::aligned_alloc(64, x);
    if (p) std::memset(p, t + 1, x);
    xs[static_cast<size_t>(t)].reset(static_cast<uint8_t*>(p));
    if (y > 0) {
      void* q = std::aligned_alloc(64, y);
      if (q) std::memset(q, t + 2, y);
      ys[static_cast<size_t>(t)].reset(static_cast<uint8_t*>(q));
    }
  });
  for (int t = 0; t < threads; ++t)
    if (!xs[static_cast<size_t>(t)] || (y > 0 && !ys[static_cast<size_t>(t)]))
      throw std::runtime_error("reuse bandwidth: out of memory");
  std::vector<uint64_t> sink(static_cast<size_t>(threads) * 8, 0);
  std::vector<double> bps;
  const int reps = std::max(1, opts.repeats), warm = std::max(0, opts.warmup);
  for (int r = 0; r < warm + reps; ++r) {
    team.run([&](int t) {
      uint64_t acc = read(xs[static_cast<size_t>(t)].get(), x);
      if (y > 0) acc ^= read(ys[static_cast<size_t>(t)].get(), y);
      sink[static_cast<size_t>(t) * 8] ^= acc;
    });
    const auto t0 = std::chrono::steady_clock::now();
    team.run([&](int t) { sink[static_cast<size_t>(t) * 8] ^= read(xs[static_cast<size_t>(t)].get(), x); });
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    if (r >= warm && ns > 0) bps.push_back(static_cast<double>(x) * threads / (ns * 1e-9));
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep ^ v;
  (void)keep;
  return summarize(bps);
}

}  // namespace bbits::bench
