// The state and the methods of the reverse mode through time, Bptt::Impl (engine/autograd/bptt.h;
// not part of its API). The definitions are spread over its siblings by seam:
//   bptt.cpp            the public Bptt methods, Impl's constructor and its per-run setup
//                       (allocate, prepare_tau);
//   bptt_forward.cpp    the building blocks that run a forward and record a node, the schedule
//                       (step for step the scheduler's) and the activity-loss bookkeeping;
//   bptt_reverse.cpp    the reverse sweep over a tape (the reverse rule of every node kind), the
//                       loss seeds and the final parameter gradients;
//   bptt_checkpoint.cpp the network state, its snapshots and Impl::run (the segment loop, the
//                       loss, the reverse sweep with each segment recomputed from its snapshot).
// tape_detail.h holds the tape itself (values, gradients, nodes: the memory policy).
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "engine/autograd/bptt.h"
#include "engine/autograd/tape_detail.h"
#include "engine/dynamics/operators.h"
#include "kernels/dispatch.h"

namespace dynsim {

// The tape's names, unqualified in the reverse mode's source files (the only includers).
using autograd_detail::kInputTransform;
using autograd_detail::kNone;
using autograd_detail::leak_rule_of;
using autograd_detail::Node;
using autograd_detail::NodeKind;
using autograd_detail::Tape;
using autograd_detail::Var;
using autograd_detail::VarRing;

struct Bptt::Impl {
  Context& ctx;
  Graph& g;
  bool staged = false;
  ButcherTableau tab;
  LeakRule rule = LeakRule::Euler;
  std::shared_ptr<FrozenSolver> custom;  // forward only
  // Per area: every drive term is additive, and the number of connections that may add one
  // (the fused tail takes at most LeakTailTerms::kMax terms).
  std::vector<uint8_t> additive_only;
  std::vector<int> drive_terms;
  bool fused_tail = false;  // this run's frozen steps as Tail nodes (BpttOptions::fused_tail)
  int batch = -1;
  DType dtype = DType::F32;
  std::vector<int> ring_size, forward_delay;
  std::vector<OperatorRunner> runners;
  std::unique_ptr<OperatorRunner> input_runner;
  ParamStore pgrads;  // every parameter's gradient (the operators write into it by name)
  std::vector<Tensor> tau, gtau, zero_t;
  std::vector<uint8_t> tau_trainable;
  Tape tp;
  // The loss over [B, T, K] runs on one thread on the CPU (its summation order is fixed whatever
  // the context's thread count) and on the context's stream on CUDA.
  Context host_ctx{ContextOptions{Device::Cpu, 0, 0, 1}};
  Context& loss_ctx() { return ctx.device() == Device::Cpu ? host_ctx : ctx; }

  // Network state (what a checkpoint of the state holds).
  std::vector<VarRing> rings, slopes;
  std::vector<Var> memory, initial_slope;
  std::vector<uint8_t> memory_present;
  bool initial_slope_set = false;
  Tensor adapted;  // input adaption (a constant: the input needs no gradient)
  bool adaption_started = false;
  // Per step.
  std::vector<Var> fwd, zero_var;
  Shape frame_shape;  // [B, C, H, W] of one input frame

  // Per run.
  const Tensor* input = nullptr;
  const RunOptions* ropt = nullptr;
  const LossSpec* lspec = nullptr;
  int T = 0;
  bool replay = false;  // recomputing a segment: the loss-side bookkeeping is done already
  Tensor logits;        // [B, T, K] on the context's device (zeros where no classifier input)
  std::vector<Var> logit_var;  // per real step (current segment)
  struct Monitored {
    Var v;
    int module;
  };
  std::vector<Monitored> monitored;  // activity-loss values of the current segment
  std::vector<int64_t> module_calls;
  Tensor activity_acc;  // f64 [B] on the context's device: each sample's activity sum
  int n_modules = 0;
  int readout_module = -1, transform_module = -1;
  std::vector<int> conn_module, area_module;

  Impl(Context& c, Graph& graph, const SolverSpec& s);  // bptt.cpp

  // The dtype of what is not stored in the run's dtype: parameters and their gradients, tau and
  // its gradient, the loss values. f32 in bf16 runs (bf16 storage of the values on the tape and
  // their gradients, f32 master parameters), else the run's dtype.
  DType wide() const { return dtype == DType::BF16 ? DType::F32 : dtype; }

  // ---- Per-run setup (bptt.cpp). ----

  void allocate(int B, DType t);
  // tau of every area from its parameter (which training changes) or its fixed value.
  void prepare_tau();

  // ---- The network state on a fresh tape (bptt_checkpoint.cpp). ----

  void reset_state();
  void bind_constants();

  // ---- Building blocks: each runs its forward now and records its node (bptt_forward.cpp). ----

  Var op(int ci, Var x, Var input_add = kNone, Var middle_add = kNone);
  // y = sum c_k x_k as the scheduler computes it: scale by c_0, then axpy the others in order.
  Var lin(const std::vector<std::pair<double, Var>>& terms);
  Var binary(NodeKind k, Var a, Var b);
  Var frozen_step(int a, Var u, Var h);
  Var slope(int a, Var u, Var r);
  // r = S(ReLU(x)).
  Var nonlinearity(int a, Var x);
  LeakTailParams tail_params(int a) const;
  LeakTailTerms tail_terms(const Node& n) const;
  // r = S(ReLU(leak_step(t_0 + t_1 + ..., h))) in one pass, with the bits of frozen_step's
  // leak_forward over the chain of Add nodes and nonlinearity(). x (the state) is computed into
  // *x_out only when x_out is set; the backward recomputes it from the terms, h and tau.
  Var tail(int a, const std::vector<Var>& terms, Var h, Var* x_out);
  Var pool(int a, Var x);
  Var readout(Var v);
  // A cut: the value as a constant (or, for checks, the value recorded at this cut earlier).
  Var detached(Var v);
  size_t cut_count = 0;
  const BpttOptions* bopt = nullptr;

  // ---- The schedule (engine/dynamics/scheduler_step.cpp, _staged.cpp; bptt_forward.cpp). ----

  // With `collect` (an area whose terms are all additive, at most LeakTailTerms::kMax of them)
  // the terms are listed in order for a Tail node instead of summed by Add nodes; u is then
  // one of them (kNone when every term is absent). Defined in bptt_forward.cpp, its only user.
  template <class Reader>
  Var gather_drive(int a, Reader&& read, bool real, std::vector<Var>* collect = nullptr);

  void check_finite(int a, int64_t t, Var x, const char* what);

  void update_forwarded(int a, int64_t t, bool present, Var r);

  std::vector<Var> tail_buf;  // the drive terms of a fused area's step
  void step_area(int a, int64_t t, Var x_in, bool real);

  Var history_at(int s, double when);

  void step_staged(int64_t t, Var x_in, bool real);

  void step(int64_t t);
  int tbptt = 0;

  void detach_rings();

  // ---- Activity loss bookkeeping (bptt_forward.cpp; its seed: bptt_reverse.cpp). ----

  bool activity_on() const { return lspec->activity_weight != 0.0; }
  void note_module(int module, Var y);
  void note_area(int a, Var r);
  // Per sample: sum |y| / n (absolute) or |sum y| / n (signed), accumulated in double on the
  // context's device (kernels/activity.h; on the CPU sequentially, as the host loop did).
  void add_activity(Var y, bool is_signed);
  // Adds coef * d(activity)/dy to y's gradient.
  void seed_activity(Var y, double coef, bool is_signed);

  // ---- Segments and snapshots (the checkpoint policy; bptt_checkpoint.cpp). ----

  struct Snapshot {
    std::vector<Tensor> values;  // distinct state values, in collect_state() order
    std::vector<uint8_t> req;
    std::vector<VarRing> rings, slopes;  // Vars replaced by indices into values (-1: none)
    std::vector<int> memory, initial_slope;
    std::vector<uint8_t> memory_present;
    bool initial_slope_set = false;
    Tensor adapted;
    bool adaption_started = false;
  };
  std::vector<Snapshot> snaps;
  std::vector<size_t> cut_base;  // cuts made before each segment

  // Every Var the state holds, each once, in a fixed order.
  std::vector<Var> collect_state() const;

  void take_snapshot(Snapshot& s);

  // Starts a fresh tape whose state is the snapshot's values as leaves; returns the leaves.
  std::vector<Var> restore_snapshot(const Snapshot& s);

  // ---- Reverse sweep over the current tape (bptt_reverse.cpp). ----

  void backward_tape();

  Tensor seed;  // one step's logit gradients [B, K] on the context's device (reused)
  // Seeds the loss gradients of the current segment's logits and monitored values
  // (grad_logits [B, T, K] on the context's device).
  void seed_segment(const Tensor& grad_logits, double activity_coef);
  std::vector<int> monitor_count;  // per Var of the current tape: activity terms it carries
  double activity_coef_ = 0;

  // The forward over segments, the loss, and with grads the reverse sweep (bptt_checkpoint.cpp).
  LossValues run(const Tensor& in, const Tensor& labels, const Tensor& targets,
                 const LossSpec& loss, const BpttOptions& opt, ParamStore* grads);

  // tau's gradient through its parametrisation, then grads += the trainable parameters' ones
  // (bptt_reverse.cpp).
  void finish_grads(ParamStore& grads);
};

}  // namespace dynsim
