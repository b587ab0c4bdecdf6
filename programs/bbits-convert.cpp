// bbits-convert: checkpoints (bbits safetensors, reference .pth) and synthetic
// networks to the bbits model format.
#include <cstdio>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "bbits/converter/convert.h"
#include "bbits/converter/input.h"
#include "bbits/converter/pth.h"
#include "bbits/converter/synthetic.h"

using namespace bbits::converter;

int main(int argc, char** argv) {
  CLI::App app{"bbits-convert: turn a Bayesian Bits checkpoint into a bbits model (.bbm)"};
  app.set_version_flag("--version", std::string("bbits-convert ") + converter_version());
  std::string input, output, arch, gates_from, synthetic, bits, save_ck, description;
  std::string mean_s, std_s, layout;
  double pixel_scale = 0.0;
  int input_bits = 0;
  uint64_t seed = 1;
  bool json_out = false, quiet = false;
  app.add_option("checkpoint", input, "bbits checkpoint (.safetensors) or reference checkpoint (.pth, needs --arch)");
  app.add_option("-o,--output", output, "model file to write (.bbm)")->required();
  app.add_option("--arch", arch, "graph template for a reference .pth: lenet5, vgg7, resnet18, mobilenetv2");
  app.add_option("--gates-from", gates_from,
                 "reference .pth written before fixed-gate fine-tuning: bit widths and masks come from it");
  app.add_option("--synthetic", synthetic, "random weights for lenet5, vgg7, resnet18 or mobilenetv2 (no checkpoint)");
  app.add_option("--bits", bits, "with --synthetic: w8a8, w4a8, w2a8, w16a16, w32a32 or a JSON file of per-layer bits");
  app.add_option("--seed", seed, "with --synthetic: random seed (default 1)");
  app.add_option("--save-checkpoint", save_ck, "also write the (synthetic or imported) checkpoint as safetensors");
  app.add_option("--description", description, "free text stored in the model's metadata");
  auto* o_mean = app.add_option("--mean", mean_s,
                                 "per-channel mean of the input normalisation, e.g. 0.4914,0.4822,0.4465 "
                                 "(input = (pixel * pixel_scale - mean) / std); overrides the checkpoint or --arch template");
  auto* o_std = app.add_option("--std", std_s, "per-channel std of the input normalisation, e.g. 0.2023,0.1994,0.2010");
  auto* o_ps = app.add_option("--pixel-scale", pixel_scale, "factor from raw pixels to the normalised range (1/255 = 0.00392157)");
  app.add_option("--layout", layout, "layout in which callers pass the input: NCHW (default) or NHWC");
  auto* o_ib = app.add_option("--input-bits", input_bits,
                               "grid of the network input: 8, 16 or 32 (float32); default: 8 for bbits checkpoints "
                               "(what the trainer evaluates); for reference .pth 8 when that grid holds every pixel "
                               "level exactly (x/255), else 16 (docs/CONVERTER.md, \"Input precision\")");
  app.add_flag("--json", json_out, "print a JSON summary instead of the per-layer table");
  app.add_flag("-q,--quiet", quiet, "print nothing on success");
  CLI11_PARSE(app, argc, argv);

  try {
    Checkpoint ck;
    if (!synthetic.empty()) {
      if (!input.empty()) throw ConvertError("--synthetic takes no checkpoint argument");
      if (bits.empty()) throw ConvertError("--synthetic needs --bits (w8a8, w4a8, w2a8, w16a16, w32a32 or a JSON file)");
      if (!arch.empty() || !gates_from.empty()) throw ConvertError("--arch and --gates-from apply to reference .pth checkpoints only");
      ck = make_synthetic(synthetic, parse_bit_config(bits), seed);
    } else {
      if (input.empty()) throw ConvertError("give a checkpoint, or --synthetic ARCH --bits CONFIG");
      if (!bits.empty()) throw ConvertError("--bits applies to --synthetic only");
      ck = read_checkpoint_file(input, arch, gates_from);
    }
    InputOverrides ov;
    if (o_mean->count()) ov.mean = parse_value_list(mean_s, "--mean");
    if (o_std->count()) ov.std = parse_value_list(std_s, "--std");
    if (o_ps->count()) ov.pixel_scale = pixel_scale;
    apply_input_overrides(ck, ov);
    ConvertOptions opts;
    opts.description = description;
    if (o_ib->count()) opts.input_bits = check_input_bits(input_bits);
    if (!layout.empty()) opts.layout = check_input_layout(layout);
    if (!save_ck.empty()) save_checkpoint(ck, save_ck);
    const ConvertReport rep = convert_to_file(ck, output, opts);
    if (json_out) std::cout << report_json(rep).dump(2) << "\n";
    else if (!quiet) std::cout << format_report(rep);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bbits-convert: error: " << e.what() << "\n";
  }
  return 1;
}
