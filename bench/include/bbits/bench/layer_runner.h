// bbits bench — runs one layer of a model through a kernel of the kernel
// table, on random inputs drawn from the layer's input grids, so that it can
// be timed on its own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bbits/bench/model_layers.h"
#include "bbits/kernels/kernels.h"
#include "bbits/kernels/thread_pool.h"

namespace bbits::bench {

// The kernel the runtime would run for a layer: the kernel named `name` when
// it exists and supports the layer (the name the runtime's plan reports),
// otherwise kernels::choose_kernel(desc, max_isa). Never null.
const kernels::KernelInfo* pick_kernel(const ModelLayer& layer, const std::string& name, kernels::Isa max_isa);

class LayerRunner {
 public:
  // Creates the kernel from the layer's weights and allocates 64-byte aligned
  // inputs (random values on each input's grid), output and scratch for up to
  // `max_threads` threads. Throws std::runtime_error naming the layer.
  LayerRunner(const ModelLayer& layer, const kernels::KernelInfo& info, int max_threads, uint64_t seed = 1);
  ~LayerRunner();
  LayerRunner(const LayerRunner&) = delete;
  LayerRunner& operator=(const LayerRunner&) = delete;

  // One run of the kernel (pool may be null: calling thread only).
  void run(kernels::ThreadPool* pool);
  const kernels::KernelInfo& info() const { return info_; }
  // Scratch the kernel asks for when run on `threads` threads.
  size_t scratch_bytes(int threads) const;

 private:
  struct Buffer;
  const ModelLayer& layer_;
  const kernels::KernelInfo& info_;
  std::unique_ptr<kernels::Kernel> kernel_;
  std::vector<std::unique_ptr<Buffer>> inputs_;
  std::unique_ptr<Buffer> output_, scratch_;
  std::vector<const void*> input_ptrs_;
};

}  // namespace bbits::bench
