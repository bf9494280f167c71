// The simulation config (`dynsim simulate`, `dynsim validate`): its schema, and the builders
// that turn a validated Config into a Graph (a DyRCNN preset or a custom graph of [[area]] and
// [[connection]] tables), run options and the stimulus batch.
#pragma once
#include "engine/dynamics/graph.h"
#include "engine/dynamics/scheduler.h"
#include "engine/io/config.h"

namespace dynsim::models {

const ConfigSchema& simulate_schema();
// The model.*, [[area]], [[connection]] and dynamics.* keys (shared by every command that
// builds a model: simulate, train, eval).
void add_model_keys(ConfigSchema& s);

// The model: a preset or the custom graph; weights from model.weights when given.
Graph build_graph(const Config& cfg);
// Gives graph g (built from a config that differs from cfg at most in its tau keys:
// dynamics.tau, dynamics.tau_per_sample, an [[area]]'s tau) the taus cfg gives: each area's tau,
// its tau parameter (x4/x8: tau, or softplus^-1(tau); a fresh tensor, so a copied graph's
// original keeps its own) and the per-sample list, as build_graph(cfg) would. Not for graphs
// whose weights came from model.weights (a file may hold the tau parameters).
void apply_taus(Graph& g, const Config& cfg);
SolverSpec solver_spec(const Config& cfg);
RunOptions run_options(const Config& cfg);
// The input [B, T, C, H, W] for graph g: the stimulus frame(s) under the per-sample schedules.
Tensor build_stimulus(const Config& cfg, const Graph& g);

}  // namespace dynsim::models
