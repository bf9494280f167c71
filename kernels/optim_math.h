// Per-element optimiser updates shared by the CPU and CUDA twins, in exactly
// torch 1.13's single-tensor (foreach=False) operation order so f32 results match torch's CPU
// bit for bit: torch's add(alpha) and addcmul are fused multiply-adds there, addcdiv is
// p + (value * m) / denom, and every Python scalar is rounded to T before use.
//   SGD:  d = fma(p, wd, g); buf = first ? d : fma(d, 1, buf * mu);
//         d = nesterov ? fma(buf, mu, d) : buf; p = fma(d, -lr, p)
//   Adam: [coupled] g = fma(p, wd, g) | [decoupled, AdamW] p = p * (1 - lr wd)
//         m = fma(g, 1 - b1, m * b1); v = fma((1 - b2) g, g, v * b2)
//         p = p + (-lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
#pragma once
#include <cmath>

#include "engine/core/rng.h"  // DYNSIM_HD
#include "kernels/optim.h"

namespace dynsim::optim {

#if defined(__CUDA_ARCH__)
DYNSIM_HD float fused(float a, float b, float c) {
  return __fmaf_rn(a, b, c);
}
DYNSIM_HD double fused(double a, double b, double c) {
  return __fma_rn(a, b, c);
}
#else
DYNSIM_HD float fused(float a, float b, float c) {
  return std::fma(a, b, c);
}
DYNSIM_HD double fused(double a, double b, double c) {
  return std::fma(a, b, c);
}
#endif

// SGD's scalars, rounded to T as torch rounds a Python float for a T tensor.
template <class T>
struct SgdScalars {
  T weight_decay, momentum, neg_lr;
  bool use_wd, use_momentum, nesterov;
};

// One element: p, g and buf (unused without momentum); first: the buffer is created (= d).
template <class T>
DYNSIM_HD void sgd_update(T& p, T g, T& buf, bool first, const SgdScalars<T>& s) {
  T d = s.use_wd ? fused(p, s.weight_decay, g) : g;
  if (s.use_momentum) {
    buf = first ? d : fused(d, T(1), buf * s.momentum);  // torch: buf.mul_(mu).add_(d, alpha=1)
    d = s.nesterov ? fused(buf, s.momentum, d) : buf;
  }
  p = fused(d, s.neg_lr, p);
}

template <class T>
struct AdamScalars {
  T weight_decay;  // coupled (Adam): g += wd p
  T decay_factor;  // decoupled (AdamW): p *= 1 - lr wd
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T bias2_sqrt;  // sqrt(1 - beta2^t)
  T eps;
  T neg_step_size;  // -lr / (1 - beta1^t)
  bool coupled, decoupled;
};

template <class T>
DYNSIM_HD void adam_update(T& p, T g, T& m, T& v, const AdamScalars<T>& s) {
  if (s.coupled) g = fused(p, s.weight_decay, g);
  if (s.decoupled) p = p * s.decay_factor;
  m = fused(g, s.one_minus_beta1, m * s.beta1);
  v = fused(s.one_minus_beta2 * g, g, v * s.beta2);
  const T denom = std::sqrt(v) / s.bias2_sqrt + s.eps;
  p = p + (s.neg_step_size * m) / denom;
}

// Host side, shared by both twins: hyperparameter checks (DataError naming the op) and the
// scalars as torch's Python code forms them (doubles), rounded to T.
inline void check_finite_hyper(const char* op, const char* name, double v) {
  if (!std::isfinite(v)) throw DataError(concat(op, ": ", name, " must be finite, got ", v));
}

inline void check_sgd_params(const char* op, const SgdParams& hp) {
  check_finite_hyper(op, "lr", hp.lr);
  check_finite_hyper(op, "momentum", hp.momentum);
  check_finite_hyper(op, "weight_decay", hp.weight_decay);
  if (hp.nesterov && hp.momentum <= 0.0)
    throw DataError(concat(op, ": nesterov needs momentum > 0, got ", hp.momentum));
}
template <class T>
SgdScalars<T> sgd_scalars(const SgdParams& hp) {
  return {T(hp.weight_decay), T(hp.momentum), T(-hp.lr), hp.weight_decay != 0.0,
          hp.momentum != 0.0, hp.nesterov};
}

inline void check_adam_params(const char* op, const AdamParams& hp) {
  check_finite_hyper(op, "lr", hp.lr);
  check_finite_hyper(op, "weight_decay", hp.weight_decay);
  check_finite_hyper(op, "eps", hp.eps);
  if (!(hp.beta1 >= 0.0 && hp.beta1 < 1.0) || !(hp.beta2 >= 0.0 && hp.beta2 < 1.0))
    throw DataError(concat(op, ": betas must lie in [0, 1), got ", hp.beta1, ", ", hp.beta2));
  if (hp.step < 1) throw DataError(concat(op, ": step must be >= 1, got ", hp.step));
}
template <class T>
AdamScalars<T> adam_scalars(const AdamParams& hp) {
  const double t = double(hp.step);
  const double bc1 = 1.0 - std::pow(hp.beta1, t);
  const double bc2 = 1.0 - std::pow(hp.beta2, t);
  AdamScalars<T> s;
  s.weight_decay = T(hp.weight_decay);
  s.decay_factor = T(1.0 - hp.lr * hp.weight_decay);
  s.beta1 = T(hp.beta1);
  s.one_minus_beta1 = T(1.0 - hp.beta1);
  s.beta2 = T(hp.beta2);
  s.one_minus_beta2 = T(1.0 - hp.beta2);
  s.bias2_sqrt = T(std::sqrt(bc2));
  s.eps = T(hp.eps);
  s.neg_step_size = T(-(hp.lr / bc1));
  s.coupled = !hp.decoupled && hp.weight_decay != 0.0;
  s.decoupled = hp.decoupled;  // torch's AdamW multiplies even when wd = 0 (factor 1: exact)
  return s;
}

}  // namespace dynsim::optim
