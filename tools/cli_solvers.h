// `dynsim solvers`: work-precision runs of the solvers on the analytic cases
// (models/solvers/work_precision.h).
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace dynsim::cli {

struct SolversArgs {
  std::string case_name = "leak";
  std::string solvers, dts, rtols;  // comma lists ("" = the defaults)
  double duration = 4.0;
  std::string output = "solvers";
  bool overwrite = false, plot = true, quiet = false;
};
CLI::App* add_solvers(CLI::App& app, SolversArgs& a);
int run_solvers(const SolversArgs& a);

}  // namespace dynsim::cli
