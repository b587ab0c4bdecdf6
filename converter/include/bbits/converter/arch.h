// bbits converter — graph templates of the networks the project knows, with
// the module names of the public Bayesian Bits reference implementation
// (Qualcomm-AI-research/BayesianBits, benchmarks/image_net/models): the same
// names serve the reference .pth importer (--arch) and the synthetic models.
#pragma once

#include <string>
#include <vector>

#include "bbits/converter/checkpoint.h"

namespace bbits::converter {

// lenet5 (Fashion-MNIST 1x28x28), vgg7 (CIFAR-10 3x32x32), resnet18 and
// mobilenetv2 (ImageNet 3x224x224, 1000 classes). Every conv/linear layer is
// weight-quantized and prunable except the classifier's last layer (not
// pruned, float output), every layer output and residual add is
// activation-quantized. The input records the preprocessing of the
// reference implementation's data loader for that data set (arch.cpp cites
// file and line). Throws ConvertError for an unknown name.
Graph make_arch_graph(const std::string& arch);
const std::vector<std::string>& arch_names();

// Range of the preprocessed input for raw pixels 0..255: the x_max of the
// input grid when a checkpoint does not record one (reference imports) or
// when the preprocessing is overridden.
float default_input_x_max(const InputSpec& in);


}  // namespace bbits::converter
