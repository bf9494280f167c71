// The scheduler: runs a Graph over a sequence. Per step, areas in order; each gathers its drive
// from its connections (reading ring slots t - delay; an absent source leaves its term out),
// the solver advances the state, ReLU and the supralinearity give r(t), r(t) goes into the
// area's ring, and the pooled, delayed output goes on to the next area and the classifier
// (spec §2.3, §4.3). Rings are sized from the graph; no allocation inside the step loop.
// Staged solvers (engine/dynamics/solver.h) evaluate every area's drive at each stage instead:
// zero-delay inputs read the source's stage value, delayed ones the source's history interpolated
// at the stage time (cubic Hermite with stored slopes); the network starts from rest (zero
// history), so every area is present from step 0 in that mode. Adaptive solvers (embedded pairs
// with error control) take substeps within each step, ending on every step
// (engine/dynamics/scheduler_adaptive.cpp). On a CUDA context everything lives
// on the device (parameters are copied there at the start of every run, a host input sequence goes
// over once); the step loop has no host reads or syncs and allocates nothing itself, and the
// recording is copied to the host once at the end (engine/dynamics/recorder.h).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/dynamics/graph.h"
#include "engine/dynamics/solver.h"

namespace dynsim {

enum class RecordMode : uint8_t { None, Layer, Full };  // Layer: mean/std of |r| per step

struct RunOptions {
  int idle_steps = 0;            // steps on a frame of non_input_value before the input
  float non_input_value = 0.0f;
  RecordMode record = RecordMode::Layer;
  // The first non-finite state raises, naming area, step, tensor (CPU: at that step; CUDA:
  // after the loop, engine/dynamics/recorder.h).
  bool stability_check = false;
  double input_adaption_weight = 0.0;  // DynVision's InputAdaption (spec §7)
  // The exact savings of performance-notes.md §3, each giving DynVision's result within float
  // rounding (tests/engine/dynamics/test_fast_paths.cpp): skip connections as strided 1x1 convs
  // (OperatorOptions); operators on the input frame computed once while the frame repeats
  // (a static image, the idle frames; host input sequences, compared bit for bit before the
  // loop) and once per step, not per stage, in staged runs; the classifier over chunks of
  // readout_chunk steps after they ran, one GEMM each. false: DynVision's literal per-step order.
  bool fast_paths = true;
  // Steps per classifier GEMM with fast paths; 0: 32 on CUDA (fewer launches), 1 on the CPU,
  // where a per-step GEMM costs no launch and keeps the logits bit-identical to the reverse
  // mode's forward (engine/autograd/bptt.h; a taller GEMM may round differently).
  int readout_chunk = 0;
  // CUDA only (ConfigError on a CPU context): capture the step loop as one CUDA graph and replay
  // it. The first run of a shape (batch, steps, idle steps, record mode, fast paths, readout
  // chunk, stability check, input adaption, blank value, the input's frame-repeat pattern,
  // dtype) runs as usual (warm-up: plans, scratch, library workspaces), the second captures the
  // loop and launches it, later ones launch it; every run copies its input into one persistent
  // device buffer and refreshes the parameters first, so new inputs and trained values are seen.
  // A change of what the kernels have baked in (the self recurrence's scalars, a parameter or
  // scratch buffer that moved) captures again. One graph is kept (the last shape); each replay
  // gives the bits of the same run without it.
  bool cuda_graph = false;
};

struct Recording {  // host tensors
  int steps = 0;
  std::vector<std::string> areas;
  std::vector<Tensor> rates;     // Full: per area [B, T, C, H, W]
  std::vector<Tensor> mean_abs;  // Layer: per area [B, T], mean |r| over C,H,W
  std::vector<Tensor> std_abs;   // Layer: per area [B, T], std of |r| over C,H,W
  std::vector<std::vector<uint8_t>> present;  // per area, per step: 0 while the area is absent
  Tensor logits;                 // [B, T, K] (0 while the classifier's input is absent)
};

// The history each area keeps: ring slots (>= 1) sized from the largest delay that reads it, and
// the delay k of its forwarded output pool(r(t - k)) (-1: nobody reads it forward). Staged runs
// read before the step's push and interpolate up to one step further back. Shared by the
// Scheduler and the reverse mode (engine/autograd/bptt.h). ConfigError when an area's feedforward
// outputs (or the classifier) ask for different delays.
struct RingPlan {
  std::vector<int> size, forward_delay;
};
RingPlan plan_rings(const Graph& g, bool staged);

// tau of area a on the host in dtype t: the per-sample list ([B]; DataError when it does not
// have B values), the parameter (raw or through softplus; read anew on every call, since
// training changes it) or the fixed value ([1]).
Tensor area_tau(Context& ctx, const Graph& g, const Area& a, int batch, DType t);

// Why the Scheduler cannot run graph g in dtype t on a CUDA context ("" when it can): every f32,
// f64 and bf16 graph runs there. run() throws NotImplemented with this message.
std::string cuda_unsupported(const Graph& g, DType t);

class Scheduler {
 public:
  Scheduler(Context& ctx, Graph& graph, const SolverSpec& solver = {});
  ~Scheduler();
  // input: [B, T, C, H, W], f32, f64 or bf16, on the host or the context's device. The input's
  // dtype is the run's: parameters, rings, drives and terms in it (converted copies of the
  // graph's f32 parameters); a bf16 run keeps tau in f32, computes every op in f32 on the
  // stored bf16 values (kernels/dispatch.h) and records f32 (the bf16 values widened exactly).
  // NotImplemented on CUDA for what cuda_unsupported() names.
  Recording run(const Tensor& input, const RunOptions& opt = {});
  // Operator evaluations (engine/dynamics/operators.h: convolutions and the like, with the input
  // transform) of the last run: what the fast paths save, for tests and benchmarks.
  int64_t operator_calls() const;
  // Their FLOPs (OperatorRunner::forward_flops: the convolutions at 2 per multiply-add, the
  // self recurrence, the input and middle terms' adds; leak steps and readout are not counted).
  double operator_flops() const;
  // Steps, rejections, drive evaluations and step sizes of the last run of an adaptive solver
  // (engine/dynamics/solver.h; zero otherwise).
  AdaptiveStats adaptive_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dynsim
