// Reverse mode through time (engine/autograd/bptt.h). BPTT-READY
//
// The forward is the scheduler's step order (DynVision's sequential frozen-drive steps,
// engine/dynamics/scheduler_step.cpp, or staged Runge-Kutta steps over the whole network,
// scheduler_staged.cpp) written over a tape:
// every value is a Var, every component call a Node that can run its own backward. Rings hold
// Vars, so a delayed read is an edge of the graph like any other and its gradient flows back
// through the delay by itself. tests/engine/autograd/test_bptt.cpp checks that this forward gives
// the scheduler's results bit for bit, and the gradients against f64 central differences.
//
// This file: the public Bptt methods, Bptt::Impl's constructor and its per-run setup. Bptt::Impl
// is declared in bptt_detail.h; the tape and its memory policy are in tape_detail.h, the forward
// building blocks and the schedule in bptt_forward.cpp, the reverse rule of every node kind in
// bptt_reverse.cpp, the snapshots and the segment loop with its recompute (Impl::run) in
// bptt_checkpoint.cpp.
#include "engine/autograd/bptt.h"

#include <memory>

#include "engine/autograd/bptt_detail.h"
#include "engine/core/errors.h"
#include "engine/dynamics/operators.h"
#include "kernels/dispatch.h"

namespace dynsim {

// ---- Construction and per-run setup. ----

Bptt::Impl::Impl(Context& c, Graph& graph, const SolverSpec& s) : ctx(c), g(graph), tp(c) {
  if (s.is_adaptive())
    throw NotImplemented(concat("training through the adaptive solver ", s.name,
                                " is not implemented yet; set dynamics.adaptive = false to train "
                                "with its fixed-step form (the b weights at dt)"));
  staged = s.staged();
  if (staged) {
    tab = s.resolved_tableau();
  } else if (s.custom) {
    custom = s.custom;
  } else if (!leak_rule_of(s.name, &rule)) {
    builtin_frozen_solver(s.name);  // throws the ConfigError naming the choices
  }
  additive_only.assign(g.areas.size(), 1);
  drive_terms.assign(g.areas.size(), 0);
  for (const Connection& c : g.connections) {
    if (c.entry == Entry::Output) ++drive_terms[size_t(c.target)];
    if (c.integration != Integration::Additive && c.kind != ConnKind::Feedforward)
      additive_only[size_t(c.target)] = 0;
  }
  const RingPlan plan = plan_rings(g, staged);
  ring_size = plan.size;
  forward_delay = plan.forward_delay;
}

void Bptt::Impl::allocate(int B, DType t) {
  const DType want = t == DType::BF16 ? DType::F32 : t;
  for (const auto& e : g.params.entries())
    if (e.value.dtype() != want)
      throw DataError(concat("bptt: parameter ", e.name, " is ", dtype_name(e.value.dtype()),
                             " but the input is ", dtype_name(t),
                             t == DType::BF16
                                 ? " (bf16 runs keep f32 parameters)"
                                 : " (convert the graph's parameters to the run's dtype)"));
  if (B == batch && t == dtype) return;
  batch = B;
  dtype = t;
  runners.clear();
  for (const Connection& c : g.connections) runners.emplace_back(ctx, c.op, g.params, B, t);
  input_runner.reset();
  if (g.input_transform.in_channels > 0)
    input_runner = std::make_unique<OperatorRunner>(ctx, g.input_transform, g.params, B, t);
  pgrads = ParamStore();
  for (const auto& e : g.params.entries())
    pgrads.add(e.name, ctx.zeros(e.value.shape(), e.value.dtype()), e.trainable);
  const size_t A = g.areas.size();
  zero_t.assign(A, {});
  for (size_t a = 0; a < A; ++a) {
    const Area& ar = g.areas[a];
    zero_t[a] = ctx.zeros(Shape{B, ar.channels, ar.height, ar.width}, t);
  }
  frame_shape = Shape{B, g.input_channels, g.input_height, g.input_width};
  adapted = ctx.empty(frame_shape, t);
  // Activity-loss modules (legacy): every operator with parameters, the front-end, the
  // classifier (DynVision hooked every Conv2d and Linear).
  n_modules = 0;
  conn_module.assign(g.connections.size(), -1);
  for (size_t ci = 0; ci < g.connections.size(); ++ci)
    if (g.connections[ci].op.kind != OpKind::Identity) conn_module[ci] = n_modules++;
  transform_module = input_runner ? n_modules++ : -1;
  readout_module = g.readout.source >= 0 ? n_modules++ : -1;
}

void Bptt::Impl::prepare_tau() {
  const size_t A = g.areas.size();
  tau.assign(A, {});
  gtau.assign(A, {});
  tau_trainable.assign(A, 0);
  for (size_t a = 0; a < A; ++a) {
    const Area& ar = g.areas[a];
    tau[a] = ctx.to_device(area_tau(ctx, g, ar, batch, wide()));
    if (ar.tau_per_sample.empty() && !ar.tau_param.empty())
      for (const auto& p : g.params.entries())
        if (p.name == ar.tau_param) tau_trainable[a] = p.trainable;
    if (tau_trainable[a]) gtau[a] = ctx.zeros(Shape{1}, wide());
  }
}

// ---- The public interface. ----

Bptt::Bptt(Context& ctx, Graph& graph, const SolverSpec& solver)
    : impl_(std::make_unique<Impl>(ctx, graph, solver)) {}
Bptt::~Bptt() = default;

LossValues Bptt::run(const Tensor& input, const Tensor& labels, const Tensor& targets,
                     const LossSpec& loss, const BpttOptions& opt, ParamStore* grads) {
  return impl_->run(input, labels, targets, loss, opt, grads);
}

ParamStore Bptt::zero_grads(Context& ctx, const ParamStore& params) {
  ParamStore g;
  for (const auto& e : params.entries())
    if (e.trainable) g.add(e.name, ctx.zeros(e.value.shape(), e.value.dtype()));
  return g;
}

void Bptt::zero(Context& ctx, ParamStore& grads) {
  for (auto& e : grads.entries()) ops::fill(ctx, 0.0, e.value);
}

int64_t Bptt::pool_bytes() const {
  int64_t b = impl_->tp.bytes();
  for (const auto& s : impl_->snaps)
    for (const Tensor& t : s.values)
      if (t.defined()) b += t.numel() * int64_t(dtype_size(t.dtype()));
  return b;
}

}  // namespace dynsim
