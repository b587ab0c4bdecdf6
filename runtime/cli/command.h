// The `bbits` CLI's command registry. Each subcommand lives in its own
// cmd_NAME.cpp and registers itself with BBITS_COMMAND; main.cpp adds every
// registered command to the CLI11 app. New commands (cmd_bench.cpp,
// cmd_calibrate.cpp, ...) need no change anywhere else: runtime/cli/CMakeLists.txt
// picks up every cmd_*.cpp.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace bbits::cli {

// Adds the command's options to `sub` and returns the function that runs it
// (called after parsing; returns the process exit code). Errors are reported
// by throwing (bbits::Error or std::exception): main prints "bbits: error: ..."
// and exits with 1.
using Setup = std::function<std::function<int()>(CLI::App& sub)>;

struct Command {
  std::string name;
  std::string help;
  Setup setup;
};

std::vector<Command>& registry();

struct Register {
  explicit Register(Command c) { registry().push_back(std::move(c)); }
};

}  // namespace bbits::cli

#define BBITS_CLI_CONCAT2(a, b) a##b
#define BBITS_CLI_CONCAT(a, b) BBITS_CLI_CONCAT2(a, b)
// BBITS_COMMAND("inspect", "Show the layers of a model", setup_fn)
#define BBITS_COMMAND(name, help, setup) \
  static ::bbits::cli::Register BBITS_CLI_CONCAT(bbits_cli_command_, __LINE__){::bbits::cli::Command{name, help, setup}}
