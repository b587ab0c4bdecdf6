// bbits bench — facts about the machine and the build recorded with every result.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bbits/runtime/calibration.h"

namespace bbits::bench {

using bbits::CacheLevel;  // a data or unified cache level (sysfs), as the calibration file records it

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
