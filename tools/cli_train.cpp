// `dynsim train` / `dynsim eval` (tools/cli_train.h).
#include "tools/cli_train.h"

#include <atomic>
#include <csignal>
#include <iostream>

#include "models/train/trainer.h"

namespace dynsim::cli {
namespace {

std::atomic<int> g_stop{0};
extern "C" void on_stop_signal(int sig) { g_stop.store(sig); }

Config load(const std::string& path, const std::vector<std::string>& overrides) {
  const ConfigSchema& schema = models::train_schema();
  if (path.empty()) return Config::parse("", "(built-in defaults)", schema, overrides);
  return Config::load(path, schema, overrides);
}

}  // namespace

int run_train(const TrainArgs& a) {
  const Config cfg = load(a.config, a.overrides);
  models::TrainRun run;
  run.resume = a.resume;
  run.resume_from = a.resume_from;
  run.overwrite = a.overwrite;
  run.quiet = a.quiet;
  run.stop = &g_stop;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
  return models::train(cfg, run, std::cerr);
}

int run_eval(const EvalArgs& a) {
  const Config cfg = load(a.config, a.overrides);
  models::EvalRun run;
  run.checkpoint = a.checkpoint;
  run.weights = a.weights;
  run.output = a.output;
  run.split = a.split;
  run.quiet = a.quiet;
  return models::evaluate(cfg, run, std::cerr);
}

}  // namespace dynsim::cli
