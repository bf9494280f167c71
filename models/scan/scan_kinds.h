// The run kinds a scan grid may name (scan.kind) and their validators (engine/scan/scan.h):
// `simulate` (the `dynsim simulate` schema) and `train` (the `dynsim train` schema). Each
// validator loads the base config with the run's overrides, builds the model's graph (so
// semantic errors such as an unknown area surface at expand time), and returns the effective
// config as JSON with the output folder blanked: where a run writes is the scan's business and
// not part of its identity (the run id).
#pragma once
#include "engine/scan/scan.h"

namespace dynsim::models {

const scan::Validators& scan_validators();

}  // namespace dynsim::models
