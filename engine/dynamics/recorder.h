// What a Scheduler run records, kept on the context's device while the steps run: per area and
// step the mean and std of |r| per sample (ops::abs_mean_std into [B, T]) or the full rates (a
// strided copy into [B, T, C, H, W]), and the logits ([B, T, K]). finish() copies everything to
// the host once, after the loop, so a CUDA run has no host reads or stream syncs per step; on
// the CPU the buffers are the Recording itself (no copies). StabilityProbes holds the opt-in
// finiteness check of the states the same way.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/dynamics/graph.h"
#include "engine/dynamics/scheduler.h"

namespace dynsim {

class Recorder {
 public:
  // steps: real (recorded) steps T; K: the classifier's classes (0: none).
  Recorder(Context& ctx, const Graph& g, int batch, int steps, int K, DType t, RecordMode mode);
  // Area a's rate r [B, C, H, W] at recorded step tr, or nullptr while the area is absent
  // (its mean/std stay NaN, its full rates 0).
  void rates(int a, int64_t tr, const Tensor* r, bool present);
  // The logits [B, K] of recorded step tr (steps never given stay 0).
  void logits(int64_t tr, const Tensor& y);
  // The host Recording (waits for the stream once).
  Recording finish();
  // For a recorder kept across runs (the Scheduler's CUDA-graph replay): clear() enqueues the
  // fills of a fresh recorder again (NaN statistics, zero rates and logits; the present flags
  // stay, they depend on the run's shape only); copy_out() is finish() that keeps the buffers.
  void clear();
  Recording copy_out();

 private:
  Context& ctx_;
  int B_, T_, K_;
  RecordMode mode_;
  Recording rec_;  // present flags and names on the host; the tensors below until finish()
  std::vector<Tensor> mean_, sd_, full_;
  Tensor logits_;
};

// The stability check (RunOptions::stability_check): the mean of each area's state x before the
// nonlinearity is written to one slot per (step, area) with ops::mean_all_forward. It is finite
// exactly when every element is (sums accumulate in double, so finite f32 values never overflow
// it; an f64 state would need values near 1e308). Host probes are read at once, so a CPU run
// stops at the first non-finite state; device probes are read once after the loop (no sync per
// step), and the error names the same first area and step.
class StabilityProbes {
 public:
  // staged_solver: the staged method's name (the error names it), "" for frozen-drive runs
  // (the error names the idle or real phase).
  StabilityProbes(Context& ctx, const Graph& g, int64_t total_steps, int idle_steps, DType t,
                  std::string staged_solver);
  void probe(int a, int64_t t, const Tensor& x);
  void check_all();  // after the loop: throws for the first non-finite (step, area)

 private:
  void check(int64_t from, int64_t to);
  Context& ctx_;
  const Graph& g_;
  int64_t areas_;
  int idle_;
  std::string solver_;
  Tensor values_;                 // [total_steps * areas]
  std::vector<uint8_t> written_;  // per slot
};

}  // namespace dynsim
