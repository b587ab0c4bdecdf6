#include "bbits/converter/pth.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "bbits/contract/safetensors.h"
#include "bbits/contract/zoo.h"
#include "bbits/converter/input.h"
#include "pickle.h"
#include "zip.h"

namespace bbits::converter {

using detail::PickleResult;
using detail::PyKind;
using detail::PyObj;

namespace {

struct StorageBytes {
  std::string dtype;
  std::vector<uint8_t> bytes;
};

std::string storage_dtype(const std::string& type_name) {
  static const std::map<std::string, std::string> m{
      {"torch.FloatStorage", "float32"}, {"torch.float32", "float32"},   {"torch.float", "float32"},
      {"torch.DoubleStorage", "float64"}, {"torch.float64", "float64"},  {"torch.double", "float64"},
      {"torch.HalfStorage", "float16"},  {"torch.float16", "float16"},   {"torch.half", "float16"},
      {"torch.BFloat16Storage", "bfloat16"}, {"torch.bfloat16", "bfloat16"},
      {"torch.LongStorage", "int64"},    {"torch.int64", "int64"},       {"torch.long", "int64"},
      {"torch.IntStorage", "int32"},     {"torch.int32", "int32"},       {"torch.int", "int32"},
      {"torch.ShortStorage", "int16"},   {"torch.int16", "int16"},       {"torch.short", "int16"},
      {"torch.CharStorage", "int8"},     {"torch.int8", "int8"},         {"torch.ByteStorage", "uint8"},
      {"torch.uint8", "uint8"},          {"torch.BoolStorage", "bool"},  {"torch.bool", "bool"}};
  auto it = m.find(type_name);
  if (it == m.end()) throw ConvertError("pth: unknown storage type '" + type_name + "'");
  return it->second;
}

size_t elem_size(const std::string& dt) {
  if (dt == "float64" || dt == "int64") return 8;
  if (dt == "float32" || dt == "int32") return 4;
  if (dt == "float16" || dt == "bfloat16" || dt == "int16") return 2;
  return 1;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(man), -24);
  else if (exp == 31) v = man ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

// Persistent id: ('storage', type, key, location, numel[, view_metadata]).
int make_storage(std::vector<PyObj>& arena, int pid) {
  const PyObj& t = arena[static_cast<size_t>(pid)];
  if (t.kind != PyKind::Tuple || t.items.size() < 5 || arena[static_cast<size_t>(t.items[0])].kind != PyKind::Str ||
      arena[static_cast<size_t>(t.items[0])].s != "storage")
    throw ConvertError("pth: unsupported persistent id (expected a storage record)");
  const PyObj& type = arena[static_cast<size_t>(t.items[1])];
  const PyObj& key = arena[static_cast<size_t>(t.items[2])];
  const PyObj& numel = arena[static_cast<size_t>(t.items[4])];
  if (type.kind != PyKind::Global) throw ConvertError("pth: storage record without a storage type");
  if (key.kind != PyKind::Str) throw ConvertError("pth: storage record without a string key");
  if (numel.kind != PyKind::Int || numel.i < 0) throw ConvertError("pth: storage record with a bad element count");
  PyObj s;
  s.kind = PyKind::Storage;
  s.s = key.s;
  s.s2 = storage_dtype(type.s);
  s.i = numel.i;
  s.offset = 0;
  if (t.items.size() >= 6) {  // legacy view: (view_key, offset, size)
    const PyObj& view = arena[static_cast<size_t>(t.items[5])];
    if (view.kind == PyKind::Tuple && view.items.size() == 3) {
      const PyObj& off = arena[static_cast<size_t>(view.items[1])];
      const PyObj& sz = arena[static_cast<size_t>(view.items[2])];
      if (off.kind != PyKind::Int || sz.kind != PyKind::Int || off.i < 0 || sz.i < 0)
        throw ConvertError("pth: bad storage view record");
      s.offset = off.i;
      s.i = sz.i;
    } else if (view.kind != PyKind::None) {
      throw ConvertError("pth: bad storage view record");
    }
  }
  arena.push_back(std::move(s));
  return static_cast<int>(arena.size() - 1);
}

// Float32 contiguous copy of a tensor; nullopt for integer and bool tensors.
std::optional<FTensor> materialize(const std::vector<PyObj>& arena, const PyObj& t,
                                   const std::map<std::string, StorageBytes>& storages, const std::string& name) {
  const PyObj& st = arena[static_cast<size_t>(t.i)];
  auto it = storages.find(st.s);
  if (it == storages.end()) throw ConvertError("pth: tensor '" + name + "' refers to missing storage '" + st.s + "'");
  const std::string& dt = st.s2;
  if (dt != "float32" && dt != "float64" && dt != "float16" && dt != "bfloat16") return std::nullopt;
  const size_t es = elem_size(dt);
  const uint64_t avail = it->second.bytes.size() / es;
  FTensor out;
  uint64_t numel = 1, extent = 0;
  for (size_t d = 0; d < t.size.size(); ++d) {
    const uint64_t s = static_cast<uint64_t>(t.size[d]);
    if (s > (uint64_t{1} << 40) || (s && numel > (uint64_t{1} << 40) / s))
      throw ConvertError("pth: tensor '" + name + "' has an absurd size");
    numel *= s;
    out.shape.push_back(t.size[d]);
    if (s > 0) {
      const uint64_t str = static_cast<uint64_t>(t.stride[d]);
      if (str > (uint64_t{1} << 40)) throw ConvertError("pth: tensor '" + name + "' has an absurd stride");
      extent += (s - 1) * str;
    }
  }
  const uint64_t base = static_cast<uint64_t>(st.offset) + static_cast<uint64_t>(t.offset);
  if (numel > 0 && base + extent >= avail)
    throw ConvertError("pth: tensor '" + name + "' reads past the end of its storage '" + st.s + "'");
  out.data.resize(numel);
  const uint8_t* src = it->second.bytes.data();
  std::vector<int64_t> idx(t.size.size(), 0);
  for (uint64_t k = 0; k < numel; ++k) {
    uint64_t e = base;
    for (size_t d = 0; d < idx.size(); ++d) e += static_cast<uint64_t>(idx[d]) * static_cast<uint64_t>(t.stride[d]);
    const uint8_t* p = src + e * es;
    float v;
    if (dt == "float32") {
      std::memcpy(&v, p, 4);
    } else if (dt == "float64") {
      double dv;
      std::memcpy(&dv, p, 8);
      v = static_cast<float>(dv);
    } else if (dt == "float16") {
      v = half_to_float(static_cast<uint16_t>(p[0] | (p[1] << 8)));
    } else {
      const uint32_t bits = static_cast<uint32_t>(p[0] | (p[1] << 8)) << 16;
      std::memcpy(&v, &bits, 4);
    }
    out.data[k] = v;
    for (size_t d = idx.size(); d-- > 0;) {
      if (++idx[d] < t.size[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

TensorMap collect(const PickleResult& r, const std::map<std::string, StorageBytes>& storages) {
  const auto& A = r.arena;
  auto obj = [&](int i) -> const PyObj& { return A[static_cast<size_t>(i)]; };
  if (obj(r.root).kind != PyKind::Dict)
    throw ConvertError("pth: the saved object is a " + detail::describe(A, r.root) + ", not a state dict");
  const PyObj* sd = &obj(r.root);
  for (const char* key : {"model_state", "state_dict"}) {
    for (const auto& [k, v] : obj(r.root).dict)
      if (obj(k).kind == PyKind::Str && obj(k).s == key && obj(v).kind == PyKind::Dict) sd = &obj(v);
    if (sd != &obj(r.root)) break;
  }
  TensorMap out;
  for (const auto& [k, v] : sd->dict) {
    if (obj(k).kind != PyKind::Str) continue;
    if (obj(v).kind != PyKind::Tensor) continue;
    auto t = materialize(A, obj(v), storages, obj(k).s);
    if (t) out[obj(k).s] = std::move(*t);
  }
  if (out.empty()) throw ConvertError("pth: the state dict holds no floating-point tensors");
  bool all_module = true;
  for (const auto& [k, v] : out) all_module = all_module && k.rfind("module.", 0) == 0;
  if (all_module) {
    TensorMap stripped;
    for (auto& [k, v] : out) stripped[k.substr(7)] = std::move(v);
    out = std::move(stripped);
  }
  return out;
}

TensorMap read_zip(std::span<const uint8_t> bytes) {
  detail::ZipReader zip(bytes);
  const detail::ZipEntry* pkl = nullptr;
  for (const auto& e : zip.entries())
    if (e.name == "data.pkl" || (e.name.size() > 9 && e.name.compare(e.name.size() - 9, 9, "/data.pkl") == 0)) {
      pkl = &e;
      break;
    }
  if (!pkl) throw ConvertError("pth: zip archive without data.pkl (not a torch.save file)");
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - 8);
  const auto pbytes = zip.read(*pkl);
  const PickleResult r = detail::unpickle(pbytes, make_storage);
  std::map<std::string, StorageBytes> storages;
  for (const auto& o : r.arena) {
    if (o.kind != PyKind::Storage || storages.count(o.s)) continue;
    const detail::ZipEntry* e = zip.find(prefix + "data/" + o.s);
    if (!e) throw ConvertError("pth: storage '" + o.s + "' is missing from the archive");
    StorageBytes sb{o.s2, zip.read(*e)};
    storages.emplace(o.s, std::move(sb));
  }
  return collect(r, storages);
}

TensorMap read_legacy(std::span<const uint8_t> bytes) {
  auto none = [](std::vector<PyObj>&, int) -> int { throw ConvertError("pth: unexpected persistent id in header"); };
  size_t pos = 0;
  auto next = [&](const std::function<int(std::vector<PyObj>&, int)>& p) {
    PickleResult r = detail::unpickle(bytes.subspan(pos), p);
    pos += r.end;
    return r;
  };
  const PickleResult magic = next(none);
  static const uint8_t kMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  const PyObj& m = magic.arena[static_cast<size_t>(magic.root)];
  if (m.kind != PyKind::BigInt || m.s.size() != sizeof kMagic || std::memcmp(m.s.data(), kMagic, sizeof kMagic) != 0)
    throw ConvertError("pth: not a PyTorch checkpoint (bad magic number)");
  const PickleResult proto = next(none);
  const PyObj& pv = proto.arena[static_cast<size_t>(proto.root)];
  if (pv.kind != PyKind::Int || pv.i != 1001) throw ConvertError("pth: unsupported legacy protocol version");
  const PickleResult sys = next(none);
  {
    const auto& A = sys.arena;
    const PyObj& d = A[static_cast<size_t>(sys.root)];
    if (d.kind == PyKind::Dict)
      for (const auto& [k, v] : d.dict)
        if (A[static_cast<size_t>(k)].s == "little_endian" && A[static_cast<size_t>(v)].kind == PyKind::Bool &&
            !A[static_cast<size_t>(v)].b)
          throw ConvertError("pth: big-endian checkpoints are not supported");
  }
  const PickleResult main = next(make_storage);
  const PickleResult keys = next(none);
  const PyObj& kl = keys.arena[static_cast<size_t>(keys.root)];
  if (kl.kind != PyKind::List) throw ConvertError("pth: legacy storage key list missing");
  // element type and count of each storage, from the main pickle (the largest view wins)
  std::map<std::string, std::string> dtype_of;
  for (const auto& o : main.arena)
    if (o.kind == PyKind::Storage) dtype_of[o.s] = o.s2;
  std::map<std::string, StorageBytes> storages;
  for (int ki : kl.items) {
    const PyObj& k = keys.arena[static_cast<size_t>(ki)];
    if (k.kind != PyKind::Str) throw ConvertError("pth: legacy storage key is not a string");
    if (pos + 8 > bytes.size()) throw ConvertError("pth: truncated legacy checkpoint (storage '" + k.s + "')");
    uint64_t n = 0;
    for (int b = 7; b >= 0; --b) n = (n << 8) | bytes[pos + static_cast<size_t>(b)];
    pos += 8;
    auto it = dtype_of.find(k.s);
    if (it == dtype_of.end()) throw ConvertError("pth: legacy storage '" + k.s + "' is not used by any tensor");
    const size_t es = elem_size(it->second);
    if (n > (bytes.size() - pos) / es) throw ConvertError("pth: truncated legacy checkpoint (storage '" + k.s + "')");
    StorageBytes sb{it->second, std::vector<uint8_t>(bytes.begin() + static_cast<std::ptrdiff_t>(pos),
                                                      bytes.begin() + static_cast<std::ptrdiff_t>(pos + n * es))};
    pos += n * es;
    storages.emplace(k.s, std::move(sb));
  }
  return collect(main, storages);
}

}  // namespace

TensorMap read_pth(std::span<const uint8_t> bytes) {
  if (detail::looks_like_zip(bytes)) return read_zip(bytes);
  if (!bytes.empty() && bytes[0] == 0x80) return read_legacy(bytes);
  throw ConvertError("pth: not a PyTorch checkpoint (neither a zip archive nor a pickle)");
}

TensorMap read_pth_file(const std::string& path) {
  const auto bytes = contract::read_file_bytes(path);
  try {
    return read_pth(bytes);
  } catch (const ConvertError& e) {
    throw ConvertError(path + ": " + e.what());
  }
}

namespace {

// The reference builds its networks with a width multiplier (VGGQuantized's
// k, MobileNetV2's width_mult) and a class count: the template takes its
// layers' channel counts from the checkpoint's weights, keeping kernels,
// strides and the structure. A depthwise layer stays depthwise. The shapes
// are then checked along the graph (infer_shapes) and tensor by tensor.
void adopt_widths(Graph& g, const TensorMap& state) {
  for (Node& n : g.nodes) {
    if (!n.is_layer()) continue;
    auto it = state.find(n.name + ".weight");
    if (it == state.end()) continue;  // reported as missing later
    const std::vector<int64_t>& s = it->second.shape;
    if (n.op == OpKind::Conv2d && s.size() == 4) {
      if (n.is_depthwise()) {
        if (s[1] != 1) continue;  // not depthwise: the shape check reports it
        n.in_channels = n.out_channels = s[0];
        n.groups = static_cast<int>(s[0]);
      } else {
        n.out_channels = s[0];
        n.in_channels = s[1] * n.groups;
      }
    } else if (n.op == OpKind::Linear && s.size() == 2) {
      n.out_features = s[0];
      n.in_features = s[1];
    }
  }
}

}  // namespace

Checkpoint import_reference(const TensorMap& state, const std::string& arch, const TensorMap* gates,
                            const std::string& source) {
  Checkpoint ck;
  ck.graph = contract::make_graph(arch);
  ck.source = source;
  ck.input_bits = kInputBitsFromPixels;  // the reference runs its first layer on the float input
  adopt_widths(ck.graph, state);
  std::set<std::string> used;
  auto has = [&](const std::string& k) { return state.count(k) != 0; };
  auto scalarize = [](FTensor t) {
    if (t.numel() == 1) t.shape = {1};
    return t;
  };
  auto take = [&](const std::string& from, const std::string& to) {
    auto it = state.find(from);
    if (it == state.end())
      throw ConvertError("reference checkpoint: missing tensor '" + from + "' (needed for " + arch + ")" +
                         (from.find(".gamma_") != std::string::npos && !gates
                              ? "; a checkpoint after fixed-gate fine-tuning needs --gates-from"
                              : ""));
    used.insert(from);
    ck.tensors[to] = it->first.find("quantizer") != std::string::npos ? scalarize(it->second) : it->second;
  };
  // gates (gamma_*) from --gates-from when given; ranges from the main checkpoint, else from there
  auto take_q = [&](const std::string& from, const std::string& to, bool is_gate) {
    const bool from_gates = gates && (is_gate || !has(from));
    if (from_gates) {
      auto it = gates->find(from);
      if (it == gates->end())
        throw ConvertError("--gates-from checkpoint: missing tensor '" + from + "' (needed for " + arch + ")");
      ck.tensors[to] = it->first.find("gamma_2") != std::string::npos ? it->second : scalarize(it->second);
      if (has(from)) used.insert(from);
    } else {
      take(from, to);
      if (from.find("gamma_2") != std::string::npos) ck.tensors[to] = state.at(from);
    }
  };
  auto present = [&](const std::string& k) { return has(k) || (gates && gates->count(k)); };
  const std::set<std::string> outputs(ck.graph.outputs.begin(), ck.graph.outputs.end());

  for (Node& n : ck.graph.nodes) {
    const bool is_out = outputs.count(n.name) != 0;
    const std::string aq = n.name + ".activation_quantizer.quantizer.";
    if (n.is_layer()) {
      take(n.name + ".weight", n.name + ".weight");
      n.bias = has(n.name + ".bias");
      if (n.bias) take(n.name + ".bias", n.name + ".bias");
      n.bn = has(n.name + ".gamma");
      if (n.bn) {
        take(n.name + ".gamma", n.name + ".bn.weight");
        take(n.name + ".beta", n.name + ".bn.bias");
        take(n.name + ".running_mean", n.name + ".bn.running_mean");
        take(n.name + ".running_var", n.name + ".bn.running_var");
      }
      const std::string wq = n.name + ".weight_quantizer.quantizer.";
      n.weight_quant = present(wq + "x_max");
      n.prune = false;
      if (n.weight_quant) {
        take_q(wq + "x_max", n.name + ".wq.x_max", false);
        if (present(wq + "x_min")) {
          const FTensor& xmin = has(wq + "x_min") ? state.at(wq + "x_min") : gates->at(wq + "x_min");
          if (has(wq + "x_min")) used.insert(wq + "x_min");
          if (xmin.numel() != 1 || !(xmin.data[0] < 0.0f))
            throw ConvertError("reference checkpoint: '" + wq + "x_min' is not negative: unsigned weight grids are not supported");
        }
        for (const char* b : {"4", "8", "16", "32"})
          take_q(wq + "gamma_" + b, n.name + ".wq.log_alpha_" + b, true);
        if (present(wq + "gamma_2")) {
          if (is_out) {  // the reference switches pruning off for the logits layer
            if (has(wq + "gamma_2")) used.insert(wq + "gamma_2");
          } else {
            n.prune = true;
            take_q(wq + "gamma_2", n.name + ".wq.log_alpha_2", true);
          }
        }
      }
    }
    if (n.is_layer() || n.op == OpKind::Add) {
      n.act_quant = !is_out && present(aq + "x_max");
      if (is_out) {  // full-precision logits: the quantizer (if saved) is not used
        for (const char* k : {"x_min", "x_max", "gamma_4", "gamma_8", "gamma_16", "gamma_32"})
          if (has(aq + k)) used.insert(aq + k);
      }
      if (n.act_quant) {
        take_q(aq + "x_max", n.name + ".aq.x_max", false);
        if (present(aq + "x_min")) {
          const FTensor& xmin = has(aq + "x_min") ? state.at(aq + "x_min") : gates->at(aq + "x_min");
          if (has(aq + "x_min")) used.insert(aq + "x_min");
          n.act_signed = xmin.numel() == 1 && xmin.data[0] < 0.0f;
        }
        for (const char* b : {"4", "8", "16", "32"}) take_q(aq + "gamma_" + b, n.name + ".aq.log_alpha_" + b, true);
      }
    }
  }
  for (const auto& [k, v] : state) {
    if (used.count(k)) continue;
    const std::string tail = k.size() >= 20 ? k.substr(k.size() - 20) : k;
    if (tail == ".num_batches_tracked") continue;
    throw ConvertError("reference checkpoint: unexpected tensor '" + k + "' (not part of the " + arch + " template)");
  }
  ck.tensors[ck.graph.input.name + ".aq.x_max"] = FTensor{{1}, {default_input_x_max(ck.graph.input)}};
  ck.training = {{"method", "bayesian-bits"}, {"source", "reference"}, {"arch", arch}};
  try {
    validate_checkpoint(ck);
  } catch (const ConvertError& e) {
    throw ConvertError(std::string("reference checkpoint (") + arch + "): " + e.what());
  }
  return ck;
}

Checkpoint read_checkpoint_file(const std::string& path, const std::string& arch, const std::string& gates_from) {
  const auto bytes = contract::read_file_bytes(path);
  const bool is_pth = (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] == 'K') || (!bytes.empty() && bytes[0] == 0x80);
  if (is_pth) {
    if (arch.empty())
      throw ConvertError(path + ": a reference .pth checkpoint needs --arch (lenet5, vgg7, resnet18, mobilenetv2)");
    TensorMap state, gates;
    try {
      state = read_pth(bytes);
    } catch (const ConvertError& e) {
      throw ConvertError(path + ": " + e.what());
    }
    if (!gates_from.empty()) gates = read_pth_file(gates_from);
    return import_reference(state, arch, gates_from.empty() ? nullptr : &gates, path);
  }
  if (!arch.empty() || !gates_from.empty())
    throw ConvertError("--arch and --gates-from apply to reference .pth checkpoints; " + path +
                       " is a bbits checkpoint that carries its own graph");
  try {
    return parse_checkpoint(bytes, path);
  } catch (const contract::CheckpointError& e) {
    throw ConvertError(path + ": " + e.what());
  }
}

}  // namespace bbits::converter
