// The dynsim command line. Subcommands are thin mains over the library; exceptions become
// sysexits-style exit codes (engine/errors.h): 64 usage, 65 bad data, 66 missing input,
// 74 I/O, 75 preempted, 78 bad config.
#include <CLI/CLI.hpp>
#include <iostream>

#include "engine/errors.h"
#include "tools/cli_info.h"

int main(int argc, char** argv) {
  CLI::App app{"dynsim: continuous-time recurrent convolutional models of the visual system"};
  app.require_subcommand(1);
  app.set_version_flag("--version", DYNSIM_VERSION);
  bool json = false;
  auto* info = app.add_subcommand("info", "version, backends, devices and precision modes");
  info->add_flag("--json", json, "machine-readable output");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : int(dynsim::ExitCode::Usage);
  }
  try {
    if (info->parsed()) return dynsim::cli::run_info(std::cout, json);
  } catch (const dynsim::Error& e) {
    std::cerr << "dynsim: error: " << e.what() << "\n";
    return int(e.code());
  } catch (const std::exception& e) {
    std::cerr << "dynsim: internal error: " << e.what() << "\n";
    return int(dynsim::ExitCode::Software);
  }
  return 0;
}
