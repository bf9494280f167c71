// The Scheduler's rings (engine/dynamics/scheduler.h; the Ring type in scheduler_detail.h): how
// many slots each area keeps (plan_rings, shared with the reverse mode), the forwarded output
// pool(r(t - k)) and the staged solvers' history reads (cubic Hermite with stored slopes).
// Siblings: scheduler.cpp (construction, run), scheduler_step.cpp, scheduler_staged.cpp,
// scheduler_fast.cpp, scheduler_record.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/dynamics/hermite.h"
#include "engine/dynamics/scheduler.h"
#include "engine/dynamics/scheduler_detail.h"
#include "kernels/dispatch.h"

namespace dynsim {
RingPlan plan_rings(const Graph& g, bool staged) {
  const size_t A = g.areas.size();
  RingPlan p;
  p.size.assign(A, 1);
  p.forward_delay.assign(A, -1);
  auto need = [&](int a, int n) { p.size[size_t(a)] = std::max(p.size[size_t(a)], n); };
  for (size_t a = 0; a < A; ++a)
    if (g.ring_capacity >= 1 || staged) need(int(a), staged ? 2 : 1);  // r(t - 1)
  for (const Connection& c : g.connections) {
    if (c.source == kExternalInput || !c.delivers) continue;
    if (c.kind == ConnKind::Feedforward) {
      int& k = p.forward_delay[size_t(c.source)];
      if (k >= 0 && k != c.delay_steps)
        throw ConfigError(concat("area ", g.areas[size_t(c.source)].name,
                                 ": its feedforward outputs need one common delay"));
      k = c.delay_steps;
      need(c.source, k + 1);  // read after the push
    } else {
      // Staged: every read happens before the step's push and may interpolate up to age d+1.
      const bool after_push = staged || c.source < c.target;
      need(c.source, c.delay_steps + (after_push ? 1 : 0));
    }
  }
  if (g.readout.source >= 0 && g.readout.delivers) {
    int& k = p.forward_delay[size_t(g.readout.source)];
    if (k >= 0 && k != g.readout.delay_steps)
      throw ConfigError("the classifier and the feedforward outputs need one common delay");
    k = g.readout.delay_steps;
    need(g.readout.source, k + 1);
  }
  return p;
}

// Value an area forwards at step t (pooled r(t - k)), or nullptr when absent.
const Tensor* Scheduler::Impl::forwarded(int a, const std::vector<uint8_t>& fwd_present) const {
  if (!fwd_present[size_t(a)]) return nullptr;
  return g.areas[size_t(a)].has_pool ? &pooled[size_t(a)] : fwd_src[size_t(a)];
}

// The forwarded output: pool(r(t - k)), k = 0 meaning r(t) itself.
void Scheduler::Impl::update_forwarded(int a, int64_t t, bool present, const Tensor& r,
                                       std::vector<uint8_t>& fwd_present) {
  const Area& ar = g.areas[size_t(a)];
  Ring& ring = rings[size_t(a)];
  const int k = forward_delay[size_t(a)];
  fwd_present[size_t(a)] = 0;
  if (k >= 0) {
    const Tensor* src = k == 0 ? (present ? &r : nullptr) : ring.at(t - k);
    fwd_src[size_t(a)] = src;
    if (src) {
      fwd_present[size_t(a)] = 1;
      if (ar.has_pool) {
        const Tensor& argmax = argmax_buf(a);
        ops::maxpool2d_forward(ctx, ar.pool, *src, pooled[size_t(a)], argmax);
      }
    }
  }
}

// Area s's history at a (fractional) step time: r itself at whole steps, cubic Hermite with
// the stored slopes in between; zero before step 0 (the network starts from rest).
const Tensor* Scheduler::Impl::history_at(int s, double when, Tensor& dst) {
  const int64_t m = int64_t(std::floor(when));
  const double u = when - double(m);
  const Tensor& zero = zeros[size_t(s)];
  auto value = [&](int64_t step) -> const Tensor& {
    const Tensor* v = step < 0 ? nullptr : rings[size_t(s)].at(step);
    return v ? *v : zero;
  };
  // Slopes: the run starts at step -1 from rest, so the slope there is one-sided (0 to its
  // left, dt K_0 of step 0 to its right).
  auto slope = [&](int64_t step, bool right) -> const Tensor& {
    if (step == -1) return right && initial_slope_set ? initial_slope[size_t(s)] : zero;
    const Tensor* v = step < 0 ? nullptr : slopes[size_t(s)].at(step);
    return v ? *v : zero;
  };
  if (u < 1e-12) return &value(m);
  const Hermite h(u);
  ops::scale(ctx, h.h00, value(m), dst);
  ops::axpy(ctx, h.h10, slope(m, true), dst);
  ops::axpy(ctx, h.h01, value(m + 1), dst);
  ops::axpy(ctx, h.h11, slope(m + 1, false), dst);
  return &dst;
}

}  // namespace dynsim
