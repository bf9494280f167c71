// `dynsim train` and `dynsim eval` (thin mains over models/train/trainer.h).
#pragma once
#include <string>
#include <vector>

namespace dynsim::cli {

struct TrainArgs {
  std::string config;                  // TOML file ("" = built-in defaults)
  std::vector<std::string> overrides;  // --set key=value
  bool resume = false;
  std::string resume_from;  // a checkpoint directory
  bool overwrite = false;
  bool quiet = false;
};
// SIGTERM / SIGUSR1 finish the current step, write a checkpoint and return 75.
int run_train(const TrainArgs& a);

struct EvalArgs {
  std::string config;
  std::vector<std::string> overrides;
  std::string checkpoint, weights, output, split = "test";
  bool quiet = false;
};
int run_eval(const EvalArgs& a);

}  // namespace dynsim::cli
