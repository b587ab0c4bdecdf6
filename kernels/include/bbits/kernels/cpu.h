// bbits — CPU feature detection and the ISA level the kernels may use.
#pragma once

#include <string>

#include "bbits/kernels/kernels.h"

namespace bbits::kernels {

struct CpuFeatures {
  std::string vendor;  // "AuthenticAMD", "GenuineIntel", ...; "arm64" on AArch64
  std::string brand;   // processor brand string (x86); empty on AArch64
  // Instruction sets (cpuid), each already AND-ed with the OS support (XCR0)
  // of the register state it needs.
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx_vnni = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512cd = false;
  bool avx512_vnni = false, avx512_vbmi = false, avx512_vbmi2 = false, avx512_vpopcntdq = false;
  bool avx512_bf16 = false, avx512_bitalg = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  // AMX tile data usable by this process: the CPU has AMX and Linux granted
  // the permission (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
  bool amx_permitted = false;
  // AArch64 (getauxval AT_HWCAP / AT_HWCAP2): Advanced SIMD, its dot product
  // (sdot / udot, HWCAP_ASIMDDP) and the int8 matrix multiply (HWCAP2_I8MM).
  bool asimd = false, asimd_dp = false, i8mm = false;

  // "avx2 fma avx512f avx512bw ... (no amx)"; "asimd asimddp" on AArch64
  std::string to_string() const;
};

// Detected once (thread-safe); the AMX permission is requested on first use.
const CpuFeatures& cpu_features();

// Highest ISA level the features allow:
//   x86-64:  AVX2        avx2 + fma
//            AVX512      + avx512 f, bw, vl, dq
//            AVX512_VNNI + avx512_vnni
//            AMX         + amx_tile, amx_int8 and the permission
//   AArch64: NEON        asimd
//            NEON_DOTPROD + asimd_dp
Isa max_supported_isa(const CpuFeatures& f);

// The architecture whose ladder applies to f: that of max_supported_isa(f),
// or of the build target when f allows only the reference kernels.
IsaFamily isa_family_of(const CpuFeatures& f);

// min(max_supported_isa(f), cap) on f's ladder, where cap is parsed from
// `max_isa_env` (the value of BBITS_MAX_ISA; nullptr or "" = no cap).
// Throws std::invalid_argument naming the bad value and the levels this
// architecture accepts (an unknown name, or a level of the other
// architecture).
Isa detect_isa(const CpuFeatures& f, const char* max_isa_env);

// detect_isa(cpu_features(), getenv("BBITS_MAX_ISA")). Read on every call so
// tests can change the environment.
Isa detect_isa();

}  // namespace bbits::kernels
