// `dynsim simulate` and `dynsim validate` (thin mains over models/config/sim_config.h).
#pragma once
#include <string>
#include <vector>

namespace dynsim::cli {

struct SimulateArgs {
  std::string config;                  // TOML file ("" = built-in defaults)
  std::vector<std::string> overrides;  // --set and the shortcut flags, as key=value
  bool overwrite = false;
  bool quiet = false;
};
int run_simulate(const SimulateArgs& a);

struct ValidateArgs {
  std::string config;
  std::vector<std::string> overrides;
  bool keys = false;   // list every key of the schema
  bool train = false;  // the `dynsim train` schema instead of simulate's
};
int run_validate(const ValidateArgs& a);

}  // namespace dynsim::cli
