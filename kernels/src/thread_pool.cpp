#include "bbits/kernels/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <stdexcept>

namespace bbits::kernels {

namespace {
// How long a waiting thread polls (with the pause instruction) before it
// blocks on the condition variable: a worker that went idle at the end of
// one layer is still awake when the next layer's parallel_for starts, even
// after a single-threaded layer of a millisecond or two. Waking a blocked
// thread costs 10 to 100 us on a VM whose other vCPU has halted, more than
// many layers take. Polling with pause rather than sched_yield: the two
// vCPUs of the test VM behave like SMT siblings, and a yielding poller
// (a system call per poll) slowed the other thread's oneDNN layers 1.75x.
// Measured (MobileNetV2 / ResNet-18 w8a8, 2 threads): blocking at once
// 16-25 / 12 ms, yield polls 7.2-7.9 / 7.6 ms, pause polls 5.2 / 7.6 ms
// (1 thread: 5.1 / 10.5 ms).
// The caller takes chunks too and waits only for chunks in flight, never for
// a worker to wake: a worker that has not started when the caller has taken
// the last chunk no longer holds the layer (it used to count itself in
// after waking, however late). A machine with fewer idle cores than pool
// threads still slows a session down (a worker descheduled in the middle of
// its chunk): use as many threads as idle cores.
constexpr auto kSpinNs = std::chrono::microseconds(2000);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

template <class Pred>
void poll_for(Pred done) {
  const auto until = std::chrono::steady_clock::now() + kSpinNs;
  for (int i = 0; !done(); ++i) {
    if ((i & 63) == 63 && std::chrono::steady_clock::now() >= until) return;
    cpu_relax();
  }
}

// Index of the pool thread running a chunk on this thread, -1 outside any chunk.
thread_local int t_chunk_thread = -1;

struct ChunkScope {
  int saved;
  explicit ChunkScope(int index) : saved(t_chunk_thread) { t_chunk_thread = index; }
  ~ChunkScope() { t_chunk_thread = saved; }
};
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads_ = num_threads;
  workers_.reserve(static_cast<size_t>(num_threads_ - 1));
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    poll_for([&] { return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; });
    std::unique_lock<std::mutex> lock(mutex_);
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    // Take chunks of the current job until none is left. A worker that wakes
    // late finds none and goes back to waiting: the caller never waits for a
    // worker that has not started, only for chunks in flight.
    while (next_chunk_ < num_chunks_) {
      const int64_t c = next_chunk_++;
      ++in_flight_;
      const RangeFn* fn = fn_;
      const int64_t begin = c * chunk_, end = std::min(n_, begin + chunk_);
      lock.unlock();
      try {
        ChunkScope scope(index);
        (*fn)(begin, end, index);
      } catch (...) {
        std::lock_guard<std::mutex> g(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      lock.lock();
      if (--in_flight_ == 0) done_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const RangeFn& fn, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (t_chunk_thread >= 0) {  // nested call from inside a chunk: run inline
    fn(0, n, t_chunk_thread);
    return;
  }
  const int64_t max_chunks = (n + grain - 1) / grain;
  if (num_threads_ == 1 || max_chunks == 1) {
    ChunkScope scope(0);
    fn(0, n, 0);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  // A few chunks per thread for balance, none shorter than grain.
  const int64_t want = std::min<int64_t>(max_chunks, int64_t{4} * num_threads_);
  const int64_t chunk = std::max<int64_t>(grain, (n + want - 1) / want);
  std::unique_lock<std::mutex> lock(mutex_);
  fn_ = &fn;
  n_ = n;
  chunk_ = chunk;
  num_chunks_ = (n + chunk - 1) / chunk;
  next_chunk_ = 0;
  error_ = nullptr;
  ++generation_;
  wake_.notify_all();
  while (next_chunk_ < num_chunks_) {
    const int64_t c = next_chunk_++;
    const int64_t begin = c * chunk, end = std::min(n, begin + chunk);
    lock.unlock();
    try {
      ChunkScope scope(0);
      fn(begin, end, 0);
    } catch (...) {
      std::lock_guard<std::mutex> g(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    lock.lock();
  }
  // Every chunk is taken; wait for the ones workers are still running.
  if (in_flight_ != 0) {
    lock.unlock();
    poll_for([&] { return in_flight_.load(std::memory_order_acquire) == 0; });
    lock.lock();
    done_.wait(lock, [&] { return in_flight_ == 0; });
  }
  fn_ = nullptr;
  std::exception_ptr err = error_;
  error_ = nullptr;
  lock.unlock();
  if (err) std::rethrow_exception(err);
}

void parallel_for(ThreadPool* pool, int64_t n, const ThreadPool::RangeFn& fn, int64_t grain) {
  if (n <= 0) return;
  if (pool == nullptr || pool->num_threads() == 1) {
    fn(0, n, 0);
    return;
  }
  pool->parallel_for(n, fn, grain);
}

}  // namespace bbits::kernels
