// The figures' schema, modes and driver (models/retina/figures.h): which figure runs, the
// effective config, the output files and the call to tools/python/retina_figures.py.
#include "models/retina/figures.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "models/retina/pipeline.h"

extern char** environ;

namespace dynsim::retina {

// figures_subunits.cpp, figures_response.cpp, figures_transfer.cpp
nlohmann::json figure_f1(const Config& cfg, std::ostream* log);
nlohmann::json figure_f2(const Config& cfg, std::ostream* log);
nlohmann::json figure_f3(const Config& cfg, std::ostream* log);
nlohmann::json figure_f4(const Config& cfg, std::ostream* log);
nlohmann::json figure_f6(const Config& cfg, std::ostream* log);
nlohmann::json figure_f7(const Config& cfg, std::ostream* log);

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

ConfigSchema make_figures_schema() {
  ConfigSchema s = retina_schema();
  s.add_doubles("figures.k_values", {1, 2, 4, 8, 16, 32}, "F2: conv filter counts K")
      .min_length(1)
      .range(1, 256);
  s.add_doubles("figures.l1_values", {0, 1e-4, 5.5e-4, 1e-3, 3e-3, 1e-2},
                "F2: model.conv_l1 values swept at K = model.filters (paper 5.5e-4)")
      .min_length(1)
      .at_least(0);
  s.add_doubles("figures.fractions", {0.05, 0.1, 0.25, 0.5, 1.0},
                "F4: fractions of the training frames (prefixes of one recording)")
      .min_length(1)
      .range(0.001, 1);
  s.add_doubles("figures.batch_sizes", {100, 300, 1000, 3000},
                "F4: batch sizes (fit.iterations steps each)")
      .min_length(1)
      .range(1, 1e6);
  s.add_int("figures.seeds", 1, "F2, F4: fits per point (model.seed and fit.seed + i): mean, sd")
      .range(1, 20);
  s.add_int("figures.transfer_cells", 6,
            "F6: the first N of the cells off, off_dx2, on, off_dy-2, on_dx-2, off_box1")
      .range(2, 6);
  s.add_int("figures.readout_iterations", 200,
            "F6: optimiser steps of each readout refit (from the source cell's readout)")
      .at_least(1);
  return s;
}

std::string upper(std::string s) {
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}


// "" when drawn, else why not.
std::string plot(const FigurePlotter& p, const std::string& name, const std::string& json_path,
                 const std::string& png) {
  if (p.python.find('/') != std::string::npos && access(p.python.c_str(), X_OK) != 0)
    return concat("no Python interpreter at ", p.python,
                  " (install python3 and python3-matplotlib, or set DYNSIM_PYTHON)");
  const std::string script = (fs::path(p.script_dir) / "retina_figures.py").string();
  if (!fs::is_regular_file(script))
    return concat("the plotting script ", script,
                  " does not exist (set DYNSIM_PYTHON_DIR to dynsim's tools/python)");
  const int rc = spawn_wait({p.python, script, name, json_path, png});
  if (rc == 0 && fs::is_regular_file(png)) return "";
  if (rc == -1) return concat("could not run ", p.python);
  if (rc == 77) return concat(p.python, " has no matplotlib (apt-get install python3-matplotlib)");
  return concat(script, " failed (exit ", rc, ")");
}

}  // namespace

// Runs argv without a shell (figures.h); the exit status, or -1 when it could not be started.
int spawn_wait(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const bool search = args[0].find('/') == std::string::npos;
  const int rc = search ? posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ)
                        : posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
  if (rc != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

const std::vector<std::string>& figure_names() {
  static const std::vector<std::string> n = {"F1", "F2", "F3", "F4", "F6", "F7"};
  return n;
}

std::vector<std::string> figure_selection(const std::string& name) {
  const std::string u = upper(name);
  if (u == "ALL") return figure_names();
  for (const std::string& n : figure_names())
    if (n == u) return {n};
  throw UsageError(concat("unknown figure '", name,
                          "': F1, F2, F3, F4, F6, F7 or all (F5 needs "
                          "real recordings)"));
}

const ConfigSchema& figures_schema() {
  static const ConfigSchema s = make_figures_schema();
  return s;
}

const std::vector<std::string>& figure_defaults(bool quick) {
  // Full: the retina defaults (60,000 frames; fit.* as tuned in pipeline.cpp), natural-image
  // crops of 4x4 image pixels per stimulus pixel.
  static const std::vector<std::string> full_mode = {
      "fit.validate_every=50", "generate.calibration_frames=50000", "stimulus.crop_scale=4"};
  // Quick (CI): short recordings, small batches, a few hundred steps; every figure in seconds.
  static const std::vector<std::string> quick_mode = {"generate.frames=8000",
                                                      "generate.calibration_frames=8000",
                                                      "generate.test_frames=300",
                                                      "generate.test_trials=8",
                                                      "fit.batch=250",
                                                      "fit.iterations=150",
                                                      "fit.validate_every=50",
                                                      "stnmf.iterations=60",
                                                      "stimulus.crop_scale=4",
                                                      "figures.k_values=[1, 4, 8]",
                                                      "figures.l1_values=[0, 0.01]",
                                                      "figures.fractions=[0.25, 1.0]",
                                                      "figures.batch_sizes=[100, 500]",
                                                      "figures.transfer_cells=3",
                                                      "figures.readout_iterations=60"};
  return quick ? quick_mode : full_mode;
}

Config figure_config(const std::string& path, const std::vector<std::string>& overrides,
                     bool quick) {
  const ConfigSchema& s = figures_schema();
  auto load = [&](const std::vector<std::string>& o) {
    return path.empty() ? Config::parse("", "(built-in defaults)", s, o) : Config::load(path, s, o);
  };
  const Config given = load(overrides);
  std::vector<std::string> o;
  for (const std::string& kv : figure_defaults(quick))
    if (!given.has(kv.substr(0, kv.find('=')))) o.push_back(kv);
  o.insert(o.end(), overrides.begin(), overrides.end());
  return load(o);
}

json run_figure(const std::string& name, const Config& cfg, std::ostream* log) {
  const auto t0 = std::chrono::steady_clock::now();
  json j;
  if (name == "F1")
    j = figure_f1(cfg, log);
  else if (name == "F2")
    j = figure_f2(cfg, log);
  else if (name == "F3")
    j = figure_f3(cfg, log);
  else if (name == "F4")
    j = figure_f4(cfg, log);
  else if (name == "F6")
    j = figure_f6(cfg, log);
  else if (name == "F7")
    j = figure_f7(cfg, log);
  else
    figure_selection(name);  // throws UsageError naming it
  j["figure"] = name;
  j["wall_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  j["config"] = cfg.to_json();
  return j;
}

void prepare_output_dir(const std::string& dir) {
  if (dir.empty()) throw UsageError("give the output folder with --output");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw IoError(concat("cannot create the output folder '", dir,
                         "': ", ec ? ec.message() : std::string("not a folder")));
  if (access(dir.c_str(), W_OK | X_OK) != 0)
    throw IoError(concat("the output folder '", dir, "' is not writable"));
}

FigureFiles make_figure(const std::string& name, const Config& cfg, const std::string& dir,
                        const FigurePlotter& plotter, std::ostream* log) {
  prepare_output_dir(dir);
  const json j = run_figure(name, cfg, log);
  FigureFiles f;
  f.json = (fs::path(dir) / (name + ".json")).string();
  f.config = (fs::path(dir) / (name + ".config.toml")).string();
  f.png = (fs::path(dir) / (name + ".png")).string();
  write_file_atomic(f.json, j.dump(1) + "\n");
  write_file_atomic(f.config, cfg.to_toml());
  std::error_code ec;
  fs::remove(f.png, ec);  // never leave a picture of an earlier run beside the new numbers
  f.plot_error = plot(plotter, name, f.json, f.png);
  f.plotted = f.plot_error.empty();
  return f;
}

}  // namespace dynsim::retina
