// bbits bench — a model file seen as a list of kernel-level layers: for each
// operator of a .bbm file, the kernel descriptor (bbits/kernels/kernels.h),
// its constant data, and its cost (MACs, bytes, BOPs). The benchmarks time
// each layer by running the kernel the runtime's plan chose on exactly this
// descriptor, and build the oneDNN baselines from the same shapes.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bbits/bench/roofline.h"
#include "bbits/format/model_file.h"
#include "bbits/kernels/kernels.h"

namespace bbits::bench {

struct ModelLayer {
  int index = 0;               // operator index in the file
  std::string name;
  std::string op;              // format op name: "conv2d", "fully_connected", ...
  bool depthwise = false;
  kernels::OpDesc desc;
  std::vector<int> input_tensors;   // activation inputs (file tensor indices)
  int output_tensor = -1;
  int weight_tensor = -1;
  std::span<const uint8_t> weight_data;  // packed as stored; empty without weights
  std::vector<float> w_scales;
  std::vector<int32_t> bias_q;
  std::vector<float> bias_f;
  int64_t macs_unpruned = 0;

  // Weights view for kernels::KernelInfo::create (valid while the layer lives).
  kernels::Weights weights() const;
  // MACs, bytes moved (weights as stored + biases + activations at their
  // storage width) and bit widths.
  LayerCost cost() const;
  // "conv2d" (KxK), "pointwise" (1x1), "depthwise", "fully_connected", or the
  // op name: the family a kernel peak is calibrated for.
  std::string family() const;
};

// Owns the model bytes (64-byte aligned); not copyable, held by unique_ptr.
class ModelLayers {
 public:
  // Reads, verifies (format::verify_model) and describes every operator.
  // Throws std::runtime_error naming the file and the operator on any problem.
  static std::unique_ptr<ModelLayers> load(const std::string& path);
  static std::unique_ptr<ModelLayers> from_memory(const void* data, size_t size, const std::string& label);
  ~ModelLayers();
  ModelLayers(const ModelLayers&) = delete;
  ModelLayers& operator=(const ModelLayers&) = delete;

  const std::vector<ModelLayer>& layers() const { return layers_; }
  const format::ModelView& view() const { return view_; }
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
  uint8_t* bytes_ = nullptr;
  size_t size_ = 0;
  std::string label_;
  format::ModelView view_;
  std::vector<ModelLayer> layers_;
};

// Kernel-level QuantInfo of a file tensor (bits 32 for float tensors).
kernels::QuantInfo quant_of(const fb::Tensor& t);

}  // namespace bbits::bench
