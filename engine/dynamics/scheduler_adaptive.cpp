// The Scheduler's adaptive mode (engine/dynamics/solver.h: SolverSpec::is_adaptive): an embedded
// Runge-Kutta pair (bs32, dopri5, a config tableau with bhat) over the whole network, with the
// step size chosen by the error control of AdaptiveOptions.
//
// Within the output interval (t - 1, t] of step t the network takes substeps of h <= 1 step
// (dt ms), the last one ending on t, so every output time and every change of the input frame
// is a step end (the drive is discontinuous there). A step is never longer than a delay (delays
// are whole steps), so a stage's delayed read at (its time - delay) always lies in history that
// is computed: the step is limited, never iterated. Delayed reads are served from the dense
// history, the accepted step ends with their rates and slopes, by cubic Hermite interpolation
// between the two ends around the read (4th order in h). A rejected step leaves the history,
// the rings and the slopes as they were. The first stage's slope reuses the last stage of the
// previous step (FSAL pairs) or one extra evaluation at the step end (other pairs), except
// where the frame changes, where it is evaluated anew with the new frame.
//
// The error norm is computed on the host from CPU tensors; adaptive runs are CPU only for now
// (run() raises NotImplemented on CUDA and for bf16).
// Siblings: scheduler_staged.cpp (eval_stage), scheduler_step.cpp (the step loop).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/dynamics/hermite.h"
#include "engine/dynamics/scheduler.h"
#include "engine/dynamics/scheduler_detail.h"
#include "kernels/dispatch.h"

namespace dynsim {

void Scheduler::Impl::allocate_adaptive(const Shape& s, size_t a, DType t) {
  if (a == 0) {
    y_new.clear();
    err_buf.clear();
    k_end.clear();
    dense.assign(g.areas.size(), {});
    spare.clear();
  }
  y_new.push_back(ctx.empty(s, t));
  err_buf.push_back(ctx.empty(s, t));
  k_end.push_back(ctx.empty(s, t));
}

Scheduler::Impl::DenseNode Scheduler::Impl::new_node(size_t a) {
  const Shape s = zeros[a].shape();
  for (size_t i = spare.size(); i-- > 0;)
    if (spare[i].value.shape() == s) {
      DenseNode n = std::move(spare[i]);
      spare.erase(spare.begin() + long(i));
      return n;
    }
  DenseNode n;
  n.value = ctx.empty(s, dtype);
  n.slope_left = ctx.empty(s, dtype);
  n.slope_right = ctx.empty(s, dtype);
  return n;
}

void Scheduler::Impl::begin_adaptive_run() {
  stats = AdaptiveStats{};
  accepted_h.clear();
  for (size_t a = 0; a < g.areas.size(); ++a) {
    for (DenseNode& n : dense[a]) spare.push_back(std::move(n));
    dense[a].clear();
    DenseNode n = new_node(a);  // the start from rest at step -1: r = 0, slope 0 to the left
    n.time = -1;
    ops::fill(ctx, 0.0, n.value);
    ops::fill(ctx, 0.0, n.slope_left);
    ops::fill(ctx, 0.0, n.slope_right);
    dense[a].push_back(std::move(n));
  }
  const double dt = g.delays.dt;
  const double cap = control.dt_max > 0 ? std::min(control.dt_max, dt) : dt;
  h_cap = cap / dt;
  h_next = h_cap;
  err_prev = 1;
  have_k0 = false;
  max_read_age = 1;
  for (const Connection& c : g.connections)
    if (c.source != kExternalInput) max_read_age = std::max(max_read_age, c.delay_steps + 1);
}

// Area s's rate at step time `when` from the dense history: zero before the start (-1), the
// node's value at a node, cubic Hermite between two nodes. A read past the newest node (history
// not yet computed) or before the oldest kept one is a bug and raises.
const Tensor* Scheduler::Impl::dense_at(int s, double when, Tensor& dst) {
  const std::deque<DenseNode>& h = dense[size_t(s)];
  if (when <= -1 + 1e-12) return &zeros[size_t(s)];
  const double newest = h.back().time;
  if (when > newest + 1e-9)
    throw Error(concat("scheduler (adaptive): area ", g.areas[size_t(s)].name,
                       " read at step time ", when, " but its history ends at ", newest,
                       " (a read of uncomputed history)"));
  if (when < h.front().time - 1e-9)
    throw Error(concat("scheduler (adaptive): area ", g.areas[size_t(s)].name,
                       " read at step time ", when, " but its history starts at ",
                       h.front().time, " (pruned too early)"));
  auto it = std::upper_bound(h.begin(), h.end(), when,
                             [](double w, const DenseNode& n) { return w < n.time; });
  if (it == h.end()) return &h.back().value;  // at the newest node (within 1e-9)
  const DenseNode& hi = *it;
  const DenseNode& lo = *(it - 1);
  const double span = hi.time - lo.time;
  const double u = (when - lo.time) / span;
  if (u < 1e-12) return &lo.value;
  if (u > 1 - 1e-12) return &hi.value;
  const Hermite b(u);
  ops::scale(ctx, b.h00, lo.value, dst);
  ops::axpy(ctx, b.h10 * span, lo.slope_right, dst);
  ops::axpy(ctx, b.h01, hi.value, dst);
  ops::axpy(ctx, b.h11 * span, hi.slope_left, dst);
  return &dst;
}

namespace {

template <class T>
double weighted_ms(const Tensor& e, const Tensor& y0, const Tensor& y1, double atol,
                   double rtol) {
  const T* pe = e.data<T>();
  const T* p0 = y0.data<T>();
  const T* p1 = y1.data<T>();
  const int64_t n = e.numel();
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double sc =
        atol + rtol * std::max(std::abs(double(p0[i])), std::abs(double(p1[i])));
    const double q = double(pe[i]) / sc;
    acc += q * q;
  }
  return n > 0 ? acc / double(n) : 0.0;
}

}  // namespace

// max over areas of the RMS of e / (atol + rtol max(|r0|, |r1|)) (AdaptiveOptions).
double Scheduler::Impl::error_norm() const {
  double worst = 0;
  for (size_t a = 0; a < g.areas.size(); ++a) {
    const double ms = dtype == DType::F64
                          ? weighted_ms<double>(err_buf[a], *stage_base[a], y_new[a],
                                                control.atol, control.rtol)
                          : weighted_ms<float>(err_buf[a], *stage_base[a], y_new[a],
                                               control.atol, control.rtol);
    const double v = std::sqrt(ms);
    if (!(v <= worst)) worst = v;  // NaN propagates
  }
  return worst;
}

void Scheduler::Impl::step_adaptive(int64_t t, const Tensor& x_in, bool frame_changed,
                                    std::vector<uint8_t>& fwd_present,
                                    std::vector<uint8_t>& r_present, StabilityProbes* probes) {
  const size_t A = g.areas.size();
  const double dt = g.delays.dt;
  const int S = tab.stages();
  const bool fsal = tab.fsal();
  const int k = 1 + std::min(tab.order > 0 ? tab.order : 1,
                             tab.embedded_order > 0 ? tab.embedded_order : 1);
  const double h_min = (control.dt_min > 0 ? control.dt_min : dt * 1e-9) / dt;
  const double end = double(t);
  if (frame_changed) have_k0 = false;  // the slope at t - 1 from the right sees the new frame
  double now = double(t - 1);
  int rejections = 0;
  bool just_rejected = false;
  stage_base.resize(A);
  while (now < end - 1e-12) {
    double h = std::min(h_next, end - now);
    if (end - (now + h) < 1e-3 * h) h = end - now;  // no sliver before the output time
    for (size_t a = 0; a < A; ++a) stage_base[a] = &dense[a].back().value;
    if (!have_k0) {
      eval_stage(0, now, h * dt, x_in, stage_base, true);
      ++stats.evaluations;
      for (size_t a = 0; a < A; ++a) ops::scale(ctx, dt, K[a][0], dense[a].back().slope_right);
      have_k0 = true;
    }
    const double hms = h * dt;
    for (int i = 1; i < S; ++i) {
      eval_stage(i, now + tab.c[size_t(i)] * h, hms, x_in, stage_base, true);
      ++stats.evaluations;
    }
    for (size_t a = 0; a < A; ++a) {
      ops::scale(ctx, 1.0, *stage_base[a], pre[a]);
      ops::fill(ctx, 0.0, err_buf[a]);
      for (int i = 0; i < S; ++i) {
        const double bi = tab.b[size_t(i)], di = tab.b[size_t(i)] - tab.bhat[size_t(i)];
        if (bi != 0) ops::axpy(ctx, hms * bi, K[a][size_t(i)], pre[a]);
        if (di != 0) ops::axpy(ctx, hms * di, K[a][size_t(i)], err_buf[a]);
      }
      if (probes && now + h >= end - 1e-12) probes->probe(int(a), t, pre[a]);
      nonlinearity(g.areas[a], pre[a], y_new[a]);
    }
    const double err = error_norm();
    if (stats.accepted + stats.rejected >= control.max_steps)
      throw Error(concat("scheduler (adaptive): more than dynamics.max_steps = ",
                         control.max_steps, " steps (accepted + rejected) by step ", t,
                         "; raise it, or loosen dynamics.rtol / atol"));
    if (!(err <= 1.0)) {  // reject (NaN too): nothing of this attempt is kept
      ++stats.rejected;
      if (++rejections > control.max_rejections)
        throw Error(concat("scheduler (adaptive): ", rejections, " rejected steps in a row at "
                           "step time ", now, " (error norm ", err,
                           "); see dynamics.max_rejections"));
      const double f = std::isfinite(err)
                           ? std::max(0.2, control.safety * std::pow(err, -1.0 / k))
                           : 0.2;
      const double hn = h * std::min(f, 0.9);
      if (hn < h_min)
        throw Error(concat("scheduler (adaptive): the step size fell below dynamics.dt_min (",
                           h_min * dt, " ms) at step time ", now, " (error norm ", err, ")"));
      h_next = hn;
      just_rejected = true;
      continue;
    }
    // Accept: the slope at the new end, then the node, then the controller.
    if (fsal) {
      for (size_t a = 0; a < A; ++a) ops::scale(ctx, 1.0, K[a][size_t(S - 1)], k_end[a]);
    } else {
      std::vector<const Tensor*> ends(A);
      for (size_t a = 0; a < A; ++a) ends[a] = &y_new[a];
      // Stage 0 of a step from the new end: K[a][0] is the slope there.
      eval_stage(0, now + h, hms, x_in, ends, true);
      ++stats.evaluations;
      for (size_t a = 0; a < A; ++a) ops::scale(ctx, 1.0, K[a][0], k_end[a]);
    }
    for (size_t a = 0; a < A; ++a) {
      DenseNode n = new_node(a);
      n.time = now + h;
      ops::scale(ctx, 1.0, y_new[a], n.value);
      ops::scale(ctx, dt, k_end[a], n.slope_left);
      ops::scale(ctx, dt, k_end[a], n.slope_right);
      ops::scale(ctx, 1.0, k_end[a], K[a][0]);
      dense[a].push_back(std::move(n));
      // Keep what a stage of the next steps may read: back to now + h - max_read_age.
      std::deque<DenseNode>& d = dense[a];
      while (d.size() > 2 && d[1].time < now + h - double(max_read_age) - 1e-9) {
        spare.push_back(std::move(d.front()));
        d.pop_front();
      }
    }
    ++stats.accepted;
    accepted_h.push_back(hms);
    have_k0 = true;
    const double e = std::max(err, 1e-10);
    double f = control.safety * std::pow(e, -0.7 / k) * std::pow(err_prev, 0.4 / k);
    f = std::min(5.0, std::max(0.2, f));
    if (just_rejected) f = std::min(f, 1.0);
    h_next = std::min(h * f, h_cap);
    err_prev = std::max(err, 1e-4);
    rejections = 0;
    just_rejected = false;
    now += h;
  }
  for (size_t a = 0; a < A; ++a) {
    Tensor& r = rings[a].begin_write(t, true);
    ops::scale(ctx, 1.0, dense[a].back().value, r);
    r_present[a] = 1;
    update_forwarded(int(a), t, true, r, fwd_present);
  }
}

void Scheduler::Impl::finish_adaptive_stats() {
  if (accepted_h.empty()) return;
  std::vector<double> h = accepted_h;
  std::sort(h.begin(), h.end());
  stats.h_min = h.front();
  stats.h_max = h.back();
  const size_t n = h.size();
  stats.h_median = n % 2 ? h[n / 2] : 0.5 * (h[n / 2 - 1] + h[n / 2]);
}

}  // namespace dynsim
