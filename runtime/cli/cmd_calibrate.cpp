// bbits calibrate [--out FILE] [--threads 1,2] [--quick] [--filter TEXT]:
// measures this machine's read bandwidth per cache level and the peak MAC
// throughput of every kernel and of the oneDNN baselines, and saves them as
// JSON (default $BBITS_CALIBRATION or ~/.cache/bbits/calibration.json) for
// `bbits bench`'s roofline. Layout: docs/BENCH.md.
#include <fmt/format.h>

#include <memory>

#include "bbits/bench/calibration.h"
#include "bbits/bench/peaks.h"
#include "bbits/bench/stats.h"
#include "bbits/kernels/cpu.h"
#include "calibration_options.h"
#include "command.h"

namespace bbits::cli {
namespace {

struct CalibrateOptions {
  std::string out;
  std::vector<int> threads = {1, 2};
  bool quick = false;
  bool no_onednn = false;
  std::string filter;
  int repeats = 15;
};

int run_calibrate(const CalibrateOptions& o) {
  namespace bb = bbits::bench;
  for (int t : o.threads)
    if (t < 1 || t > 256) throw std::invalid_argument(fmt::format("--threads: {} is out of range 1..256", t));
  if (o.repeats < 1) throw std::invalid_argument("--repeats must be at least 1");
  const std::string path = o.out.empty() ? bb::default_calibration_path() : o.out;
  bb::MachineCalibrationOptions mo;
  if (o.quick) {
    mo = quick_calibration_options(o.threads);
  } else {
    mo.bandwidth.threads = o.threads;
    mo.peaks.threads = o.threads;
    mo.peaks.timing.repeats = o.repeats;
  }
  mo.peaks.onednn = !o.no_onednn;
  mo.peaks.filter = o.filter;
  const bb::Calibration c = bb::calibrate_machine(mo, [](const std::string& s) { fmt::print("{}\n", s); });
  c.save(path);
  fmt::print("calibration written to {} ({} bandwidth levels, {} kernel peaks)\n", path, c.bandwidth.size(),
             c.peaks.size());
  return 0;
}

}  // namespace

BBITS_COMMAND("calibrate", "Measure bandwidth per cache level and kernel peaks for the roofline", [](CLI::App& sub) {
  auto o = std::make_shared<CalibrateOptions>();
  sub.add_option("--out,-o", o->out, "Output JSON (default: $BBITS_CALIBRATION or ~/.cache/bbits/calibration.json)");
  sub.add_option("--threads", o->threads, "Thread counts to calibrate, e.g. 1,2")->delimiter(',');
  sub.add_option("--repeats", o->repeats, "Timed samples per kernel (median kept)");
  sub.add_option("--filter", o->filter, "Only kernels whose name contains this text");
  sub.add_flag("--quick", o->quick, "Few samples and small probes (seconds; for tests, not for measurements)");
  sub.add_flag("--no-onednn", o->no_onednn, "Skip the oneDNN baseline peaks");
  return [o]() -> int { return run_calibrate(*o); };
});

}  // namespace bbits::cli
