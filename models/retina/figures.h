// The paper's figures on synthetic cells (retina-notes §4: F1-F4, F6, F7) behind
// `dynsim retina figures`: each runs its experiment with the retina library (generate, fit_model,
// evaluate_model, score_model, readout refits), writes DIR/F<n>.json (every plotted number and the
// settings) and DIR/F<n>.config.toml (the effective config), then draws DIR/F<n>.png with
// tools/python/retina_figures.py. Quick mode shrinks recordings and fits for CI (seconds each).
#pragma once
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "engine/io/config.h"

namespace dynsim::retina {

// "F1", "F2", "F3", "F4", "F6", "F7".
const std::vector<std::string>& figure_names();
// One name (case-insensitive) or "all" -> the figures to make; UsageError naming an unknown one.
std::vector<std::string> figure_selection(const std::string& name);

// The retina schema plus the figures.* keys (sweeps and repeats; `dynsim retina keys` lists the
// retina keys, figure_defaults() the rest).
const ConfigSchema& figures_schema();
// Keys the figures set when the config file and --set leave them out: quick or full mode, as
// "key=value" overrides (documented in tools/python/README.md).
const std::vector<std::string>& figure_defaults(bool quick);
// The effective config: file (or built-in defaults) + figure_defaults(quick) for keys not given
// + overrides. ConfigError / NoInputError as Config::load.
Config figure_config(const std::string& path, const std::vector<std::string>& overrides,
                     bool quick);

// Runs the experiment of one figure and returns its JSON ({"figure", "settings", ...}: every
// number the plot shows). log (may be null) gets one line per fit.
nlohmann::json run_figure(const std::string& name, const Config& cfg, std::ostream* log);

// How the PNG is drawn: `python` runs `script_dir`/retina_figures.py NAME JSON PNG.
struct FigurePlotter {
  std::string python = "/usr/bin/python3";
  std::string script_dir;
};
struct FigureFiles {
  std::string json, config, png;
  bool plotted = false;
  std::string plot_error;  // why no PNG (no python, no matplotlib, script failed)
};
// Creates `dir` if needed and checks it is writable (IoError naming it).
void prepare_output_dir(const std::string& dir);
// Runs the figure, writes DIR/NAME.json and DIR/NAME.config.toml atomically, then plots
// DIR/NAME.png (the script writes a temporary file and renames it). A plotting failure does not
// throw: it is reported in plot_error (the JSON stays). Experiment errors throw.
FigureFiles make_figure(const std::string& name, const Config& cfg, const std::string& dir,
                        const FigurePlotter& plot, std::ostream* log);

// Runs argv without a shell; its exit status, or -1 when it could not be started (also used by
// `dynsim solvers --plot`).
int spawn_wait(const std::vector<std::string>& args);

}  // namespace dynsim::retina
