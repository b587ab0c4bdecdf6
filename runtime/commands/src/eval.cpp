// bbits eval: top-1 accuracy of a model on a data set (raw pixels through the
// model's preprocessing) or on arrays of input tensors, with parallel
// sessions. Prints `accuracy: 0.xxxx` (docs/RUNTIME.md).
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "bbits/runtime/commands.h"
#include "common.h"

namespace bbits::commands {
namespace {

// Samples to evaluate: either raw pixels + preprocessing, or float tensors.
struct Data {
  int64_t count = 0;
  std::vector<int64_t> labels;
  // pixels
  std::vector<uint8_t> pixels;
  int64_t image_bytes = 0;
  // floats
  std::vector<float> values;
  int64_t sample_elems = 0;
  std::string description;
};

std::string find_file(const std::string& dir, const std::string& base) {
  namespace fs = std::filesystem;
  for (const std::string& name : {base + ".gz", base}) {
    const fs::path p = fs::path(dir) / name;
    if (fs::exists(p)) return p.string();
  }
  throw Error(fmt::format(
      "fashion-mnist: {}/{}.gz not found (install the Debian package dataset-fashion-mnist, or pass --data-dir "
      "DIR holding the IDX files)",
      dir, base));
}

Data load_dataset(const EvalOptions& o, const Model& model) {
  if (o.dataset != "fashion-mnist")
    throw Error(fmt::format("unknown dataset '{}' (supported: fashion-mnist; for anything else use --inputs/--labels)",
                            o.dataset));
  const std::string prefix = o.split == "test" ? "t10k" : o.split == "train" ? "train" : "";
  if (prefix.empty()) throw Error(fmt::format("unknown split '{}' (test or train)", o.split));
  const std::string img_path = find_file(o.data_dir, prefix + "-images-idx3-ubyte");
  const std::string lbl_path = find_file(o.data_dir, prefix + "-labels-idx1-ubyte");
  const io::Array images = io::read_idx(img_path);
  const io::Array labels = io::read_idx(lbl_path);
  if (images.dtype != io::DType::U8 || images.shape.size() != 3)
    throw Error(img_path + ": expected uint8 images N x H x W, got " + shape_str(images.shape));
  if (labels.shape.size() != 1 || labels.shape[0] != images.shape[0])
    throw Error(fmt::format("{}: {} labels for {} images", lbl_path, shape_str(labels.shape), images.shape[0]));
  const Preprocessor pre(model);
  const int64_t h = images.shape[1], w = images.shape[2];
  // A model trained on zero-padded images (bbits-train --pad: 28x28 -> 32x32)
  // gets them padded the same way, centred.
  const int64_t pad = (pre.height - h) % 2 == 0 && pre.height - h == pre.width - w && pre.height > h ? (pre.height - h) / 2 : 0;
  if (pre.channels != 1 || pre.height != h + 2 * pad || pre.width != w + 2 * pad)
    throw Error(fmt::format("the model expects {}x{}x{} inputs, fashion-mnist images are 1x{}x{}", pre.channels,
                            pre.height, pre.width, h, w));
  Data d;
  d.count = images.shape[0];
  d.image_bytes = pre.height * pre.width;
  d.pixels.assign(static_cast<size_t>(d.count * d.image_bytes), 0);
  for (int64_t i = 0; i < d.count; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        d.pixels[static_cast<size_t>((i * pre.height + y + pad) * pre.width + x + pad)] =
            static_cast<uint8_t>(images.values[static_cast<size_t>((i * h + y) * w + x)]);
  d.labels = labels.as_int();
  d.description = fmt::format("fashion-mnist {} ({} images{}, {})", o.split, d.count,
                              pad ? fmt::format(", zero-padded by {} to {}x{}", pad, pre.height, pre.width) : "",
                              img_path);
  return d;
}

Data load_arrays(const EvalOptions& o, const Model& model) {
  if (o.labels.empty()) throw Error("--inputs needs --labels");
  const io::Array x = io::read_any(o.inputs);
  const TensorInfo& in = model.input(0);
  const int64_t batch = in.shape.empty() ? 1 : std::max<int64_t>(in.shape[0], 1);
  Data d;
  d.sample_elems = in.elements() / batch;
  d.count = check_input_array(x, model, o.inputs);
  const io::Array y = io::read_any(o.labels);
  if (y.dtype == io::DType::F32 || y.dtype == io::DType::F64)
    throw Error(fmt::format("{}: labels are {} values; --labels takes integer class indices (int64, int32 or uint8)",
                            o.labels, io::dtype_name(y.dtype)));
  d.labels = y.as_int();
  if (static_cast<int64_t>(d.labels.size()) != d.count)
    throw Error(fmt::format("{} has {} labels for {} samples in {}", o.labels, d.labels.size(), d.count, o.inputs));
  d.values = x.as_float();
  d.description = fmt::format("{} ({} samples), labels {}", o.inputs, d.count, o.labels);
  return d;
}

}  // namespace

int eval(const EvalOptions& o) {
  if (o.dataset.empty() == o.inputs.empty()) throw Error("give exactly one of --dataset or --inputs/--labels");
  const auto model = Model::load(o.model);
  if (model->num_inputs() != 1) throw Error(fmt::format("bbits eval needs a model with one input, this one has {}", model->num_inputs()));
  const Data d = o.dataset.empty() ? load_arrays(o, *model) : load_dataset(o, *model);
  const int64_t n = o.limit > 0 ? std::min(d.count, o.limit) : d.count;
  const TensorInfo& in = model->input(0);
  const int64_t batch = in.shape.empty() ? 1 : std::max<int64_t>(in.shape[0], 1);
  std::unique_ptr<Preprocessor> pre;
  if (!d.pixels.empty()) pre = std::make_unique<Preprocessor>(*model);
  int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t batches = (n + batch - 1) / batch;
  threads = static_cast<int>(std::min<int64_t>(threads, std::max<int64_t>(batches, 1)));

  std::atomic<int64_t> next{0}, correct{0}, bad_label{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  std::vector<ClipTally> clips(static_cast<size_t>(threads));
  const auto t0 = std::chrono::steady_clock::now();
  auto worker = [&](int tid) {
    try {
      Session session(model, SessionOptions{1});
      Tensor t;
      t.shape = in.shape;
      t.data.assign(static_cast<size_t>(in.elements()), 0.0f);
      for (;;) {
        const int64_t bi = next.fetch_add(1);
        if (bi >= batches) break;
        const int64_t first = bi * batch, count = std::min(batch, n - first);
        std::fill(t.data.begin(), t.data.end(), 0.0f);
        for (int64_t b = 0; b < count; ++b) {
          if (pre)
            pre->apply(d.pixels.data() + (first + b) * d.image_bytes, b, t.data.data());
          else
            std::copy_n(d.values.begin() + (first + b) * d.sample_elems, d.sample_elems,
                        t.data.begin() + b * d.sample_elems);
        }
        const std::vector<Tensor> outs = session.run({t});
        // the zero padding of a short last batch is not the user's data
        if (count == batch) clips[static_cast<size_t>(tid)].add(session);
        const int64_t per = outs[0].elements() / batch;
        for (int64_t b = 0; b < count; ++b) {
          const int64_t label = d.labels[static_cast<size_t>(first + b)];
          if (label < 0 || label >= per) bad_label.fetch_add(1);
          if (argmax(outs[0].data.data() + b * per, per) == label) correct.fetch_add(1);
        }
      }
    } catch (...) {
      errors[static_cast<size_t>(tid)] = std::current_exception();
      next.store(batches);
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(worker, i);
  worker(0);
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (n == 0) throw Error("no samples to evaluate");
  ClipTally clip;
  for (const ClipTally& c : clips) clip.merge(c);
  if (const std::string w = clip.warning(*model); !w.empty()) fmt::print(stderr, "bbits: {}\n", w);
  if (!o.quiet) {
    fmt::print("model: {}\n", o.model);
    fmt::print("data: {}\n", d.description);
    if (bad_label.load() > 0)
      fmt::print("warning: {} labels outside the model's {} outputs\n", bad_label.load(), model->output(0).elements() / batch);
    fmt::print("samples: {}\n", n);
    fmt::print("correct: {}\n", correct.load());
    fmt::print("time: {:.3f} s ({:.3f} ms/sample, {} thread{})\n", secs, 1000.0 * secs / double(n), threads,
               threads == 1 ? "" : "s");
  }
  fmt::print("accuracy: {:.4f}\n", double(correct.load()) / double(n));
  return 0;
}

}  // namespace bbits::commands
