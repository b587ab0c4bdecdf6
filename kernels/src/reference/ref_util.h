// Internal helpers of the reference kernels (not installed).
#pragma once

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

// Rough throughput figures of the reference kernels on one core (measured on
// the development machine, Zen 4, -O2; see tests/kernels and bench/).
struct RefCost {
  static constexpr double kIntMacsPerNs = 1.0;
  static constexpr double kFloatMacsPerNs = 0.8;
  static constexpr double kElemsPerNs = 0.5;  // eltwise / pool / copy work items
  static constexpr double kBytesPerNs = 8.0;
  static constexpr double kOverheadNs = 300.0;
};

// Registration (one function per source file).
void register_conv_fc(std::vector<KernelInfo>& table);
void register_pool(std::vector<KernelInfo>& table);
void register_eltwise(std::vector<KernelInfo>& table);
void register_all(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::ref
