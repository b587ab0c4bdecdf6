// Cost-model calibration: the per-kernel MAC rates that `bbits calibrate`
// measured on this machine replace the kernels' built-in rates, so plans built
// afterwards choose kernels by this machine's speeds.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "bbits/kernels/simd.h"
#include "bbits/runtime.h"
#include "bbits/runtime/calibration.h"
#include "internal.h"

namespace bbits {

CalibrationResult load_calibration(const std::string& path) {
  const Calibration cal = Calibration::load(path);
  // The calibratable rate is each kernel's convolution (batched GEMM) rate at
  // one thread: take its best measured shape, as the built-in rates do.
  const auto names = kernels::simd_kernel_names();
  const std::set<std::string> known(names.begin(), names.end());
  std::map<std::string, double> best;  // kernel -> MACs per ns
  for (const KernelPeak& p : cal.peaks) {
    if (p.threads != 1 || p.op != "conv2d" || !known.count(p.kernel)) continue;
    double& b = best[p.kernel];
    b = std::max(b, p.macs_per_s / 1e9);
  }
  CalibrationResult r;
  r.path = path;
  r.isa = cal.isa;
  r.cpu = cal.cpu;
  r.created = cal.created;
  for (const auto& [kernel, rate] : best) {
    kernels::set_simd_kernel_rate(kernel, rate);
    r.rates.emplace_back(kernel, rate);
  }
  return r;
}

void reset_calibration() {
  for (const auto& name : kernels::simd_kernel_names()) kernels::set_simd_kernel_rate(name, 0.0);
}

namespace detail {
// BBITS_CALIBRATION names a calibration to apply before the first plan is
// built (once per process); a bad file is an error of that first load.
void apply_env_calibration_once() {
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    const char* p = std::getenv("BBITS_CALIBRATION");
    if (!p || !*p) return;
    try {
      load_calibration(p);
    } catch (const Error& e) {
      error = std::string("BBITS_CALIBRATION: ") + e.what();
    }
  });
  if (!error.empty()) throw Error(error);
}
}  // namespace detail

}  // namespace bbits
