// bbits bench — a model file seen as a list of kernel-level layers: for each
// operator, the kernel descriptor (bbits/kernels/kernels.h) and constant data
// exactly as the runtime's plan built them (bbits/runtime/plan.h: the one
// decoder of the model format into kernel descriptors), the kernel the plan
// chose, and the layer's cost (MACs, bytes, BOPs). The benchmarks time each
// layer by running that kernel on exactly this descriptor, and build the
// oneDNN baselines from the same shapes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bbits/bench/roofline.h"
#include "bbits/kernels/kernels.h"
#include "bbits/runtime.h"

namespace bbits::bench {

struct ModelLayer {
  int index = 0;               // operator index in the file
  std::string name;
  std::string op;              // format op name: "conv2d", "fully_connected", ...
  bool depthwise = false;
  kernels::OpDesc desc;        // the runtime plan's descriptor
  std::vector<int> input_tensors;   // activation inputs (file tensor indices)
  int output_tensor = -1;
  // Packed weights as stored, weight scales and biases, as the plan handed
  // them to its kernel (views into the model: valid while ModelLayers lives);
  // empty for operators without weights.
  kernels::Weights weights;
  std::string kernel;          // the kernel the runtime's plan chose
  int64_t macs_unpruned = 0;

  // MACs, bytes moved (weights as stored + biases + activations at their
  // storage width) and bit widths.
  LayerCost cost() const;
  // "conv2d" (KxK), "pointwise" (1x1), "depthwise", "fully_connected", or the
  // op name: the family a kernel peak is calibrated for.
  std::string family() const;
};

// A loaded bbits::Model and its layers; not copyable, held by unique_ptr.
class ModelLayers {
 public:
  // Loads the model with the runtime (verification and plan) and lists its
  // operators. Throws std::runtime_error naming the file (or `label`) and the
  // problem.
  static std::unique_ptr<ModelLayers> load(const std::string& path);
  static std::unique_ptr<ModelLayers> from_memory(const void* data, size_t size, const std::string& label);
  ~ModelLayers();
  ModelLayers(const ModelLayers&) = delete;
  ModelLayers& operator=(const ModelLayers&) = delete;

  const std::vector<ModelLayer>& layers() const { return layers_; }
  const bbits::Model& model() const { return *model_; }
  const std::string& label() const { return label_; }
  // Shape (file layout) and quantization of an activation tensor.
  std::vector<int64_t> tensor_shape(int tensor) const;
  kernels::QuantInfo tensor_quant(int tensor) const;
  // Model totals.
  int64_t total_macs() const;
  int64_t total_bops() const;
  int64_t total_bops_fp32() const;
  // Metadata: architecture, method, accuracy (-1 unknown) as the file records them.
  std::string arch() const;
  std::string method() const;
  double accuracy() const;

 private:
  ModelLayers() = default;
  void build();
  std::shared_ptr<const bbits::Model> model_;
  std::string label_;
  std::vector<ModelLayer> layers_;
};

}  // namespace bbits::bench
