// Names, descriptor helpers, validation and the small arithmetic helpers
// shared by every kernel.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "bbits/format/quant.h"
#include "bbits/kernels/kernels.h"

namespace bbits::kernels {

// ---- names --------------------------------------------------------------------
const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Reference: return "reference";
    case Isa::AVX2: return "avx2";
    case Isa::AVX512: return "avx512";
    case Isa::AVX512_VNNI: return "avx512_vnni";
    case Isa::AMX: return "amx";
    case Isa::NEON: return "neon";
    case Isa::NEON_DOTPROD: return "neon_dotprod";
  }
  return "unknown";
}

std::optional<Isa> parse_isa(std::string_view text) {
  std::string t;
  for (char c : text) {
    if (c == '-') c = '_';
    t.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (t == "reference" || t == "ref") return Isa::Reference;
  if (t == "avx2") return Isa::AVX2;
  if (t == "avx512") return Isa::AVX512;
  if (t == "avx512_vnni" || t == "avx512vnni") return Isa::AVX512_VNNI;
  if (t == "amx") return Isa::AMX;
  if (t == "neon") return Isa::NEON;
  if (t == "neon_dotprod" || t == "neondot" || t == "neon_dot") return Isa::NEON_DOTPROD;
  return std::nullopt;
}

const char* op_kind_name(OpKind op) {
  switch (op) {
    case OpKind::Conv2D: return "conv2d";
    case OpKind::FullyConnected: return "fully_connected";
    case OpKind::Relu: return "relu";
    case OpKind::Relu6: return "relu6";
    case OpKind::MaxPool2D: return "max_pool2d";
    case OpKind::AvgPool2D: return "avg_pool2d";
    case OpKind::GlobalAvgPool: return "global_avg_pool";
    case OpKind::Add: return "add";
    case OpKind::Concat: return "concat";
    case OpKind::Reshape: return "reshape";
    case OpKind::Softmax: return "softmax";
  }
  return "unknown";
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::None: return "none";
    case Activation::Relu: return "relu";
    case Activation::Relu6: return "relu6";
  }
  return "unknown";
}

// ---- descriptor queries -----------------------------------------------------------
namespace {
template <class... Ts>
struct Overload : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overload(Ts...) -> Overload<Ts...>;

int64_t sum_sizes(const ConcatDesc& d) {
  int64_t s = 0;
  for (int64_t v : d.sizes) s += v;
  return s;
}
}  // namespace

OpKind op_kind(const OpDesc& desc) {
  return std::visit(Overload{
                        [](const ConvDesc&) { return OpKind::Conv2D; },
                        [](const FcDesc&) { return OpKind::FullyConnected; },
                        [](const ActivationDesc& d) { return d.act == Activation::Relu6 ? OpKind::Relu6 : OpKind::Relu; },
                        [](const PoolDesc& d) {
                          return d.kind == PoolKind::Max ? OpKind::MaxPool2D
                                 : d.kind == PoolKind::Avg ? OpKind::AvgPool2D
                                                           : OpKind::GlobalAvgPool;
                        },
                        [](const AddDesc&) { return OpKind::Add; },
                        [](const ConcatDesc&) { return OpKind::Concat; },
                        [](const ReshapeDesc&) { return OpKind::Reshape; },
                        [](const SoftmaxDesc&) { return OpKind::Softmax; },
                    },
                    desc);
}

int weight_bits(const OpDesc& desc) {
  if (auto* c = std::get_if<ConvDesc>(&desc)) return c->wbits;
  if (auto* f = std::get_if<FcDesc>(&desc)) return f->wbits;
  return -1;
}

QuantInfo input_quant(const OpDesc& desc, int i) {
  return std::visit(Overload{
                        [&](const AddDesc& d) { return i == 0 ? d.a : d.b; },
                        [&](const ConcatDesc& d) {
                          if (i < 0 || i >= static_cast<int>(d.in.size()))
                            throw std::invalid_argument("input_quant: concat input index out of range");
                          return d.in[static_cast<size_t>(i)];
                        },
                        [](const auto& d) { return d.in; },
                    },
                    desc);
}

QuantInfo output_quant(const OpDesc& desc) {
  return std::visit([](const auto& d) { return d.out; }, desc);
}

int input_bits(const OpDesc& desc) { return input_quant(desc, 0).bits; }

int num_inputs(const OpDesc& desc) {
  if (std::holds_alternative<AddDesc>(desc)) return 2;
  if (auto* c = std::get_if<ConcatDesc>(&desc)) return static_cast<int>(c->sizes.size());
  return 1;
}

int64_t input_elements(const OpDesc& desc, int i) {
  return std::visit(Overload{
                        [](const ConvDesc& d) { return d.N * d.H * d.W * d.C; },
                        [](const FcDesc& d) { return d.N * d.K; },
                        [](const ActivationDesc& d) { return d.count; },
                        [](const PoolDesc& d) { return d.N * d.H * d.W * d.C; },
                        [](const AddDesc& d) { return d.count; },
                        [&](const ConcatDesc& d) {
                          if (i < 0 || i >= static_cast<int>(d.sizes.size()))
                            throw std::invalid_argument("input_elements: concat input index out of range");
                          return d.outer * d.sizes[static_cast<size_t>(i)] * d.inner;
                        },
                        [](const ReshapeDesc& d) { return d.N * d.H * d.W * d.C; },
                        [](const SoftmaxDesc& d) { return d.outer * d.axis_size * d.inner; },
                    },
                    desc);
}

int64_t output_elements(const OpDesc& desc) {
  return std::visit(Overload{
                        [](const ConvDesc& d) { return d.N * d.out_h() * d.out_w() * d.OC; },
                        [](const FcDesc& d) { return d.N * d.OC; },
                        [](const ActivationDesc& d) { return d.count; },
                        [](const PoolDesc& d) { return d.N * d.out_h() * d.out_w() * d.C; },
                        [](const AddDesc& d) { return d.count; },
                        [](const ConcatDesc& d) { return d.outer * sum_sizes(d) * d.inner; },
                        [](const ReshapeDesc& d) { return d.N * d.H * d.W * d.C; },
                        [](const SoftmaxDesc& d) { return d.outer * d.axis_size * d.inner; },
                    },
                    desc);
}

int64_t op_work(const OpDesc& desc) {
  return std::visit(Overload{
                        [](const ConvDesc& d) { return d.macs(); },
                        [](const FcDesc& d) { return d.macs(); },
                        [](const PoolDesc& d) {
                          if (d.kind == PoolKind::GlobalAvg) return d.N * d.H * d.W * d.C;
                          return d.N * d.out_h() * d.out_w() * d.C * d.KH * d.KW;
                        },
                        [&](const auto&) {
                          int64_t s = 0;
                          for (int i = 0; i < num_inputs(desc); ++i) s += input_elements(desc, i);
                          return s;
                        },
                    },
                    desc);
}

int64_t op_bytes(const OpDesc& desc) {
  int64_t bytes = 0;
  for (int i = 0; i < num_inputs(desc); ++i)
    bytes += input_elements(desc, i) * static_cast<int64_t>(element_bytes(input_quant(desc, i).bits));
  bytes += output_elements(desc) * static_cast<int64_t>(element_bytes(output_quant(desc).bits));
  if (auto* c = std::get_if<ConvDesc>(&desc)) {
    if (c->wbits > 0) bytes += c->OC * static_cast<int64_t>(packed_row_bytes(c->K(), c->wbits));
  } else if (auto* f = std::get_if<FcDesc>(&desc)) {
    if (f->wbits > 0) bytes += f->OC * static_cast<int64_t>(packed_row_bytes(f->K, f->wbits));
  }
  return bytes;
}

// ---- validation ---------------------------------------------------------------------
namespace {
[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument(what); }

void check_quant(const QuantInfo& q, const char* op, const char* which) {
  if (!is_legal_act_bits(q.bits))
    bad(std::string(op) + ": " + which + " activation bits " + std::to_string(q.bits) +
        " is not one of 2, 4, 8, 16, 32");
  if (!q.is_float() && !(std::isfinite(q.scale) && q.scale > 0.0f))
    bad(std::string(op) + ": " + which + " scale " + std::to_string(q.scale) + " must be positive and finite");
}

constexpr int64_t kMaxElements = int64_t{1} << 40;

void check_dim(int64_t v, const char* op, const char* name, int64_t min = 1) {
  if (v < min || v > kMaxElements)
    bad(std::string(op) + ": " + name + " = " + std::to_string(v) + " is out of range (must be >= " +
        std::to_string(min) + ")");
}

void check_elements(int64_t a, int64_t b, int64_t c, int64_t d, const char* op, const char* what) {
  // Each factor is already <= 2^40; check the product stepwise.
  __int128 p = static_cast<__int128>(a) * b;
  if (p <= kMaxElements) p *= c;
  if (p <= kMaxElements) p *= d;
  if (p > kMaxElements) bad(std::string(op) + ": " + what + " has too many elements");
}

void check_weight_bits(int wbits, const char* op) {
  if (!is_legal_weight_bits(wbits))
    bad(std::string(op) + ": weight bits " + std::to_string(wbits) + " is not one of 0, 2, 4, 8, 16, 32");
}
}  // namespace

void check_desc(const OpDesc& desc) {
  std::visit(
      Overload{
          [](const ConvDesc& d) {
            const char* op = "conv2d";
            check_dim(d.N, op, "N");
            check_dim(d.H, op, "H");
            check_dim(d.W, op, "W");
            check_dim(d.C, op, "C");
            check_dim(d.OC, op, "OC");
            check_dim(d.KH, op, "KH");
            check_dim(d.KW, op, "KW");
            check_dim(d.stride_h, op, "stride_h");
            check_dim(d.stride_w, op, "stride_w");
            check_dim(d.dilation_h, op, "dilation_h");
            check_dim(d.dilation_w, op, "dilation_w");
            check_dim(d.groups, op, "groups");
            check_dim(d.pad_top, op, "pad_top", 0);
            check_dim(d.pad_left, op, "pad_left", 0);
            check_dim(d.pad_bottom, op, "pad_bottom", 0);
            check_dim(d.pad_right, op, "pad_right", 0);
            if (d.C % d.groups != 0 || d.OC % d.groups != 0)
              bad("conv2d: groups " + std::to_string(d.groups) + " must divide C " + std::to_string(d.C) +
                  " and OC " + std::to_string(d.OC));
            if (d.H + d.pad_top + d.pad_bottom < d.dilation_h * (d.KH - 1) + 1 ||
                d.W + d.pad_left + d.pad_right < d.dilation_w * (d.KW - 1) + 1)
              bad("conv2d: the (dilated) kernel is larger than the padded input, the output would be empty");
            check_elements(d.N, d.H, d.W, d.C, op, "the input");
            check_elements(d.N, d.out_h(), d.out_w(), d.OC, op, "the output");
            check_elements(d.OC, d.KH, d.KW, d.C / d.groups, op, "the weight tensor");
            check_weight_bits(d.wbits, op);
            check_quant(d.in, op, "input");
            check_quant(d.out, op, "output");
          },
          [](const FcDesc& d) {
            const char* op = "fully_connected";
            check_dim(d.N, op, "N");
            check_dim(d.K, op, "K");
            check_dim(d.OC, op, "OC");
            check_elements(d.N, d.K, 1, 1, op, "the input");
            check_elements(d.OC, d.K, 1, 1, op, "the weight tensor");
            check_elements(d.N, d.OC, 1, 1, op, "the output");
            check_weight_bits(d.wbits, op);
            check_quant(d.in, op, "input");
            check_quant(d.out, op, "output");
          },
          [](const ActivationDesc& d) {
            const char* op = d.act == Activation::Relu6 ? "relu6" : "relu";
            if (d.act == Activation::None) bad("relu: activation must be relu or relu6, not none");
            check_dim(d.count, op, "count");
            check_quant(d.in, op, "input");
            check_quant(d.out, op, "output");
          },
          [](const PoolDesc& d) {
            const char* op = d.kind == PoolKind::Max ? "max_pool2d" : d.kind == PoolKind::Avg ? "avg_pool2d"
                                                                                              : "global_avg_pool";
            check_dim(d.N, op, "N");
            check_dim(d.H, op, "H");
            check_dim(d.W, op, "W");
            check_dim(d.C, op, "C");
            check_elements(d.N, d.H, d.W, d.C, op, "the input");
            if (d.kind != PoolKind::GlobalAvg) {
              check_dim(d.KH, op, "kernel_h");
              check_dim(d.KW, op, "kernel_w");
              check_dim(d.stride_h, op, "stride_h");
              check_dim(d.stride_w, op, "stride_w");
              check_dim(d.pad_top, op, "pad_top", 0);
              check_dim(d.pad_left, op, "pad_left", 0);
              check_dim(d.pad_bottom, op, "pad_bottom", 0);
              check_dim(d.pad_right, op, "pad_right", 0);
              if (d.pad_top >= d.KH || d.pad_bottom >= d.KH || d.pad_left >= d.KW || d.pad_right >= d.KW)
                bad(std::string(op) + ": padding must be smaller than the kernel (a window would hold no input)");
              if (d.H + d.pad_top + d.pad_bottom < d.KH || d.W + d.pad_left + d.pad_right < d.KW)
                bad(std::string(op) + ": the kernel is larger than the padded input, the output would be empty");
            }
            check_quant(d.in, op, "input");
            check_quant(d.out, op, "output");
          },
          [](const AddDesc& d) {
            check_dim(d.count, "add", "count");
            check_quant(d.a, "add", "first input");
            check_quant(d.b, "add", "second input");
            check_quant(d.out, "add", "output");
          },
          [](const ConcatDesc& d) {
            check_dim(d.outer, "concat", "outer");
            check_dim(d.inner, "concat", "inner");
            if (d.sizes.empty()) bad("concat: no inputs");
            if (d.sizes.size() != d.in.size())
              bad("concat: " + std::to_string(d.sizes.size()) + " sizes but " + std::to_string(d.in.size()) +
                  " input quant infos");
            int64_t total = 0;
            for (size_t i = 0; i < d.sizes.size(); ++i) {
              check_dim(d.sizes[i], "concat", "input size along the axis");
              total += d.sizes[i];
              if (total > kMaxElements) bad("concat: the output axis is too long");
              check_quant(d.in[i], "concat", ("input " + std::to_string(i)).c_str());
            }
            check_elements(d.outer, total, d.inner, 1, "concat", "the output");
            check_quant(d.out, "concat", "output");
          },
          [](const ReshapeDesc& d) {
            check_dim(d.N, "reshape", "N");
            check_dim(d.H, "reshape", "H");
            check_dim(d.W, "reshape", "W");
            check_dim(d.C, "reshape", "C");
            check_elements(d.N, d.H, d.W, d.C, "reshape", "the tensor");
            check_quant(d.in, "reshape", "input");
            check_quant(d.out, "reshape", "output");
          },
          [](const SoftmaxDesc& d) {
            check_dim(d.outer, "softmax", "outer");
            check_dim(d.axis_size, "softmax", "axis size");
            check_dim(d.inner, "softmax", "inner");
            check_elements(d.outer, d.axis_size, d.inner, 1, "softmax", "the tensor");
            check_quant(d.in, "softmax", "input");
            check_quant(d.out, "softmax", "output");
          },
      },
      desc);
}

// ---- describe -------------------------------------------------------------------------
namespace {
std::string quant_str(const QuantInfo& q) {
  if (q.is_float()) return "f32";
  std::ostringstream s;
  s << 'a' << q.bits << (q.is_signed ? 's' : 'u') << '(' << q.scale << ')';
  return s.str();
}
std::string act_suffix(Activation a) { return a == Activation::None ? "" : std::string(" ") + activation_name(a); }
}  // namespace

std::string describe(const OpDesc& desc) {
  std::ostringstream s;
  std::visit(Overload{
                 [&](const ConvDesc& d) {
                   s << "conv2d " << d.N << 'x' << d.H << 'x' << d.W << 'x' << d.C << " -> " << d.N << 'x'
                     << d.out_h() << 'x' << d.out_w() << 'x' << d.OC << " k" << d.KH << 'x' << d.KW << " s"
                     << d.stride_h << 'x' << d.stride_w << " p" << d.pad_top << ',' << d.pad_left << ','
                     << d.pad_bottom << ',' << d.pad_right << " d" << d.dilation_h << 'x' << d.dilation_w << " g"
                     << d.groups << (d.is_depthwise() ? " (depthwise)" : "") << " w" << d.wbits << ' '
                     << quant_str(d.in) << "->" << quant_str(d.out) << act_suffix(d.activation);
                 },
                 [&](const FcDesc& d) {
                   s << "fully_connected " << d.N << 'x' << d.K << " -> " << d.N << 'x' << d.OC << " w" << d.wbits
                     << ' ' << quant_str(d.in) << "->" << quant_str(d.out) << act_suffix(d.activation);
                 },
                 [&](const ActivationDesc& d) {
                   s << activation_name(d.act) << ' ' << d.count << ' ' << quant_str(d.in) << "->"
                     << quant_str(d.out);
                 },
                 [&](const PoolDesc& d) {
                   s << op_kind_name(op_kind(desc)) << ' ' << d.N << 'x' << d.H << 'x' << d.W << 'x' << d.C << " -> "
                     << d.N << 'x' << d.out_h() << 'x' << d.out_w() << 'x' << d.C;
                   if (d.kind != PoolKind::GlobalAvg)
                     s << " k" << d.KH << 'x' << d.KW << " s" << d.stride_h << 'x' << d.stride_w << " p" << d.pad_top
                       << ',' << d.pad_left << ',' << d.pad_bottom << ',' << d.pad_right
                       << (d.kind == PoolKind::Avg && d.count_include_pad ? " count_include_pad" : "");
                   s << ' ' << quant_str(d.in) << "->" << quant_str(d.out);
                 },
                 [&](const AddDesc& d) {
                   s << "add " << d.count << ' ' << quant_str(d.a) << " + " << quant_str(d.b) << "->"
                     << quant_str(d.out) << act_suffix(d.activation);
                 },
                 [&](const ConcatDesc& d) {
                   s << "concat outer " << d.outer << " inner " << d.inner << " sizes";
                   for (size_t i = 0; i < d.sizes.size(); ++i)
                     s << (i ? "+" : " ") << d.sizes[i] << ':' << quant_str(d.in[i]);
                   s << " -> " << quant_str(d.out);
                 },
                 [&](const ReshapeDesc& d) {
                   s << "reshape " << d.N << 'x' << d.H << 'x' << d.W << 'x' << d.C
                     << (d.to_chw ? " NHWC->N,CHW (flatten in C,H,W order)" : " (copy)") << ' ' << quant_str(d.in)
                     << "->" << quant_str(d.out);
                 },
                 [&](const SoftmaxDesc& d) {
                   s << "softmax " << d.outer << 'x' << d.axis_size << 'x' << d.inner << ' ' << quant_str(d.in)
                     << "->" << quant_str(d.out);
                 },
             },
             desc);
  return s.str();
}

// ---- arithmetic helpers --------------------------------------------------------------------
ClampRange output_clamp(const QuantInfo& out, Activation act) {
  ClampRange r{qmin(out.bits, out.is_signed), qmax(out.bits, out.is_signed)};
  if (act == Activation::Relu || act == Activation::Relu6) r.lo = std::max<int64_t>(r.lo, 0);
  if (act == Activation::Relu6) {
    const double six = 6.0 / static_cast<double>(out.scale);
    if (six < static_cast<double>(r.hi)) r.hi = std::max<int64_t>(r.lo, std::llround(six));
  }
  return r;
}

int64_t quantize_to_grid(float x, float scale, int64_t lo, int64_t hi) {
  if (std::isnan(x)) x = 0.0f;
  const float q = round_half_even(x / scale);
  if (!(q > static_cast<float>(lo))) return lo;  // also -inf
  if (!(q < static_cast<float>(hi))) return hi;
  return static_cast<int64_t>(q);
}

int64_t load_int(const void* data, int64_t i, const QuantInfo& q) {
  if (q.bits <= 8) {
    return q.is_signed ? static_cast<const int8_t*>(data)[i] : static_cast<const uint8_t*>(data)[i];
  }
  if (q.bits == 16) {
    return q.is_signed ? static_cast<const int16_t*>(data)[i] : static_cast<const uint16_t*>(data)[i];
  }
  throw std::invalid_argument("load_int: float32 tensor has no integer values");
}

float load_float(const void* data, int64_t i, const QuantInfo& q) {
  if (q.is_float()) return static_cast<const float*>(data)[i];
  return static_cast<float>(load_int(data, i, q)) * q.scale;
}

void store_int(void* data, int64_t i, const QuantInfo& q, int64_t v) {
  if (q.bits <= 8) {
    if (q.is_signed)
      static_cast<int8_t*>(data)[i] = static_cast<int8_t>(v);
    else
      static_cast<uint8_t*>(data)[i] = static_cast<uint8_t>(v);
  } else if (q.bits == 16) {
    if (q.is_signed)
      static_cast<int16_t*>(data)[i] = static_cast<int16_t>(v);
    else
      static_cast<uint16_t*>(data)[i] = static_cast<uint16_t>(v);
  } else {
    throw std::invalid_argument("store_int: float32 tensor has no integer values");
  }
}

void store_float(void* data, int64_t i, float v) { static_cast<float*>(data)[i] = v; }

AddRequant add_requant(const QuantInfo& a, const QuantInfo& b, const QuantInfo& out) {
  if (a.is_float() || b.is_float() || out.is_float())
    throw std::invalid_argument("add_requant: only for integer inputs and output");
  AddRequant r;
  r.a = make_requant(static_cast<double>(a.scale) / static_cast<double>(out.scale));
  r.b = make_requant(static_cast<double>(b.scale) / static_cast<double>(out.scale));
  return r;
}

void Kernel::run_elements(const KernelArgs&, int64_t, int64_t) const {
  throw std::logic_error(std::string(name()) + ": not an element-wise kernel (run_elements)");
}

}  // namespace bbits::kernels
