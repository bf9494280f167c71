// The dynsim command line. Subcommands are thin mains over the library; exceptions become
// sysexits-style exit codes (engine/core/errors.h): 64 usage, 65 bad data, 66 missing input,
// 74 I/O, 75 preempted, 78 bad config.
#include <CLI/CLI.hpp>
#include <iostream>

#include "engine/core/errors.h"
#include "tools/cli_info.h"
#include "tools/cli_retina.h"
#include "tools/cli_scan.h"
#include "tools/cli_simulate.h"
#include "tools/cli_solvers.h"
#include "tools/cli_train.h"

int main(int argc, char** argv) {
  CLI::App app{"dynsim: continuous-time recurrent convolutional models of the visual system"};
  app.require_subcommand(1);
  app.set_version_flag("--version", DYNSIM_VERSION);

  bool json = false;
  auto* info = app.add_subcommand("info", "version, backends, devices and precision modes");
  info->add_flag("--json", json, "machine-readable output");

  dynsim::cli::SimulateArgs sim;
  auto* simulate = app.add_subcommand(
      "simulate", "run a model on a stimulus and record its responses (defaults: DyRCNNx4, "
                  "64x64 grating, 20 steps)");
  simulate->add_option("config", sim.config, "TOML config file (optional)")->check(CLI::ExistingFile);
  simulate->add_option("--set", sim.overrides, "override a config key: key=value (repeatable)");
  auto shortcut = [&](const char* flag, const char* key, const char* help) {
    simulate->add_option_function<std::string>(
        flag, [&sim, key](const std::string& v) { sim.overrides.push_back(std::string(key) + "=" + v); },
        help);
  };
  shortcut("--preset", "model.preset", "DyRCNNx2 | DyRCNNx4 | DyRCNNx8 | custom");
  shortcut("--device", "simulation.device", "auto | cpu | cuda");
  shortcut("--steps", "simulation.steps", "recorded time steps");
  shortcut("--idle", "simulation.idle_steps", "idle steps before the stimulus");
  shortcut("--batch", "simulation.batch", "samples");
  shortcut("--dt", "dynamics.dt", "integration step in ms");
  shortcut("--tau", "dynamics.tau", "time constant in ms");
  shortcut("--solver", "dynamics.solver",
           "euler | rk4 | exp | heun | midpoint | rk4-classic | bs32 | dopri5 | ...");
  shortcut("--record", "simulation.record", "layer | full | none");
  shortcut("--stimulus", "stimulus.kind", "grating | flash | noise | image | npy");
  shortcut("--stimulus-path", "stimulus.path", "file for image / npy stimuli");
  shortcut("--contrast", "stimulus.contrast", "stimulus contrast");
  shortcut("--onset", "stimulus.onset", "first stimulus step");
  shortcut("--duration", "stimulus.duration", "stimulus steps (-1: to the end)");
  shortcut("--weights", "model.weights", "safetensors weights (DynVision names)");
  shortcut("--output,-o", "simulation.output", "output folder");
  simulate->add_flag("--overwrite", sim.overwrite, "replace an existing output folder");
  simulate->add_flag("--quiet,-q", sim.quiet, "no summary on stdout");

  dynsim::cli::ValidateArgs val;
  auto* validate = app.add_subcommand("validate", "check a config and print the graph it builds");
  validate->add_option("config", val.config, "TOML config file")->check(CLI::ExistingFile);
  validate->add_option("--set", val.overrides, "override a config key: key=value (repeatable)");
  validate->add_flag("--keys", val.keys, "list every config key with its type and default");
  validate->add_flag("--train", val.train, "check a `dynsim train` config (--keys: list its keys)");

  dynsim::cli::TrainArgs tr;
  auto* train = app.add_subcommand(
      "train", "train a model with reverse mode through time (defaults: DyRCNNx4 on "
               "Fashion-MNIST); SIGTERM/SIGUSR1 checkpoint and exit 75");
  train->add_option("config", tr.config, "TOML config file (optional)")->check(CLI::ExistingFile);
  train->add_option("--set", tr.overrides, "override a config key: key=value (repeatable)");
  train->add_flag("--resume", tr.resume, "continue from the newest valid checkpoint");
  train->add_option("--resume-from", tr.resume_from, "continue from this checkpoint directory");
  train->add_flag("--overwrite", tr.overwrite, "replace an earlier training output");
  train->add_flag("--quiet,-q", tr.quiet, "no progress output");
  auto train_shortcut = [&](const char* flag, const char* key, const char* help) {
    train->add_option_function<std::string>(
        flag, [&tr, key](const std::string& v) { tr.overrides.push_back(std::string(key) + "=" + v); },
        help);
  };
  train_shortcut("--preset", "model.preset", "DyRCNNx2 | DyRCNNx4 | DyRCNNx8 | custom");
  train_shortcut("--epochs", "train.epochs", "epochs");
  train_shortcut("--batch", "train.batch", "samples per micro-batch");
  train_shortcut("--steps", "train.steps", "time steps per sample");
  train_shortcut("--lr", "optimizer.lr", "base learning rate");
  train_shortcut("--output,-o", "train.output", "output folder");

  dynsim::cli::EvalArgs ev;
  auto* eval = app.add_subcommand("eval", "accuracy per time step on a split, as CSV");
  eval->add_option("config", ev.config, "TOML config file (the training's config.toml)")
      ->check(CLI::ExistingFile);
  eval->add_option("--set", ev.overrides, "override a config key: key=value (repeatable)");
  eval->add_option("--checkpoint", ev.checkpoint, "a checkpoint directory");
  eval->add_option("--weights", ev.weights, "a safetensors file (DynVision names)");
  eval->add_option("--output,-o", ev.output, "CSV file (default <train.output>/eval_<split>.csv)");
  eval->add_option("--split", ev.split, "test | train");
  eval->add_flag("--quiet,-q", ev.quiet, "no summary");

  dynsim::cli::RetinaArgs* retina = dynsim::cli::add_retina(app);
  dynsim::cli::SolversArgs solv;
  CLI::App* solvers = dynsim::cli::add_solvers(app, solv);
  dynsim::cli::ScanArgs* scan = dynsim::cli::add_scan(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    if (rc == 0) return 0;
    // A config file that does not exist is a missing input, not a usage error.
    if (dynamic_cast<const CLI::ValidationError*>(&e) &&
        std::string(e.what()).find("File does not exist") != std::string::npos)
      return int(dynsim::ExitCode::NoInput);
    return int(dynsim::ExitCode::Usage);
  }
  try {
    if (info->parsed()) return dynsim::cli::run_info(std::cout, json);
    if (simulate->parsed()) return dynsim::cli::run_simulate(sim);
    if (validate->parsed()) return dynsim::cli::run_validate(val);
    if (train->parsed()) return dynsim::cli::run_train(tr);
    if (eval->parsed()) return dynsim::cli::run_eval(ev);
    if (dynsim::cli::retina_parsed(retina)) return dynsim::cli::run_retina(*retina);
    if (dynsim::cli::scan_parsed(scan)) return dynsim::cli::run_scan(*scan);
    if (solvers->parsed()) return dynsim::cli::run_solvers(solv);
  } catch (const dynsim::Error& e) {
    std::cerr << "dynsim: error: " << e.what() << "\n";
    return int(e.code());
  } catch (const std::exception& e) {
    std::cerr << "dynsim: internal error: " << e.what() << "\n";
    return int(dynsim::ExitCode::Software);
  }
  return 0;
}
