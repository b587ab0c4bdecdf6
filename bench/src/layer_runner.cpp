#include "bbits/bench/layer_runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>

namespace bbits::bench {

struct LayerRunner::Buffer {
  void* p = nullptr;
  size_t size = 0;
  explicit Buffer(size_t n) : size(n) {
    const size_t alloc = std::max<size_t>((n + 63) / 64 * 64, 64);
    p = std::aligned_alloc(64, alloc);
    if (!p) throw std::runtime_error(fmt::format("out of memory ({} bytes)", n));
    std::memset(p, 0, alloc);
  }
  ~Buffer() { std::free(p); }
};

const kernels::KernelInfo* pick_kernel(const ModelLayer& layer, const std::string& name, kernels::Isa max_isa) {
  if (!name.empty()) {
    if (const kernels::KernelInfo* k = kernels::find_kernel(name); k && k->supports(layer.desc)) return k;
  }
  return kernels::choose_kernel(layer.desc, max_isa).info;
}

LayerRunner::LayerRunner(const ModelLayer& layer, const kernels::KernelInfo& info, int max_threads, uint64_t seed)
    : layer_(layer), info_(info) {
  try {
    kernel_ = info.create(layer.desc, layer.weights);
    std::mt19937_64 rng(seed);
    const int n_in = kernels::num_inputs(layer.desc);
    for (int i = 0; i < n_in; ++i) {
      const kernels::QuantInfo q = kernels::input_quant(layer.desc, i);
      const int64_t n = kernels::input_elements(layer.desc, i);
      auto b = std::make_unique<Buffer>(static_cast<size_t>(n) * kernels::element_bytes(q.bits));
      if (q.is_float()) {
        std::uniform_real_distribution<float> d(-1.0f, 1.0f);
        for (int64_t e = 0; e < n; ++e) kernels::store_float(b->p, e, d(rng));
      } else {
        std::uniform_int_distribution<int64_t> d(bbits::qmin(q.bits, q.is_signed), bbits::qmax(q.bits, q.is_signed));
        for (int64_t e = 0; e < n; ++e) kernels::store_int(b->p, e, q, d(rng));
      }
      input_ptrs_.push_back(b->p);
      inputs_.push_back(std::move(b));
    }
    const kernels::QuantInfo qo = kernels::output_quant(layer.desc);
    output_ = std::make_unique<Buffer>(static_cast<size_t>(kernels::output_elements(layer.desc)) *
                                       kernels::element_bytes(qo.bits));
    scratch_ = std::make_unique<Buffer>(kernel_->scratch_bytes(std::max(max_threads, 1)));
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("layer {} '{}' with kernel {}: {}", layer.index, layer.name, info.name, e.what()));
  }
}

LayerRunner::~LayerRunner() = default;

size_t LayerRunner::scratch_bytes(int threads) const { return kernel_->scratch_bytes(std::max(threads, 1)); }

void LayerRunner::run(kernels::ThreadPool* pool) {
  kernels::KernelArgs a;
  a.inputs = input_ptrs_;
  a.output = output_->p;
  a.scratch = scratch_->p;
  a.scratch_size = scratch_->size;
  kernel_->run(a, pool);
}

}  // namespace bbits::bench
