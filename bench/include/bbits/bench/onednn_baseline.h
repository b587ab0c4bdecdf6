// bbits bench — the baselines a user would run instead: the same network
// (same layer shapes, fused activations, NHWC activations) through oneDNN,
// all in float32, or every layer at int8 (u8/s8 activations, s8 weights,
// per-channel output scales).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bbits/bench/model_layers.h"

namespace bbits::bench {

enum class BaselineKind { F32, Int8 };
const char* baseline_name(BaselineKind k);  // "onednn_f32", "onednn_int8"

// One oneDNN network built from a model's layers. Constant weights are
// random (values do not change the time) and reordered once at build time.
class OnednnNet {
 public:
  // Builds every primitive for `threads` OpenMP threads (oneDNN sizes its
  // work partition at creation). A layer oneDNN cannot express gets no
  // primitive (available(i) false) and a note saying why.
  OnednnNet(const ModelLayers& model, BaselineKind kind, int threads);
  ~OnednnNet();
  OnednnNet(const OnednnNet&) = delete;
  OnednnNet& operator=(const OnednnNet&) = delete;

  size_t size() const;
  bool available(size_t layer) const;
  // Why a layer has no primitive, or the oneDNN implementation that runs it
  // ("jit_int8:avx512_core_vnni", ...).
  const std::string& note(size_t layer) const;
  // Runs layer i (and waits for it); no-op when unavailable.
  void run_layer(size_t i);
  // Runs every layer in order.
  void run_all();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// oneDNN version and the ISA it dispatches to ("2.6.3 avx512_core_vnni").
std::string onednn_info();
// Sets the OpenMP thread count oneDNN uses.
void set_onednn_threads(int threads);

}  // namespace bbits::bench
