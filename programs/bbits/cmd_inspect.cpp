// bbits inspect MODEL [--json] [--kernels] (bbits::commands::inspect; the
// layout and the JSON keys: docs/RUNTIME.md).
#include <memory>

#include "bbits/runtime/commands.h"
#include "command.h"

BBITS_COMMAND("inspect", "Show a model's layers, bit widths, pruning and costs", [](CLI::App& sub) {
  auto o = std::make_shared<bbits::commands::InspectOptions>();
  sub.add_option("model", o->model, "Model file (.bbm)")->required();
  sub.add_flag("--json", o->json, "Print JSON for scripts");
  sub.add_flag("--kernels", o->kernels, "Also list the kernel chosen for each layer on this CPU and why");
  return [o]() -> int { return bbits::commands::inspect(*o); };
});
