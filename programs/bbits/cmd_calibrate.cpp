// bbits calibrate [--out FILE] [--threads 1,2] [--quick] [--filter TEXT]
// (bbits::bench::commands::calibrate; layout of the file: docs/BENCH.md).
#include <memory>

#include "bbits/bench/commands.h"
#include "command.h"

BBITS_COMMAND("calibrate", "Measure bandwidth per cache level and kernel peaks for the roofline", [](CLI::App& sub) {
  auto o = std::make_shared<bbits::bench::commands::CalibrateOptions>();
  sub.add_option("--out,-o", o->out, "Output JSON (default: $BBITS_CALIBRATION or ~/.cache/bbits/calibration.json)");
  sub.add_option("--threads", o->threads, "Thread counts to calibrate, e.g. 1,2")->delimiter(',');
  sub.add_option("--repeats", o->repeats, "Timed samples per kernel (median kept)");
  sub.add_option("--filter", o->filter, "Only kernels whose name contains this text");
  sub.add_flag("--quick", o->quick, "Few samples and small probes (seconds; for tests, not for measurements)");
  sub.add_flag("--no-onednn", o->no_onednn, "Skip the oneDNN baseline peaks");
  return [o]() -> int { return bbits::bench::commands::calibrate(*o); };
});
