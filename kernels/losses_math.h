// Per-row and per-element math of the losses (kernels/losses.h), shared by the CPU and CUDA
// twins, all in double: a max-shifted log-sum-exp per row for cross-entropy, the Poisson NLL
// term and its derivative (log_input: exp(x) - y x; else x - y log(x + eps)), and the squared
// error. The twins add the terms in double and scale by the upstream gradient.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/core/rng.h"  // DYNSIM_HD

namespace dynsim::loss_math {

// Row z[0..K) -> its max and log(sum exp(z - max)).
template <class T>
DYNSIM_HD void row_logsumexp(const T* z, int64_t K, double& mx, double& lse) {
  mx = double(z[0]);
  for (int64_t j = 1; j < K; ++j) mx = z[j] > mx ? double(z[j]) : mx;
  double s = 0;
  for (int64_t j = 0; j < K; ++j) s += std::exp(double(z[j]) - mx);
  lse = std::log(s);
}

DYNSIM_HD double poisson_term(double x, double y, bool log_input, double eps) {
  return log_input ? std::exp(x) - y * x : x - y * std::log(x + eps);
}
DYNSIM_HD double poisson_grad(double x, double y, bool log_input, double eps) {
  return log_input ? std::exp(x) - y : 1.0 - y / (x + eps);
}

DYNSIM_HD double squared_error(double x, double y) {
  const double d = x - y;
  return d * d;
}

}  // namespace dynsim::loss_math
