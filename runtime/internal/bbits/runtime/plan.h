// bbits runtime — a Model's execution plan in the kernel API's terms, for
// tools built inside the project that also use bbits/kernels/kernels.h (the
// benchmark harness, tests): per operator, the kernel descriptor the plan
// built from the model file, the constant data the chosen kernel was created
// from, and the kernel's name. This is the one decoder of operators into
// kernel descriptors; tools take the descriptors from here instead of reading
// the file a second time.
//
// Internal (runtime/internal, target bbits::runtime_internal): unlike
// bbits/runtime.h this header depends on the kernel API (and through it on
// bbits/format/quant.h), so it is not installed.
//
//   auto model = bbits::Model::load("resnet18.bbm");
//   for (const bbits::PlanStep& s : bbits::plan_steps(*model))
//     std::puts(bbits::kernels::describe(*s.desc).c_str());
#pragma once

#include <string_view>
#include <vector>

#include "bbits/kernels/kernels.h"
#include "bbits/runtime.h"

namespace bbits {

// One operator of the plan. Every pointer and view refers into the Model and
// stays valid while the Model lives.
struct PlanStep {
  int index = 0;                           // operator index = index in ModelInfo::layers
  const kernels::OpDesc* desc = nullptr;   // never null
  // conv / fully connected: the packed weights as stored in the file, the
  // per-channel weight scales and the biases, exactly as handed to the
  // kernel's create(); empty for operators without weights.
  kernels::Weights weights;
  std::string_view kernel;                 // name of the kernel the plan created
  double cost_ns = 0.0;                    // the kernel table's estimate for it
};

// The steps of the model's plan, in operator order (one per ModelInfo::layers
// entry).
BBITS_API std::vector<PlanStep> plan_steps(const Model& model);

}  // namespace bbits
