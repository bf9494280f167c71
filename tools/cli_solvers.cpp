// `dynsim solvers --case leak|linear-chain|delayed-leak`: solvers.csv, solvers.json and (with
// matplotlib) solvers.png, written into a fresh folder that replaces the output only when
// everything was written.
#include "tools/cli_solvers.h"

#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "models/retina/figures.h"
#include "models/solvers/work_precision.h"

#ifndef DYNSIM_PYTHON_SOURCE_DIR
#define DYNSIM_PYTHON_SOURCE_DIR "tools/python"
#endif

namespace fs = std::filesystem;

namespace dynsim::cli {
namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<double> numbers(const std::string& s, const char* option) {
  std::vector<double> out;
  for (const std::string& item : split(s)) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size())
      throw UsageError(concat(option, ": '", item, "' is not a number"));
    out.push_back(v);
  }
  if (out.empty()) throw UsageError(concat(option, ": an empty list"));
  return out;
}

}  // namespace

CLI::App* add_solvers(CLI::App& app, SolversArgs& a) {
  CLI::App* s = app.add_subcommand(
      "solvers", "work-precision runs of the solvers on a case with a closed-form solution "
                 "(solvers.csv, solvers.json, solvers.png)");
  s->add_option("--case", a.case_name, "leak | linear-chain | delayed-leak")->capture_default_str();
  s->add_option("--solvers", a.solvers,
                "comma list (default euler-staged,heun,rk4-classic,bs32,dopri5)");
  s->add_option("--dt", a.dts, "fixed-step ladder in ms, comma list (default 0.5,0.25,0.125,0.0625)");
  s->add_option("--rtol", a.rtols, "adaptive ladder, comma list (default 1e-3,1e-5,1e-7,1e-9)");
  s->add_option("--duration", a.duration, "simulated ms")->capture_default_str();
  s->add_option("--output,-o", a.output, "output folder")->capture_default_str();
  s->add_flag("--overwrite", a.overwrite, "replace an existing output folder");
  s->add_flag("!--no-plot", a.plot, "write no PNG");
  s->add_flag("--quiet,-q", a.quiet, "no table on stdout");
  return s;
}

int run_solvers(const SolversArgs& a) {
  models::WorkPrecisionOptions o;
  o.case_name = a.case_name;
  if (!a.solvers.empty()) o.solvers = split(a.solvers);
  if (!a.dts.empty()) o.dts = numbers(a.dts, "--dt");
  if (!a.rtols.empty()) o.rtols = numbers(a.rtols, "--rtol");
  o.duration = a.duration;
  const fs::path out(a.output);
  if (out.empty() || out == "." || out == "/") throw UsageError("--output: give a folder name");
  if (fs::exists(out) && !a.overwrite)
    throw UsageError(concat("output folder '", out.string(), "' exists; pass --overwrite"));
  const models::WorkPrecisionResult r = models::work_precision(o);  // before touching files

  const fs::path tmp = out.string() + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  write_file_atomic((tmp / "solvers.csv").string(), models::work_precision_csv(r));
  write_file_atomic((tmp / "solvers.json").string(),
                    models::work_precision_json(o, r).dump(2) + "\n");
  std::string plot_note;
  if (a.plot) {
    const char* py = std::getenv("DYNSIM_PYTHON");
    const char* dir = std::getenv("DYNSIM_PYTHON_DIR");
    const std::string python = py && *py ? py : "/usr/bin/python3";
    const std::string script =
        (fs::path(dir && *dir ? dir : DYNSIM_PYTHON_SOURCE_DIR) / "plot_solvers.py").string();
    const int rc = retina::spawn_wait(
        {python, script, (tmp / "solvers.json").string(), (tmp / "solvers.png").string()});
    if (rc != 0 || !fs::is_regular_file(tmp / "solvers.png")) {
      fs::remove(tmp / "solvers.png");
      plot_note = rc == 77 ? concat(python, " has no matplotlib")
                           : concat(script, " failed (exit ", rc, ")");
    }
  }
  if (fs::exists(out)) fs::remove_all(out);
  fs::rename(tmp, out);

  if (!a.quiet) {
    std::cout << "dynsim solvers: case " << o.case_name << ", errors against the closed form\n";
    std::cout << std::left << std::setw(14) << "solver" << std::setw(10) << "mode"
              << std::setw(10) << "dt_ms" << std::setw(10) << "rtol" << std::setw(14)
              << "max_abs" << std::setw(10) << "evals" << "wall_ms\n";
    for (const auto& w : r.rows)
      std::cout << std::left << std::setw(14) << w.solver << std::setw(10) << w.mode
                << std::setw(10) << w.dt << std::setw(10) << w.rtol << std::setw(14)
                << w.max_abs << std::setw(10) << w.evaluations << w.wall_seconds * 1e3 << "\n";
    for (const auto& ord : r.orders)
      std::cout << "order " << ord.solver << ": observed " << std::setprecision(3)
                << ord.observed << " (theory " << ord.expected << ")\n"
                << std::setprecision(6);
    std::cout << "wrote " << (out / "solvers.csv").string() << ", solvers.json"
              << (plot_note.empty() && a.plot ? ", solvers.png" : "") << "\n";
  }
  if (!plot_note.empty()) throw IoError(concat("solvers: no picture drawn: ", plot_note,
                                               " (the numbers are in ", out.string(), ")"));
  return 0;
}

}  // namespace dynsim::cli
