#include "common.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <numeric>

namespace bbits::commands {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += 'x';
    r += std::to_string(s[i]);
  }
  return r.empty() ? "-" : r;
}

std::string bits_str(int bits, bool is_signed) {
  if (bits < 0) return "-";
  if (bits == 32) return "f32";
  return std::to_string(bits) + (is_signed ? "s" : "u");
}

std::string human_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < 1024 * 1024) return fmt::format("{:.1f} KiB", b / 1024.0);
  if (bytes < int64_t{1024} * 1024 * 1024) return fmt::format("{:.2f} MiB", b / (1024.0 * 1024.0));
  return fmt::format("{:.2f} GiB", b / (1024.0 * 1024.0 * 1024.0));
}

std::string grouped(int64_t v) {
  const uint64_t mag = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  std::string digits = std::to_string(mag);
  std::string out;
  int n = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (n && n % 3 == 0) out.push_back(',');
    out.push_back(*it);
    ++n;
  }
  if (v < 0) out.push_back('-');
  std::reverse(out.begin(), out.end());
  return out;
}

Preprocessor::Preprocessor(const Model& model) {
  const ModelInfo& info = model.info();
  const PreprocessInfo& p = info.preprocess;
  if (!p.present)
    throw Error("the model records no input preprocessing; pass preprocessed arrays with --inputs/--labels instead");
  if (model.num_inputs() != 1) throw Error("the model has " + std::to_string(model.num_inputs()) + " inputs, expected 1");
  const std::vector<int64_t>& s = model.input(0).shape;
  channels = p.channels > 0 ? p.channels : 1;
  height = p.height;
  width = p.width;
  const int64_t per_sample = channels * height * width;
  if (s.empty() || s[0] < 1) throw Error("model input has no batch dimension");
  batch = s[0];
  int64_t elems = 1;
  for (size_t i = 1; i < s.size(); ++i) elems *= s[i];
  if (height <= 0 || width <= 0 || elems != per_sample)
    throw Error(fmt::format("model input {} does not match its recorded preprocessing ({} channels, {}x{})",
                            shape_str(s), channels, height, width));
  nhwc_ = p.layout == "NHWC";
  pixel_scale_ = p.pixel_scale;
  mean_ = p.mean;
  std_ = p.std;
  if (!mean_.empty() && static_cast<int64_t>(mean_.size()) != channels) throw Error("preprocess: mean count != channels");
  if (!std_.empty() && static_cast<int64_t>(std_.size()) != channels) throw Error("preprocess: std count != channels");
}

void Preprocessor::apply(const uint8_t* pixels, int64_t slot, float* dst) const {
  const int64_t hw = height * width;
  float* out = dst + slot * channels * hw;
  for (int64_t c = 0; c < channels; ++c) {
    const float m = mean_.empty() ? 0.0f : mean_[static_cast<size_t>(c)];
    const float sd = std_.empty() ? 1.0f : std_[static_cast<size_t>(c)];
    for (int64_t i = 0; i < hw; ++i) {
      const float v = (static_cast<float>(pixels[i * channels + c]) * pixel_scale_ - m) / sd;
      if (nhwc_)
        out[i * channels + c] = v;
      else
        out[c * hw + i] = v;  // N,C,H,W and N,F (C,H,W order)
    }
  }
}

void ClipTally::add(const Session& session) {
  const RunStats& st = session.last_run_stats();
  if (st.inputs.empty() || !st.inputs[0].quantized) return;
  values += st.inputs[0].values;
  clipped += st.inputs[0].clipped;
  lo = st.inputs[0].lo;
  hi = st.inputs[0].hi;
}

void ClipTally::merge(const ClipTally& o) {
  if (o.values == 0) return;
  values += o.values;
  clipped += o.clipped;
  lo = o.lo;
  hi = o.hi;
}

std::string ClipTally::warning(const Model& model) const {
  if (clipped == 0) return {};
  const PreprocessInfo& p = model.info().preprocess;
  std::string pre;
  if (p.present)
    pre = fmt::format(" ((pixel * {:.6g} - mean) / std with mean {:.4g}, std {:.4g})", p.pixel_scale,
                      fmt::join(p.mean, ","), fmt::join(p.std, ","));
  const double pct = 100.0 * static_cast<double>(clipped) / static_cast<double>(values);
  return fmt::format(
      "warning: {} of {} input values ({:.3g}%) were outside the model's input range [{:.4g}, {:.4g}] and were "
      "clipped to it: the inputs are not normalised the way the model's preprocessing says{}. If your data is "
      "normalised differently, convert the model again with bbits-convert --mean A,B,C --std A,B,C (and "
      "--pixel-scale S) set to your normalisation.",
      grouped(clipped), grouped(values), pct, lo, hi, pre);
}

int64_t check_input_array(const io::Array& a, const Model& model, const std::string& path) {
  const TensorInfo& in = model.input(0);
  const std::vector<int64_t> sample(in.shape.begin() + (in.shape.empty() ? 0 : 1), in.shape.end());
  int64_t per = 1;
  for (int64_t d : sample) per *= d;
  const std::string want = fmt::format("N x {} float32 (model input '{}' {}{})", shape_str(sample), in.name,
                                       shape_str(in.shape),
                                       model.info().preprocess.present ? ", layout " + model.info().preprocess.layout : "");
  if (a.dtype != io::DType::F32 && a.dtype != io::DType::F64)
    throw Error(fmt::format("{}: {} array {}; --inputs takes the model's input tensors as they are: {}, already "
                            "preprocessed{}",
                            path, io::dtype_name(a.dtype), shape_str(a.shape), want,
                            a.dtype == io::DType::U8 ? " (uint8 values look like raw pixels: `bbits run` takes those "
                                                       "and applies the model's preprocessing)"
                                                     : ""));
  if (!a.has_shape) {
    if (per <= 0 || a.elements() % per != 0)
      throw Error(fmt::format("{}: raw float32 file of {} values is not a whole number of samples of {} values ({})",
                              path, a.elements(), per, want));
    return a.elements() / per;
  }
  if (a.shape == sample) return 1;
  const bool ok = a.shape.size() == sample.size() + 1 && std::equal(sample.begin(), sample.end(), a.shape.begin() + 1);
  if (!ok)
    throw Error(fmt::format("{}: array of shape {} does not match the model's input: expected {}", path,
                            shape_str(a.shape), want));
  return a.shape[0];
}

int64_t argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

std::vector<std::pair<int64_t, float>> top_k(const float* v, int64_t n, int64_t k) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  k = std::min(k, n);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
  });
  std::vector<std::pair<int64_t, float>> out;
  for (int64_t i = 0; i < k; ++i) out.emplace_back(idx[static_cast<size_t>(i)], v[idx[static_cast<size_t>(i)]]);
  return out;
}

}  // namespace bbits::commands
