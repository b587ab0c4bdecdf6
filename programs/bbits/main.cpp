// bbits: the command line of the runtime and the bench. Subcommands register
// themselves (command.h); this file only wires them into CLI11.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <vector>

#include "bbits/runtime.h"
#include "command.h"

std::vector<bbits::cli::Command>& bbits::cli::registry() {
  static std::vector<Command> r;
  return r;
}

int main(int argc, char** argv) {
  CLI::App app{"bbits: run mixed-precision integer models (Bayesian Bits)"};
  app.set_version_flag("--version", std::string("bbits ") + bbits::version());
  app.require_subcommand(1);
  auto& cmds = bbits::cli::registry();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::map<CLI::App*, std::function<int()>> runs;
  for (const auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    runs[sub] = c.setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : runs)
      if (sub->parsed()) return run();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "bbits: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
