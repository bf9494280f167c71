// Index arithmetic shared by the CPU conv2d and its future CUDA twin: the output-size formula,
// PyTorch's 'reflect' padding map (-1 -> 1, n -> n-2; the edge pixel is not repeated) and the
// range of output columns whose taps fall inside the input (so inner loops run without checks).
#pragma once
#include <cstdint>

#include "kernels/conv2d.h"

#ifndef DYNSIM_HD
#if defined(__CUDACC__)
#define DYNSIM_HD __host__ __device__ __forceinline__
#else
#define DYNSIM_HD inline
#endif
#endif

namespace dynsim::conv {

// Output length along one axis: floor((n + 2 pad - k) / stride) + 1, or <= 0 when the padded
// input is shorter than the kernel.
DYNSIM_HD int64_t out_size(int64_t n, int64_t k, int64_t stride, int64_t pad) {
  const int64_t span = n + 2 * pad - k;
  return span < 0 ? 0 : span / stride + 1;
}

// Source index of padded coordinate i in [-pad, n + pad), or -1 where zero padding reads a zero.
// One reflection suffices because reflect padding requires pad < n.
DYNSIM_HD int64_t pad_index(int64_t i, int64_t n, PadMode m) {
  if (i >= 0 && i < n) return i;
  if (m == PadMode::Zeros) return -1;
  return i < 0 ? -i : 2 * (n - 1) - i;
}

// ceil(a / b) for b > 0 and any sign of a.
DYNSIM_HD int64_t ceil_div(int64_t a, int64_t b) {
  return a <= 0 ? -((-a) / b) : (a + b - 1) / b;
}

// Output positions o in [lo, hi) read input o*stride - pad + tap inside [0, n); the others read
// padding. Lets the hot loops run the interior without per-element checks.
DYNSIM_HD void interior_range(int64_t n, int64_t n_out, int64_t stride, int64_t pad, int64_t tap,
                              int64_t& lo, int64_t& hi) {
  lo = ceil_div(pad - tap, stride);
  hi = ceil_div(n + pad - tap, stride);
  lo = lo < 0 ? 0 : (lo > n_out ? n_out : lo);
  hi = hi < lo ? lo : (hi > n_out ? n_out : hi);
}

}  // namespace dynsim::conv
