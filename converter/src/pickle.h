// A restricted unpickler: builds plain data, never executes or imports anything.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace bbits::converter::detail {

enum class PyKind { None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Set, Global, Storage, Tensor };

// Objects live in the unpickler's arena and refer to each other by index, so
// hostile pickles (cycles, deep nesting) cannot leak or recurse.
struct PyObj {
  PyKind kind = PyKind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;                              // Str, Bytes, BigInt (raw little-endian), Global ("module.name"), Storage key
  std::vector<int> items;                     // Tuple, List, Set
  std::vector<std::pair<int, int>> dict;      // Dict (insertion order)
  // Storage: dtype in `s2`, element count in `i`, key in `s`. Tensor: storage
  // index in `i`, offset in `offset`, size and stride.
  std::string s2;
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
};

struct PickleResult {
  std::vector<PyObj> arena;
  int root = -1;
  size_t end = 0;  // offset just past STOP
};

// `persistent` maps a persistent id (a tuple in the arena) to a new object index;
// it is called for BINPERSID / PERSID. Throws ConvertError on anything outside
// the allowed subset, naming the opcode or global.
PickleResult unpickle(std::span<const uint8_t> bytes,
                      const std::function<int(std::vector<PyObj>&, int pid)>& persistent);

std::string describe(const std::vector<PyObj>& arena, int idx);

}  // namespace bbits::converter::detail
