// bbits training — LibTorch optimisers built from an OptimizerPlan
// (schedule.h). Include only where LibTorch is needed.
#pragma once

#include <memory>
#include <vector>

#include <torch/optim/optimizer.h>

#include "bbits/training/schedule.h"

namespace bbits::train {

// Adam(lr, weight_decay) or SGD(lr, momentum 0.9, Nesterov, weight_decay):
// the reference's get_optimizers / get_finetune_optimizers.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerPlan& plan, std::vector<at::Tensor> params);

void set_lr(torch::optim::Optimizer& opt, double lr);  // every group
double get_lr(const torch::optim::Optimizer& opt);     // the first group's

}  // namespace bbits::train
