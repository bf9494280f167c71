// Scalar math of the activity loss (kernels/activity.h), shared by the CPU and CUDA twins: the
// term each sample sum adds (y or |y|, as double), the sign DynVision's host code uses (0 for 0
// and NaN) and the gradient increment T(coef * sign / n), rounded to T once as the host code does.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/core/rng.h"  // DYNSIM_HD

namespace dynsim::math {

template <class T>
DYNSIM_HD double activity_term(T v, bool is_signed) {
  return is_signed ? double(v) : std::abs(double(v));
}

DYNSIM_HD double activity_sign(double v) {
  return v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0);
}

template <class T>
DYNSIM_HD T activity_seed_step(double coef, double sign, int64_t n) {
  return T(coef * sign / double(n));
}

}  // namespace dynsim::math
