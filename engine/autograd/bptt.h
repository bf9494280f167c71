// Reverse mode through time: the whole unrolled schedule of a Graph (engine/dynamics/scheduler.h)
// run forward with a record of every component call (connection operator, drive sum, solver step,
// nonlinearity, pooling, readout), a loss over the logits of every real step, and a reverse
// sweep that mirrors the forward (t = T-1 .. 0, areas in reverse), accumulating the gradient of
// every trainable parameter. Delays need no special code: a value read d steps later passes its
// gradient back d steps (the adjoint of a delay is the same delay backwards).
//
// DynVision's cuts: after the idle phase and after every n-th real step with TBPTT, values read
// from the rings (r and, for staged solvers, the stored slopes) are detached; the solvers'
// private memory is not (spec §5).
//
// Memory: store-all keeps every step's values; checkpoint keeps the network state every k steps
// and recomputes each segment during the reverse sweep. Both give bitwise-equal gradients on the
// CPU. Buffers are taken from pools that are filled in the first sequence and reused after it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/dynamics/graph.h"
#include "engine/dynamics/scheduler.h"
#include "engine/dynamics/solver.h"

namespace dynsim {

enum class MemoryPolicy : uint8_t { StoreAll, Checkpoint };

// Activity loss (spec §6). Legacy: every connection operator output and the classifier's logits
// ("every Conv2d and Linear output"), L1 / n_units per sample. Marked: the rates r of the listed
// areas, "absolute" (L1 / n_units) or "signed" (|mean|). Values are summed over real steps,
// divided by (n_modules * real steps) and averaged over the batch.
enum class ActivityMode : uint8_t { Legacy, Marked };

struct LossSpec {
  double ce_weight = 1.0;  // cross-entropy over (B*T, K) with the ignore index (0 if all masked)
  int ignore_index = -1;
  double activity_weight = 0.0;
  ActivityMode activity_mode = ActivityMode::Legacy;
  std::vector<std::string> activity_areas;  // Marked mode
  bool activity_signed = false;             // Marked mode: |mean(r)| instead of L1 / n_units
  // Regression losses on the logits against targets [B, T, K] (mean over all elements).
  double mse_weight = 0.0;
  double poisson_weight = 0.0;  // pred - target log(pred + eps) (log_input: exp(pred) - target pred)
  bool poisson_log_input = false;
  // Gradients are those of scale * loss (1 / n for gradient accumulation over n micro-batches).
  double scale = 1.0;
};

struct BpttOptions {
  RunOptions run;  // idle steps, non_input_value, input adaption, stability check (record: unused)
  int tbptt = 0;   // detach the rings after every n-th real step (counting from 1); 0: never
  MemoryPolicy memory = MemoryPolicy::StoreAll;
  int checkpoint_every = 0;  // Checkpoint: steps per segment (>= 1)
  // Exact fast path (the bits of the literal order, tests/engine/autograd/test_bptt.cpp): a
  // built-in frozen solver's step (drive sum, leak step, ReLU, supralinearity) of an area whose
  // drive terms are all additive (at most 8) is one node, ops::leak_tail_forward / _backward, which
  // stores only r (and x where the solver's memory or the stability check reads it) and
  // recomputes x in the reverse sweep. Off: the separate nodes. run.fast_paths is not read.
  bool fused_tail = true;
  // For checks of the cuts: with record_cuts set, the values detached at each cut are stored
  // there (in cut order); with frozen_cuts set, the stored values replace the computed ones at
  // the cuts, which makes the loss a function whose exact derivative is the truncated gradient
  // (so f64 central differences can check TBPTT and the idle cut).
  std::vector<Tensor>* record_cuts = nullptr;
  const std::vector<Tensor>* frozen_cuts = nullptr;
};

struct LossValues {
  double total = 0, ce = 0, activity = 0, mse = 0, poisson = 0;
  int64_t valid = 0, correct = 0;  // labelled (b, t) entries and argmax hits among them
  std::vector<int64_t> valid_per_step, correct_per_step;  // per real step
  Tensor logits;                   // host [B, T, K] (0 while the classifier's input is absent)
};

class Bptt {
 public:
  Bptt(Context& ctx, Graph& graph, const SolverSpec& solver = {});
  ~Bptt();
  // input [B, T, C, H, W] in the dtype of the graph's parameters, or bf16 with f32 parameters
  // (bf16 storage: the tape's values and their gradients bf16, every op computed in f32
  // (kernels/dispatch.h), parameters, their gradients, tau and the losses f32; LossValues'
  // logits f32, the bf16 values widened); labels i32 [B, T] (entries
  // equal to ignore_index are masked) or undefined; targets [B, T, K] or undefined (needed when
  // mse_weight or poisson_weight is set). Runs the forward and the loss; with grads != nullptr
  // also the reverse sweep, adding d(scale * loss)/d(param) to grads[name] for every trainable
  // parameter (grads from zero_grads(); several calls accumulate).
  LossValues run(const Tensor& input, const Tensor& labels, const Tensor& targets,
                 const LossSpec& loss, const BpttOptions& opt, ParamStore* grads);
  // Zeros shaped like every trainable parameter, on the context's device.
  static ParamStore zero_grads(Context& ctx, const ParamStore& params);
  static void zero(Context& ctx, ParamStore& grads);
  // Bytes held by the value and gradient pools after the last run (the policy's footprint).
  int64_t pool_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dynsim
