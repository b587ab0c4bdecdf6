// Writes the hand-built LeNet-5-shaped test model (lenet_builder.h) to a file.
//   bbits_make_test_model OUT.bbm [--tiny] [--seed N] [--random-scales] [--corrupt-costs]
// Used at build time for the C API test, the CLI tests, the install test and
// the fuzz seed corpus. --corrupt-costs states 1,000 MACs too many for conv2
// (for `bbits inspect`'s warning).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "bbits/format/model_file.h"
#include "lenet_builder.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT.bbm [--tiny] [--seed N] [--random-scales] [--corrupt-costs]\n", argv[0]);
    return 2;
  }
  bbits::testing::LenetSpec spec;
  bool corrupt_costs = false;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--tiny") == 0) {
      spec.in_h = spec.in_w = 12;
      spec.c1 = 3;
      spec.keep_c1 = 2;
      spec.c2 = 4;
      spec.keep_c2 = 3;
      spec.fc1 = 6;
      spec.keep_fc1 = 5;
      spec.classes = 3;
      spec.k = 3;
    } else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      spec.seed = static_cast<uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    } else if (std::strcmp(argv[i], "--random-scales") == 0) {
      spec.pow2_scales = false;
    } else if (std::strcmp(argv[i], "--corrupt-costs") == 0) {
      corrupt_costs = true;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  try {
    const auto m = bbits::testing::build_lenet(spec);
    if (corrupt_costs) {
      const auto bytes = bbits::testing::repack_model(m.bytes, [](bbits::fb::ModelT& model) {
        for (auto& op : model.operators)
          if (op->name == "conv2") op->macs += 1000;
      });
      bbits::format::write_file_atomic(argv[1], bytes);
    } else {
      bbits::format::write_file_atomic(argv[1], m.bytes);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
