// The run kinds a scan grid may name (scan.kind): their validators (engine/scan/scan.h) and
// executors (engine/scan/runner.h).
//
// Validators (simulate, train, retina): each loads the base config with the run's overrides, builds the model's graph (so
// semantic errors such as an unknown area surface at expand time; retina: the generator's and
// the fit's checks), and returns the effective
// config as JSON with the output folder blanked: where a run writes is the scan's business and
// not part of its identity (the run id).
//
// Executors:
// - `simulate` writes what `dynsim simulate` writes (the arrays, config.json/.toml,
//   summary.json without the wall time, which goes to the run's DONE) into the run's folder; its
//   result row is the batch, the steps and each area's onset/peak latencies. Runs whose configs
//   differ only in what the engine varies per sample (the stimulus section, simulation.batch,
//   dynamics.tau, dynamics.tau_per_sample, an [[area]]'s tau) and whose weights come out equal
//   are packed into one Scheduler batch: the stimuli stacked along the batch, each area's tau per
//   sample; each run's outputs are then cut out of the batch and are bit for bit those of
//   running it alone (tests/models/test_scan_pack.cpp). --pack auto fits the group into half of
//   the free memory (the CUDA device's when the runs go there, else the host's).
// - `train` runs `dynsim train` with its output in the run's folder (runs/<id>.tmp/train); a stop
//   signal checkpoints it, and the next `scan run` resumes from that checkpoint. Never packed.
// - `retina` (the `dynsim retina` schema) generates the recording its config describes, fits
//   the model (written to model/ in the run's folder), and returns the metrics on the repeated
//   test segment (`evaluate`) and the subunits scored against the ground truth (`score`).
#pragma once
#include "engine/scan/runner.h"
#include "engine/scan/scan.h"

namespace dynsim::models {

const scan::Validators& scan_validators();
const scan::Executors& scan_executors();

// Every done simulate run's arrays in one HDF5 file, stacked along a "run" dimension (padded with
// NaN, or 0 for integers, where runs differ in samples or steps), with named dimensions
// (netCDF-4 dimension scales: sample, time, channel_<A>, y_<A>, x_<A>, area, class) and the
// numeric axes as coordinates along "run"; xarray.open_dataset(path, engine="h5netcdf") reads
// it. UsageError for a train run; returns {runs, variables, skipped}.
nlohmann::json stack_responses(const std::string& dir, const std::string& path);

}  // namespace dynsim::models
