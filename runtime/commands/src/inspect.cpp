// bbits inspect: one row per layer and the totals, as a table or JSON. The
// text layout and the JSON keys are documented in docs/RUNTIME.md and kept
// stable for scripts.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "bbits/runtime/commands.h"
#include "common.h"

namespace bbits::commands {
namespace {

std::string quant_str(const TensorInfo& t) {
  if (t.bits == 32) return "float32";
  std::string s = fmt::format("{}-bit {}", t.bits, t.is_signed ? "signed" : "unsigned");
  if (t.scale.size() == 1) s += fmt::format(" (scale {:.6g})", t.scale[0]);
  return s;
}

std::string rel_str(int64_t num, int64_t den) {
  if (den <= 0) return "-";
  return fmt::format("{:.4f}", static_cast<double>(num) / static_cast<double>(den));
}

nlohmann::json tensor_json(const TensorInfo& t) {
  nlohmann::json j;
  j["name"] = t.name;
  j["shape"] = t.shape;
  j["bits"] = t.bits;
  j["signed"] = t.is_signed;
  j["scale"] = t.scale;
  return j;
}

// One line on stderr per layer whose stored costs differ from the ones the
// runtime computes from its shapes (a file written by a faulty or hostile
// writer); the report shows the computed figures.
void warn_stored_costs(const ModelInfo& info) {
  for (size_t i = 0; i < info.layers.size(); ++i) {
    const LayerInfo& L = info.layers[i];
    if (L.stored_costs_agree()) continue;
    std::string what;
    auto add = [&](const char* name, int64_t stored, int64_t computed) {
      if (stored == computed) return;
      what += fmt::format("{}{} {} (computed {})", what.empty() ? "" : ", ", name, grouped(stored), grouped(computed));
    };
    add("MACs", L.stored_macs, L.macs);
    add("unpruned MACs", L.stored_macs_unpruned, L.macs_unpruned);
    add("weight bytes", L.stored_weight_bytes, L.weight_bytes);
    add("BOPs", L.stored_bops, L.bops);
    std::fflush(stdout);
    fmt::print(stderr, "bbits: warning: layer {} '{}': the file states {}; shown: the computed figures\n", i, L.name,
               what);
  }
}

int print_json(const InspectOptions& o, const Model& model) {
  const ModelInfo& info = model.info();
  nlohmann::json j;
  j["file"] = o.model;
  j["file_size"] = info.file_size;
  j["schema_version"] = info.schema_version;
  const MetadataInfo& md = info.metadata;
  j["metadata"] = {{"producer", md.producer},
                   {"source_checkpoint", md.source_checkpoint},
                   {"description", md.description},
                   {"method", md.method},
                   {"mu", md.mu},
                   {"dataset", md.dataset},
                   {"epochs", md.epochs},
                   {"arch", md.arch},
                   {"accuracy", md.accuracy},
                   {"relative_bops", md.relative_bops}};
  const PreprocessInfo& p = info.preprocess;
  if (p.present)
    j["preprocess"] = {{"layout", p.layout}, {"channels", p.channels}, {"height", p.height}, {"width", p.width},
                       {"pixel_scale", p.pixel_scale}, {"mean", p.mean}, {"std", p.std}};
  else
    j["preprocess"] = nullptr;
  j["inputs"] = nlohmann::json::array();
  for (size_t i = 0; i < model.num_inputs(); ++i) j["inputs"].push_back(tensor_json(model.input(i)));
  j["outputs"] = nlohmann::json::array();
  for (size_t i = 0; i < model.num_outputs(); ++i) j["outputs"].push_back(tensor_json(model.output(i)));
  j["layers"] = nlohmann::json::array();
  for (size_t i = 0; i < info.layers.size(); ++i) {
    const LayerInfo& L = info.layers[i];
    nlohmann::json l;
    l["index"] = i;
    l["name"] = L.name;
    l["op"] = L.op;
    l["activation"] = L.activation;
    l["input_shape"] = L.input_shape;
    l["output_shape"] = L.output_shape;
    l["weight_bits"] = L.weight_bits < 0 ? nlohmann::json(nullptr) : nlohmann::json(L.weight_bits);
    l["act_bits"] = L.act_bits;
    l["out_bits"] = L.out_bits;
    l["channels_kept"] = L.channels_kept;
    l["channels_total"] = L.channels_total;
    l["keep_mask"] = L.keep_mask;
    l["macs"] = L.macs;
    l["macs_unpruned"] = L.macs_unpruned;
    l["weight_bytes"] = L.weight_bytes;
    l["bops"] = L.bops;
    l["bops_fp32"] = L.bops_fp32;
    l["relative_bops"] = L.bops_fp32 > 0 ? nlohmann::json(double(L.bops) / double(L.bops_fp32)) : nlohmann::json(nullptr);
    l["kernel"] = L.kernel;
    l["kernel_reason"] = L.kernel_reason;
    j["layers"].push_back(std::move(l));
  }
  j["totals"] = {{"macs", info.macs},
                 {"macs_unpruned", info.macs_unpruned},
                 {"weight_bytes", info.weight_bytes},
                 {"bias_bytes", info.bias_bytes},
                 {"model_bytes", info.weight_bytes + info.bias_bytes},
                 {"float32_bytes", info.float32_bytes},
                 {"relative_size", info.relative_size()},
                 {"bops", info.bops},
                 {"bops_fp32", info.bops_fp32},
                 {"relative_bops", info.relative_bops()}};
  j["plan"] = {{"isa", model.isa()},
               {"arena_bytes", model.arena_bytes()},
               {"arena_bytes_unshared", model.arena_bytes_unshared()}};
  fmt::print("{}\n", j.dump(2));
  return 0;
}

int print_text(const InspectOptions& o, const Model& model) {
  const ModelInfo& info = model.info();
  const MetadataInfo& md = info.metadata;
  fmt::print("model       {}\n", o.model);
  fmt::print("format      bbits schema {}, {} bytes\n", info.schema_version, info.file_size);
  if (!md.producer.empty()) fmt::print("producer    {}\n", md.producer);
  if (!md.source_checkpoint.empty()) fmt::print("source      {}\n", md.source_checkpoint);
  if (!md.description.empty()) fmt::print("description {}\n", md.description);
  if (!md.method.empty() || !md.arch.empty()) {
    std::string t = fmt::format("method {}", md.method.empty() ? "-" : md.method);
    if (!md.arch.empty()) t += ", arch " + md.arch;
    if (md.method == "bayesian-bits") t += fmt::format(", mu {:g}", md.mu);
    if (!md.dataset.empty()) t += ", dataset " + md.dataset;
    if (md.epochs > 0) t += fmt::format(", epochs {}", md.epochs);
    if (md.accuracy >= 0) t += fmt::format(", accuracy {:.4f}", md.accuracy);
    if (md.relative_bops >= 0) t += fmt::format(", relative BOPs {:.4f}", md.relative_bops);
    fmt::print("training    {}\n", t);
  }
  const PreprocessInfo& p = info.preprocess;
  if (p.present) {
    fmt::print("preprocess  {} {}x{}x{}, pixel_scale {:.6g}, mean [{:g}], std [{:g}]\n", p.layout, p.channels,
               p.height, p.width, p.pixel_scale, fmt::join(p.mean, ", "), fmt::join(p.std, ", "));
  } else {
    fmt::print("preprocess  none recorded\n");
  }
  for (size_t i = 0; i < model.num_inputs(); ++i)
    fmt::print("input       {} {} {}\n", model.input(i).name, shape_str(model.input(i).shape), quant_str(model.input(i)));
  for (size_t i = 0; i < model.num_outputs(); ++i)
    fmt::print("output      {} {} {}\n", model.output(i).name, shape_str(model.output(i).shape),
               quant_str(model.output(i)));
  fmt::print("\n");

  size_t name_w = 5;
  for (const LayerInfo& L : info.layers) name_w = std::max(name_w, L.name.size());
  name_w = std::min<size_t>(name_w, 32);
  fmt::print("{:>3}  {:<{}}  {:<20}  {:<14}  {:<14}  {:>5}  {:>5}  {:>9}  {:>12}  {:>10}  {:>15}  {:>8}\n", "#", "layer",
             name_w, "op", "input", "output", "wbits", "abits", "kept", "MACs", "weight B", "BOPs", "rel BOPs");
  for (size_t i = 0; i < info.layers.size(); ++i) {
    const LayerInfo& L = info.layers[i];
    const bool w = L.weight_bits >= 0;
    const std::string op = L.activation != "none" ? L.op + "+" + L.activation : L.op;
    fmt::print("{:>3}  {:<{}}  {:<20}  {:<14}  {:<14}  {:>5}  {:>5}  {:>9}  {:>12}  {:>10}  {:>15}  {:>8}\n", i,
               L.name.substr(0, name_w), name_w, op, shape_str(L.input_shape), shape_str(L.output_shape),
               w ? std::to_string(L.weight_bits) : "-", L.act_bits < 0 ? "-" : std::to_string(L.act_bits),
               w ? fmt::format("{}/{}", L.channels_kept, L.channels_total) : "-", w ? grouped(L.macs) : "-",
               w ? grouped(L.weight_bytes) : "-", w ? grouped(L.bops) : "-", w ? rel_str(L.bops, L.bops_fp32) : "-");
  }
  fmt::print("{:>3}  {:<{}}  {:<20}  {:<14}  {:<14}  {:>5}  {:>5}  {:>9}  {:>12}  {:>10}  {:>15}  {:>8}\n", "", "total",
             name_w, "", "", "", "", "", "", grouped(info.macs), grouped(info.weight_bytes), grouped(info.bops),
             rel_str(info.bops, info.bops_fp32));
  fmt::print("\n");
  const int64_t model_bytes = info.weight_bytes + info.bias_bytes;
  fmt::print("model bytes     {} ({} weights + {} biases) vs {} float32: {:.4f} ({:.1f}x smaller)\n",
             grouped(model_bytes), grouped(info.weight_bytes), grouped(info.bias_bytes), grouped(info.float32_bytes),
             info.relative_size(), model_bytes > 0 ? double(info.float32_bytes) / double(model_bytes) : 0.0);
  fmt::print("MACs            {} of {} unpruned\n", grouped(info.macs), grouped(info.macs_unpruned));
  fmt::print("BOPs            {} of {} at 32/32\n", grouped(info.bops), grouped(info.bops_fp32));
  fmt::print("relative BOPs   {:.6f}\n", info.relative_bops());
  fmt::print("arena           {} bytes ({} without reuse)\n", grouped(static_cast<int64_t>(model.arena_bytes())),
             grouped(static_cast<int64_t>(model.arena_bytes_unshared())));
  if (o.kernels) {
    fmt::print("\nkernels (isa {}):\n", model.isa());
    for (size_t i = 0; i < info.layers.size(); ++i) {
      const LayerInfo& L = info.layers[i];
      fmt::print("{:>3}  {:<{}}  {}\n", i, L.name.substr(0, name_w), name_w, L.kernel);
      fmt::print("     {:<{}}  {}\n", "", name_w, L.kernel_reason);
    }
  }
  return 0;
}

}  // namespace

int inspect(const InspectOptions& o) {
  const auto model = Model::load(o.model);
  warn_stored_costs(model->info());
  return o.json ? print_json(o, *model) : print_text(o, *model);
}

}  // namespace bbits::commands
