// The leaky-integration step x = step(u, h) of tau dx/dt = -x + u for one element, shared by the
// CPU and CUDA twins. Written with DynVision's exact operation order (spec §1.2-1.3) so f32
// results match PyTorch bit for bit: a = (1/tau) * dt, Euler y = h + a (u - h); frozen-drive
// RK4 evaluates its four slopes literally; exp uses phi = 1 - exp(-dt/tau) (exact for a drive
// held over the step). Without a previous state (h absent) every rule returns a u (DynVision's
// first step; for exp, phi u).
#pragma once
#include <cmath>

#include "engine/core/rng.h"  // DYNSIM_HD

namespace dynsim {

enum class LeakRule : uint8_t { Euler, Rk4Frozen, Exp };

template <class T>
DYNSIM_HD T leak_rate(T tau, double dt) {  // a = (1/tau) * dt, as torch computes dt / tau
  return (T(1) / tau) * T(dt);
}

template <class T>
DYNSIM_HD T leak_step(LeakRule rule, T u, T h, bool has_h, T tau, double dt) {
  if (rule == LeakRule::Exp) {
    const T phi = T(-std::expm1(-dt / double(tau)));
    return has_h ? h + phi * (u - h) : phi * u;
  }
  const T a = leak_rate(tau, dt);
  if (!has_h) return a * u;
  if (rule == LeakRule::Euler) return h + a * (u - h);
  const T d = T(dt);
  const T k1 = (u - h) / tau;
  const T k2 = (u - (h + d * k1 / T(2))) / tau;
  const T k3 = (u - (h + d * k2 / T(2))) / tau;
  const T k4 = (u - (h + d * k3)) / tau;
  return h + d * (k1 + T(2) * k2 + T(2) * k3 + k4) / T(6);
}

// Partial derivatives of leak_step at (u, h, tau): d/du, d/dh (0 without h) and d/dtau.
// Frozen-drive RK4 equals u + (h - u) P(a) with P(a) = 1 - a + a^2/2 - a^3/6 + a^4/24 in exact
// arithmetic, which gives its derivatives; the first (state-less) step is Euler's a u.
template <class T>
struct LeakGrad {
  T du, dh, dtau;
};
template <class T>
DYNSIM_HD LeakGrad<T> leak_step_grad(LeakRule rule, T u, T h, bool has_h, T tau, double dt) {
  const T d = T(dt);
  const T da_dtau = -d / (tau * tau);  // a = dt / tau
  if (rule == LeakRule::Exp) {
    const T e = T(std::exp(-dt / double(tau)));
    const T phi = T(1) - e, dphi_dtau = e * da_dtau;  // d(1 - e^-a)/dtau = e^-a da/dtau
    if (!has_h) return {phi, T(0), u * dphi_dtau};
    return {phi, T(1) - phi, (u - h) * dphi_dtau};
  }
  const T a = d / tau;
  if (!has_h) return {a, T(0), u * da_dtau};
  if (rule == LeakRule::Euler) return {a, T(1) - a, (u - h) * da_dtau};
  const T P = T(1) - a + a * a / T(2) - a * a * a / T(6) + a * a * a * a / T(24);
  const T dP = T(-1) + a - a * a / T(2) + a * a * a / T(6);
  return {T(1) - P, P, (h - u) * dP * da_dtau};
}

// The slope of a staged (Runge-Kutta) solver, k = (u - r) / tau, and its backward for one
// element: grad_u = g / tau, grad_r = -g / tau and the term -(g / tau) (u - r) / tau of grad_tau
// (returned in double: the CPU and CUDA twins sum these terms in double).
template <class T>
DYNSIM_HD T leak_slope_value(T u, T r, T tau) {
  return (u - r) / tau;
}
template <class T>
struct LeakSlopeGrad {
  T du, dr;
  double dtau;
};
template <class T>
DYNSIM_HD LeakSlopeGrad<T> leak_slope_grad(T g, T u, T r, T tau) {
  const T gi = g / tau;
  return {gi, T(-gi), -double(gi) * double(u - r) / double(tau)};
}

}  // namespace dynsim
