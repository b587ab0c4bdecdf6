// libFuzzer target: the safetensors checkpoint reader and the whole
// conversion behind it. Any input must either convert or raise a
// CheckpointError (ConvertError is one) or a FormatError; crashes, sanitizer
// reports and other exceptions are bugs.
#include <cstddef>
#include <cstdint>
#include <span>

#include "bbits/converter/convert.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bbits::converter;
  try {
    const Checkpoint ck = parse_checkpoint(std::span<const uint8_t>(data, size), "fuzz");
    // keep each run cheap: skip networks with more than a few million weights
    int64_t weights = 0;
    for (const auto& [name, t] : ck.tensors) weights += t.numel();
    if (weights > (int64_t{1} << 22)) return 0;
    bbits::format::ModelWriter w;
    build_model(ck, w);
    (void)w.serialize();
  } catch (const bbits::contract::CheckpointError&) {
  } catch (const bbits::format::FormatError&) {
  }
  return 0;
}
