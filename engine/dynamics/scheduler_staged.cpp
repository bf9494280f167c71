// The Scheduler's Runge-Kutta stage loop (engine/dynamics/scheduler.h, solver.h): one step of a
// staged solver over the whole network, called by the step loop (scheduler_step.cpp); delayed
// reads interpolate the history (history_at, scheduler_rings.cpp). Siblings: scheduler.cpp
// (construction, run), scheduler_fast.cpp, scheduler_record.cpp; Impl in scheduler_detail.h.
#include <cstdint>
#include <vector>

#include "engine/dynamics/recorder.h"
#include "engine/dynamics/scheduler.h"
#include "engine/dynamics/scheduler_detail.h"
#include "kernels/dispatch.h"

namespace dynsim {

void Scheduler::Impl::pool_into(int a, const Tensor& src, const Tensor& dst) {
  const Tensor& argmax = argmax_buf(a);
  ops::maxpool2d_forward(ctx, g.areas[size_t(a)].pool, src, dst, argmax);
}

// Stage i of a Runge-Kutta step over the whole network at step time `when`: every area's stage
// rate (base[a] for i = 0, else S(ReLU(base[a] + hms sum_j a_ij K_j)), hms the step in ms) and
// pooled copy, then every area's drive and slope K[a][i]. Zero-delay reads take the stage
// values, delayed ones the history at when - delay (history_at on the step grid, or the
// adaptive runs' dense history, dense_at).
void Scheduler::Impl::eval_stage(int i, double when, double hms, const Tensor& x_in,
                                 const std::vector<const Tensor*>& base, bool dense) {
  const size_t A = g.areas.size();
  for (size_t a = 0; a < A; ++a) {
    const Area& ar = g.areas[a];
    if (i == 0) {
      ops::scale(ctx, 1.0, *base[a], stage_r[a]);
    } else {
      ops::scale(ctx, 1.0, *base[a], pre[a]);
      for (int j = 0; j < i; ++j)
        if (tab.a[size_t(i)][size_t(j)] != 0)
          ops::axpy(ctx, hms * tab.a[size_t(i)][size_t(j)], K[a][size_t(j)], pre[a]);
      nonlinearity(ar, pre[a], stage_r[a]);
    }
    if (ar.has_pool && forward_delay[a] == 0) pool_into(int(a), stage_r[a], stage_pooled[a]);
  }
  // Every area's stage value exists before any drive is gathered, so a zero-delay read of a
  // later area (feedback, t_fb = 0) sees stage i, not the previous stage.
  for (size_t a = 0; a < A; ++a) {
    auto read = [&](size_t ci) -> const Tensor* {
      const Connection& c = g.connections[ci];
      if (!c.delivers) return nullptr;
      if (c.source == kExternalInput) return &x_in;
      const int src = c.source;
      const bool pooled_ff = c.kind == ConnKind::Feedforward && g.areas[size_t(src)].has_pool;
      if (c.delay_steps == 0) return pooled_ff ? &stage_pooled[size_t(src)] : &stage_r[size_t(src)];
      const Tensor* v = dense ? dense_at(src, when - c.delay_steps, interp[ci])
                              : history_at(src, when - c.delay_steps, interp[ci]);
      if (!pooled_ff) return v;
      pool_into(src, *v, interp_pooled[ci]);
      return &interp_pooled[ci];
    };
    if (!gather_drive(int(a), read)) ops::fill(ctx, 0.0, drive[a]);  // no input: U = 0
    ops::leak_slope(ctx, drive[a], stage_r[a], tau[a], K[a][size_t(i)]);
  }
}

// One step of an explicit Runge-Kutta method over the whole network (engine/dynamics/solver.h):
// stage i at step time t - 1 + c_i has rates R_i = S(ReLU(r(t-1) + dt sum_j a_ij K_j)) and
// slopes K_i = (U_i - R_i) / tau, U_i the drive from stage values (zero delay) and
// interpolated history (delays); then r(t) = S(ReLU(r(t-1) + dt sum_i b_i K_i)).
void Scheduler::Impl::step_staged(int64_t t, const Tensor& x_in,
                                  std::vector<uint8_t>& fwd_present,
                                  std::vector<uint8_t>& r_present, StabilityProbes* probes) {
  const size_t A = g.areas.size();
  const double dt = g.delays.dt;
  const int S = tab.stages();
  std::vector<const Tensor*>& base = stage_base;
  base.resize(A);
  for (size_t a = 0; a < A; ++a) {
    const Tensor* h = rings[a].at(t - 1);
    base[a] = h ? h : &zeros[a];
  }
  for (int i = 0; i < S; ++i) {
    eval_stage(i, double(t - 1) + tab.c[size_t(i)], dt, x_in, base, false);
    if (i == 0) {  // d r / d step at t - 1, kept for the interpolation of later reads
      for (size_t a = 0; a < A; ++a) {
        if (rings[a].at(t - 1))
          ops::scale(ctx, dt, K[a][0], slopes[a].begin_write(t - 1, true));
        else if (t == 0)
          ops::scale(ctx, dt, K[a][0], initial_slope[a]);
      }
      if (t == 0) initial_slope_set = true;
    }
  }
  for (size_t a = 0; a < A; ++a) {
    const Area& ar = g.areas[a];
    const Tensor* h = rings[a].at(t - 1);
    ops::scale(ctx, 1.0, h ? *h : zeros[a], pre[a]);
    for (int i = 0; i < S; ++i)
      if (tab.b[size_t(i)] != 0) ops::axpy(ctx, dt * tab.b[size_t(i)], K[a][size_t(i)], pre[a]);
    if (probes) probes->probe(int(a), t, pre[a]);
    Tensor& r = rings[a].begin_write(t, true);
    nonlinearity(ar, pre[a], r);
    r_present[a] = 1;
    update_forwarded(int(a), t, true, r, fwd_present);
  }
}

}  // namespace dynsim
