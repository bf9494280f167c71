// Index arithmetic shared by the CPU conv2d and the CUDA reflect-pad kernels (pad_cuda.cu): the
// output-size formula, PyTorch's 'reflect' padding map (-1 -> 1, n -> n-2; the edge pixel is not
// repeated) and its inverse (the padded pixels that read a source pixel, for the gather form of
// the padding's backward), and the range of output columns whose taps fall inside the input (so
// inner loops run without checks).
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

// The padded coordinates j in [0, n + 2 pad) with pad_index(j - pad, n, Reflect) == s, for a source
// index s in [0, n) and pad < n, written to j[] in increasing order; returns how many (1 to 3):
// the left mirror pad - s (1 <= s <= pad), s itself at s + pad, the right mirror
// 2 (n - 1) - s + pad (n - 1 - pad <= s <= n - 2).
DYNSIM_HD int reflect_readers(int64_t s, int64_t n, int64_t pad, int64_t j[3]) {
  int k = 0;
  if (s >= 1 && s <= pad) j[k++] = pad - s;
  j[k++] = s + pad;
  if (s <= n - 2 && s >= n - 1 - pad) j[k++] = 2 * (n - 1) - s + pad;
  return k;
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
