#include "zip.h"

#include <cstring>
#include <zlib.h>

#include "bbits/converter/checkpoint.h"

namespace bbits::converter::detail {

namespace {
uint64_t rd(std::span<const uint8_t> b, uint64_t off, int n, const char* what) {
  if (off > b.size() || static_cast<uint64_t>(n) > b.size() - off)
    throw ConvertError(std::string("zip: truncated archive (") + what + " past the end of the file)");
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[off + static_cast<uint64_t>(i)];
  return v;
}
constexpr uint64_t kMaxEntries = 1u << 20;
constexpr uint64_t kMaxEntrySize = 0xffffffffu;  // zlib counts in 32 bits
// Deflate turns at most 2 bits into 258 bytes: no stream inflates more than
// ~1032-fold. A larger declared size is a corrupt entry (or a zip bomb) and is
// refused before its buffer is allocated.
constexpr uint64_t kMaxDeflateRatio = 1032;
}  // namespace

bool looks_like_zip(std::span<const uint8_t> b) {
  return b.size() >= 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4;
}

ZipReader::ZipReader(std::span<const uint8_t> b) : bytes_(b) {
  if (b.size() < 22) throw ConvertError("zip: file too small to be an archive");
  // end of central directory: the last signature within the final 64 KiB + 22 bytes
  uint64_t eocd = UINT64_MAX;
  const uint64_t lo = b.size() > 65557 ? b.size() - 65557 : 0;
  for (uint64_t p = b.size() - 22 + 1; p-- > lo;) {
    if (b[p] == 0x50 && b[p + 1] == 0x4b && b[p + 2] == 0x05 && b[p + 3] == 0x06) {
      eocd = p;
      break;
    }
  }
  if (eocd == UINT64_MAX) throw ConvertError("zip: no end-of-central-directory record (truncated archive?)");
  uint64_t count = rd(b, eocd + 10, 2, "entry count");
  uint64_t cd_size = rd(b, eocd + 12, 4, "directory size");
  uint64_t cd_off = rd(b, eocd + 16, 4, "directory offset");
  if (count == 0xffff || cd_size == 0xffffffff || cd_off == 0xffffffff) {
    if (eocd < 20 || rd(b, eocd - 20, 4, "zip64 locator") != 0x07064b50)
      throw ConvertError("zip: zip64 archive without a zip64 locator");
    const uint64_t z = rd(b, eocd - 20 + 8, 8, "zip64 record offset");
    if (rd(b, z, 4, "zip64 record") != 0x06064b50) throw ConvertError("zip: bad zip64 end-of-directory record");
    count = rd(b, z + 32, 8, "zip64 entry count");
    cd_size = rd(b, z + 40, 8, "zip64 directory size");
    cd_off = rd(b, z + 48, 8, "zip64 directory offset");
  }
  if (count > kMaxEntries) throw ConvertError("zip: too many entries");
  if (cd_off > b.size() || cd_size > b.size() - cd_off) throw ConvertError("zip: central directory out of range");
  uint64_t p = cd_off;
  for (uint64_t i = 0; i < count; ++i) {
    if (rd(b, p, 4, "directory entry") != 0x02014b50) throw ConvertError("zip: corrupt central directory entry");
    ZipEntry e;
    e.method = static_cast<uint16_t>(rd(b, p + 10, 2, "method"));
    e.crc = static_cast<uint32_t>(rd(b, p + 16, 4, "crc"));
    e.comp_size = rd(b, p + 20, 4, "size");
    e.size = rd(b, p + 24, 4, "size");
    const uint64_t nlen = rd(b, p + 28, 2, "name"), xlen = rd(b, p + 30, 2, "extra"), clen = rd(b, p + 32, 2, "comment");
    e.local_offset = rd(b, p + 42, 4, "offset");
    if (p + 46 + nlen + xlen + clen > b.size()) throw ConvertError("zip: truncated central directory");
    e.name.assign(reinterpret_cast<const char*>(b.data() + p + 46), nlen);
    // zip64 extra field
    uint64_t x = p + 46 + nlen;
    const uint64_t xend = x + xlen;
    while (x + 4 <= xend) {
      const uint64_t id = rd(b, x, 2, "extra"), sz = rd(b, x + 2, 2, "extra");
      if (x + 4 + sz > xend) throw ConvertError("zip: corrupt extra field in entry '" + e.name + "'");
      if (id == 0x0001) {
        uint64_t q = x + 4;
        auto take = [&](uint64_t& field) {
          if (field != 0xffffffff) return;
          if (q + 8 > x + 4 + sz) throw ConvertError("zip: short zip64 field in entry '" + e.name + "'");
          field = rd(b, q, 8, "zip64 field");
          q += 8;
        };
        take(e.size);
        take(e.comp_size);
        take(e.local_offset);
      }
      x += 4 + sz;
    }
    if (e.size > kMaxEntrySize || e.comp_size > b.size()) throw ConvertError("zip: entry '" + e.name + "' has an impossible size");
    if (e.method == 8 && e.size > e.comp_size * kMaxDeflateRatio + 64)
      throw ConvertError("zip: entry '" + e.name + "' declares " + std::to_string(e.size) + " bytes from " +
                         std::to_string(e.comp_size) + " compressed ones, more than deflate can produce (corrupt archive)");
    entries_.push_back(std::move(e));
    p += 46 + nlen + xlen + clen;
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

std::vector<uint8_t> ZipReader::read(const ZipEntry& e) const {
  const auto& b = bytes_;
  if (rd(b, e.local_offset, 4, "local header") != 0x04034b50)
    throw ConvertError("zip: bad local header for entry '" + e.name + "'");
  const uint64_t nlen = rd(b, e.local_offset + 26, 2, "local header"), xlen = rd(b, e.local_offset + 28, 2, "local header");
  const uint64_t data = e.local_offset + 30 + nlen + xlen;
  if (data > b.size() || e.comp_size > b.size() - data)
    throw ConvertError("zip: data of entry '" + e.name + "' runs past the end of the file (truncated archive)");
  std::vector<uint8_t> out;
  if (e.method == 0) {
    if (e.comp_size != e.size) throw ConvertError("zip: stored entry '" + e.name + "' has inconsistent sizes");
    out.assign(b.begin() + static_cast<std::ptrdiff_t>(data), b.begin() + static_cast<std::ptrdiff_t>(data + e.size));
  } else if (e.method == 8) {
    out.resize(e.size);
    z_stream zs{};
    if (inflateInit2(&zs, -15) != Z_OK) throw ConvertError("zip: inflateInit failed");
    zs.next_in = const_cast<Bytef*>(b.data() + data);
    zs.avail_in = static_cast<uInt>(e.comp_size);
    zs.next_out = out.data();
    zs.avail_out = static_cast<uInt>(out.size());
    const int rc = inflate(&zs, Z_FINISH);
    const uint64_t produced = zs.total_out;
    inflateEnd(&zs);
    if (rc != Z_STREAM_END || produced != e.size)
      throw ConvertError("zip: entry '" + e.name + "' does not inflate to its declared size");
  } else {
    throw ConvertError("zip: entry '" + e.name + "' uses unsupported compression method " + std::to_string(e.method));
  }
  const uint32_t crc = static_cast<uint32_t>(::crc32_z(0L, out.data(), out.size()));
  if (crc != e.crc) throw ConvertError("zip: CRC mismatch in entry '" + e.name + "' (corrupt archive)");
  return out;
}

}  // namespace bbits::converter::detail
