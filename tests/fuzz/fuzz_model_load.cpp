// libFuzzer target: Model::from_memory (header, CRC-32, FlatBuffers verifier,
// semantic checks, plan building) and one run of every model that loads.
//
// Most mutations would only ever reach the CRC check, so the target rewrites
// the header's checksum before loading (the CRC check itself is covered by
// tests/runtime/bad_files_test.cpp): the fuzzer explores the verifier, the
// validation and the plan. Any exception other than bbits::Error, any crash
// and any sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bbits/format/model_file.h"
#include "bbits/runtime.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  if (bytes.size() >= sizeof(bbits::format::FileHeader)) {
    const uint32_t crc = bbits::format::crc32(bytes.data() + 64, bytes.size() - 64);
    std::memcpy(bytes.data() + offsetof(bbits::format::FileHeader, checksum), &crc, sizeof crc);
  }
  try {
    auto model = bbits::Model::from_memory(bytes.data(), bytes.size());
    // Keep runs cheap: skip models whose arena or inputs are huge.
    if (model->arena_bytes() > (size_t{64} << 20)) return 0;
    std::vector<bbits::Tensor> inputs;
    for (size_t i = 0; i < model->num_inputs(); ++i) {
      bbits::Tensor t;
      t.shape = model->input(i).shape;
      if (t.elements() > (int64_t{1} << 22)) return 0;
      t.data.assign(static_cast<size_t>(t.elements()), 0.5f);
      inputs.push_back(std::move(t));
    }
    // The unpruned MACs (computed from the shapes, saturated) bound the
    // work: skip the model once it is past the budget.
    constexpr int64_t kMaxWork = int64_t{1} << 26;
    int64_t work = 0;
    for (const auto& L : model->info().layers) {
      if (L.macs_unpruned < 0 || L.macs_unpruned > kMaxWork - work) return 0;
      work += L.macs_unpruned;
    }
    bbits::Session session(model);
    session.run(inputs);
  } catch (const bbits::Error&) {
    // A clear rejection: fine.
  }
  return 0;
}
