// Cost-model calibration: the per-kernel MAC rates that `bbits calibrate`
// measured on this machine replace the kernels' built-in rates, so plans built
// afterwards choose kernels by this machine's speeds.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "bbits/kernels/simd.h"
#include "bbits/runtime.h"
#include "calibration.h"

namespace bbits {

CalibrationResult load_calibration(const std::string& path) {
  const std::string who = "calibration '" + path + "'";
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(who + ": cannot open the file");
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const std::exception& e) {
    throw Error(who + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw Error(who + ": not a calibration (expected a JSON object)");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int>() != 1)
    throw Error(who + ": unsupported calibration version (expected 1, as written by `bbits calibrate`)");
  if (!j.contains("peaks") || !j["peaks"].is_array()) throw Error(who + ": no \"peaks\" array");

  // The calibratable rate is each kernel's convolution (batched GEMM) rate at
  // one thread: take its best measured shape, as the built-in rates do.
  const auto names = kernels::simd_kernel_names();
  const std::set<std::string> known(names.begin(), names.end());
  std::map<std::string, double> best;  // kernel -> MACs per ns
  size_t i = 0;
  for (const auto& p : j["peaks"]) {
    const std::string where = who + ": peaks[" + std::to_string(i++) + "]";
    if (!p.is_object()) throw Error(where + " is not an object");
    for (const char* key : {"kernel", "op", "threads", "macs_per_s"})
      if (!p.contains(key)) throw Error(where + " has no \"" + key + "\"");
    if (!p["kernel"].is_string() || !p["op"].is_string() || !p["threads"].is_number_integer() ||
        !p["macs_per_s"].is_number())
      throw Error(where + " has a field of the wrong type");
    const double rate = p["macs_per_s"].get<double>();
    if (!std::isfinite(rate) || rate <= 0.0) throw Error(where + ": macs_per_s is not a positive number");
    const std::string kernel = p["kernel"].get<std::string>();
    if (p["threads"].get<int>() != 1 || p["op"].get<std::string>() != "conv2d" || !known.count(kernel)) continue;
    double& b = best[kernel];
    b = std::max(b, rate / 1e9);
  }
  CalibrationResult r;
  r.path = path;
  r.isa = j.value("isa", std::string());
  r.cpu = j.value("cpu", std::string());
  r.created = j.value("created", std::string());
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
