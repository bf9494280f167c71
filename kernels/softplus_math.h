// Scalar math of the parametric softplus y = a * log(1 + exp(b x)), shared by the CPU and CUDA
// twins. softplus(z) = max(z, 0) + log1p(exp(-|z|)) never overflows, and the
// sigmoid below never evaluates exp of a positive argument.
#pragma once
#include <cmath>

#include "engine/core/rng.h"  // DYNSIM_HD

namespace dynsim::math {

template <class T>
DYNSIM_HD T softplus(T z) {
  return (z > T(0) ? z : T(0)) + std::log1p(std::exp(-std::abs(z)));
}

// d softplus / dz = 1 / (1 + exp(-z)), written so that exp only sees -|z|.
template <class T>
DYNSIM_HD T sigmoid(T z) {
  const T e = std::exp(-std::abs(z));
  return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

}  // namespace dynsim::math
