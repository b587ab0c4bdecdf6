// bbits training — the trainer and the eval entry point behind `bbits-train`.
// Torch-free interface (the CLI includes only this).
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "bbits/contract/zoo.h"
#include "bbits/training/distributed.h"
#include "bbits/training/schedule.h"

namespace bbits::train {

// The model zoo's options bbits-train builds its networks with: the data
// set's input shape, 10 classes and pixel / 255 (Fashion-MNIST), no pruning
// gates on depthwise convolutions.
contract::ZooOptions model_options(const std::vector<int64_t>& input_shape, double width = 1.0);

enum class Mode { BayesianBits, PostTraining, QuantOnly, PruneOnly, Fixed, Float };
const char* mode_name(Mode m);
Mode mode_from_name(const std::string& s);  // throws std::invalid_argument

struct TrainConfig {
  std::string model = "lenet5";
  Mode mode = Mode::BayesianBits;
  std::string dataset = "fashion-mnist";
  std::string data_dir;  // empty: the Debian package's folder
  std::string out = "runs/lenet5";
  double mu = 0.1;                 // the reference's gating lambda: loss = CE + mu * sum of regularizers
  std::string reg_type = "bop";    // bop | const (the reference's --reg-type)
  // The prior and the budget (latency.h): bops (the reference's) or latency
  // (expected time on the cost table of `bbits profile`); with a target, mu
  // is adapted so that the deterministic-gate model meets it.
  std::string cost = "bops";
  std::string cost_table;
  std::optional<double> target_ms, target_rel_bops;  // ms on the table; percent relative BOPs
  double budget_eta = 0.02;        // dual step of log mu per unit of relative excess cost
  std::string budget_signal = "min";  // the cost the controller sees: deterministic | expected | min
  int epochs = 30;
  int finetune_epochs = 0;
  int64_t batch_size = 128;
  // Gated phase: one optimiser per group (the reference's --optimizer,
  // --optimizer-q, --optimizer-s and --learning-rate{,-q,-s}).
  std::string optimizer = "adam";         // weights: adam | sgd (Nesterov, momentum 0.9)
  std::string optimizer_gates = "adam";   // log alphas
  std::string optimizer_ranges = "adam";  // x_max
  double lr = 1e-3;                // weights
  double lr_gates = 1e-2;          // log alphas
  double lr_ranges = 1e-3;         // x_max
  std::string lr_schedule = "linear-tail";  // per epoch; see LrSchedule (schedule.h)
  double weight_decay = 0.0;
  // Initial log alpha of the learned gates: gate_init for all, or per gate
  // (the reference's --gamma-{4,8,16,32}-init; its pruning gates start at 6).
  double gate_init = 6.0;
  std::optional<double> gate_init_4, gate_init_8, gate_init_16, gate_init_32, gate_init_prune;
  // Fixed-gate fine-tuning (the reference's defaults: gated_mixed_precision.py
  // calls get_finetune_optimizers(..., 1e-4, 1e-4, "SGD", "Adam") and
  // get_finetune_schedulers(..., "cosine:0", ...), stepped after every batch).
  std::string ft_optimizer = "sgd";          // weights
  double ft_lr = 1e-4;
  std::string ft_optimizer_ranges = "adam";  // x_max
  double ft_lr_ranges = 1e-4;
  std::string ft_schedule = "cosine:0";      // per optimiser step over all fine-tuning steps
  std::string fixed_bits = "w8a8";  // --mode fixed: w8a8 | w4a8 | w2a8 (any wXaY of legal widths)
  std::string prune_only_bits = "8";  // --mode prune-only: 8, 16 or 32 (float) for both, or wXaY
  std::string init;                 // --mode post-training: float checkpoint to start from
  bool learn_ranges = true;         // post-training: false = gates only
  std::string resume;
  uint64_t seed = 1;
  int threads = 2;
  int64_t calib_images = 256;
  int64_t train_limit = -1, test_limit = -1;  // use the first N images
  int64_t pad = 0;                             // zero pixels added on each side of every image (28x28 + 2 x 2 = 32x32)
  bool augment = false;
  double width = 1.0;
  bool progress = true;
  bool save_epochs = true;  // OUT/epoch-N.safetensors
  // Data-parallel training (docs/TRAINING.md, "Distributed runs"): rank 0
  // alone writes OUT; --batch-size is the global batch, split over the ranks.
  DistConfig dist;
  // Called after every optimiser step with the epoch (0-based), the step
  // within it and the network's checkpoint tensors (tests compare runs step
  // by step with it).
  std::function<void(int epoch, int64_t step, const contract::TensorMap& tensors)> on_step;

  // The initial log alpha of the gate for `bits` (4, 8, 16, 32; 2 = the pruning gate z2).
  double gate_init_for(int bits) const;
};

// What one phase trains with: the optimiser of each group and the schedule.
struct PhasePlan {
  OptimizerPlan weights, gates, ranges;
  bool gates_learned = true;  // false in fine-tuning (gates fixed)
  LrSchedule schedule;
  bool per_step = false;      // schedule units: optimiser steps (fine-tuning) or epochs (gated phase)
};
// The plan of the gated phase (finetune = false) or of fine-tuning; throws
// std::invalid_argument naming a bad optimizer or schedule.
PhasePlan phase_plan(const TrainConfig& c, bool finetune);

struct EpochResult {
  int epoch = 0;
  double loss = 0, ce = 0, reg = 0, train_acc = 0, test_acc = 0, rel_bops = 0, seconds = 0, cpu_seconds = 0;
  bool finetune = false;
  // Learning rates of the weight and range groups at the epoch's first and
  // last optimiser step.
  double lr_first = 0, lr_last = 0, lr_ranges_first = 0, lr_ranges_last = 0;
  // mu at the epoch's end, and the cost in the budget's unit (ms or percent
  // relative BOPs): expected under the gates and of the deterministic gates.
  double mu = 0, expected_cost = 0, cost = 0;
};

struct TrainResult {
  std::vector<EpochResult> epochs;
  // Eval-mode test accuracy right after the switch to fine-tuning (gates fixed,
  // batch norm folded), before any fine-tuning step; -1 when there was no switch.
  double switch_accuracy = -1;
  double test_accuracy = 0, relative_bops = 0;
  double cost = 0;  // final deterministic cost in the budget's unit (ms with a cost table, else % BOPs)
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
