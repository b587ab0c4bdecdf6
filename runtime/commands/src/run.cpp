// bbits run: a model on the samples of a file, outputs printed.
//
// The file is .npy, IDX (optionally .gz) or raw little-endian float32. Float data
// is taken as the model's input tensor(s) as they are (already preprocessed,
// in the declared layout); 8-bit unsigned data (an IDX or .npy of uint8
// pixels) goes through the preprocessing the model records. A file holding
// several samples (a multiple of the input's per-sample size) is run sample
// by sample.
#include <fmt/format.h>

#include <algorithm>

#include "bbits/runtime/commands.h"
#include "common.h"

namespace bbits::commands {

int run(const RunOptions& o) {
  const auto model = Model::load(o.model);
  if (model->num_inputs() != 1)
    throw Error(fmt::format("bbits run feeds models with one input; this model has {}", model->num_inputs()));
  const TensorInfo& in = model->input(0);
  const io::Array a = io::read_any(o.input);
  const int64_t batch = in.shape.empty() ? 1 : in.shape[0];
  const int64_t tensor_elems = in.elements();
  const int64_t sample_elems = tensor_elems / std::max<int64_t>(batch, 1);

  SessionOptions so;
  so.threads = o.threads;
  so.profile = o.profile;
  Session session(model, so);
  const bool pixels = a.dtype == io::DType::U8;
  std::unique_ptr<Preprocessor> pre;
  int64_t samples = 0;
  if (pixels) {
    pre = std::make_unique<Preprocessor>(*model);
    const int64_t img = pre->channels * pre->height * pre->width;
    if (a.elements() % img != 0)
      throw Error(fmt::format("{}: {} uint8 values are not a whole number of {}x{}x{} images", o.input, a.elements(),
                              pre->height, pre->width, pre->channels));
    samples = a.elements() / img;
  } else {
    if (a.elements() % sample_elems != 0)
      throw Error(fmt::format("{}: {} values are not a whole number of model inputs ({} values per sample, input {})",
                              o.input, a.elements(), sample_elems, shape_str(in.shape)));
    samples = a.elements() / sample_elems;
  }
  const int64_t n = o.limit > 0 ? std::min(samples, o.limit) : samples;
  fmt::print("model {}, input {} ({} {} values, {} sample{}{})\n", o.model, o.input, a.elements(),
             io::dtype_name(a.dtype), samples, samples == 1 ? "" : "s",
             n < samples ? fmt::format(", showing {}", n) : std::string());
  const std::vector<float> values = pixels ? std::vector<float>() : a.as_float();
  std::vector<uint8_t> bytes;
  if (pixels) {
    bytes.resize(a.values.size());
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(a.values[i]);
  }
  ClipTally clip;
  for (int64_t first = 0; first < n; first += batch) {
    Tensor t;
    t.shape = in.shape;
    t.data.assign(static_cast<size_t>(tensor_elems), 0.0f);
    const int64_t count = std::min(batch, n - first);
    for (int64_t b = 0; b < count; ++b) {
      if (pixels) {
        const int64_t img = pre->channels * pre->height * pre->width;
        pre->apply(bytes.data() + (first + b) * img, b, t.data.data());
      } else {
        std::copy_n(values.begin() + (first + b) * sample_elems, sample_elems, t.data.begin() + b * sample_elems);
      }
    }
    const std::vector<Tensor> outs = session.run({t});
    if (count == batch) clip.add(session);  // a short last batch is padded with zeros
    for (int64_t b = 0; b < count; ++b) {
      fmt::print("sample {}\n", first + b);
      for (size_t oi = 0; oi < outs.size(); ++oi) {
        const Tensor& y = outs[oi];
        const int64_t per = y.elements() / std::max<int64_t>(batch, 1);
        const float* v = y.data.data() + b * per;
        const int64_t shown = o.all_values ? per : std::min<int64_t>(per, 16);
        std::vector<std::string> items;
        for (int64_t i = 0; i < shown; ++i) items.push_back(fmt::format("{:.6g}", v[i]));
        fmt::print("  output {} '{}' {}: [{}{}]\n", oi, model->output(oi).name, shape_str(y.shape),
                   fmt::join(items, ", "), shown < per ? ", ..." : "");
        if (o.top_k > 0) {
          std::vector<std::string> tk;
          for (const auto& [idx, val] : top_k(v, per, o.top_k)) tk.push_back(fmt::format("{} ({:.6g})", idx, val));
          fmt::print("  top-{}: {}\n", std::min<int64_t>(o.top_k, per), fmt::join(tk, ", "));
        }
      }
    }
  }
  std::fflush(stdout);
  if (const std::string w = clip.warning(*model); !w.empty()) fmt::print(stderr, "bbits: {}\n", w);
  if (o.profile) {
    const ModelInfo& info = model->info();
    double total = 0;
    for (double ns : session.layer_ns()) total += ns;
    fmt::print("layer times of the last run ({} thread{}):\n", o.threads, o.threads == 1 ? "" : "s");
    for (size_t i = 0; i < info.layers.size(); ++i)
      fmt::print("  {:>3}  {:<24}  {:>10.1f} us  {:>5.1f}%  {}\n", i, info.layers[i].name, session.layer_ns()[i] / 1000.0,
                 total > 0 ? 100.0 * session.layer_ns()[i] / total : 0.0, info.layers[i].kernel);
    fmt::print("  total {:.1f} us\n", total / 1000.0);
  }
  return 0;
}

}  // namespace bbits::commands
