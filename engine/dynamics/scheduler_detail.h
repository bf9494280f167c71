// Internals shared by the Scheduler's source files (not part of its API): the Ring type and
// Scheduler::Impl with its state, the declarations of its methods and the gather_drive template.
// The methods live in scheduler.cpp (construction, buffers, run entry points, CUDA-graph
// replay), scheduler_rings.cpp (ring planning, forwarded and delayed reads, Hermite history),
// scheduler_step.cpp (the step loop, sequential frozen-drive steps), scheduler_staged.cpp (the
// Runge-Kutta stage loop), scheduler_fast.cpp (the fast paths) and scheduler_record.cpp (what
// goes to the Recorder).
#pragma once
#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "engine/core/cuda_graph.h"
#include "engine/dynamics/operators.h"
#include "engine/dynamics/recorder.h"
#include "engine/dynamics/scheduler.h"
#include "kernels/dispatch.h"
#include "kernels/leak_tail.h"

namespace dynsim {
namespace scheduler_detail {

// History of one area: the last `capacity` values of r, indexed by absolute step.
struct Ring {
  std::vector<Tensor> slot;
  std::vector<int64_t> step;  // which step each slot holds (-1: none)
  std::vector<uint8_t> present;
  void clear() {
    std::fill(step.begin(), step.end(), -1);
    std::fill(present.begin(), present.end(), 0);
  }
  int capacity() const { return int(slot.size()); }
  // r(s), or nullptr when s < 0, not stored, or absent at that step.
  const Tensor* at(int64_t s) const {
    if (s < 0 || slot.empty()) return nullptr;
    const size_t i = size_t(s % capacity());
    return (step[i] == s && present[i]) ? &slot[i] : nullptr;
  }
  // The slot that will hold r(s) (overwriting the oldest value).
  Tensor& begin_write(int64_t s, bool is_present) {
    const size_t i = size_t(s % capacity());
    step[i] = s;
    present[i] = is_present;
    return slot[i];
  }
};

// scheduler_fast.cpp: which steps' frames repeat the previous step's (fast paths).
std::vector<uint8_t> repeated_frames(Context& ctx, const Tensor& input, const RunOptions& opt);

}  // namespace scheduler_detail

struct Scheduler::Impl {
  using Ring = scheduler_detail::Ring;

  Context& ctx;
  Graph& g;
  std::shared_ptr<FrozenSolver> frozen;  // frozen-drive mode
  // A built-in frozen solver's rule: its steps may run as the fused tail (kernels/leak_tail.h).
  bool builtin_leak = false;
  LeakRule leak_rule = LeakRule::Euler;
  std::vector<uint8_t> additive_only;    // per area: every drive term is additive
  std::vector<int> drive_terms;          // per area: connections that may add a drive term
  bool staged = false;
  ButcherTableau tab;                    // staged mode
  int batch = -1;
  DType dtype = DType::F32;
  bool params_copied = false;
  bool strided_skip = true;  // the runners' OperatorOptions
  // Per area.
  std::vector<Ring> rings;
  std::vector<int> ring_size;             // slots needed
  std::vector<int> forward_delay;         // k of the area's forwarded output (-1: none)
  std::vector<Tensor> drive, state, memory, pooled, scratch_term, tau;
  std::vector<uint8_t> memory_present;
  // Per connection.
  std::vector<OperatorRunner> runners;
  std::vector<Tensor> term;
  // Parameters in the run's dtype on the context's device: the graph's own, or copies (f64
  // runs, a CUDA context) refreshed from the graph at the start of every run.
  ParamStore converted;
  ParamStore* params = nullptr;
  // Readout: per step (literal) or over a chunk of steps (fast paths): the pooled features of
  // chunk step j in rows [j B, (j + 1) B) of readout_rows, logits likewise.
  Tensor readout_mean, logits_step, readout_rows, logits_rows;
  std::vector<int64_t> readout_steps;  // recorded steps held in the chunk, in order
  // Terms of connections from the input frame (fast paths): computed for frame version
  // ext_version[ci] (-1: none); reused while the frame stays the same.
  std::vector<Tensor> ext_term;
  std::vector<int64_t> ext_version;
  int64_t frame_version = 0;
  bool reuse_input_terms = false;
  bool fused_tail = false;  // frozen steps through ops::leak_tail_forward (fast paths)
  Tensor frame, adapted, transformed;
  std::unique_ptr<OperatorRunner> input_runner;

  // Staged mode, per area: stage slopes K_i, the stage rate, its pooled copy, scratch, slopes.
  std::vector<std::vector<Tensor>> K;
  std::vector<Tensor> stage_r, stage_pooled, pre, zeros;
  std::vector<Ring> slopes;
  std::vector<Tensor> initial_slope;  // slope at step -1 (from rest), right-sided
  bool initial_slope_set = false;
  std::vector<Tensor> interp, interp_pooled;  // per connection

  std::vector<const Tensor*> stage_base;      // per area: the step's start value (eval_stage)

  // Adaptive mode (SolverSpec::is_adaptive; scheduler_adaptive.cpp). The dense history of an
  // area: the accepted step ends, time ascending (in steps; -1 is the start from rest), each
  // with its rate and its slopes d r / d step from the left (the step that ended there) and
  // from the right (the next step's first stage; differs where the input frame changes).
  struct DenseNode {
    double time = 0;
    Tensor value, slope_left, slope_right;
  };
  bool adaptive = false;
  AdaptiveOptions control;
  AdaptiveStats stats;
  std::vector<double> accepted_h;          // ms, this run's accepted steps
  std::vector<std::deque<DenseNode>> dense;  // per area
  std::vector<DenseNode> spare;            // pruned nodes, their tensors reused
  std::vector<Tensor> y_new, err_buf, k_end;  // per area
  double h_next = 0, h_cap = 1, err_prev = 1;  // steps; the last accepted error
  bool have_k0 = false;                    // K[a][0] holds the slope at the current time
  int max_read_age = 0;                    // steps: the oldest history a stage may read

  std::vector<const Tensor*> fwd_src;  // per area: the unpooled value it forwards (forwarded())
  int steps_of_run = 0;  // T of the current run (run())

  // ---- CUDA-graph replay (RunOptions::cuda_graph; scheduler.cpp) -------------------------------
  // One graph is kept, for the last run key; the recorder, the probes and the input buffer it
  // points into live with it. Host-side loop state (rings' step and present slots, the
  // recording's present flags, the probes' written slots) is the same on every run of a key, so
  // a replay only relaunches the device work; the recording's present flags come from the
  // captured run's host pass.
  struct GraphState {
    std::vector<uint64_t> key;    // what the captured loop's control flow depends on
    std::vector<uint64_t> bound;  // what its kernels have baked in (bindings())
    bool warmed = false;
    Tensor input;  // the persistent device copy of the input sequence
    std::unique_ptr<Recorder> recorder;
    std::unique_ptr<StabilityProbes> probes;
    CudaGraph exec;
    int64_t calls = 0;  // operator evaluations of the captured loop
    double flops = 0;   // their FLOPs
  };
  GraphState cg;

  std::vector<Tensor> argmax_bufs;  // per pooled area (allocate())
  int64_t last_calls = 0;           // operator evaluations of the last run
  double last_flops = 0;            // their FLOPs (OperatorRunner::forward_flops)
  int64_t calls_at_start = 0;       // total_calls() and total_flops() when the last run began
  double flops_at_start = 0;

  // scheduler.cpp: construction, buffers, parameters, the run entry points, CUDA-graph replay.
  Impl(Context& c, Graph& graph, const SolverSpec& s);
  void allocate(int B, DType t, bool strided);
  DType tau_dtype() const;
  void refresh_parameters();
  Recording run(const Tensor& input, const RunOptions& opt);
  static void put(std::vector<uint64_t>& v, double x);
  std::vector<uint64_t> graph_key(const Tensor& input, const RunOptions& opt,
                                  const std::vector<uint8_t>& repeats, int chunk) const;
  std::vector<uint64_t> bindings();
  Recording run_graph(const Tensor& input, const RunOptions& opt,
                      const std::vector<uint8_t>& repeats, int chunk);
  int64_t total_calls() const;
  double total_flops() const;
  void count_work();  // last_calls and last_flops: the work since the run began
  const Tensor& argmax_buf(int a) const;

  // scheduler_rings.cpp: forwarded and delayed values, Hermite history reads.
  const Tensor* forwarded(int a, const std::vector<uint8_t>& fwd_present) const;
  void update_forwarded(int a, int64_t t, bool present, const Tensor& r,
                        std::vector<uint8_t>& fwd_present);
  const Tensor* history_at(int s, double when, Tensor& dst);

  // scheduler_step.cpp: the step loop and the sequential frozen-drive step of one area; the
  // drive sum (gather_drive, below) serves both solver families.
  void step_loop(const Tensor& seq, const RunOptions& opt, const std::vector<uint8_t>& repeats,
                 int chunk, Recorder& recorder, StabilityProbes* probes);
  template <class Reader>
  bool gather_drive(int a, Reader&& read, LeakTailTerms* collect = nullptr);
  void nonlinearity(const Area& ar, const Tensor& x, const Tensor& r);
  void step_area(int a, int64_t t, const Tensor& x_in, std::vector<uint8_t>& fwd_present,
                 std::vector<uint8_t>& r_present, StabilityProbes* probes);

  // scheduler_staged.cpp: the Runge-Kutta stage loop.
  void pool_into(int a, const Tensor& src, const Tensor& dst);
  void eval_stage(int i, double when, double hms, const Tensor& x_in,
                  const std::vector<const Tensor*>& base, bool dense);
  void step_staged(int64_t t, const Tensor& x_in, std::vector<uint8_t>& fwd_present,
                   std::vector<uint8_t>& r_present, StabilityProbes* probes);

  // scheduler_adaptive.cpp: embedded pairs with step-size control.
  void allocate_adaptive(const Shape& area_shape, size_t a, DType t);
  void begin_adaptive_run();
  DenseNode new_node(size_t a);
  const Tensor* dense_at(int s, double when, Tensor& dst);
  double error_norm() const;
  void step_adaptive(int64_t t, const Tensor& x_in, bool frame_changed,
                     std::vector<uint8_t>& fwd_present, std::vector<uint8_t>& r_present,
                     StabilityProbes* probes);
  void finish_adaptive_stats();

  // scheduler_fast.cpp: input terms once per frame, the fused step tail.
  const Tensor* input_term(size_t ci, const Tensor& x);
  void step_area_fused(int a, int64_t t, const LeakTailTerms& terms, const Tensor* prev,
                       const Tensor& r, StabilityProbes* probes);

  // scheduler_record.cpp: the recording, the classifier, the stability probes.
  int readout_classes() const;
  std::unique_ptr<StabilityProbes> make_probes(const RunOptions& opt) const;
  void record_step(int64_t t, int64_t tr, const std::vector<uint8_t>& fwd_present,
                   const std::vector<uint8_t>& r_present, int chunk, Recorder& recorder);
  void flush_readout(Recorder& recorder);
};

// Sums area a's terms into drive[a]: terms entering the feedforward operator's input or middle
// first (recurrence targets input / middle), then the connections in order: feedforward,
// recurrence, skip, feedback (spec §2.3). read(ci) gives connection ci's source value or
// nullptr when absent; an absent term is left out. Returns false when every term is absent.
template <class Reader>
bool Scheduler::Impl::gather_drive(int a, Reader&& read, LeakTailTerms* collect) {
  Tensor& u = drive[size_t(a)];
  // The sum so far: u, or a term's own buffer (not yet copied into u) while it is alone.
  // With `collect` (an area whose terms are all additive, at most LeakTailTerms::kMax of them)
  // the terms are listed in order for the fused tail instead, and u holds at most one of them.
  const Tensor* acc = nullptr;
  auto combine = [&](const Tensor& v, bool multiplicative) {
    if (collect) {
      collect->push(v);
      acc = &v;
      return;
    }
    if (!acc) {
      acc = &v;  // an absent x gives T(h) alone, in both modes
      return;
    }
    if (multiplicative)
      ops::mul_one_plus_tanh(ctx, *acc, v, u);
    else
      ops::add(ctx, *acc, v, u);
    acc = &u;
  };
  Tensor input_add, middle_add;
  for (size_t ci = 0; ci < g.connections.size(); ++ci) {
    const Connection& c = g.connections[ci];
    if (c.target != a || c.entry == Entry::Output) continue;
    const Tensor* h = read(ci);
    if (!h) continue;
    runners[ci].forward(ctx, *h, term[ci]);
    (c.entry == Entry::Input ? input_add : middle_add) = term[ci];
  }
  for (size_t ci = 0; ci < g.connections.size(); ++ci) {
    const Connection& c = g.connections[ci];
    if (c.target != a || c.entry != Entry::Output) continue;
    const Tensor* h = read(ci);
    if (c.kind == ConnKind::Feedforward) {
      // f = FF(x [+ input term]) [with the middle term]; absent x gives the input term alone.
      if (!h && !input_add.defined()) continue;
      const Tensor* cached =
          h && !input_add.defined() && !middle_add.defined() ? input_term(ci, *h) : nullptr;
      if (cached) {
        combine(*cached, false);
        continue;
      }
      const Tensor& dst = acc ? term[ci] : u;
      if (h)
        runners[ci].forward(ctx, *h, dst, input_add, middle_add);
      else
        runners[ci].forward(ctx, input_add, dst, {}, middle_add);
      combine(dst, false);
      continue;
    }
    if (!h) continue;
    const Tensor* v = input_term(ci, *h);
    if (!v) {
      runners[ci].forward(ctx, *h, term[ci]);
      v = &term[ci];
    }
    combine(*v, c.integration != Integration::Additive);
  }
  if (acc && acc != &u && !collect) ops::scale(ctx, 1.0, *acc, u);
  return acc != nullptr;
}

}  // namespace dynsim
