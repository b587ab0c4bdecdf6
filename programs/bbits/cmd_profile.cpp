// bbits profile --arch ARCH [--width W] [--input CxHxW] [--classes N] -o costs.json
// bbits profile --checkpoint CKPT.safetensors -o costs.json
//               [--threads T] [--measure] [--price roofline|measured] [--calibration FILE]
// (bbits::bench::commands::profile; the table: docs/COST_TABLE.md).
#include <memory>

#include "bbits/bench/commands.h"
#include "command.h"

BBITS_COMMAND("profile", "Write the cost table of a network on this CPU (for bbits-train --cost latency)",
              [](CLI::App& sub) {
                auto o = std::make_shared<bbits::bench::commands::ProfileOptions>();
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
                return [o]() -> int { return bbits::bench::commands::profile(*o); };
              });
