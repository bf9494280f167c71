// Pieces shared by the CPU-vs-CUDA test files of the engine (test_scheduler_cuda.cpp,
// test_cuda_graph.cpp, test_bptt.cpp): the DyRCNN options they use, a CUDA context, the
// gpu-suite skip, a bit-for-bit and a relative comparison.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "engine/core/device.h"
#include "models/dyrcnn/dyrcnn.h"
#include "tests/harness.h"

namespace dynsim::test {

inline models::DyRCNNOptions dyrcnn(const std::string& preset, int size) {
  models::DyRCNNOptions o;
  o.preset = preset;
  o.height = o.width = size;
  o.n_classes = 10;
  o.max_weight_init = 0.05;  // recurrence and skips that visibly matter
  return o;
}

inline Context cuda_context(bool deterministic = false) {
  ContextOptions o;
  o.device = Device::Cuda;
  o.deterministic = deterministic;
  return Context(o);
}

// True (and says so) where there is no CUDA device: gpu-suite cases return at once.
inline bool no_device() {
  if (cuda_device_count() > 0) return false;
  MESSAGE("SKIPPED: no CUDA device");
  return true;
}

inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// got within rel * max|want| of want, element by element; NaN exactly where want has NaN.
inline void require_rel(const Tensor& got, const Tensor& want, double rel, const std::string& what) {
  REQUIRE_MESSAGE(got.shape() == want.shape(), what);
  double scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    if (std::isfinite(want.item(i))) scale = std::max(scale, std::abs(want.item(i)));
  CHECK_MESSAGE(scale > 0, what, ": all zero (the comparison would prove nothing)");
  double worst = 0;
  int64_t at = -1;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double w = want.item(i), g = got.item(i);
    if (std::isnan(w) || std::isnan(g)) {
      REQUIRE_MESSAGE(std::isnan(w) == std::isnan(g), what, ": NaN mismatch at ", i);
      continue;
    }
    if (std::abs(g - w) > worst) worst = std::abs(g - w), at = i;
  }
  CHECK_MESSAGE(worst <= rel * scale, what, ": max |CUDA - CPU| = ", worst, " at ", at,
                " (relative ", worst / scale, ")");
}

}  // namespace dynsim::test
