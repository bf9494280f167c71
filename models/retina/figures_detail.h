// Helpers shared by the figure experiments (figures_*.cpp; not part of the API): configs derived
// with overrides, fits with progress lines, recordings cut to a prefix, and JSON conversions that
// keep every number finite (NaN becomes null).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "engine/core/tensor.h"
#include "engine/io/config.h"
#include "models/retina/pipeline.h"

namespace dynsim::retina::figdetail {

using nlohmann::json;

// base with more overrides on top (a figure's variant: model.filters=4, cell[0].shift_x=2 ...).
Config derive(const Config& base, const std::vector<std::string>& overrides);
// The figure's recording: base's generator spec, only its first cell kept.
Recording generate_first_cell(const Config& cfg, std::ostream* log, const std::string& tag);
// fit_model on cell 0 of rec with overrides, one log line "tag: kind ... s, CC ...".
RetinaModel fit(const Config& cfg, const Recording& rec, const std::vector<std::string>& overrides,
                std::ostream* log, const std::string& tag);
// Seed overrides of repeat i (model.seed and fit.seed + i).
std::vector<std::string> seed_overrides(const Config& cfg, int i);

// The first `frames` training frames of rec (test segment kept).
Recording prefix(const Recording& rec, int64_t frames);
int64_t spike_count(const Recording& rec, int cell);
// Counts of cell c per training frame as [1, T] f32 (a CNN target).
Tensor cell_counts(const Recording& rec, int cell);

// evaluate_model(...)["cells"][0] and score_model(...)["cells"][0].
json eval_cell(const RetinaModel& m, const Recording& rec, int target = -1);
json score_cell(const RetinaModel& m, const Recording& rec, const Config& cfg);
// A number of a JSON object, NaN when absent or null.
double num(const json& j, const std::string& key);
json finite(double v);  // v, or null when not finite

// Nested arrays: [n] -> list, [h, w] -> rows, [n, h, w] -> list of rows.
json to_json(const Tensor& t);
// Mean and (sample) sd of v, NaN entries dropped; {mean, sd} as finite() values.
std::pair<json, json> mean_sd(const std::vector<double>& v);

void log_line(std::ostream* log, const std::string& text);

}  // namespace dynsim::retina::figdetail
