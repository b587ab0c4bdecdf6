#include "bbits/converter/convert.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "bbits/converter/passes.h"

#ifndef BBITS_VERSION
#define BBITS_VERSION "0.1.0"
#endif

namespace bbits::converter {

using nlohmann::json;

const char* converter_version() { return BBITS_VERSION; }

namespace {

std::string num(double v, int prec) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(prec);
  os << v;
  return os.str();
}

std::string human(int64_t v) {
  const char* unit[] = {"", "K", "M", "G", "T"};
  double x = static_cast<double>(v);
  int u = 0;
  while (std::fabs(x) >= 1000.0 && u < 4) {
    x /= 1000.0;
    ++u;
  }
  return u == 0 ? std::to_string(v) : num(x, x < 10 ? 2 : (x < 100 ? 1 : 0)) + unit[u];
}

}  // namespace

ConvertReport build_model(const Checkpoint& ck, bbits::format::ModelWriter& writer, const ConvertOptions& opts) {
  passes::Conversion c = passes::check_graph(ck, opts);
  passes::decide_gates(c);
  passes::fold_batch_norm(c);
  passes::quantize_weights(c);
  passes::find_constant_channels(c);
  passes::choose_removed_channels(c);
  return passes::write_model(c, writer, opts);
}

ConvertReport convert_to_file(const Checkpoint& ck, const std::string& path, const ConvertOptions& opts) {
  bbits::format::ModelWriter w;
  ConvertReport r = build_model(ck, w, opts);
  try {
    w.write(path);
  } catch (const bbits::format::FormatError& e) {
    throw ConvertError(std::string("the converted model failed validation: ") + e.what());
  }
  std::error_code ec;
  r.file_bytes = static_cast<int64_t>(std::filesystem::file_size(path, ec));
  r.output = path;
  return r;
}

std::string describe_input(const InputReport& in) {
  std::ostringstream os;
  auto list = [](const std::vector<float>& v) {
    std::string t;
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) t += ',';
      t += num(v[i], 4);
    }
    return t;
  };
  std::string shp;
  for (size_t d = 0; d < in.shape.size(); ++d) {
    if (d) shp += 'x';
    shp += std::to_string(in.shape[d]);
  }
  os << "input: " << shp << " " << in.layout << ", (pixel * " << num(in.pixel_scale, 8) << " - mean) / std, mean "
     << list(in.mean) << ", std " << list(in.std) << "; ";
  if (in.bits == 32)
    os << "float32 (not quantized)";
  else
    os << in.bits << "-bit " << (in.is_signed ? "signed" : "unsigned") << " grid over [" << num(in.is_signed ? -in.x_max : 0.0, 4)
       << ", " << num(in.x_max, 4) << "]";
  return os.str();
}

std::string format_report(const ConvertReport& r) {
  std::ostringstream os;
  os << describe_input(r.input) << "\n";
  auto pad = [](std::string s, size_t w, bool left = true) {
    if (s.size() >= w) return s + " ";
    return left ? s + std::string(w - s.size(), ' ') : std::string(w - s.size(), ' ') + s;
  };
  size_t wname = 5;
  for (const auto& row : r.rows) wname = std::max(wname, row.name.size() + 1);
  os << pad("layer", wname) << pad("op", 15) << pad("output", 18) << pad("w", 4, false) << pad("a_in", 5, false)
     << pad("a_out", 6, false) << pad("kept", 12, false) << pad("MACs", 9, false) << pad("weights", 9, false)
     << pad("BOPs", 9, false) << "\n";
  for (const auto& row : r.rows) {
    std::string shp;
    for (size_t d = 1; d < row.out_shape.size(); ++d) {
      if (d > 1) shp += 'x';
      shp += std::to_string(row.out_shape[d]);
    }
    const bool layer = row.weight_bits > 0;
    std::string kept = layer ? std::to_string(row.kept) + "/" + std::to_string(row.channels) : "-";
    if (layer && row.zero_rows > 0) kept += "*";
    os << pad(row.name, wname) << pad(row.op, 15) << pad(shp, 18) << pad(layer ? std::to_string(row.weight_bits) : "-", 4, false)
       << pad(row.in_bits == 32 ? "f32" : std::to_string(row.in_bits), 5, false)
       << pad(row.out_bits == 32 ? "f32" : std::to_string(row.out_bits), 6, false) << pad(kept, 12, false)
       << pad(layer ? human(row.macs) : "-", 9, false) << pad(layer ? human(row.weight_bytes) + "B" : "-", 9, false)
       << pad(layer ? human(row.bops) : "-", 9, false) << "\n";
  }
  os << "total: " << human(r.macs) << " MACs (" << human(r.macs_unpruned) << " unpruned), " << human(r.weight_bytes)
     << "B weights, " << human(r.bops) << " BOPs, relative BOPs " << num(100.0 * r.relative_bops, 3) << "% of 32/32";
  if (r.channels_removed) os << ", " << r.channels_removed << " pruned channels removed";
  os << "\n";
  bool zero_rows = false;
  for (const auto& row : r.rows) zero_rows = zero_rows || row.zero_rows > 0;
  if (zero_rows) os << "* some pruned channels kept as zero rows (a residual add, or zero padding and a non-zero constant, forbids removal)\n";
  if (!r.output.empty()) os << "wrote " << r.output << " (" << r.file_bytes << " bytes)\n";
  return os.str();
}

json report_json(const ConvertReport& r) {
  json layers = json::array();
  for (const auto& row : r.rows) {
    json j = {{"name", row.name},     {"op", row.op},       {"output_shape", row.out_shape},
              {"in_bits", row.in_bits}, {"out_bits", row.out_bits}};
    if (row.weight_bits > 0) {
      j["weight_bits"] = row.weight_bits;
      j["channels"] = row.channels;
      j["kept"] = row.kept;
      j["channels_removed"] = row.channels_removed;
      j["zero_rows"] = row.zero_rows;
      j["macs"] = row.macs;
      j["macs_unpruned"] = row.macs_unpruned;
      j["weight_bytes"] = row.weight_bytes;
      j["bops"] = row.bops;
    }
    layers.push_back(j);
  }
  const json input = {{"shape", r.input.shape},         {"layout", r.input.layout}, {"pixel_scale", r.input.pixel_scale},
                      {"mean", r.input.mean},           {"std", r.input.std},       {"bits", r.input.bits},
                      {"signed", r.input.is_signed},    {"x_max", r.input.x_max}};
  return {{"model", r.model},
          {"input", input},
          {"output", r.output},
          {"file_bytes", r.file_bytes},
          {"macs", r.macs},
          {"macs_unpruned", r.macs_unpruned},
          {"weight_bytes", r.weight_bytes},
          {"bops", r.bops},
          {"bops_fp32", r.bops_fp32},
          {"relative_bops", r.relative_bops},
          {"channels_removed", r.channels_removed},
          {"layers", layers}};
}

}  // namespace bbits::converter
