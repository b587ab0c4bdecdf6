// bbits runtime — the public C++ API.
//
//   auto model = bbits::Model::load("lenet5.bbm");      // mmap + verify
//   bbits::Session session(model, {.threads = 2});      // one per thread
//   std::vector<bbits::Tensor> out = session.run({input});
//
// A Model is immutable after loading and holds the execution plan (kernel
// choice, prepacked weights, arena layout); any number of Sessions, on any
// threads, may share it. A Session owns its activation arena and is used by
// one thread at a time. Every failure throws bbits::Error with a message
// naming the problem. This header depends on the C++ standard library only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(_WIN32)
#define BBITS_API
#else
#define BBITS_API __attribute__((visibility("default")))
#endif

namespace bbits {

// Every error of the runtime (bad file, bad input, bad options).
class BBITS_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Element type of a tensor in the model file.
enum class ElementType { Quantized, Float32, Int32 };

// A tensor as the model declares it. Shapes are in the model's layout
// (N,C,H,W or N,F for activations; O,KH,KW,I/groups or O,I for weights).
struct BBITS_API TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  ElementType type = ElementType::Float32;
  int bits = 32;                // 2, 4, 8, 16; 32 for float32
  bool is_signed = true;
  std::vector<float> scale;     // grid step(s); empty for float tensors
  int axis = -1;                // per-channel axis of `scale`, -1 per tensor
  std::vector<float> x_max;     // trained clipping range(s), may be empty
  bool is_constant = false;     // weights and biases
  int64_t elements() const;
};

// One operator of the graph, as `bbits inspect` shows it.
struct LayerInfo {
  std::string name;
  std::string op;               // "conv2d", "fully_connected", "max_pool2d", ...
  std::string activation;       // fused activation: "none", "relu", "relu6"
  std::vector<int64_t> input_shape;   // first input
  std::vector<int64_t> output_shape;  // first output
  std::vector<int> inputs;      // tensor indices
  std::vector<int> outputs;
  int weight_bits = -1;         // -1: the operator has no weights
  int act_bits = -1;            // bits of the first input activation (32 = float)
  int out_bits = -1;            // bits of the output activation
  int64_t channels_total = 0;   // output channels of the trained layer (0: no weights)
  int64_t channels_kept = 0;
  std::vector<uint8_t> keep_mask;  // one byte per trained output channel; empty: nothing pruned
  // Costs at batch 1, computed by the runtime from the layer's shapes, keep
  // mask and weights (docs/RUNTIME.md, `bbits inspect`).
  int64_t macs = 0;             // pruned and constant channels removed
  int64_t macs_unpruned = 0;
  int64_t weight_bytes = 0;     // packed weight bytes as stored (biases excluded)
  int64_t bops = 0;             // macs x weight bits x input bits
  int64_t bops_fp32 = 0;        // the same layer at 32/32 with nothing pruned
  // The same figures as the file states them (its writer's); a file whose
  // stored figures differ from the computed ones is suspect.
  int64_t stored_macs = 0, stored_macs_unpruned = 0, stored_weight_bytes = 0, stored_bops = 0;
  bool stored_costs_agree() const {
    return stored_macs == macs && stored_macs_unpruned == macs_unpruned && stored_weight_bytes == weight_bytes &&
           stored_bops == bops;
  }
  // Kernel the plan chose for this operator on this CPU, and why.
  std::string kernel;
  std::string kernel_reason;
};

struct PreprocessInfo {
  bool present = false;
  std::string layout = "NCHW";  // layout of the input tensor: NCHW, NHWC, NC
  int channels = 0, height = 0, width = 0;
  float pixel_scale = 1.0f;     // input = (pixel * pixel_scale - mean[c]) / std[c]
  std::vector<float> mean, std;
};

struct MetadataInfo {
  std::string producer, source_checkpoint, description;
  std::string method, dataset, arch;
  float mu = 0.0f;
  float accuracy = -1.0f;       // -1: unknown
  float relative_bops = -1.0f;  // -1: unknown
  int epochs = 0;
};

struct ModelInfo {
  uint32_t schema_version = 0;
  size_t file_size = 0;
  std::vector<TensorInfo> tensors;
  std::vector<LayerInfo> layers;
  std::vector<int> inputs, outputs;  // tensor indices
  PreprocessInfo preprocess;
  MetadataInfo metadata;
  // Totals over all layers.
  int64_t macs = 0, macs_unpruned = 0, bops = 0, bops_fp32 = 0;
  int64_t weight_bytes = 0;     // packed weights as stored
  int64_t bias_bytes = 0;
  int64_t float32_bytes = 0;    // weights + biases of the same net in float32, unpruned
  double relative_bops() const { return bops_fp32 > 0 ? double(bops) / double(bops_fp32) : 0.0; }
  // (weight_bytes + bias_bytes) / float32_bytes
  double relative_size() const {
    return float32_bytes > 0 ? double(weight_bytes + bias_bytes) / double(float32_bytes) : 0.0;
  }
};

// A float32 tensor in the model's declared layout (row-major).
struct BBITS_API Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  int64_t elements() const;
};

// Integers on a tensor's grid (the raw quantized path), in the model's
// declared layout. A float32 tensor (bits == 32) carries its values in
// `float_data` instead (outputs only: run_quantized() needs integer inputs).
struct QuantizedTensor {
  std::vector<int64_t> shape;
  int bits = 8;
  bool is_signed = false;
  float scale = 1.0f;           // real value = data[i] * scale
  std::vector<int32_t> data;
  std::vector<float> float_data;  // bits == 32 only
};

class BBITS_API Model {
 public:
  // Memory-maps `path` read-only and verifies it (header, checksum,
  // FlatBuffers verifier, semantic checks), then builds the execution plan.
  static std::shared_ptr<const Model> load(const std::string& path);
  // Copies `size` bytes and does the same.
  static std::shared_ptr<const Model> from_memory(const void* data, size_t size);

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelInfo& info() const;
  const TensorInfo& input(size_t i) const;
  const TensorInfo& output(size_t i) const;
  size_t num_inputs() const;
  size_t num_outputs() const;
  // Bytes of one session's activation arena (after liveness-based packing),
  // and what the arena would need without any reuse.
  size_t arena_bytes() const;
  size_t arena_bytes_unshared() const;
  // Name of the instruction set the plan targets ("avx512_vnni", ...).
  std::string isa() const;

  struct Impl;
  const Impl& impl() const { return *impl_; }  // internal (runtime sources only)

 private:
  friend struct ModelFactory;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// What happened to the float inputs of the last Session::run(): each input
// quantized onto an integer grid is clipped to the grid's range, and the
// values outside it are counted (a value beyond the range loses more than
// rounding does; many of them mean the data is not normalised the way the
// model's preprocessing says).
struct InputRunStats {
  int64_t values = 0;       // float values given
  int64_t clipped = 0;      // of those, outside [lo, hi] (NaN counts as outside)
  bool quantized = false;   // false: a float32 input, taken as it is (nothing clipped)
  float lo = 0.0f, hi = 0.0f;  // the range: [-x_max, x_max] or [0, x_max] (x_max of the input grid)
};

struct RunStats {
  std::vector<InputRunStats> inputs;  // one per model input; empty before the first run()
};

struct SessionOptions {
  int threads = 1;              // threads for this session's kernels (0 = all hardware threads)
  bool profile = false;         // time every layer of every run (Session::layer_ns)
  // Run residual adds inside the convolution before them where the plan
  // fused them (docs/RUNTIME.md, the plan); false, or profile, runs every
  // layer as its own step. Results are identical either way.
  bool fuse_adds = true;
};

class BBITS_API Session {
 public:
  explicit Session(std::shared_ptr<const Model> model, SessionOptions options = {});
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  // Float path: inputs in the model's declared layout and shape, quantized on
  // the model's input grid; outputs dequantized to float32, same layout rules.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs);
  // Raw quantized path: inputs already on the input grid (integers within
  // the grid, bits and signedness as the model declares); outputs as integers
  // on their grid (float outputs in float_data). No rounding happens at the
  // boundary, so this path is exactly the integer network.
  std::vector<QuantizedTensor> run_quantized(const std::vector<QuantizedTensor>& inputs);

  const Model& model() const;

  // With SessionOptions::profile: wall time of each layer (index as in
  // ModelInfo::layers) in the last run, in nanoseconds; empty otherwise.
  const std::vector<double>& layer_ns() const;
  // With SessionOptions::profile: wall time of the last run() /
  // run_quantized() call as a whole, in nanoseconds (0 otherwise). Less the
  // sum of layer_ns(), it is the time the session spends outside the layers:
  // checking and converting the inputs onto their grid and layout, running
  // the plan's steps, converting the outputs.
  double run_ns() const;

  // Input statistics of the last run() (counted while quantizing, no extra
  // pass); run_quantized() takes integers as they are and records none
  // (it resets them).
  const RunStats& last_run_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- cost-model calibration --------------------------------------------------
// Plans choose each layer's kernel by estimated time. The estimates use MAC
// rates built into the kernels (measured on an AMD EPYC Zen 4); a calibration
// written by `bbits calibrate` on the machine at hand replaces them with its
// measured single-thread convolution rates, kernel by kernel. Applies to
// models loaded afterwards (plans are built at load time); process-wide.
// The environment variable BBITS_CALIBRATION=FILE does the same before the
// first model is loaded.
struct CalibrationResult {
  std::string path, isa, cpu, created;                    // as recorded in the file
  std::vector<std::pair<std::string, double>> rates;      // kernel -> MACs per ns now in force
};
// Throws Error naming the file and the problem (unreadable, not JSON, wrong
// version, malformed entries).
BBITS_API CalibrationResult load_calibration(const std::string& path);
// Back to the built-in rates.
BBITS_API void reset_calibration();

// Version of the library ("0.1.0").
BBITS_API const char* version();

}  // namespace bbits
