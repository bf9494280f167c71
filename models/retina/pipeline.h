// The retina workflow behind `dynsim retina` (tools/cli_retina.cpp): one TOML schema for
// generating recordings (stimulus, cells, spikes), fitting models to them (the paper's CNN,
// deep-retina's net, LN, STNMF), evaluating predictions (CC, FEVE, bits/spike on the repeated
// test segment), scoring recovered subunits against the ground truth, and transfer between
// cells and stimuli. Model folders hold the parameters (cnn.safetensors + cnn.json, ln_*.npy,
// stnmf_*.npy), model.json (kind, cells, fit report) and config.toml.
#pragma once
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "engine/io/config.h"
#include "models/retina/analysis.h"
#include "models/retina/baselines.h"
#include "models/retina/cnn.h"
#include "models/retina/generator.h"

namespace dynsim::retina {

const ConfigSchema& retina_schema();

// [generate], [stimulus] and [[cell]] (no cell tables: the reference cell) as a GeneratorSpec.
GeneratorSpec generator_spec(const Config& cfg);

// A fitted model of one or more cells of a recording.
struct RetinaModel {
  std::string kind;        // yan | deep_retina | ln | stnmf
  std::vector<int> cells;  // cells of the recording it was fitted to (rows of its output)
  CnnModel cnn;            // yan, deep_retina
  std::vector<LnModel> ln;           // ln: one per cell
  std::vector<StnmfResult> stnmf;    // stnmf: one per cell (modules only; no prediction)
  nlohmann::json fit;      // what fitting reported (history, wall time, ...)
  bool predicts() const { return kind != "stnmf"; }
};

// The CNN training options of cfg's fit.* keys (fit.restarts and fit.init are fit_model's own):
// what fit_model uses, and what readout refits and fine-tunes of a model should use.
CnnFitOptions fit_options(const Config& cfg);

// Fits the model of cfg ([model], [fit], [ln], [stnmf]) to rec. log gets progress lines.
RetinaModel fit_model(const Config& cfg, const Recording& rec, std::ostream* log = nullptr);
// Model folders: written atomically (a temporary sibling renamed into place).
void save_model(const std::string& dir, const RetinaModel& m, const Config& cfg, bool overwrite);
RetinaModel load_model(const std::string& dir);

// Expected spike counts per frame [n_model_cells, T] for a stimulus [T, H, W]; NaN for the
// first history frames. DataError for stnmf models and for a stimulus of another size.
Tensor predict_counts(const RetinaModel& m, const Tensor& stimulus, int threads = 0);

// Metrics of m on rec's repeated test segment (or, without one, the last 10% of the training
// stretch): per model cell, matched to recording cell `target_cells[i]` (default: the model's
// own cells): CC with the noise-free rate, CC with the trial-mean PSTH (and the epsilon
// variant), FEV, FEVE, bits/spike.
nlohmann::json evaluate_model(const RetinaModel& m, const Recording& rec,
                              std::vector<int> target_cells = {});

// Recovered subunits of each model cell against the ground truth of the same recording cell.
nlohmann::json score_model(const RetinaModel& m, const Recording& rec,
                           const RecoveryOptions& opt = RecoveryOptions());

}  // namespace dynsim::retina
