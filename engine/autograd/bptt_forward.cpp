// The forward of the reverse mode through time (Bptt::Impl, bptt_detail.h): the building blocks
// that run one component call (operator, drive sum, solver step or slope, nonlinearity, fused
// step tail, pooling, readout, cut) and record its node on the tape (tape_detail.h), the schedule
// that calls them in the scheduler's order (engine/dynamics/scheduler_step.cpp and
// scheduler_staged.cpp, step for step), and
// the activity loss's forward bookkeeping. Their reverse rules: bptt_reverse.cpp; the segment
// loop that drives step(): bptt_checkpoint.cpp.
#include <cmath>
#include <utility>
#include <vector>

#include "engine/autograd/bptt_detail.h"
#include "engine/core/errors.h"
#include "engine/dynamics/hermite.h"
#include "kernels/dispatch.h"

namespace dynsim {

// ---- Building blocks: each runs its forward now and records its node. ----

Var Bptt::Impl::op(int ci, Var x, Var input_add, Var middle_add) {
  OperatorRunner& r = ci == kInputTransform ? *input_runner : runners[size_t(ci)];
  const Var y = tp.fresh(r.output_shape(), dtype);
  r.forward(ctx, tp.v(x), tp.v(y), input_add == kNone ? Tensor() : tp.v(input_add),
            middle_add == kNone ? Tensor() : tp.v(middle_add));
  Node n{NodeKind::Op};
  n.out = y;
  n.in0 = x;
  n.in1 = input_add;
  n.in2 = middle_add;
  n.index = ci;
  tp.add_node(n);
  return y;
}

Var Bptt::Impl::lin(const std::vector<std::pair<double, Var>>& terms) {
  const Var y = tp.fresh(tp.v(terms[0].second).shape(), dtype);
  ops::scale(ctx, terms[0].first, tp.v(terms[0].second), tp.v(y));
  for (size_t k = 1; k < terms.size(); ++k)
    ops::axpy(ctx, terms[k].first, tp.v(terms[k].second), tp.v(y));
  Node n{NodeKind::Lin};
  n.out = y;
  n.lin_begin = int(tp.lin_c.size());
  n.lin_count = int(terms.size());
  for (const auto& [c, x] : terms) {
    tp.lin_c.push_back(c);
    tp.lin_v.push_back(x);
  }
  return tp.add_node(n);
}

Var Bptt::Impl::binary(NodeKind k, Var a, Var b) {
  const Var y = tp.fresh(tp.v(a).shape(), dtype);
  if (k == NodeKind::Add)
    ops::add(ctx, tp.v(a), tp.v(b), tp.v(y));
  else
    ops::mul_one_plus_tanh(ctx, tp.v(a), tp.v(b), tp.v(y));
  Node n{k};
  n.out = y;
  n.in0 = a;
  n.in1 = b;
  return tp.add_node(n);
}

Var Bptt::Impl::frozen_step(int a, Var u, Var h) {
  const Var x = tp.fresh(tp.v(u).shape(), dtype);
  const Tensor hv = h == kNone ? Tensor() : tp.v(h);
  if (custom)
    custom->step(ctx, tp.v(u), hv, tau[size_t(a)], g.delays.dt, tp.v(x));
  else
    ops::leak_forward(ctx, LeakParams{rule, g.delays.dt}, tp.v(u), hv, tau[size_t(a)], tp.v(x));
  Node n{NodeKind::Frozen};
  n.out = x;
  n.in0 = u;
  n.in1 = h;
  n.index = a;
  return tp.add_node(n);
}

Var Bptt::Impl::slope(int a, Var u, Var r) {
  const Var k = tp.fresh(tp.v(u).shape(), dtype);
  ops::leak_slope(ctx, tp.v(u), tp.v(r), tau[size_t(a)], tp.v(k));
  Node n{NodeKind::Slope};
  n.out = k;
  n.in0 = u;
  n.in1 = r;
  n.index = a;
  return tp.add_node(n);
}

Var Bptt::Impl::nonlinearity(int a, Var x) {
  const Var r = tp.fresh(tp.v(x).shape(), dtype);
  ops::relu_forward(ctx, tp.v(x), tp.v(r));
  Node n{NodeKind::Relu};
  n.out = r;
  n.in0 = x;
  tp.add_node(n);
  const Area& ar = g.areas[size_t(a)];
  if (ar.supralinearity == 1.0) return r;
  const Var s = tp.fresh(tp.v(x).shape(), dtype);
  SupralinearityParams sp;
  sp.n = ar.supralinearity;
  ops::supralinearity_forward(ctx, sp, tp.v(r), tp.v(s));
  Node m{NodeKind::Supra};
  m.out = s;
  m.in0 = r;
  m.index = a;
  return tp.add_node(m);
}

LeakTailParams Bptt::Impl::tail_params(int a) const {
  const Area& ar = g.areas[size_t(a)];
  LeakTailParams lp;
  lp.rule = rule;
  lp.dt = g.delays.dt;
  lp.supralinear = ar.supralinearity != 1.0;
  lp.supra.n = ar.supralinearity;
  return lp;
}

LeakTailTerms Bptt::Impl::tail_terms(const Node& n) const {
  LeakTailTerms lt;
  for (int k = 0; k < n.lin_count; ++k) lt.push(tp.v(tp.lin_v[size_t(n.lin_begin + k)]));
  return lt;
}

Var Bptt::Impl::tail(int a, const std::vector<Var>& terms, Var h, Var* x_out) {
  const Var r = tp.fresh(tp.v(terms[0]).shape(), dtype);
  const Var x = x_out ? tp.fresh(tp.v(terms[0]).shape(), dtype) : kNone;
  Node n{NodeKind::Tail};
  n.out = r;
  n.in0 = h;
  n.aux = x;
  n.index = a;
  n.lin_begin = int(tp.lin_v.size());
  n.lin_count = int(terms.size());
  for (Var v : terms) {
    tp.lin_c.push_back(1.0);
    tp.lin_v.push_back(v);
  }
  ops::leak_tail_forward(ctx, tail_params(a), tail_terms(n), h == kNone ? Tensor() : tp.v(h),
                         tau[size_t(a)], x == kNone ? Tensor() : tp.v(x), tp.v(r));
  if (x_out) *x_out = x;
  return tp.add_node(n);
}

Var Bptt::Impl::pool(int a, Var x) {
  const Area& ar = g.areas[size_t(a)];
  const Var y = tp.fresh(Shape{batch, ar.channels, ar.out_height(), ar.out_width()}, dtype);
  const Var am = tp.leaf(tp.take(tp.v(y).shape(), DType::I32), false);
  ops::maxpool2d_forward(ctx, ar.pool, tp.v(x), tp.v(y), tp.v(am));
  Node n{NodeKind::Pool};
  n.out = y;
  n.in0 = x;
  n.aux = am;
  n.index = a;
  return tp.add_node(n);
}

Var Bptt::Impl::readout(Var v) {
  const Area& src = g.areas[size_t(g.readout.source)];
  const Var mean = tp.fresh(Shape{batch, src.channels}, dtype);
  ops::mean_hw_forward(ctx, tp.v(v), tp.v(mean));
  const Var y = tp.fresh(Shape{batch, g.readout.n_classes}, dtype);
  ops::linear_forward(ctx, tp.v(mean), g.params.get(g.readout.weight),
                      g.params.get(g.readout.bias), tp.v(y));
  Node n{NodeKind::Readout};
  n.out = y;
  n.in0 = v;
  n.aux = mean;
  return tp.add_node(n);
}

Var Bptt::Impl::detached(Var v) {
  if (v == kNone) return kNone;
  const size_t i = cut_count++;
  if (bopt->record_cuts && !replay) {
    if (bopt->record_cuts->size() <= i) bopt->record_cuts->resize(i + 1);
    (*bopt->record_cuts)[i] = ctx.to_host(tp.v(v));
  }
  if (bopt->frozen_cuts) {
    if (i >= bopt->frozen_cuts->size())
      throw DataError(concat("bptt: frozen_cuts holds ", bopt->frozen_cuts->size(),
                             " values but the run cuts more"));
    const Tensor t = tp.take(tp.v(v).shape(), dtype);
    ctx.copy(t, (*bopt->frozen_cuts)[i]);
    return tp.leaf(t, false);
  }
  return tp.leaf(tp.v(v), false);
}

// ---- The schedule (engine/dynamics/scheduler_step.cpp, _staged.cpp, step for step). ----

template <class Reader>
Var Bptt::Impl::gather_drive(int a, Reader&& read, bool real, std::vector<Var>* collect) {
  Var input_add = kNone, middle_add = kNone, u = kNone;
  if (collect) collect->clear();
  auto monitor = [&](int ci, Var y) {
    if (real && conn_module[size_t(ci)] >= 0) note_module(conn_module[size_t(ci)], y);
  };
  for (size_t ci = 0; ci < g.connections.size(); ++ci) {
    const Connection& c = g.connections[ci];
    if (c.target != a || c.entry == Entry::Output) continue;
    const Var h = read(ci);
    if (h == kNone) continue;
    const Var term = op(int(ci), h);
    monitor(int(ci), term);
    (c.entry == Entry::Input ? input_add : middle_add) = term;
  }
  for (size_t ci = 0; ci < g.connections.size(); ++ci) {
    const Connection& c = g.connections[ci];
    if (c.target != a || c.entry != Entry::Output) continue;
    const Var h = read(ci);
    if (c.kind == ConnKind::Feedforward) {
      if (h == kNone && input_add == kNone) continue;
      const Var f = h != kNone ? op(int(ci), h, input_add, middle_add)
                               : op(int(ci), input_add, kNone, middle_add);
      monitor(int(ci), f);
      if (collect)
        collect->push_back(f), u = f;
      else
        u = u == kNone ? f : binary(NodeKind::Add, u, f);
      continue;
    }
    if (h == kNone) continue;
    const Var term = op(int(ci), h);
    monitor(int(ci), term);
    if (collect)
      collect->push_back(term), u = term;
    else if (u == kNone)
      u = term;  // an absent x gives T(h) alone, in both modes
    else
      u = binary(c.integration == Integration::Additive ? NodeKind::Add : NodeKind::Gate, u, term);
  }
  return u;
}

void Bptt::Impl::check_finite(int a, int64_t t, Var x, const char* what) {
  if (!ropt->stability_check) return;
  const Tensor hx = ctx.host_view(tp.v(x));
  for (int64_t i = 0; i < hx.numel(); ++i)
    if (!std::isfinite(hx.item(i)))
      throw Error(concat("stability check: non-finite value in area ", g.areas[size_t(a)].name,
                         " at step ", t, " (tensor x, the state before the nonlinearity; ",
                         what, ")"));
}

void Bptt::Impl::update_forwarded(int a, int64_t t, bool present, Var r) {
  const int k = forward_delay[size_t(a)];
  fwd[size_t(a)] = kNone;
  if (k < 0) return;
  const Var src = k == 0 ? (present ? r : kNone) : rings[size_t(a)].at(t - k);
  if (src == kNone) return;
  fwd[size_t(a)] = g.areas[size_t(a)].has_pool ? pool(a, src) : src;
}

void Bptt::Impl::step_area(int a, int64_t t, Var x_in, bool real) {
  auto read = [&](size_t ci) -> Var {
    const Connection& c = g.connections[ci];
    if (!c.delivers) return kNone;
    if (c.source == kExternalInput) return x_in;
    if (c.kind == ConnKind::Feedforward) return fwd[size_t(c.source)];
    return rings[size_t(c.source)].at(t - c.delay_steps);
  };
  const bool fuse = fused_tail && additive_only[size_t(a)] &&
                    drive_terms[size_t(a)] <= LeakTailTerms::kMax;
  const Var u = gather_drive(a, read, real, fuse ? &tail_buf : nullptr);
  const Var prev = g.ring_capacity >= 1 ? rings[size_t(a)].at(t - 1) : kNone;
  const bool present = u != kNone;
  Var r = kNone;
  if (present && fuse) {
    const Var h = prev != kNone ? prev : (memory_present[size_t(a)] ? memory[size_t(a)] : kNone);
    Var x = kNone;
    const bool want_x = prev == kNone || ropt->stability_check;
    r = tail(a, tail_buf, h, want_x ? &x : nullptr);
    if (prev == kNone) {  // the solver's private memory: written only when no rate was passed
      memory[size_t(a)] = x;
      memory_present[size_t(a)] = 1;
    }
    if (ropt->stability_check)
      check_finite(a, t, x, t < ropt->idle_steps ? "idle phase" : "real phase");
    if (real) note_area(a, r);
  } else if (present) {
    const Var h = prev != kNone ? prev : (memory_present[size_t(a)] ? memory[size_t(a)] : kNone);
    const Var x = frozen_step(a, u, h);
    if (prev == kNone) {  // the solver's private memory: written only when no rate was passed
      memory[size_t(a)] = x;
      memory_present[size_t(a)] = 1;
    }
    check_finite(a, t, x, t < ropt->idle_steps ? "idle phase" : "real phase");
    r = nonlinearity(a, x);
    if (real) note_area(a, r);
  }
  rings[size_t(a)].write(t, present, r);
  update_forwarded(a, t, present, r);
}

Var Bptt::Impl::history_at(int s, double when) {
  const int64_t m = int64_t(std::floor(when));
  const double u = when - double(m);
  auto value = [&](int64_t step) {
    const Var v = step < 0 ? kNone : rings[size_t(s)].at(step);
    return v != kNone ? v : zero_var[size_t(s)];
  };
  auto slope_at = [&](int64_t step, bool right) {
    if (step == -1)
      return right && initial_slope_set ? initial_slope[size_t(s)] : zero_var[size_t(s)];
    const Var v = step < 0 ? kNone : slopes[size_t(s)].at(step);
    return v != kNone ? v : zero_var[size_t(s)];
  };
  if (u < 1e-12) return value(m);
  const Hermite h(u);
  return lin({{h.h00, value(m)}, {h.h10, slope_at(m, true)}, {h.h01, value(m + 1)},
              {h.h11, slope_at(m + 1, false)}});
}

void Bptt::Impl::step_staged(int64_t t, Var x_in, bool real) {
  const size_t A = g.areas.size();
  const double dt = g.delays.dt;
  const int S = tab.stages();
  std::vector<std::vector<Var>> K(A, std::vector<Var>(size_t(S), kNone));
  std::vector<Var> stage_r(A, kNone), stage_pooled(A, kNone);
  auto base = [&](size_t a) {
    const Var h = rings[a].at(t - 1);
    return h != kNone ? h : zero_var[a];
  };
  for (int i = 0; i < S; ++i) {
    const double when = double(t - 1) + tab.c[size_t(i)];
    for (size_t a = 0; a < A; ++a) {
      if (i == 0) {
        stage_r[a] = base(a);
      } else {
        std::vector<std::pair<double, Var>> terms{{1.0, base(a)}};
        for (int j = 0; j < i; ++j)
          if (tab.a[size_t(i)][size_t(j)] != 0)
            terms.push_back({dt * tab.a[size_t(i)][size_t(j)], K[a][size_t(j)]});
        stage_r[a] = nonlinearity(int(a), lin(terms));
      }
      if (g.areas[a].has_pool && forward_delay[a] == 0) stage_pooled[a] = pool(int(a), stage_r[a]);
    }
    for (size_t a = 0; a < A; ++a) {
      auto read = [&](size_t ci) -> Var {
        const Connection& c = g.connections[ci];
        if (!c.delivers) return kNone;
        if (c.source == kExternalInput) return x_in;
        const int src = c.source;
        const bool pooled_ff = c.kind == ConnKind::Feedforward && g.areas[size_t(src)].has_pool;
        if (c.delay_steps == 0) return pooled_ff ? stage_pooled[size_t(src)] : stage_r[size_t(src)];
        const Var v = history_at(src, when - c.delay_steps);
        return pooled_ff ? pool(src, v) : v;
      };
      // The activity loss sees the drive terms of the step's first stage (one call per step).
      Var u = gather_drive(int(a), read, real && i == 0);
      if (u == kNone) u = zero_var[a];  // no input: U = 0
      K[a][size_t(i)] = slope(int(a), u, stage_r[a]);
    }
    if (i == 0) {  // d r / d step at t - 1, kept for the interpolation of later reads
      for (size_t a = 0; a < A; ++a) {
        if (rings[a].at(t - 1) != kNone)
          slopes[a].write(t - 1, true, lin({{dt, K[a][0]}}));
        else if (t == 0)
          initial_slope[a] = lin({{dt, K[a][0]}});
      }
      if (t == 0) initial_slope_set = true;
    }
  }
  for (size_t a = 0; a < A; ++a) {
    std::vector<std::pair<double, Var>> terms{{1.0, base(a)}};
    for (int i = 0; i < S; ++i)
      if (tab.b[size_t(i)] != 0) terms.push_back({dt * tab.b[size_t(i)], K[a][size_t(i)]});
    const Var pre = lin(terms);
    check_finite(int(a), t, pre, "staged solver");
    const Var r = nonlinearity(int(a), pre);
    if (real) note_area(int(a), r);
    rings[a].write(t, true, r);
    update_forwarded(int(a), t, true, r);
  }
}

void Bptt::Impl::step(int64_t t) {
  const int B = batch;
  const bool idle = t < ropt->idle_steps;
  const int64_t tr = t - ropt->idle_steps;
  const Var frame = tp.fresh(frame_shape, dtype);
  tp.req[size_t(frame)] = 0;
  const Tensor& fv = tp.v(frame);
  if (idle) {
    ops::fill(ctx, ropt->non_input_value, fv);
  } else {
    // Step tr of every sample: one strided copy (host or device input, any device).
    const int64_t per = fv.numel() / B, BT = int64_t(B) * T;
    ctx.copy_rows(fv, per, input->view(Shape{BT, per}).slice(tr, BT), T * per, B, per);
  }
  Var x_in = frame;
  if (ropt->input_adaption_weight != 0.0) {
    if (!adaption_started) {
      ops::scale(ctx, 1.0, fv, adapted);
      adaption_started = true;
    } else {
      ops::scale(ctx, ropt->input_adaption_weight, adapted, adapted);
    }
    ops::scale(ctx, 1.0, adapted, fv);
  }
  if (input_runner) {
    x_in = op(kInputTransform, x_in);
    if (!idle && transform_module >= 0) note_module(transform_module, x_in);
  }
  if (staged)
    step_staged(t, x_in, !idle);
  else
    for (size_t a = 0; a < g.areas.size(); ++a) step_area(int(a), t, x_in, !idle);
  if (!idle && g.readout.source >= 0) {
    const Var v = g.readout.delivers ? fwd[size_t(g.readout.source)] : kNone;
    if (v != kNone) {
      const Var y = readout(v);
      logit_var[size_t(tr)] = y;
      if (readout_module >= 0) note_module(readout_module, y);
      if (!replay) {  // into column tr of [B, T, K], on the device: no host read per step
        const int64_t K = g.readout.n_classes, BT = int64_t(B) * T;
        ctx.copy_rows(logits.view(Shape{BT, K}).slice(tr, BT), T * K, tp.v(y), K, B, K);
      }
    }
  }
  // DynVision's cuts: the rings are detached after the idle phase and every n-th real step.
  const bool cut = (idle && t + 1 == ropt->idle_steps) ||
                   (!idle && tbptt > 0 && (tr + 1) % tbptt == 0);
  if (cut) detach_rings();
}

void Bptt::Impl::detach_rings() {
  for (size_t a = 0; a < g.areas.size(); ++a) {
    for (Var& v : rings[a].var) v = detached(v);
    if (staged) {
      for (Var& v : slopes[a].var) v = detached(v);
      initial_slope[a] = detached(initial_slope[a]);
    }
  }
}

// ---- Activity loss bookkeeping. ----

void Bptt::Impl::note_module(int module, Var y) {
  if (!activity_on() || lspec->activity_mode != ActivityMode::Legacy) return;
  monitored.push_back({y, module});
  if (!replay) {
    ++module_calls[size_t(module)];
    add_activity(y, false);
  }
}

void Bptt::Impl::note_area(int a, Var r) {
  if (!activity_on() || lspec->activity_mode != ActivityMode::Marked) return;
  const int m = area_module[size_t(a)];
  if (m < 0) return;
  monitored.push_back({r, m});
  if (!replay) {
    ++module_calls[size_t(m)];
    add_activity(r, lspec->activity_signed);
  }
}

void Bptt::Impl::add_activity(Var y, bool is_signed) {
  ops::activity_accumulate(ctx, tp.v(y), is_signed, activity_acc);
}

}  // namespace dynsim
