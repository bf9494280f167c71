// `dynsim retina ...` (tools/cli_retina.h).
#include "tools/cli_retina.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "models/retina/figures.h"
#include "models/retina/pipeline.h"

#ifndef DYNSIM_PYTHON_SOURCE_DIR  // set by tools/CMakeLists.txt
#define DYNSIM_PYTHON_SOURCE_DIR "tools/python"
#endif

namespace dynsim::cli {
namespace fs = std::filesystem;
using nlohmann::json;

struct RetinaArgs {
  CLI::App* root = nullptr;
  CLI::App *generate = nullptr, *fit = nullptr, *evaluate = nullptr, *score = nullptr,
           *transfer = nullptr, *keys = nullptr, *figures = nullptr;
  std::string config, output, data, model;
  std::vector<std::string> overrides, models, datas;
  std::string mode = "zero-shot", figure;
  bool overwrite = false, quiet = false, quick = false;
};

namespace {

Config load(const std::string& path, const std::vector<std::string>& overrides) {
  const ConfigSchema& s = retina::retina_schema();
  if (path.empty()) return Config::parse("", "(built-in defaults)", s, overrides);
  return Config::load(path, s, overrides);
}

// A JSON result to a file (atomically) or stdout.
void emit(const json& j, const std::string& path) {
  if (path.empty()) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  write_file_atomic(path, j.dump(2) + "\n");
}

void require_new(const std::string& dir, bool overwrite) {
  if (dir.empty()) throw UsageError("give the output folder with -o");
  if (fs::exists(dir) && !overwrite)
    throw UsageError(concat("output '", dir, "' exists; pass --overwrite to replace it"));
}

// The model's config (its config.toml) with the command's overrides on top.
Config model_config(const std::string& model_dir, const std::vector<std::string>& overrides) {
  return load((fs::path(model_dir) / "config.toml").string(), overrides);
}

int do_generate(const RetinaArgs& a) {
  const Config cfg = load(a.config, a.overrides);
  require_new(a.output, a.overwrite);
  const auto t0 = std::chrono::steady_clock::now();
  const retina::Recording rec = retina::generate(retina::generator_spec(cfg));
  retina::write_recording(a.output, rec, a.overwrite);
  write_file_atomic((fs::path(a.output) / "retina.toml").string(), cfg.to_toml());
  if (!a.quiet) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "dynsim retina generate: " << rec.stimulus.dim(0) << " frames, "
              << rec.spikes.dim(0) << " cell(s)";
    for (int64_t c = 0; c < rec.spikes.dim(0); ++c) {
      int64_t n = 0;
      for (int64_t t = 0; t < rec.spikes.dim(1); ++t) n += int64_t(rec.spikes.item(c * rec.spikes.dim(1) + t));
      std::cout << (c ? ", " : ": ") << n << " spikes";
    }
    std::cout << " (" << s << " s) -> " << a.output << "\n";
  }
  return 0;
}

int do_fit(const RetinaArgs& a) {
  const Config cfg = load(a.config, a.overrides);
  require_new(a.output, a.overwrite);
  const retina::Recording rec = retina::read_recording(a.data);
  const retina::RetinaModel m = retina::fit_model(cfg, rec, a.quiet ? nullptr : &std::cerr);
  retina::save_model(a.output, m, cfg, a.overwrite);
  if (!a.quiet)
    std::cout << "dynsim retina fit: " << m.kind << " on " << m.cells.size() << " cell(s) in "
              << m.fit.value("wall_s", 0.0) << " s -> " << a.output << "\n";
  return 0;
}

int do_evaluate(const RetinaArgs& a) {
  const retina::RetinaModel m = retina::load_model(a.model);
  const retina::Recording rec = retina::read_recording(a.data);
  emit(retina::evaluate_model(m, rec), a.output);
  return 0;
}

int do_score(const RetinaArgs& a) {
  const retina::RetinaModel m = retina::load_model(a.model);
  const retina::Recording rec = retina::read_recording(a.data);
  retina::RecoveryOptions o;
  o.cosine_threshold = model_config(a.model, a.overrides).get_double("score.cosine_threshold");
  emit(retina::score_model(m, rec, o), a.output);
  return 0;
}

// Model i applied to recording j: zero-shot, or after refitting the readout / fine-tuning on
// j's training stretch. Rows: models; columns: recordings (first cell of each).
int do_transfer(const RetinaArgs& a) {
  if (a.models.empty() || a.datas.empty()) throw UsageError("give --models and --data");
  if (a.mode != "zero-shot" && a.mode != "readout" && a.mode != "finetune")
    throw UsageError(concat("--mode '", a.mode, "': zero-shot, readout or finetune"));
  std::vector<retina::Recording> recs;
  for (const std::string& d : a.datas) recs.push_back(retina::read_recording(d));
  json matrix = json::array();
  std::string csv = "model";
  for (const std::string& d : a.datas) csv += "," + fs::path(d).filename().string();
  csv += "\n";
  for (const std::string& mp : a.models) {
    const retina::RetinaModel m0 = retina::load_model(mp);
    json rowj = json::array();
    csv += fs::path(mp).filename().string();
    for (const retina::Recording& rec : recs) {
      retina::RetinaModel m = m0;
      if (a.mode != "zero-shot") {
        if (m.kind != "yan" && m.kind != "deep_retina")
          throw UsageError(concat("--mode ", a.mode, " needs a CNN model; ", mp, " is ", m.kind));
        const Config cfg = model_config(mp, a.overrides);
        const retina::CnnFitOptions o = retina::fit_options(cfg);
        Tensor y = Tensor::empty(Shape{1, rec.spikes.dim(1)});
        for (int64_t t = 0; t < rec.spikes.dim(1); ++t) y.set(t, rec.spikes.item(t));
        m.cnn = retina::with_new_readout(m.cnn, 1, o.seed + 17);
        if (a.mode == "readout")
          retina::refit_readout(m.cnn, retina::CnnData{rec.stimulus, y}, o);
        else
          retina::fine_tune(m.cnn, retina::CnnData{rec.stimulus, y}, o);
        m.cells = {0};
      }
      std::vector<int> targets(m.cells.size(), 0);
      const json e = retina::evaluate_model(m, rec, std::vector<int>{targets[0]});
      const json& cell = e["cells"][0];
      const json cc = cell.contains("cc_rate") ? cell["cc_rate"] : cell.value("cc_psth", json());
      rowj.push_back(cc);
      csv += "," + (cc.is_number() ? std::to_string(cc.get<double>()) : std::string(""));
    }
    csv += "\n";
    matrix.push_back(rowj);
  }
  const json out = {{"mode", a.mode}, {"models", a.models}, {"data", a.datas},
                    {"metric", "cc_rate"}, {"matrix", matrix}};
  if (a.output.empty()) {
    std::cout << csv;
  } else {
    emit(out, a.output);
    write_file_atomic(fs::path(a.output).replace_extension(".csv").string(), csv);
  }
  return 0;
}

// Each figure: experiment -> F<n>.json + F<n>.config.toml -> F<n>.png. A figure that could not
// be drawn keeps its JSON; the command then ends with IoError (74) naming why.
int do_figures(const RetinaArgs& a) {
  const std::vector<std::string> names = retina::figure_selection(a.figure);
  const Config cfg = retina::figure_config(a.config, a.overrides, a.quick);
  retina::prepare_output_dir(a.output);
  retina::FigurePlotter plot;
  const char* py = std::getenv("DYNSIM_PYTHON");
  const char* dir = std::getenv("DYNSIM_PYTHON_DIR");
  if (py && *py) plot.python = py;
  plot.script_dir = dir && *dir ? dir : DYNSIM_PYTHON_SOURCE_DIR;
  std::string failed;
  for (const std::string& n : names) {
    const retina::FigureFiles f =
        retina::make_figure(n, cfg, a.output, plot, a.quiet ? nullptr : &std::cerr);
    if (!f.plotted)
      failed += concat("\n  ", n, ": ", f.plot_error, " (numbers kept in ", f.json, ")");
    else if (!a.quiet)
      std::cout << "dynsim retina figures: " << f.png << "\n";
  }
  if (!failed.empty()) throw IoError("retina figures: no picture drawn for" + failed);
  return 0;
}

}  // namespace

RetinaArgs* add_retina(CLI::App& app) {
  static RetinaArgs a;
  a.root = app.add_subcommand("retina", "retinal ganglion-cell system identification (Yan et al.)");
  a.root->require_subcommand(1);
  auto common_cfg = [&](CLI::App* s) {
    s->add_option("--config,-c", a.config, "TOML config (dynsim retina keys)")->check(CLI::ExistingFile);
    s->add_option("--set", a.overrides, "override a config key: key=value (repeatable)");
  };
  a.generate = a.root->add_subcommand("generate", "simulate cells with known subunits");
  common_cfg(a.generate);
  a.generate->add_option("--output,-o", a.output, "recording folder")->required();
  a.generate->add_flag("--overwrite", a.overwrite, "replace an existing folder");
  a.generate->add_flag("--quiet,-q", a.quiet, "no summary");

  a.fit = a.root->add_subcommand("fit", "fit a model (yan, deep_retina, ln, stnmf) to a recording");
  a.fit->add_option("data", a.data, "recording folder")->required()->check(CLI::ExistingDirectory);
  common_cfg(a.fit);
  a.fit->add_option("--output,-o", a.output, "model folder")->required();
  a.fit->add_flag("--overwrite", a.overwrite, "replace an existing folder");
  a.fit->add_flag("--quiet,-q", a.quiet, "no progress");

  a.evaluate = a.root->add_subcommand("evaluate", "CC, FEVE and bits/spike on the test segment");
  a.evaluate->add_option("model", a.model, "model folder")->required()->check(CLI::ExistingDirectory);
  a.evaluate->add_option("data", a.data, "recording folder")->required()->check(CLI::ExistingDirectory);
  a.evaluate->add_option("--output,-o", a.output, "JSON file (default: stdout)");

  a.score = a.root->add_subcommand("score", "recovered subunits against the ground truth");
  a.score->add_option("model", a.model, "model folder")->required()->check(CLI::ExistingDirectory);
  a.score->add_option("data", a.data, "recording folder")->required()->check(CLI::ExistingDirectory);
  a.score->add_option("--set", a.overrides, "override a key of the model's config");
  a.score->add_option("--output,-o", a.output, "JSON file (default: stdout)");

  a.transfer = a.root->add_subcommand("transfer", "models x recordings CC matrix");
  a.transfer->add_option("--models", a.models, "model folders")->required()->expected(1, -1);
  a.transfer->add_option("--data", a.datas, "recording folders")->required()->expected(1, -1);
  a.transfer->add_option("--mode", a.mode, "zero-shot | readout | finetune");
  a.transfer->add_option("--set", a.overrides, "override a key of the models' configs");
  a.transfer->add_option("--output,-o", a.output, "JSON file (and .csv beside it); default: CSV on stdout");

  a.figures = a.root->add_subcommand(
      "figures", "the paper's figures F1-F4, F6, F7 on synthetic cells: DIR/F<n>.json, "
                 ".config.toml and .png (tools/python/retina_figures.py; env DYNSIM_PYTHON, "
                 "DYNSIM_PYTHON_DIR)");
  a.figures->add_option("--figure,-f", a.figure, "F1 | F2 | F3 | F4 | F6 | F7 | all")->required();
  common_cfg(a.figures);
  a.figures->add_option("--output,-o", a.output, "output folder (created; files replaced)")
      ->required();
  a.figures->add_flag("--quick", a.quick,
                      "CI sizes: 8,000 frames, 150 steps of batch 250, short sweeps (seconds per "
                      "figure); see tools/python/README.md");
  a.figures->add_flag("--quiet,-q", a.quiet, "no progress");

  a.keys = a.root->add_subcommand("keys", "list every retina config key with its type and default");
  return &a;
}

bool retina_parsed(const RetinaArgs* a) { return a && a->root && a->root->parsed(); }

int run_retina(const RetinaArgs& a) {
  if (a.generate->parsed()) return do_generate(a);
  if (a.fit->parsed()) return do_fit(a);
  if (a.evaluate->parsed()) return do_evaluate(a);
  if (a.score->parsed()) return do_score(a);
  if (a.figures->parsed()) return do_figures(a);
  if (a.keys->parsed()) {
    std::cout << retina::retina_schema().describe();
    return 0;
  }
  return do_transfer(a);
}

}  // namespace dynsim::cli
