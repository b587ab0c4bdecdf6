// Internal helpers of the reference kernels (not installed).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bbits/format/quant.h"
#include "bbits/kernels/kernels.h"

namespace bbits::kernels::ref {

// Calls f(T{}) with T the storage type of q: uint8_t/int8_t (<= 8 bits),
// uint16_t/int16_t (16), float (32).
template <class F>
decltype(auto) with_type(const QuantInfo& q, F&& f) {
  if (q.is_float()) return f(float{});
  if (q.bits <= 8) {
    if (q.is_signed) return f(int8_t{});
    return f(uint8_t{});
  }
  if (q.is_signed) return f(int16_t{});
  return f(uint16_t{});
}

template <class T>
inline constexpr bool kIsFloat = std::is_same_v<T, float>;

inline float apply_act_float(float v, Activation act) {
  if (act == Activation::None) return v;
  if (!(v > 0.0f)) v = 0.0f;  // also NaN -> 0
  if (act == Activation::Relu6 && v > 6.0f) v = 6.0f;
  return v;
}

inline int64_t clamp_range(int64_t v, const ClampRange& c) { return v < c.lo ? c.lo : (v > c.hi ? c.hi : v); }

// Element conversion from one activation grid to another with an activation:
//   int -> int:     clamp(apply_requant(q, make_requant(s_in / s_out)))  (exact copy when equal grids)
//   int -> float:   act(q * s_in)
//   float -> int:   quantize_to_grid(act(x), s_out, clamp)
//   float -> float: act(x)
struct Converter {
  QuantInfo in, out;
  Activation act = Activation::None;
  ClampRange clamp{};
  Requant r{};
  bool identity = false;

  Converter(const QuantInfo& in_, const QuantInfo& out_, Activation act_) : in(in_), out(out_), act(act_) {
    if (!out.is_float()) clamp = output_clamp(out, act);
    if (!in.is_float() && !out.is_float()) {
      identity = in.scale == out.scale;
      if (!identity) r = make_requant(static_cast<double>(in.scale) / static_cast<double>(out.scale));
    }
  }

  template <class TI, class TO>
  TO operator()(TI v) const {
    if constexpr (kIsFloat<TI>) {
      const float x = apply_act_float(v, act);
      if constexpr (kIsFloat<TO>) return x;
      else return static_cast<TO>(quantize_to_grid(x, out.scale, clamp.lo, clamp.hi));
    } else {
      if constexpr (kIsFloat<TO>) {
        return apply_act_float(static_cast<float>(v) * in.scale, act);
      } else {
        const int64_t q = identity ? static_cast<int64_t>(v) : apply_requant(static_cast<int64_t>(v), r);
        return static_cast<TO>(clamp_range(q, clamp));
      }
    }
  }
};

// out[i] = cv(in[i * in_stride]) for i in [0, n). Hot values are copied to
// locals first: byte-sized output stores may alias anything, which would
// otherwise force reloads of the converter on every element.
template <class TI, class TO>
void convert_n(const TI* in, int64_t in_stride, TO* out, int64_t n, const Converter& cv) {
  if constexpr (!kIsFloat<TI> && !kIsFloat<TO>) {
    const int64_t lo = cv.clamp.lo, hi = cv.clamp.hi;
    if (cv.identity) {
      // Stored values and grid bounds all fit int32 (<= 16 bits).
      const auto lo32 = static_cast<int32_t>(lo), hi32 = static_cast<int32_t>(hi);
      for (int64_t i = 0; i < n; ++i) {
        const int32_t v = in[i * in_stride];
        out[i] = static_cast<TO>(std::min(std::max(v, lo32), hi32));
      }
    } else {
      const Requant r = cv.r;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t v = apply_requant(static_cast<int64_t>(in[i * in_stride]), r);
        out[i] = static_cast<TO>(v < lo ? lo : (v > hi ? hi : v));
      }
    }
  } else {
    const Converter local = cv;
    for (int64_t i = 0; i < n; ++i) out[i] = local.template operator()<TI, TO>(in[i * in_stride]);
  }
}

inline void check_args(const KernelArgs& a, int n_inputs, size_t scratch_needed, std::string_view name) {
  if (static_cast<int>(a.inputs.size()) != n_inputs)
    throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(n_inputs) + " input(s), got " +
                                std::to_string(a.inputs.size()));
  for (const void* p : a.inputs)
    if (p == nullptr) throw std::invalid_argument(std::string(name) + ": null input pointer");
  if (a.output == nullptr) throw std::invalid_argument(std::string(name) + ": null output pointer");
  if (scratch_needed > 0 && (a.scratch == nullptr || a.scratch_size < scratch_needed))
    throw std::invalid_argument(std::string(name) + ": scratch of " + std::to_string(a.scratch_size) +
                                " bytes is smaller than the " + std::to_string(scratch_needed) + " needed");
}

inline size_t round_up64(size_t v) { return (v + 63) / 64 * 64; }

// Cost model of the reference kernels (one thread; figures measured with
// CPU time on the development machine, an AMD EPYC Zen 4, -O2, on layer
// shapes of LeNet-5 / ResNet-18; SIMD kernels have their own, calibrated).
struct RefCost {
  static constexpr double kIntMacsPerNs = 4.0;    // w <= 8 and a <= 8 bits (int32 sums)
  static constexpr double kWideMacsPerNs = 1.9;   // 16-bit weights or activations (int64 sums)
  static constexpr double kFloatMacsPerNs = 1.15; // float32 weights or input
  static constexpr double kGatherNs = 1.0;        // per input value copied into a conv patch
  static constexpr double kPatchNs = 20.0;        // per (output pixel, group)
  static constexpr double kOutputNs = 3.0;        // per output value (requant + clamp + store)
  static constexpr double kRequantElemNs = 2.2;   // per element requantized to another grid
  static constexpr double kCopyElemNs = 0.4;      // per element copied (and clamped) on the same grid
  static constexpr double kFloatElemNs = 0.2;     // per element of a float eltwise op
  static constexpr double kPoolTapNs = 1.0;       // per window element of a pool
  static constexpr double kSoftmaxElemNs = 7.5;   // per element (exp)
  static constexpr double kBytesPerNs = 10.0;     // memory traffic
  static constexpr double kOverheadNs = 300.0;    // per call
};

// Registration (one function per source file).
void register_conv_fc(std::vector<KernelInfo>& table);
void register_pool(std::vector<KernelInfo>& table);
void register_eltwise(std::vector<KernelInfo>& table);
void register_all(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::ref
