// Internal: the BBITS_CALIBRATION hook of model loading (calibration.cpp).
#pragma once

namespace bbits::detail {
// Applies the calibration named by BBITS_CALIBRATION once per process; throws
// bbits::Error (on this and every later call) if that file is bad.
void apply_env_calibration_once();
}  // namespace bbits::detail
