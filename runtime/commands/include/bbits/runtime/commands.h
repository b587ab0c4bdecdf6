// bbits runtime commands: what `bbits inspect`, `bbits run` and `bbits eval`
// do, on the runtime's public API. Each takes its options, prints its report
// on stdout (warnings on stderr) and returns the exit code; errors are thrown
// (bbits::Error, std::exception). The output formats are documented in
// docs/RUNTIME.md and kept stable for scripts. The `bbits` program
// (programs/bbits/) parses the command line into these options.
#pragma once

#include <cstdint>
#include <string>

namespace bbits::commands {

// bbits inspect MODEL [--json] [--kernels]: one row per layer and the
// totals; a layer whose stored costs differ from the computed ones is named
// on stderr.
struct InspectOptions {
  std::string model;
  bool json = false;     // JSON for scripts instead of the table
  bool kernels = false;  // also the kernel chosen for each layer on this CPU and why
};
int inspect(const InspectOptions& o);

// bbits run MODEL --input FILE: runs the samples of a .npy, IDX or raw
// float32 file and prints the outputs. Float data is the model's input tensor
// as it is; uint8 data is raw pixels that go through the model's recorded
// preprocessing.
struct RunOptions {
  std::string model, input;
  int64_t top_k = 5;        // top classes printed per output (0: none)
  int64_t limit = 10;       // samples run (0: all)
  int threads = 1;          // session threads (0: all hardware threads)
  bool all_values = false;  // every output value (default: the first 16)
  bool profile = false;     // the time of every layer in the last run and its kernel
};
int run(const RunOptions& o);

// bbits eval MODEL (--dataset NAME | --inputs X --labels Y): top-1 accuracy,
// printed as the line `accuracy: 0.xxxx`. --dataset reads raw pixels and
// applies the model's recorded preprocessing; --inputs are the network's
// input tensors as they are (N x input shape).
struct EvalOptions {
  std::string model;
  std::string dataset;  // fashion-mnist
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string split = "test";  // test or train
  std::string inputs, labels;  // arrays instead of a data set
  int64_t limit = 0;           // the first N samples only (0: all)
  int threads = 0;             // parallel sessions (0: all hardware threads)
  bool quiet = false;          // only the accuracy line
};
int eval(const EvalOptions& o);

}  // namespace bbits::commands
