// bbits profile --arch ARCH [--width W] [--input CxHxW] [--classes N] -o costs.json
// bbits profile --checkpoint CKPT.safetensors -o costs.json
//               [--threads T] [--measure] [--price roofline|measured] [--calibration FILE]
// The cost table of a network on this CPU (docs/COST_TABLE.md): per weight
// layer, the time of the kernel the plan chooses over a grid of weight bits,
// input bits and kept channels, plus the operators between the layers.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "bbits/bench/calibration.h"
#include "bbits/bench/cost_profile.h"
#include "bbits/bench/peaks.h"
#include "bbits/contract/checkpoint.h"
#include "bbits/contract/zoo.h"
#include "calibration_options.h"
#include "command.h"

namespace bbits::cli {
namespace {

struct ProfileCliOptions {
  std::string arch, checkpoint, out, input = "1x28x28", calibration;
  double width = 1.0;
  int64_t classes = 10;
  int threads = 1;
  bool measure = false;
  std::string price = "roofline";
  int repeats = 5;
};

std::vector<int64_t> parse_shape(const std::string& s) {
  std::vector<int64_t> r;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t x = s.find('x', pos);
    const std::string part = s.substr(pos, x == std::string::npos ? std::string::npos : x - pos);
    try {
      size_t used = 0;
      const long long v = std::stoll(part, &used);
      if (used != part.size() || v < 1) throw std::invalid_argument("");
      r.push_back(v);
    } catch (const std::exception&) {
      throw std::invalid_argument("--input must look like 1x28x28 (C x H x W, positive), not '" + s + "'");
    }
    if (x == std::string::npos) break;
    pos = x + 1;
  }
  if (r.size() != 3) throw std::invalid_argument("--input must have three dimensions C x H x W, not '" + s + "'");
  return r;
}

int run_profile(const ProfileCliOptions& o) {
  namespace bb = bbits::bench;
  if (o.arch.empty() == o.checkpoint.empty()) throw std::invalid_argument("give either --arch or --checkpoint");
  if (o.repeats < 1) throw std::invalid_argument("--repeats must be at least 1");
  contract::Graph g;
  double width = o.width;
  if (!o.checkpoint.empty()) {
    g = contract::load_checkpoint(o.checkpoint).graph;
  } else {
    // The options bbits-train builds its networks with (Fashion-MNIST by
    // default: 10 classes, pixel / 255, no pruning gates on depthwise layers).
    contract::ZooOptions zo;
    zo.input_shape = parse_shape(o.input);
    zo.num_classes = o.classes;
    zo.width = o.width;
    zo.prune_depthwise = false;
    zo.preprocessing = contract::Preprocessing{};
    g = contract::make_graph(o.arch, zo);
  }
  bb::ProfileOptions po;
  po.threads = o.threads;
  po.width = width;
  if (o.price != "roofline" && o.price != "measured")
    throw std::invalid_argument("--price must be roofline or measured, not '" + o.price + "'");
  po.price_measured = o.price == "measured";
  po.measure = o.measure || po.price_measured;
  po.timing.repeats = o.repeats;
  po.calibration_path = o.calibration.empty() ? bb::default_calibration_path() : o.calibration;
  const char* env = std::getenv("BBITS_CALIBRATION");
  const bool cache = o.calibration.empty() && !(env && *env);
  if (cache && !std::filesystem::exists(po.calibration_path)) {
    fmt::print(stderr,
               "bbits profile: no calibration at {}: running a quick one first (about 20 s, once; it is saved there "
               "and reused; `bbits calibrate` measures a full one)\n",
               po.calibration_path);
    std::vector<int> threads{1};
    if (o.threads > 1) threads.push_back(o.threads);
    const bb::Calibration c = bb::calibrate_machine(
        quick_calibration_options(threads), [](const std::string& s) { fmt::print(stderr, "bbits calibrate: {}\n", s); });
    c.save(po.calibration_path);
  }
  po.calibration = bb::Calibration::load(po.calibration_path);
  const contract::CostTable t =
      bb::profile_graph(g, po, [](const std::string& s) { fmt::print(stderr, "bbits profile: {}\n", s); });
  t.save(o.out);
  std::map<std::string, int> w8, a8;
  for (const auto& L : t.layers) {
    w8[L.name] = 8;
    if (std::find(L.act_bits.begin(), L.act_bits.end(), 8) != L.act_bits.end()) a8[L.name] = 8;
  }
  fmt::print("cost table of {} ({} weight layers, {} other operators) for {} threads on {} ({}): wrote {}\n", g.model,
             t.layers.size(), t.other.size(), t.threads, t.cpu, t.isa, o.out);
  fmt::print("predicted whole model: {:.1f} us at w8a8, {:.1f} us at w32a32, {:.1f} us outside the layers\n",
             t.predict_us(w8, a8, {}), t.predict_us({}, {}, {}), t.other_us());
  return 0;
}

}  // namespace

BBITS_COMMAND("profile", "Write the cost table of a network on this CPU (for bbits-train --cost latency)",
              [](CLI::App& sub) {
                auto o = std::make_shared<ProfileCliOptions>();
                sub.add_option("--arch", o->arch, "Architecture: lenet5, vgg7, resnet18, resnet18-small, mobilenetv2");
                sub.add_option("--checkpoint", o->checkpoint, "Take the graph from this checkpoint (.safetensors)")
                    ->check(CLI::ExistingFile);
                sub.add_option("--width", o->width, "Channel multiplier (as bbits-train --width)")->capture_default_str();
                sub.add_option("--input", o->input, "Input shape C x H x W (as the data set bbits-train uses)")
                    ->capture_default_str();
                sub.add_option("--classes", o->classes, "Classes of the classifier")->capture_default_str();
                sub.add_option("-o,--out", o->out, "Output cost table (JSON)")->required();
                sub.add_option("--threads", o->threads, "Threads the model will run on")->capture_default_str();
                sub.add_flag("--measure", o->measure, "Also time the real kernels at every grid point");
                sub.add_option("--price", o->price,
                               "What the table's times (the trainer's prices) are: roofline (the calibration's "
                               "prediction) or measured (implies --measure)")
                    ->capture_default_str();
                sub.add_option("--repeats", o->repeats, "With --measure: timed samples per point (median)")
                    ->capture_default_str();
                sub.add_option("--calibration", o->calibration,
                               "Calibration JSON (default: $BBITS_CALIBRATION or ~/.cache/bbits/calibration.json; "
                               "made by a quick calibration on first use)");
                return [o]() -> int { return run_profile(*o); };
              });

}  // namespace bbits::cli
