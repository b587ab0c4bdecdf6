// bbits — the SIMD kernels' hook into the kernel table, and their cost-model
// calibration.
//
// The SIMD kernel families (kernels/<family>/, listed in kernels/simd/families.cpp)
// are compiled per ISA with per-file flags and registered only as table
// entries: each says its Isa, and its supports() also checks that this CPU
// has that ISA, so the table never offers a kernel the machine cannot run.
// BBITS_MAX_ISA / candidates(desc, max_isa) cap them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "bbits/kernels/kernels.h"

namespace bbits::kernels {

// Appends every SIMD kernel of this build to the table (called once by table.cpp).
void register_simd_kernels(std::vector<KernelInfo>& table);

// Cost-model calibration. Each SIMD kernel estimates
//   ns = max(MACs / macs_per_ns, weight bytes / weight_bytes_per_ns) + fixed
// with built-in rates measured on an AMD EPYC Zen 4 (one thread). A calibration
// (e.g. `bbits calibrate`) may replace the MAC rate of a kernel, by its table
// name, with the value measured on this machine; <= 0 restores the default.
// Thread-safe; affects later cost_ns() calls.
void set_simd_kernel_rate(std::string_view kernel_name, double macs_per_ns);
// The MAC rate in force for a kernel (default or calibrated); 0 if unknown.
double simd_kernel_rate(std::string_view kernel_name);
// Names of every SIMD kernel that has a calibratable rate.
std::vector<std::string> simd_kernel_names();

}  // namespace bbits::kernels
