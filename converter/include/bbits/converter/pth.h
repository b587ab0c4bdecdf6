// bbits converter — checkpoints of the public PyTorch reference implementation
// (Qualcomm-AI-research/BayesianBits), written by torch.save.
//
// The reader understands the zip container of PyTorch >= 1.6 and the older
// non-zip ("legacy") format, and unpickles with a restricted machine that
// builds plain data only: dicts (collections.OrderedDict), lists, tuples,
// numbers, strings, storages (torch.*Storage) and tensors
// (torch._utils._rebuild_tensor_v2, _rebuild_parameter). Any other global
// (os.system, builtins.eval, ...) is rejected with a ConvertError naming it;
// nothing is ever executed or imported.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bbits/converter/checkpoint.h"

namespace bbits::converter {

// Float tensors of the state dict in a torch.save file, converted to float32.
// When the saved object is a dict holding `model_state` (or `state_dict`),
// that dict is the state dict; a DataParallel `module.` prefix is removed.
// Integer and boolean tensors (e.g. num_batches_tracked) are skipped.
TensorMap read_pth(std::span<const uint8_t> bytes);
TensorMap read_pth_file(const std::string& path);

// A reference state dict mapped onto a bbits graph template (--arch):
//   L.weight, L.bias                                  -> L.weight, L.bias
//   L.gamma, L.beta, L.running_mean, L.running_var    -> L.bn.{weight,bias,running_mean,running_var}
//   L.weight_quantizer.quantizer.{x_max, gamma_2..32} -> L.wq.{x_max, log_alpha_2..32}
//   N.activation_quantizer.quantizer.{x_min, x_max, gamma_4..32} -> N.aq.*
// A quantizer is used when its tensors are present; activation signedness is
// x_min < 0; the network input (not quantized by the reference) gets a grid
// over the range of the preprocessed pixels, 8 bits when that is exact for
// every pixel level, else 16 (kInputBitsFromPixels). Layer
// widths (channels, features, classes) come from the checkpoint's weights,
// so networks built with the reference's width multiplier import too. `gates` (from --gates-from, the
// checkpoint written before fixed-gate fine-tuning) supplies every gamma_* and
// any quantizer range the main checkpoint lacks. Tensors the template does not
// use are an error, as are missing or mis-shaped ones.
Checkpoint import_reference(const TensorMap& state, const std::string& arch, const TensorMap* gates,
                            const std::string& source);

// A checkpoint file as bbits-convert takes it, told apart by its first bytes:
// a reference .pth (zip or legacy pickle) imported onto the `arch` template,
// with the gates of `gates_from` when that is not empty; or a bbits
// checkpoint (safetensors), which carries its own graph, so `arch` and
// `gates_from` must be empty. Errors name the file.
Checkpoint read_checkpoint_file(const std::string& path, const std::string& arch, const std::string& gates_from);

}  // namespace bbits::converter
