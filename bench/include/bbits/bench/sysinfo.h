// bbits bench — facts about the machine and the build recorded with every result.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bbits::bench {

// A data or unified cache level as the kernel reports it (sysfs).
struct CacheLevel {
  int level = 0;          // 1, 2, 3
  int64_t bytes = 0;      // capacity of one instance
  int shared_by = 1;      // logical CPUs sharing one instance
};

// Data/unified caches of CPU 0, ascending by level. When sysfs says nothing
// (containers, other kernels) returns a conservative default (32 KiB L1,
// 1 MiB L2, 8 MiB L3) and sets *guessed.
std::vector<CacheLevel> detect_caches(bool* guessed = nullptr);

// "AMD EPYC ..." from /proc/cpuinfo, or "unknown".
std::string cpu_model_name();
// Logical CPUs available to this process.
int online_cpus();
// The commit the binary was built from (`git describe --always --dirty`), or "unknown".
std::string build_commit();
// Current UTC time as 2026-01-31T12:00:00Z.
std::string utc_timestamp();

}  // namespace bbits::bench
