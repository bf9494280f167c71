// Nearest-neighbour resize of NCHW tensors with DynVision's index rule: output pixel i reads
// input pixel floor(i * in / out), up and down, computed the way PyTorch's 'nearest' (which
// DynVision runs) computes it: in float, scale = float(in) / out, floorf(i * scale), clamped.
// That equals the exact rational floor for every size DynVision uses (powers of two) but not for
// a few odd pairs (e.g. 26 -> 22), where we follow PyTorch. x [N,C,H,W] -> y [N,C,Ho,Wo]; the
// sizes come from y. Backward scatters grad_y into grad_x (sums repeats).
#pragma once
#include <cmath>

#include "engine/core/rng.h"  // DYNSIM_HD
#include "kernels/op_common.h"

namespace dynsim {
// Source index of output pixel i (PyTorch 1.13's nearest_idx, bit for bit); non-decreasing in i,
// so the outputs that read one input pixel form a contiguous range (the CUDA backward's gather).
DYNSIM_HD int64_t nearest_source_index(int64_t i, int64_t in, int64_t out) {
  if (out == in) return i;
  if (out == 2 * in) return i >> 1;
  const float scale = float(in) / float(out);
  const int64_t s = int64_t(std::floor(float(i) * scale));
  return s < in - 1 ? s : in - 1;
}

// The first output index i in [0, out) with nearest_source_index(i) >= s, or out if none; the
// outputs that read input pixel s are [nearest_first_reader(s), nearest_first_reader(s + 1)).
DYNSIM_HD int64_t nearest_first_reader(int64_t s, int64_t in, int64_t out) {
  int64_t lo = 0, hi = out;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (nearest_source_index(mid, in, out) < s)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

namespace cpu {
void resize_nearest_forward(Context& c, const Tensor& x, const Tensor& y);
void resize_nearest_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
}  // namespace cpu
namespace cuda {  // kernels/resize_cuda.cu (f32, f64)
void resize_nearest_forward(Context& c, const Tensor& x, const Tensor& y);
void resize_nearest_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
}  // namespace cuda
}  // namespace dynsim
