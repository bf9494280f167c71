// Segments of the reverse mode through time (Bptt::Impl, bptt_detail.h): the network state on a
// fresh tape, its snapshots (the checkpoint policy: the state every k steps), and Impl::run: the
// forward segment by segment (bptt_forward.cpp's step()), the loss over all real steps, and the
// reverse sweep (bptt_reverse.cpp) from the last segment back, each earlier one recomputed from
// its snapshot with the gradients of its end state carried over. The tape: tape_detail.h.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd/bptt_detail.h"
#include "engine/core/errors.h"
#include "kernels/dispatch.h"

namespace dynsim {

// ---- The network state on a fresh tape. ----

void Bptt::Impl::reset_state() {
  const size_t A = g.areas.size();
  rings.assign(A, {});
  slopes.assign(A, {});
  for (size_t a = 0; a < A; ++a) {
    rings[a].reset(ring_size[a]);
    if (staged) slopes[a].reset(ring_size[a]);
  }
  memory.assign(A, kNone);
  memory_present.assign(A, 0);
  initial_slope.assign(A, kNone);
  initial_slope_set = false;
  adaption_started = false;
  fwd.assign(A, kNone);
}

void Bptt::Impl::bind_constants() {
  zero_var.assign(g.areas.size(), kNone);
  for (size_t a = 0; a < g.areas.size(); ++a) zero_var[a] = tp.leaf(zero_t[a], false);
}

// ---- Segments and snapshots (the checkpoint policy). ----

std::vector<Var> Bptt::Impl::collect_state() const {
  std::vector<Var> out;
  auto add = [&](Var v) {
    if (v != kNone && std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  };
  for (size_t a = 0; a < g.areas.size(); ++a) {
    for (Var v : rings[a].var) add(v);
    if (staged) {
      for (Var v : slopes[a].var) add(v);
      add(initial_slope[a]);
    }
    add(memory[a]);
  }
  return out;
}

void Bptt::Impl::take_snapshot(Snapshot& s) {
  const std::vector<Var> vars = collect_state();
  auto idx = [&](Var v) {
    return v == kNone ? -1 : int(std::find(vars.begin(), vars.end(), v) - vars.begin());
  };
  s.values.resize(vars.size());
  s.req.assign(vars.size(), 0);
  for (size_t e = 0; e < vars.size(); ++e) {
    const Tensor& v = tp.v(vars[e]);
    if (!s.values[e].defined() || s.values[e].shape() != v.shape() || s.values[e].dtype() != v.dtype())
      s.values[e] = ctx.empty(v.shape(), v.dtype());
    ctx.copy(s.values[e], v);
    s.req[e] = tp.req[size_t(vars[e])];
  }
  auto map_ring = [&](const VarRing& r) {
    VarRing m = r;
    for (Var& v : m.var) v = idx(v);
    return m;
  };
  const size_t A = g.areas.size();
  s.rings.resize(A);
  s.slopes.resize(A);
  s.memory.resize(A);
  s.initial_slope.resize(A);
  for (size_t a = 0; a < A; ++a) {
    s.rings[a] = map_ring(rings[a]);
    if (staged) s.slopes[a] = map_ring(slopes[a]);
    s.memory[a] = idx(memory[a]);
    s.initial_slope[a] = idx(initial_slope[a]);
  }
  s.memory_present = memory_present;
  s.initial_slope_set = initial_slope_set;
  if (!s.adapted.defined() || s.adapted.shape() != adapted.shape() ||
      s.adapted.dtype() != adapted.dtype())
    s.adapted = ctx.empty(adapted.shape(), adapted.dtype());
  ctx.copy(s.adapted, adapted);
  s.adaption_started = adaption_started;
}

std::vector<Var> Bptt::Impl::restore_snapshot(const Snapshot& s) {
  tp.reset();
  bind_constants();
  std::vector<Var> leaves(s.values.size());
  for (size_t e = 0; e < s.values.size(); ++e) leaves[e] = tp.leaf(s.values[e], s.req[e] != 0);
  auto unmap = [&](int i) { return i < 0 ? kNone : leaves[size_t(i)]; };
  auto unmap_ring = [&](const VarRing& r) {
    VarRing m = r;
    for (Var& v : m.var) v = unmap(v);
    return m;
  };
  for (size_t a = 0; a < g.areas.size(); ++a) {
    rings[a] = unmap_ring(s.rings[a]);
    if (staged) slopes[a] = unmap_ring(s.slopes[a]);
    memory[a] = unmap(s.memory[a]);
    initial_slope[a] = unmap(s.initial_slope[a]);
  }
  memory_present = s.memory_present;
  initial_slope_set = s.initial_slope_set;
  ctx.copy(adapted, s.adapted);
  adaption_started = s.adaption_started;
  return leaves;
}

// ---- The run: forward segment by segment, the loss, the reverse sweep. ----

LossValues Bptt::Impl::run(const Tensor& in, const Tensor& labels, const Tensor& targets,
                           const LossSpec& loss, const BpttOptions& opt, ParamStore* grads) {
  if (in.rank() != 5)
    throw DataError(concat("bptt: input must be [B, T, C, H, W], got ", in.str()));
  const int B = int(in.dim(0));
  T = int(in.dim(1));
  if (in.dim(2) != g.input_channels || in.dim(3) != g.input_height || in.dim(4) != g.input_width)
    throw DataError(concat("bptt: input frames are ", in.dim(2), "x", in.dim(3), "x", in.dim(4),
                           " but the model expects ", g.input_channels, "x", g.input_height,
                           "x", g.input_width));
  const int K = g.readout.source >= 0 ? g.readout.n_classes : 0;
  if (labels.defined() && (labels.dtype() != DType::I32 || labels.shape() != Shape{B, T}))
    throw DataError(concat("bptt: labels must be i32 [", B, ", ", T, "], got ", labels.str()));
  const bool regress = loss.mse_weight != 0 || loss.poisson_weight != 0;
  if (regress && (!targets.defined() || targets.shape() != Shape{B, T, K}))
    throw DataError(concat("bptt: mse/poisson losses need targets [", B, ", ", T, ", ", K,
                           "], got ", targets.defined() ? targets.str() : "none"));
  const DType target_t = in.dtype() == DType::BF16 ? DType::F32 : in.dtype();
  if (regress && !targets.is_cpu() && targets.dtype() != target_t)
    throw DataError(concat("bptt: device targets must be ", dtype_name(target_t),
                           in.dtype() == DType::BF16 ? " in a bf16 run" : " like the input",
                           ", got ", targets.str()));
  if (loss.ce_weight != 0 && K > 0 && !labels.defined())
    throw DataError("bptt: the cross-entropy loss needs labels");
  if (opt.memory == MemoryPolicy::Checkpoint && opt.checkpoint_every < 1)
    throw ConfigError(concat("bptt: checkpoint_every must be >= 1, got ", opt.checkpoint_every));
  if (opt.tbptt < 0) throw ConfigError(concat("bptt: tbptt must be >= 0, got ", opt.tbptt));
  if (grads && custom)
    throw NotImplemented(concat("solver '", custom->name(),
                                     "' is a custom FrozenSolver without a reverse mode"));
  allocate(B, in.dtype());
  // The self recurrence's scalars, read once per run (they change between runs, not within).
  for (OperatorRunner& r : runners) r.begin_run(ctx);
  if (input_runner) input_runner->begin_run(ctx);
  prepare_tau();
  fused_tail = opt.fused_tail && !staged && !custom;
  input = &in;
  ropt = &opt.run;
  lspec = &loss;
  tbptt = opt.tbptt;
  area_module.assign(g.areas.size(), -1);
  int n_act = n_modules;
  if (loss.activity_mode == ActivityMode::Marked) {
    n_act = 0;
    for (const std::string& name : loss.activity_areas) {
      const int a = g.area_index(name);
      if (a < 0) throw ConfigError(concat("activity loss: unknown area '", name, "'"));
      area_module[size_t(a)] = n_act++;
    }
  }
  module_calls.assign(size_t(std::max(n_act, 1)), 0);
  activity_acc = ctx.zeros(Shape{B}, DType::F64);
  logits = ctx.zeros(Shape{B, T, K}, dtype);  // new each run: out.logits may outlive it

  // Segments: [begin, end) of absolute steps.
  const int64_t total = int64_t(opt.run.idle_steps) + T;
  std::vector<std::pair<int64_t, int64_t>> segs;
  const int64_t k = opt.memory == MemoryPolicy::Checkpoint ? opt.checkpoint_every : total;
  for (int64_t s = 0; s < total; s += std::max<int64_t>(k, 1)) segs.push_back({s, std::min(total, s + k)});
  if (segs.empty()) segs.push_back({0, 0});
  if (snaps.size() < segs.size()) snaps.resize(segs.size());

  bopt = &opt;
  cut_base.resize(segs.size());
  auto run_segment = [&](size_t j) {
    if (!replay) cut_base[j] = cut_count;
    cut_count = cut_base[j];
    logit_var.assign(size_t(T), kNone);
    monitored.clear();
    for (int64_t t = segs[j].first; t < segs[j].second; ++t) step(t);
  };
  replay = false;
  cut_count = 0;
  tp.reset();
  reset_state();
  bind_constants();
  take_snapshot(snaps[0]);
  restore_snapshot(snaps[0]);
  for (size_t j = 0; j < segs.size(); ++j) {
    if (j > 0) {
      take_snapshot(snaps[j]);
      restore_snapshot(snaps[j]);
    }
    run_segment(j);
  }

  // The loss over all real steps, on the context's device (CPU: one thread); one host read
  // of the loss values and the logits per run.
  Context& lc = loss_ctx();
  LossValues out;
  const Tensor grad_logits = lc.zeros(Shape{B, T, K}, dtype);
  const Tensor flat = logits.view(Shape{int64_t(B) * T, K});
  const Tensor gflat = grad_logits.view(flat.shape());
  auto scalar = [&](double v) { return lc.to_device(Tensor::from(Shape{1}, {v}, wide())); };
  auto on_device = [&](const Tensor& t) {  // a host argument copied to a CUDA context
    return t.device() == lc.device() ? t : lc.to_device(t);
  };
  Tensor l_ce, l_mse, l_poisson;
  if (K > 0 && loss.ce_weight != 0) {
    CrossEntropyParams cp;
    cp.ignore_index = loss.ignore_index;
    const Tensor lab = on_device(labels).view(Shape{int64_t(B) * T});
    l_ce = lc.zeros(Shape{1}, wide());
    ops::cross_entropy_forward(lc, cp, flat, lab, l_ce);
    ops::cross_entropy_backward(lc, cp, scalar(loss.ce_weight * loss.scale), flat, lab, gflat,
                                GradMode::Accumulate);
  }
  Tensor tg;  // the regression targets in the logits' dtype, on the loss context's device
  if (K > 0 && (loss.mse_weight != 0 || loss.poisson_weight != 0))
    tg = on_device(targets.is_cpu() ? targets.to_dtype(wide()) : targets).view(flat.shape());
  if (K > 0 && loss.mse_weight != 0) {
    l_mse = lc.zeros(Shape{1}, wide());
    ops::mse_forward(lc, flat, tg, l_mse);
    ops::mse_backward(lc, scalar(loss.mse_weight * loss.scale), flat, tg, gflat, {},
                      GradMode::Accumulate);
  }
  if (K > 0 && loss.poisson_weight != 0) {
    l_poisson = lc.zeros(Shape{1}, wide());
    PoissonNllParams pp;
    pp.log_input = loss.poisson_log_input;
    ops::poisson_nll_forward(lc, pp, flat, tg, l_poisson);
    ops::poisson_nll_backward(lc, pp, scalar(loss.poisson_weight * loss.scale), flat, tg, gflat,
                              GradMode::Accumulate);
  }
  if (l_ce.defined()) out.ce = lc.host_view(l_ce).item(0);
  if (l_mse.defined()) out.mse = lc.host_view(l_mse).item(0);
  if (l_poisson.defined()) out.poisson = lc.host_view(l_poisson).item(0);
  out.logits = lc.host_view(logits);
  if (out.logits.dtype() == DType::BF16) out.logits = out.logits.to_dtype(DType::F32);
  const Tensor& logits_host = out.logits;
  int64_t max_calls = 0;
  for (int64_t c : module_calls) max_calls = std::max(max_calls, c);
  double activity_coef = 0;
  if (loss.activity_weight != 0 && max_calls > 0 && n_act > 0) {
    const double denom = double(n_act) * double(max_calls);
    double sum = 0;
    const Tensor acc = ctx.host_view(activity_acc);  // one read per run
    for (int b = 0; b < B; ++b) sum += acc.item(b);
    out.activity = sum / denom / B;
    activity_coef = loss.activity_weight * loss.scale / denom / B;
  }
  out.total = loss.ce_weight * out.ce + loss.activity_weight * out.activity +
              loss.mse_weight * out.mse + loss.poisson_weight * out.poisson;
  // Accuracy over the labelled entries (argmax, first maximum on ties).
  out.valid_per_step.assign(size_t(T), 0);
  out.correct_per_step.assign(size_t(T), 0);
  if (labels.defined() && K > 0) {
    const Tensor lab = ctx.host_view(labels);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) {
        const int y = int(lab.item(int64_t(b) * T + t));
        if (y == loss.ignore_index || y < 0 || y >= K) continue;
        int best = 0;
        const int64_t row = (int64_t(b) * T + t) * K;
        for (int c = 1; c < K; ++c)
          if (logits_host.item(row + c) > logits_host.item(row + best)) best = c;
        ++out.valid_per_step[size_t(t)];
        if (best == y) ++out.correct_per_step[size_t(t)];
      }
    for (int t = 0; t < T; ++t) {
      out.valid += out.valid_per_step[size_t(t)];
      out.correct += out.correct_per_step[size_t(t)];
    }
  }
  if (!grads) return out;

  // The reverse sweep, segment by segment from the last; each earlier one is recomputed from
  // its snapshot, and the gradients of its end state carried over from the later segment.
  for (auto& e : pgrads.entries()) ops::fill(ctx, 0.0, e.value);
  for (auto& gt : gtau)
    if (gt.defined()) ops::fill(ctx, 0.0, gt);
  std::vector<Tensor> carried;
  replay = true;
  for (size_t j = segs.size(); j-- > 0;) {
    std::vector<Var> leaves;
    if (j + 1 != segs.size()) {
      leaves = restore_snapshot(snaps[j]);
      run_segment(j);
    } else {
      // The last segment's tape is the forward's; its leaves are the first state Vars.
      leaves.clear();
      for (size_t e = 0; e < snaps[j].values.size(); ++e)
        leaves.push_back(Var(zero_var.size() + e));
    }
    activity_coef_ = activity_coef;
    seed_segment(grad_logits, activity_coef);
    if (!carried.empty()) {
      const std::vector<Var> end_state = collect_state();
      if (end_state.size() != carried.size())
        throw Error("bptt: internal error: the recomputed segment's state differs from the snapshot");
      for (size_t e = 0; e < carried.size(); ++e)
        if (carried[e].defined() && tp.needs(end_state[e]))
          ops::axpy(ctx, 1.0, carried[e], tp.g(end_state[e]));
      for (Tensor& c : carried)
        if (c.defined()) tp.free_grads.push_back(c);
    }
    backward_tape();
    carried.assign(leaves.size(), Tensor());
    for (size_t e = 0; e < leaves.size(); ++e) {
      carried[e] = tp.grad[size_t(leaves[e])];
      tp.grad[size_t(leaves[e])] = Tensor();
    }
  }
  for (Tensor& c : carried)
    if (c.defined()) tp.free_grads.push_back(c);
  replay = false;
  finish_grads(*grads);
  return out;
}

}  // namespace dynsim
