// Pieces shared by the Scheduler's CPU-vs-CUDA test files (test_scheduler_cuda.cpp,
// test_cuda_graph.cpp): the DyRCNN options they use, a CUDA context, the gpu-suite skip and a
// bit-for-bit comparison.
#pragma once
#include <cstring>
#include <string>

#include "engine/device.h"
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

inline Context cuda_context() {
  ContextOptions o;
  o.device = Device::Cuda;
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

}  // namespace dynsim::test
