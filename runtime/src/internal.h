// Runtime internals: the Model's storage and verified view, and the Plan.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bbits/format/model_file.h"
#include "bbits/kernels/kernels.h"
#include "bbits/runtime.h"

namespace bbits::detail {

// Where a model's bytes live: a read-only memory map, or an aligned copy.
class ModelBytes {
 public:
  static std::unique_ptr<ModelBytes> map_file(const std::string& path);
  static std::unique_ptr<ModelBytes> copy(const void* data, size_t size);
  ~ModelBytes();
  ModelBytes(const ModelBytes&) = delete;
  ModelBytes& operator=(const ModelBytes&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  ModelBytes() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  void* owned_ = nullptr;  // aligned heap block when copied
};

// One activation tensor held in the session arena (NHWC storage).
struct ActSlot {
  int tensor = -1;                  // index in the model's tensor table
  std::vector<int64_t> shape;       // as the file declares (N,C,H,W or N,F)
  kernels::QuantInfo q;             // storage bits / grid
  int64_t elements = 0;
  size_t bytes = 0;                 // elements * element_bytes, rounded up to 64
  size_t offset = 0;                // in the arena
  int first = 0, last = 0;          // live over steps [first, last]; inputs first = -1
};

// One operator of the plan.
struct Step {
  int op_index = -1;
  std::string name;
  kernels::OpDesc desc;
  const kernels::KernelInfo* info = nullptr;
  std::unique_ptr<kernels::Kernel> kernel;
  double cost_ns = 0.0;
  double reference_cost_ns = 0.0;
  std::string reason;               // explain_choice()
  std::vector<int> inputs;          // slot indices
  int output = -1;                  // slot index
  // The next step is an element-wise add of this step's output that runs
  // inside this one, on each range of rows as the kernel finishes it
  // (KernelArgs::done); see fuse_residual_adds().
  bool fuse_next = false;
  // Constant data handed to the kernel (kept alive with the plan); the
  // weights are the packed bytes as stored in the model file.
  std::span<const uint8_t> weight_data;
  std::vector<float> w_scales;
  std::vector<int32_t> bias_q;
  std::vector<float> bias_f;
};

struct Plan {
  kernels::Isa isa = kernels::Isa::Reference;
  std::vector<ActSlot> slots;
  std::vector<int> tensor_slot;     // tensor index -> slot, -1 for constants
  std::vector<Step> steps;
  std::vector<int> input_slots, output_slots;
  size_t arena_bytes = 0;
  size_t arena_unshared = 0;

  // Scratch one session needs for `threads` threads (max over steps).
  size_t scratch_bytes(int threads) const;
};

// Builds the plan for a verified model. Throws bbits::Error.
Plan build_plan(const format::ModelView& view, bool verbose);

// Marks every conv / fc step whose output the next step, an element-wise
// add, reads, when the step's kernel reports finished ranges (Step::fuse_next),
// and makes the add's output live from the producing step on (it is written
// while that step runs). Called before assign_offsets().
void fuse_residual_adds(Plan& plan);

// Liveness-based offset assignment (greedy by size): sets slot.offset so that
// slots whose live ranges overlap never share bytes; returns the arena size.
size_t assign_offsets(std::vector<ActSlot>& slots);

// Describes a verified model for tools.
ModelInfo describe_model(const format::ModelView& view);

// Costs of one operator at batch 1 (costs.cpp); zero for operators without weights.
struct OpCosts {
  int64_t macs = 0;             // live channels only
  int64_t macs_unpruned = 0;    // the trained layer, nothing pruned
  int64_t weight_bytes = 0;     // packed weights as stored
  int64_t bops = 0;             // macs x weight bits x input bits
  int64_t float32_weights = 0;  // weights of the trained layer (its float32 size / 4)
};
// Recomputes every operator's costs from the model's shapes, keep masks and
// weights (never from the figures the file stores), in operator order.
std::vector<OpCosts> operator_costs(const format::ModelView& view);

// QuantInfo of an activation tensor of the file.
kernels::QuantInfo act_quant(const fb::Tensor& t);

// Applies the calibration named by BBITS_CALIBRATION once per process; throws
// bbits::Error (on this and every later call) if that file is bad.
void apply_env_calibration_once();

}  // namespace bbits::detail

namespace bbits {

struct Model::Impl {
  std::unique_ptr<detail::ModelBytes> bytes;
  format::ModelView view;
  ModelInfo info;
  detail::Plan plan;
  bool io_nhwc = false;  // the caller's 4-D tensors are N,H,W,C (preprocess layout NHWC)
  std::vector<TensorInfo> io_inputs, io_outputs;  // shapes in the caller's layout
};

}  // namespace bbits
