// bbits converter — what the network input expects, as the user states it:
// bbits-convert's --mean, --std and --pixel-scale override the preprocessing
// a checkpoint (or an --arch template) records, and the input grid's range
// is derived from the result.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "bbits/converter/checkpoint.h"

namespace bbits::converter {

struct InputOverrides {
  std::optional<std::vector<float>> mean, std;  // one value per input channel
  std::optional<double> pixel_scale;            // input = (pixel * pixel_scale - mean[c]) / std[c]
  bool any() const { return mean || std || pixel_scale; }
};

// "0.4914,0.4822,0.4465" -> values. Throws ConvertError naming `option` for
// an empty list, a value that is not a number, or one that is not finite.
std::vector<float> parse_value_list(const std::string& text, const std::string& option);

// Replaces the checkpoint's recorded preprocessing by the overrides given
// and re-derives the input grid's range (`input.aq.x_max`: the range of the
// preprocessed pixels 0..255, default_input_x_max). Throws ConvertError when
// a count does not match the input's channels, a std or the pixel scale is
// not positive, or a value is not finite. Without overrides, nothing changes.
void apply_input_overrides(Checkpoint& ck, const InputOverrides& o);

// Range of the preprocessed input for raw pixels 0..255: the x_max of the
// input grid when a checkpoint does not record one (reference imports) or
// when the preprocessing is overridden.
float default_input_x_max(const InputSpec& in);

// Checks an --input-bits value (8, 16 or 32); throws ConvertError otherwise.
int check_input_bits(int bits);

// Checks a --layout value (NCHW or NHWC, any case) and returns it upper-case.
std::string check_input_layout(const std::string& layout);

}  // namespace bbits::converter
