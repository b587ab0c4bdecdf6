// bbits SIMD kernels — the instruction sets the kernel families are built
// for, and the dispatch from portable code to their instances.
//
// Every family is one template over an ISA tag below. The family's ISA code
// (its `*_isa.cpp`) is compiled once per ISA it supports, by a translation
// unit that kernels/CMakeLists.txt generates with that ISA's compiler flags
// and BBITS_ISA_<NAME> defined; there `ThisIsa` is that ISA's tag and the file
// instantiates the family's template for it. Portable code (the drivers,
// compiled without ISA flags) reaches an instance only through with_isa(),
// and only after the kernel's supports() checked the CPU.
//
// The tags carry no code: ops_avx2.h / ops_avx512.h / ops_neon.h map each one
// to its xsimd architecture and add the few operations xsimd 8.1 lacks.
#pragma once

#include <stdexcept>
#include <string>

#include "bbits/kernels/kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#define BBITS_SIMD_X86 1
#elif defined(__aarch64__)
#define BBITS_SIMD_ARM64 1
#endif

namespace bbits::kernels::simd {

// ISA tags. `isa`: the level a kernel built for the tag needs.
struct Avx2 {
  static constexpr Isa isa = Isa::AVX2;
};
struct Avx512 {  // AVX-512 F, BW, VL, DQ
  static constexpr Isa isa = Isa::AVX512;
};
struct Avx512Vnni {  // + VNNI (vpdpbusd, vpdpwssd)
  static constexpr Isa isa = Isa::AVX512_VNNI;
};
struct Avx512Vbmi {  // + VBMI (vpermb); level AVX512, feature checked by the kernel
  static constexpr Isa isa = Isa::AVX512;
};
struct Neon {  // AArch64 Advanced SIMD
  static constexpr Isa isa = Isa::NEON;
};
struct NeonDot {  // + the dot product (sdot)
  static constexpr Isa isa = Isa::NEON_DOTPROD;
};

// True when code of `isa` is compiled into this build (the target's ladder).
constexpr bool isa_built(Isa isa) {
#if defined(BBITS_SIMD_X86)
  return isa == Isa::AVX2 || isa == Isa::AVX512 || isa == Isa::AVX512_VNNI;
#elif defined(BBITS_SIMD_ARM64)
  return isa == Isa::NEON || isa == Isa::NEON_DOTPROD;
#else
  (void)isa;
  return false;
#endif
}

// The tag of each ISA level (only the target's levels name one).
template <Isa I>
struct TagOf;
#if defined(BBITS_SIMD_X86)
template <>
struct TagOf<Isa::AVX2> {
  using type = Avx2;
};
template <>
struct TagOf<Isa::AVX512> {
  using type = Avx512;
};
template <>
struct TagOf<Isa::AVX512_VNNI> {
  using type = Avx512Vnni;
};
#elif defined(BBITS_SIMD_ARM64)
template <>
struct TagOf<Isa::NEON> {
  using type = Neon;
};
template <>
struct TagOf<Isa::NEON_DOTPROD> {
  using type = NeonDot;
};
#endif

// Calls f.template operator()<Tag>() with the tag of `isa`, which must be one
// of the family's ISAs `Isas` (levels not built for this target are skipped at
// compile time, so a family names all of its ISAs on every target). f returns
// void. Throws std::logic_error for any other isa.
template <Isa First, Isa... Rest, class F>
void with_isa(Isa isa, F&& f) {
  if constexpr (isa_built(First)) {
    if (isa == First) {
      f.template operator()<typename TagOf<First>::type>();
      return;
    }
  }
  if constexpr (sizeof...(Rest) > 0) {
    with_isa<Rest...>(isa, static_cast<F&&>(f));
  } else {
    throw std::logic_error(std::string("no SIMD code for isa ") + isa_name(isa) + " in this kernel family");
  }
}

// The family's ISAs that this build has, in the given order (for registration).
template <Isa... Isas>
constexpr auto built_isas() {
  struct List {
    Isa v[sizeof...(Isas) + 1];
    int n;
    const Isa* begin() const { return v; }
    const Isa* end() const { return v + n; }
  } l{{}, 0};
  for (Isa i : {Isas...})
    if (isa_built(i)) l.v[l.n++] = i;
  return l;
}

}  // namespace bbits::kernels::simd

// In a generated ISA translation unit: the tag of the ISA being compiled.
#if defined(BBITS_ISA_AVX2)
namespace bbits::kernels::simd { using ThisIsa = Avx2; }
#elif defined(BBITS_ISA_AVX512)
namespace bbits::kernels::simd { using ThisIsa = Avx512; }
#elif defined(BBITS_ISA_AVX512_VNNI)
namespace bbits::kernels::simd { using ThisIsa = Avx512Vnni; }
#elif defined(BBITS_ISA_AVX512_VBMI)
namespace bbits::kernels::simd { using ThisIsa = Avx512Vbmi; }
#elif defined(BBITS_ISA_NEON)
namespace bbits::kernels::simd { using ThisIsa = Neon; }
#elif defined(BBITS_ISA_NEON_DOTPROD)
namespace bbits::kernels::simd { using ThisIsa = NeonDot; }
#endif
