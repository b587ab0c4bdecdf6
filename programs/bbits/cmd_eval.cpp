// bbits eval MODEL --dataset fashion-mnist [--data-dir DIR] [--split test|train] [--limit N] [--threads T]
// bbits eval MODEL --inputs X.npy --labels Y.npy [--limit N] [--threads T]
// (bbits::commands::eval; prints `accuracy: 0.xxxx`, docs/RUNTIME.md).
#include <memory>

#include "bbits/runtime/commands.h"
#include "command.h"

BBITS_COMMAND("eval", "Top-1 accuracy on a data set; prints `accuracy: 0.xxxx`", [](CLI::App& sub) {
  auto o = std::make_shared<bbits::commands::EvalOptions>();
  sub.add_option("model", o->model, "Model file (.bbm)")->required();
  sub.add_option("--dataset", o->dataset, "Data set read from raw pixels: fashion-mnist");
  sub.add_option("--data-dir", o->data_dir, "Directory of the IDX files")->capture_default_str();
  sub.add_option("--split", o->split, "test (10,000 images) or train")->capture_default_str();
  sub.add_option("--inputs", o->inputs, "Preprocessed inputs (.npy/IDX/raw float32), N x input shape");
  sub.add_option("--labels", o->labels, "Labels (.npy int64/int32/uint8 or IDX), N values");
  sub.add_option("-n,--limit", o->limit, "Evaluate only the first N samples (0: all)")->capture_default_str();
  sub.add_option("-t,--threads", o->threads, "Parallel sessions (0: all hardware threads)")->capture_default_str();
  sub.add_flag("-q,--quiet", o->quiet, "Print only the accuracy line");
  return [o]() -> int { return bbits::commands::eval(*o); };
});
