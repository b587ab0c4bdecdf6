// The `bbits` program's command registry. Each subcommand is one file
// cmd_NAME.cpp that declares its options and calls the library that does the
// work (bbits/runtime/commands.h, bbits/bench/commands.h); it registers
// itself with BBITS_COMMAND, and main.cpp adds every registered command to
// the CLI11 app. CMakeLists.txt picks up every cmd_*.cpp.
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
