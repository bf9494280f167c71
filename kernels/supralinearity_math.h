// Scalar math of DynVision's SupraLinearity (kernels/supralinearity.h), shared by the CPU and CUDA
// twins: x is first clamped to [-clamp, clamp] (DynVision clamps its input),
// then f(x) = k sign(x) max(|x|, 1e-6)^n with f(0) = 0 (torch.sign(0) = 0).
// f'(x) = k n |x|^(n-1) for 1e-6 <= |x| <= clamp, else 0 (both clamps cut the gradient there).
#pragma once
#include <cmath>

#include "engine/core/rng.h"  // DYNSIM_HD

namespace dynsim::math {

constexpr double kSupralinearityFloor = 1e-6;

template <class T>
DYNSIM_HD T supralinearity(T x, T n, T k, T clamp) {
  if (x == T(0)) return T(0);
  const T xc = x > clamp ? clamp : (x < -clamp ? -clamp : x);
  const T ax = std::abs(xc);
  const T m = ax < T(kSupralinearityFloor) ? T(kSupralinearityFloor) : ax;
  const T y = k * std::pow(m, n);
  return xc < T(0) ? -y : y;
}

template <class T>
DYNSIM_HD T supralinearity_grad(T x, T n, T k, T clamp) {
  const T ax = std::abs(x);
  if (ax < T(kSupralinearityFloor) || ax > clamp) return T(0);
  return k * n * std::pow(ax, n - T(1));
}

}  // namespace dynsim::math
