// The reverse sweep of the reverse mode through time (Bptt::Impl, bptt_detail.h): backward_tape,
// the reverse rule of every node kind (tape_detail.h's NodeKind; the nodes are recorded in
// bptt_forward.cpp), the loss and activity seeds of a segment, and the final parameter gradients
// (tau through its parametrisation). The segment loop that calls them: bptt_checkpoint.cpp.
#include <cmath>

#include "engine/autograd/bptt_detail.h"
#include "engine/core/errors.h"
#include "kernels/dispatch.h"

namespace dynsim {

// ---- Reverse sweep over the current tape. ----

void Bptt::Impl::backward_tape() {
  const GradMode acc = GradMode::Accumulate;
  for (size_t ni = tp.nodes.size(); ni-- > 0;) {
    const Node& n = tp.nodes[ni];
    // The activity loss's own gradient joins once everything downstream has arrived (the
    // same order in every memory policy, so their results agree bit for bit).
    for (int k = 0; k < monitor_count[size_t(n.out)]; ++k)
      seed_activity(n.out, activity_coef_,
                    lspec->activity_mode == ActivityMode::Marked && lspec->activity_signed);
    // Nothing flows back through it (a Tail node also passes on its x's own gradient).
    if (!tp.grad[size_t(n.out)].defined() &&
        !(n.kind == NodeKind::Tail && n.aux != kNone && tp.grad[size_t(n.aux)].defined()))
      continue;
    const Tensor gy = tp.grad[size_t(n.out)];
    switch (n.kind) {
      case NodeKind::Op: {
        OperatorRunner& r = n.index == kInputTransform ? *input_runner : runners[size_t(n.index)];
        r.backward(ctx, tp.v(n.in0), gy, tp.g_or_none(n.in0), &pgrads, acc,
                   n.in1 == kNone ? Tensor() : tp.v(n.in1),
                   n.in2 == kNone ? Tensor() : tp.v(n.in2), tp.g_or_none(n.in1),
                   tp.g_or_none(n.in2));
        break;
      }
      case NodeKind::Lin:
        for (int k = 0; k < n.lin_count; ++k) {
          const Var x = tp.lin_v[size_t(n.lin_begin + k)];
          if (tp.needs(x)) ops::axpy(ctx, tp.lin_c[size_t(n.lin_begin + k)], gy, tp.g(x));
        }
        break;
      case NodeKind::Add:
        if (tp.needs(n.in0)) ops::axpy(ctx, 1.0, gy, tp.g(n.in0));
        if (tp.needs(n.in1)) ops::axpy(ctx, 1.0, gy, tp.g(n.in1));
        break;
      case NodeKind::Gate:
        ops::mul_one_plus_tanh_backward(ctx, gy, tp.v(n.in0), tp.v(n.in1), tp.g_or_none(n.in0),
                                        tp.g_or_none(n.in1), acc);
        break;
      case NodeKind::Frozen:
        ops::leak_backward(ctx, LeakParams{rule, g.delays.dt}, gy, tp.v(n.in0),
                           n.in1 == kNone ? Tensor() : tp.v(n.in1), tau[size_t(n.index)],
                           tp.g_or_none(n.in0), tp.g_or_none(n.in1), gtau[size_t(n.index)], acc);
        break;
      case NodeKind::Slope:
        ops::leak_slope_backward(ctx, gy, tp.v(n.in0), tp.v(n.in1), tau[size_t(n.index)],
                                 tp.g_or_none(n.in0), tp.g_or_none(n.in1),
                                 gtau[size_t(n.index)], acc);
        break;
      case NodeKind::Relu:
        if (tp.needs(n.in0)) ops::relu_backward(ctx, tp.v(n.in0), gy, tp.g(n.in0), acc);
        break;
      case NodeKind::Supra: {
        SupralinearityParams sp;
        sp.n = g.areas[size_t(n.index)].supralinearity;
        if (tp.needs(n.in0)) ops::supralinearity_backward(ctx, sp, gy, tp.v(n.in0), tp.g(n.in0), acc);
        break;
      }
      case NodeKind::Pool:
        if (tp.needs(n.in0))
          ops::maxpool2d_backward(ctx, g.areas[size_t(n.index)].pool, gy, tp.v(n.aux),
                                  tp.g(n.in0), acc);
        break;
      case NodeKind::Tail: {
        // The unfused chain's bits: every term's gradient is 0 + dL/du (the Add nodes pass
        // dL/du on unchanged into zeroed buffers): the first term that needs one gets it from
        // the op (accumulated into its zeroed buffer), the others a copy added to theirs.
        const Tensor gx = n.aux != kNone ? tp.grad[size_t(n.aux)] : Tensor();
        Var first = kNone;
        for (int k = 0; k < n.lin_count && first == kNone; ++k)
          if (tp.needs(tp.lin_v[size_t(n.lin_begin + k)])) first = tp.lin_v[size_t(n.lin_begin + k)];
        const Tensor gu = first == kNone ? Tensor() : tp.g(first);
        ops::leak_tail_backward(ctx, tail_params(n.index), gy, gx, tail_terms(n),
                                n.in0 == kNone ? Tensor() : tp.v(n.in0), tau[size_t(n.index)],
                                gu, tp.g_or_none(n.in0), gtau[size_t(n.index)], acc);
        for (int k = 0; k < n.lin_count; ++k) {
          const Var v = tp.lin_v[size_t(n.lin_begin + k)];
          if (v != first && tp.needs(v)) ops::axpy(ctx, 1.0, gu, tp.g(v));
        }
        if (n.aux != kNone) tp.release(n.aux);
        break;
      }
      case NodeKind::Readout: {
        const Tensor& gmean = tp.g(n.aux);
        ops::linear_backward(ctx, gy, tp.v(n.aux), g.params.get(g.readout.weight), gmean,
                             pgrads.get(g.readout.weight), pgrads.get(g.readout.bias), acc);
        if (tp.needs(n.in0)) ops::mean_hw_backward(ctx, gmean, tp.g(n.in0), acc);
        tp.release(n.aux);
        break;
      }
    }
    tp.release(n.out);
  }
}

// ---- Loss seeds and the parameter gradients. ----

void Bptt::Impl::seed_segment(const Tensor& grad_logits, double activity_coef) {
  const int64_t K = g.readout.n_classes, BT = int64_t(batch) * T;
  for (int tr = 0; tr < T; ++tr) {
    const Var y = logit_var[size_t(tr)];
    if (y == kNone) continue;
    if (!seed.defined() || seed.shape() != Shape{batch, K} || seed.dtype() != dtype)
      seed = ctx.empty(Shape{batch, K}, dtype);
    ctx.copy_rows(seed, K, grad_logits.view(Shape{BT, K}).slice(tr, BT), T * K, batch, K);
    ops::axpy(ctx, 1.0, seed, tp.g(y));
  }
  monitor_count.assign(tp.val.size(), 0);
  if (activity_coef != 0.0)
    for (const Monitored& m : monitored) ++monitor_count[size_t(m.v)];
}

void Bptt::Impl::seed_activity(Var y, double coef, bool is_signed) {
  ops::activity_seed(ctx, tp.v(y), coef, is_signed, tp.g(y));
}

void Bptt::Impl::finish_grads(ParamStore& grads) {
  for (size_t a = 0; a < g.areas.size(); ++a) {
    if (!tau_trainable[a]) continue;
    const Area& ar = g.areas[a];
    Tensor gt = ctx.to_host(gtau[a]);
    if (ar.tau_softplus) {  // tau = softplus(s): d tau / d s = sigmoid(s)
      const double s = ctx.to_host(g.params.get(ar.tau_param)).item(0);
      gt.set(0, gt.item(0) / (1.0 + std::exp(-s)));
    }
    Tensor& pg = pgrads.get(ar.tau_param);
    ops::axpy(ctx, 1.0, ctx.to_device(gt.view(pg.shape())), pg);
  }
  for (const auto& e : g.params.entries()) {
    if (!e.trainable) continue;
    if (!grads.has(e.name))
      throw DataError(concat("bptt: the gradient store has no entry '", e.name,
                             "' (make it with Bptt::zero_grads)"));
    Tensor& dst = grads.get(e.name);
    check_arg("bptt gradients", e.name.c_str(), dst, pgrads.get(e.name), e.value.shape());
    ops::axpy(ctx, 1.0, pgrads.get(e.name), dst);
  }
}

}  // namespace dynsim
