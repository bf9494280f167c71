// One simulation from a `dynsim simulate` config, shared by the CLI (tools/cli_simulate.cpp) and
// the scan runner (models/scan/scan_kinds.cpp): choose the device (simulation.device = auto runs
// on the CUDA device when the scheduler supports the graph there, and redoes a failed device run
// on the CPU), run the Scheduler, and write the outputs (the arrays as .npy or responses.h5,
// config.json, config.toml, summary.json) into a folder.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/io/config.h"
#include "models/config/sim_config.h"

namespace dynsim::models {

// simulation.format = "hdf5" needs a build with HDF5 (ConfigError naming the key otherwise).
void check_format(const Config& cfg);

struct SimResult {
  Recording rec;
  RunOptions options;          // models::run_options(cfg)
  std::string device_note;     // "cpu", "cuda:0 (NVIDIA H100 ...)", "cpu (auto: ...)"
  std::string precision;       // "fp32", "tf32", "bf16"
  double wall_seconds = 0;     // the Scheduler run (a failed device attempt included)
  int64_t batch = 0;           // samples in rec
  AdaptiveStats adaptive;      // adaptive solvers: steps, rejections, evaluations, step sizes
};

// Runs graph g on input (from build_stimulus; rounded to bf16 here when the config asks for it)
// as cfg's simulation section says. Warnings go nowhere: the caller prints g.warnings.
SimResult simulate(const Config& cfg, Graph& g, Tensor input);

// Samples [b0, b1) of a recording (views: no copy).
Recording slice_recording(const Recording& rec, int64_t b0, int64_t b1);

// The earliest step the stimulus starts at (stimulus.onset, or the smallest per-sample onset).
int stimulus_onset(const Config& cfg);

// Writes the run's outputs into the existing folder dir and returns summary.json's content.
// with_timing = false leaves the wall time out of summary.json (the scan runner keeps it in the
// run's DONE file instead, so that equal runs give byte-identical outputs).
nlohmann::json write_outputs(const Config& cfg, const Graph& g, const SimResult& r,
                             const std::string& dir, bool with_timing = true);

}  // namespace dynsim::models
