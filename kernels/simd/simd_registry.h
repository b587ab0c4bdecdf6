// bbits SIMD kernels — internal registration helpers shared by the portable
// translation units.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "bbits/kernels/kernels.h"

namespace bbits::kernels::simd {

// True when this CPU can run code of ISA level `isa` (ignores BBITS_MAX_ISA,
// which candidates() applies).
bool cpu_has(Isa isa);

// Default MAC rate (MACs per ns) of a kernel's cost model, and the rate in
// force (calibrated or default).
void set_default_rate(const std::string& name, double macs_per_ns);
double kernel_rate(std::string_view name);

// Depthwise conv, pooling, add, concat (extra_kernels.cpp) and oneDNN (onednn.cpp).
void register_extra_kernels(std::vector<KernelInfo>& table);
void register_onednn_kernels(std::vector<KernelInfo>& table);
// 16-bit conv / fc (gemm16.cpp): w16a16 and the mixed pairs with one 16-bit side.
void register_gemm16_kernels(std::vector<KernelInfo>& table);
// fc with packed 2/4/8-bit weights on float32 activations (fc_f32.cpp).
void register_fc_f32_kernels(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::simd
