#include "bbits/bench/sysinfo.h"

#include <fmt/format.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <string>

#include "bbits_bench_commit.h"  // generated at build time: BBITS_BENCH_COMMIT

namespace bbits::bench {
namespace {

bool read_line(const std::string& path, std::string& out) {
  std::ifstream in(path);
  if (!in) return false;
  std::getline(in, out);
  return static_cast<bool>(in) || !out.empty();
}

// "32K", "1024K", "32M" -> bytes.
int64_t parse_size(const std::string& s) {
  if (s.empty()) return 0;
  size_t pos = 0;
  int64_t v = 0;
  try {
    v = std::stoll(s, &pos);
  } catch (...) {
    return 0;
  }
  const std::string suffix = s.substr(pos);
  if (suffix == "K") return v * 1024;
  if (suffix == "M") return v * 1024 * 1024;
  if (suffix == "G") return v * 1024 * 1024 * 1024;
  return suffix.empty() ? v : 0;
}

// "0-1" or "0,2" -> count of CPUs in the list.
int count_cpu_list(const std::string& s) {
  int n = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    const std::string part = s.substr(i, j - i);
    const size_t dash = part.find('-');
    try {
      if (dash == std::string::npos)
        n += 1;
      else
        n += std::stoi(part.substr(dash + 1)) - std::stoi(part.substr(0, dash)) + 1;
    } catch (...) {
      return 1;
    }
    i = j + 1;
  }
  return std::max(n, 1);
}

}  // namespace

std::vector<CacheLevel> detect_caches(bool* guessed) {
  std::vector<CacheLevel> out;
  for (int idx = 0; idx < 16; ++idx) {
    const std::string dir = fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/", idx);
    std::string level, type, size, shared;
    if (!read_line(dir + "level", level)) break;
    read_line(dir + "type", type);
    if (type == "Instruction") continue;
    read_line(dir + "size", size);
    read_line(dir + "shared_cpu_list", shared);
    CacheLevel c;
    try {
      c.level = std::stoi(level);
    } catch (...) {
      continue;
    }
    c.bytes = parse_size(size);
    c.shared_by = shared.empty() ? 1 : count_cpu_list(shared);
    if (c.bytes > 0) out.push_back(c);
  }
  std::sort(out.begin(), out.end(), [](const CacheLevel& a, const CacheLevel& b) { return a.level < b.level; });
  if (guessed) *guessed = out.empty();
  if (out.empty()) out = {{1, 32 << 10, 1}, {2, 1 << 20, 1}, {3, 8 << 20, online_cpus()}};
  return out;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
      }
    }
  }
  return "unknown";
}

int online_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(CPU_COUNT(&set), 1);
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

std::string build_commit() { return BBITS_BENCH_COMMIT; }

std::string utc_timestamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace bbits::bench
