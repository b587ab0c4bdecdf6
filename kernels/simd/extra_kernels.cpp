// bbits SIMD kernels — registration of the kernels beyond the GEMM family.
#include "simd_registry.h"

namespace bbits::kernels::simd {

void register_extra_kernels(std::vector<KernelInfo>& table) { register_onednn_kernels(table); }

}  // namespace bbits::kernels::simd
