// Minimal, bounds-checked zip reader (stored and deflated entries, zip64).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace bbits::converter::detail {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t comp_size = 0, size = 0, local_offset = 0;
};

bool looks_like_zip(std::span<const uint8_t> bytes);

class ZipReader {
 public:
  explicit ZipReader(std::span<const uint8_t> bytes);
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  std::vector<uint8_t> read(const ZipEntry& e) const;

 private:
  std::span<const uint8_t> bytes_;
  std::vector<ZipEntry> entries_;
};

}  // namespace bbits::converter::detail
