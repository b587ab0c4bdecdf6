// bbits training — the trainer and the eval entry point behind `bbits-train`.
// Torch-free interface (the CLI includes only this).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace bbits::train {

enum class Mode { BayesianBits, PostTraining, QuantOnly, PruneOnly, Fixed, Float };
const char* mode_name(Mode m);
Mode mode_from_name(const std::string& s);  // throws std::invalid_argument

struct TrainConfig {
  std::string model = "lenet5";
  Mode mode = Mode::BayesianBits;
  std::string dataset = "fashion-mnist";
  std::string data_dir;  // empty: the Debian package's folder
  std::string out = "runs/lenet5";
  double mu = 0.1;
  int epochs = 30;
  int finetune_epochs = 0;
  int64_t batch_size = 128;
  std::string optimizer = "adam";  // adam | sgd (weights)
  double lr = 1e-3;                // weights
  double lr_gates = 1e-2;          // log alphas (Adam)
  double lr_ranges = 1e-3;         // x_max (Adam)
  double weight_decay = 0.0;
  double gate_init = 6.0;
  std::string fixed_bits = "w8a8";  // --mode fixed: w8a8 | w4a8 | w2a8 (any wXaY of legal widths)
  int prune_only_bits = 8;          // --mode prune-only: 8, 16 or 32 (float)
  std::string init;                 // --mode post-training: float checkpoint to start from
  bool learn_ranges = true;         // post-training: false = gates only
  std::string resume;
  uint64_t seed = 1;
  int threads = 2;
  int64_t calib_images = 256;
  int64_t train_limit = -1, test_limit = -1;  // use the first N images
  bool augment = false;
  double width = 1.0;
  bool progress = true;
  bool save_epochs = true;  // OUT/epoch-N.safetensors
};

struct EpochResult {
  int epoch = 0;
  double loss = 0, ce = 0, reg = 0, train_acc = 0, test_acc = 0, rel_bops = 0, seconds = 0, cpu_seconds = 0;
};

struct TrainResult {
  std::vector<EpochResult> epochs;
  double test_accuracy = 0, relative_bops = 0;
  double seconds_per_epoch = 0, cpu_seconds_per_epoch = 0;  // wall clock and process CPU time
  std::string final_checkpoint;
};

// Runs the whole training (and fine-tuning), writing OUT/log.csv, OUT/bits.csv,
// OUT/epoch-N.safetensors and OUT/final.safetensors. Progress goes to `log`.
TrainResult run_training(const TrainConfig& cfg, std::ostream& log);

struct EvalConfig {
  std::string checkpoint;
  std::string dataset = "fashion-mnist";
  std::string data_dir;
  std::string save_logits;  // .npy, float32 N x classes
  int64_t limit = -1;
  int64_t batch_size = 500;
  int threads = 2;
};

// Loads the checkpoint, runs the eval-mode network on the test set, returns the accuracy.
double run_eval(const EvalConfig& cfg, std::ostream& log);

// Sets intra-op and inter-op threads (inter-op only once per process).
void set_threads(int n);

// Writes a float32 C-order .npy file atomically.
void write_npy(const std::string& path, const std::vector<float>& data, const std::vector<int64_t>& shape);

}  // namespace bbits::train
