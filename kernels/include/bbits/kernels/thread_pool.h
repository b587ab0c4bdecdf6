// bbits — a small thread pool for splitting a kernel's output range.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bbits::kernels {

class ThreadPool {
 public:
  // A pool of `num_threads` threads in total, the caller of parallel_for
  // included (num_threads - 1 workers). num_threads <= 0: hardware concurrency.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end, thread_index) on contiguous chunks covering [0, n),
  // each at least `grain` long (except the last), with thread_index in
  // [0, num_threads()) distinct among concurrently running chunks (index it
  // into per-thread scratch). Blocks until all chunks are done; the first
  // exception thrown by fn is rethrown here. Calls from several threads at once
  // are serialized; a nested call from inside fn runs inline on its thread.
  using RangeFn = std::function<void(int64_t begin, int64_t end, int thread_index)>;
  void parallel_for(int64_t n, const RangeFn& fn, int64_t grain = 1);

 private:
  void worker_loop(int index);

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one parallel_for at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const RangeFn* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 0, num_chunks_ = 0;
  int64_t next_chunk_ = 0;
  // Written under mutex_; atomic so that waiters can poll them before they
  // block (see kSpinNs in thread_pool.cpp).
  std::atomic<int> in_flight_{0};  // chunks taken by workers and not finished
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

// Runs fn over [0, n) on `pool`, or inline (thread_index 0) when pool is null
// or has one thread.
void parallel_for(ThreadPool* pool, int64_t n, const ThreadPool::RangeFn& fn, int64_t grain = 1);

}  // namespace bbits::kernels
