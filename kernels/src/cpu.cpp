// CPU feature detection: cpuid + XCR0 + the Linux AMX permission request on
// x86-64, getauxval(AT_HWCAP / AT_HWCAP2) on AArch64.
#include "bbits/kernels/cpu.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define BBITS_X86 1
#include <cpuid.h>
#endif
#if defined(__aarch64__)
#define BBITS_ARM64 1
#include <sys/auxv.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace bbits::kernels {

namespace {

#ifdef BBITS_X86
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub) {
  Regs r;
  __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
  return r;
}

uint64_t xgetbv0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

bool bit(unsigned v, int i) { return (v >> i) & 1u; }

// Linux: ask for permission to use the AMX tile data state (XFEATURE 18).
bool request_amx_permission() {
#if defined(__linux__)
  constexpr int kArchGetXcompPerm = 0x1022;
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr unsigned long kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
  unsigned long bitmask = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &bitmask) != 0) return false;
  return (bitmask >> kXfeatureXtiledata) & 1ul;
#else
  return false;
#endif
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#ifdef BBITS_X86
  const Regs r0 = cpuid(0, 0);
  const unsigned max_leaf = r0.a;
  char vendor[13] = {};
  std::memcpy(vendor + 0, &r0.b, 4);
  std::memcpy(vendor + 4, &r0.d, 4);
  std::memcpy(vendor + 8, &r0.c, 4);
  f.vendor = vendor;

  const Regs ext = cpuid(0x80000000u, 0);
  if (ext.a >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      const Regs r = cpuid(0x80000002u + i, 0);
      std::memcpy(brand + 16 * i + 0, &r.a, 4);
      std::memcpy(brand + 16 * i + 4, &r.b, 4);
      std::memcpy(brand + 16 * i + 8, &r.c, 4);
      std::memcpy(brand + 16 * i + 12, &r.d, 4);
    }
    std::string b = brand;
    const auto first = b.find_first_not_of(' ');
    const auto last = b.find_last_not_of(' ');
    f.brand = first == std::string::npos ? "" : b.substr(first, last - first + 1);
  }
  if (max_leaf < 1) return f;

  const Regs r1 = cpuid(1, 0);
  const bool osxsave = bit(r1.c, 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;             // XMM, YMM
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);  // XTILECFG, XTILEDATA

  f.sse42 = bit(r1.c, 20);
  f.avx = bit(r1.c, 28) && os_avx;
  f.fma = bit(r1.c, 12) && os_avx;
  f.f16c = bit(r1.c, 29) && os_avx;

  if (max_leaf >= 7) {
    const Regs r7 = cpuid(7, 0);
    f.avx2 = bit(r7.b, 5) && os_avx;
    f.bmi2 = bit(r7.b, 8);
    f.avx512f = bit(r7.b, 16) && os_avx512;
    f.avx512dq = bit(r7.b, 17) && os_avx512;
    f.avx512cd = bit(r7.b, 28) && os_avx512;
    f.avx512bw = bit(r7.b, 30) && os_avx512;
    f.avx512vl = bit(r7.b, 31) && os_avx512;
    f.avx512_vbmi = bit(r7.c, 1) && os_avx512;
    f.avx512_vbmi2 = bit(r7.c, 6) && os_avx512;
    f.avx512_vnni = bit(r7.c, 11) && os_avx512;
    f.avx512_bitalg = bit(r7.c, 12) && os_avx512;
    f.avx512_vpopcntdq = bit(r7.c, 14) && os_avx512;
    f.amx_bf16 = bit(r7.d, 22) && os_amx;
    f.amx_tile = bit(r7.d, 24) && os_amx;
    f.amx_int8 = bit(r7.d, 25) && os_amx;
    if (r7.a >= 1) {
      const Regs r71 = cpuid(7, 1);
      f.avx_vnni = bit(r71.a, 4) && os_avx;
      f.avx512_bf16 = bit(r71.a, 5) && os_avx512;
    }
  }
  if (f.amx_tile && f.amx_int8) f.amx_permitted = request_amx_permission();
#endif
#ifdef BBITS_ARM64
  // Bits of the Linux arm64 hwcaps ABI (asm/hwcap.h): HWCAP_ASIMD, HWCAP_ASIMDDP, HWCAP2_I8MM.
  constexpr unsigned long kHwcapAsimd = 1ul << 1, kHwcapAsimdDp = 1ul << 20, kHwcap2I8mm = 1ul << 13;
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  f.vendor = "arm64";
  f.asimd = (hw & kHwcapAsimd) != 0;
  f.asimd_dp = f.asimd && (hw & kHwcapAsimdDp) != 0;
  f.i8mm = f.asimd && (hw2 & kHwcap2I8mm) != 0;
#endif
  return f;
}

constexpr IsaFamily kBuildFamily =
#if defined(BBITS_X86)
    IsaFamily::X86;
#elif defined(BBITS_ARM64)
    IsaFamily::Arm;
#else
    IsaFamily::Portable;
#endif

// The accepted BBITS_MAX_ISA values on an architecture's ladder.
std::string levels_of(IsaFamily fam) {
  std::string s = "reference";
  for (Isa i : {Isa::AVX2, Isa::AVX512, Isa::AVX512_VNNI, Isa::AMX, Isa::NEON, Isa::NEON_DOTPROD})
    if (isa_family(i) == fam) s += std::string(", ") + isa_name(i);
  return s;
}

}  // namespace

std::string CpuFeatures::to_string() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(sse42, "sse4.2");
  add(avx, "avx");
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(bmi2, "bmi2");
  add(avx_vnni, "avx_vnni");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq");
  add(avx512cd, "avx512cd");
  add(avx512_vnni, "avx512_vnni");
  add(avx512_vbmi, "avx512_vbmi");
  add(avx512_vbmi2, "avx512_vbmi2");
  add(avx512_vpopcntdq, "avx512_vpopcntdq");
  add(avx512_bf16, "avx512_bf16");
  add(avx512_bitalg, "avx512_bitalg");
  add(amx_tile, "amx_tile");
  add(amx_int8, "amx_int8");
  add(amx_bf16, "amx_bf16");
  add(asimd, "asimd");
  add(asimd_dp, "asimddp");
  add(i8mm, "i8mm");
  if (asimd) return s;
  if (amx_tile && amx_int8)
    s += amx_permitted ? " (amx permitted)" : " (amx not permitted by the OS)";
  else
    s += s.empty() ? "(no amx)" : " (no amx)";
  return s;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

Isa max_supported_isa(const CpuFeatures& f) {
  if (f.asimd) return f.asimd_dp ? Isa::NEON_DOTPROD : Isa::NEON;
  if (!(f.avx2 && f.fma)) return Isa::Reference;
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq)) return Isa::AVX2;
  if (!f.avx512_vnni) return Isa::AVX512;
  if (!(f.amx_tile && f.amx_int8 && f.amx_permitted)) return Isa::AVX512_VNNI;
  return Isa::AMX;
}

IsaFamily isa_family_of(const CpuFeatures& f) {
  const Isa best = max_supported_isa(f);
  return best == Isa::Reference ? kBuildFamily : isa_family(best);
}

Isa detect_isa(const CpuFeatures& f, const char* max_isa_env) {
  const Isa best = max_supported_isa(f);
  if (max_isa_env == nullptr || *max_isa_env == '\0') return best;
  const IsaFamily fam = isa_family_of(f);
  const auto cap = parse_isa(max_isa_env);
  if (!cap)
    throw std::invalid_argument(std::string("BBITS_MAX_ISA=") + max_isa_env + " is not one of " + levels_of(fam));
  if (*cap != Isa::Reference && isa_family(*cap) != fam)
    throw std::invalid_argument(std::string("BBITS_MAX_ISA=") + max_isa_env + " is a level of " +
                                (isa_family(*cap) == IsaFamily::Arm ? "AArch64" : "x86-64") +
                                "; this CPU accepts " + levels_of(fam));
  return isa_at_most(best, *cap) ? best : *cap;
}

Isa detect_isa() { return detect_isa(cpu_features(), std::getenv("BBITS_MAX_ISA")); }

}  // namespace bbits::kernels
