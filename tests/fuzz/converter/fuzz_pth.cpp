// libFuzzer target: the .pth reader (zip container, legacy format, restricted
// unpickler) and the reference-name import. Any input must either import or
// raise a CheckpointError (ConvertError is one).
#include <cstddef>
#include <cstdint>
#include <span>

#include "bbits/converter/pth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bbits::converter;
  try {
    const TensorMap sd = read_pth(std::span<const uint8_t>(data, size));
    (void)import_reference(sd, "lenet5", nullptr, "fuzz");
  } catch (const bbits::contract::CheckpointError&) {
  }
  return 0;
}
