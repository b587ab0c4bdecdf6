#include "bbits/converter/input.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace bbits::converter {

namespace {

std::string list_str(const std::vector<float>& v) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  return os.str();
}

void check_values(const std::vector<float>& v, const char* option, size_t channels, bool positive) {
  if (v.size() != channels)
    throw ConvertError(std::string(option) + ": " + std::to_string(v.size()) + " value(s) given (" + list_str(v) +
                       "), the model's input has " + std::to_string(channels) + " channel(s): give one value per channel");
  for (size_t c = 0; c < v.size(); ++c) {
    if (!std::isfinite(v[c]))
      throw ConvertError(std::string(option) + ": value " + std::to_string(c) + " is not a finite number");
    if (positive && !(v[c] > 0.0f))
      throw ConvertError(std::string(option) + ": value " + std::to_string(c) + " (" + std::to_string(v[c]) +
                         ") must be positive");
  }
}

}  // namespace

std::vector<float> parse_value_list(const std::string& text, const std::string& option) {
  std::vector<float> out;
  size_t pos = 0;
  if (text.find_first_not_of(" \t") == std::string::npos) throw ConvertError(option + ": empty value list");
  for (;;) {
    const size_t comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    const char* b = item.c_str();
    char* end = nullptr;
    errno = 0;
    const double v = item.empty() ? 0.0 : std::strtod(b, &end);
    if (item.empty() || end != b + item.size())
      throw ConvertError(option + ": '" + item + "' is not a number (expected comma-separated values, e.g. 0.5,0.5,0.5)");
    if (!std::isfinite(v) || errno == ERANGE || std::fabs(v) > 3.0e38)
      throw ConvertError(option + ": '" + item + "' is not a finite number");
    out.push_back(static_cast<float>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

void apply_input_overrides(Checkpoint& ck, const InputOverrides& o) {
  if (!o.any()) return;
  InputSpec in = ck.graph.input;
  const size_t channels = static_cast<size_t>(in.shape.at(0));
  if (o.mean) {
    check_values(*o.mean, "--mean", channels, false);
    in.mean = *o.mean;
  }
  if (o.std) {
    check_values(*o.std, "--std", channels, true);
    in.std = *o.std;
  }
  if (o.pixel_scale) {
    if (!std::isfinite(*o.pixel_scale) || !(*o.pixel_scale > 0.0))
      throw ConvertError("--pixel-scale: " + std::to_string(*o.pixel_scale) + " must be a positive finite number");
    in.pixel_scale = *o.pixel_scale;
  }
  const float x_max = default_input_x_max(in);
  if (!std::isfinite(x_max))
    throw ConvertError("--mean/--std/--pixel-scale: the preprocessed pixels 0..255 reach beyond the float range");
  ck.graph.input = in;
  ck.tensors[in.name + ".aq.x_max"] = FTensor{{1}, {x_max}};
}

int check_input_bits(int bits) {
  if (bits != 8 && bits != 16 && bits != 32)
    throw ConvertError("--input-bits: " + std::to_string(bits) + " is not 8, 16 or 32 (32: float32 input)");
  return bits;
}

std::string check_input_layout(const std::string& layout) {
  std::string u = layout;
  std::transform(u.begin(), u.end(), u.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (u != "NCHW" && u != "NHWC")
    throw ConvertError("--layout: '" + layout + "' is not NCHW or NHWC (the layout in which callers pass the input)");
  return u;
}

float default_input_x_max(const InputSpec& in) {
  float m = 0.0f;
  for (size_t c = 0; c < in.mean.size(); ++c) {
    const float lo = (0.0f - in.mean[c]) / in.std[c];
    const float hi = (255.0f * static_cast<float>(in.pixel_scale) - in.mean[c]) / in.std[c];
    m = std::max({m, std::fabs(lo), std::fabs(hi)});
  }
  return m > 0.0f ? m : 1.0f;
}

}  // namespace bbits::converter
