// bbits run MODEL --input FILE [--top-k K] [--limit N] [--threads T] [--all] [--profile]
// (bbits::commands::run).
#include <memory>

#include "bbits/runtime/commands.h"
#include "command.h"

BBITS_COMMAND("run", "Run a model on inputs from a file (.npy, IDX, raw float32) and print the outputs", [](CLI::App& sub) {
  auto o = std::make_shared<bbits::commands::RunOptions>();
  sub.add_option("model", o->model, "Model file (.bbm)")->required();
  sub.add_option("-i,--input", o->input, "Input file: .npy, IDX (.gz ok) or raw float32")->required();
  sub.add_option("-k,--top-k", o->top_k, "How many top classes to print (0: none)")->capture_default_str();
  sub.add_option("-n,--limit", o->limit, "Run at most N samples of the file (0: all)")->capture_default_str();
  sub.add_option("-t,--threads", o->threads, "Threads (0: all hardware threads)")->capture_default_str();
  sub.add_flag("--all", o->all_values, "Print every output value (default: the first 16)");
  sub.add_flag("--profile", o->profile, "Print the time of every layer in the last run and its kernel");
  return [o]() -> int { return bbits::commands::run(*o); };
});
