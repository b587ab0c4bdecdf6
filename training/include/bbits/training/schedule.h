// bbits training — optimiser choices and learning-rate schedules, as the
// reference implementation defines them (benchmarks/image_net/
// gated_mixed_precision.py: get_optimizers, make_lr_scheduler;
// fixed_gate_finetune_utils.py: get_finetune_optimizers,
// get_finetune_schedulers). Torch-free: the trainer builds LibTorch
// optimisers from these plans, and the tests check them by hand.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bbits::train {

// adam: torch.optim.Adam defaults (betas 0.9/0.999, eps 1e-8).
// sgd: Nesterov momentum 0.9, as the reference adds to every SGD group.
enum class OptimizerKind { Adam, Sgd };
OptimizerKind optimizer_from_name(const std::string& s);  // adam|Adam|sgd|SGD; throws std::invalid_argument
const char* optimizer_name(OptimizerKind k);

struct OptimizerPlan {
  OptimizerKind kind = OptimizerKind::Adam;
  double lr = 1e-3;
  double weight_decay = 0.0;
  double momentum() const { return kind == OptimizerKind::Sgd ? 0.9 : 0.0; }
  bool nesterov() const { return kind == OptimizerKind::Sgd; }
};

// A learning-rate schedule over T units (epochs in the gated phase, optimiser
// steps in fine-tuning), evaluated at unit t = 0 .. T-1 (t = the number of
// scheduler steps taken before, as PyTorch's schedulers count).
//   linear-tail    the reference's make_lr_scheduler (non-ImageNet experiments):
//                  weights constant for int(2/3 T) units, then
//                  (T - t) / (T - int(2/3 T)); other groups constant
//   constant
//   multistep:A:B  MultiStepLR(milestones A, B, ..., gamma 0.1) on every group
//   cosine[:ETA]   CosineAnnealingLR(T_max = T): the weights from lr to ETA
//                  (default 0), every other group to 0
struct LrSchedule {
  enum class Kind { LinearTail, Constant, MultiStep, Cosine };
  Kind kind = Kind::LinearTail;
  std::vector<int64_t> milestones;  // multistep
  double gamma = 0.1;               // multistep
  double eta_min = 0.0;             // cosine: floor of the weights group

  static LrSchedule parse(const std::string& s);  // throws std::invalid_argument naming s
  std::string to_string() const;
  // The learning rate of a group whose base rate is `base` at unit t of T;
  // `weights` = the first (weight) group, the only one linear-tail moves and
  // the only one cosine leaves at eta_min.
  double lr(double base, int64_t t, int64_t T, bool weights) const;
};

}  // namespace bbits::train
