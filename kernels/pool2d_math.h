// Window arithmetic of max and average pooling (kernels/pool2d.h), shared by the CPU and CUDA
// twins: the input rows (or columns) [begin, end) that output index o reads, and the window's
// length clipped to the padded input (PyTorch's divisor with count_include_pad), plus the range
// of outputs whose windows contain input index i (the gather form the CUDA backward uses).
#pragma once
#include <cstdint>

#include "engine/core/rng.h"  // DYNSIM_HD

namespace dynsim::pool {

struct Window {
  int64_t begin, end;  // in-bounds part [begin, end)
  int64_t padded;      // length clipped to the padded input (count_include_pad divisor)
};

DYNSIM_HD Window window(int64_t o, int stride, int pad, int kernel, int64_t in) {
  const int64_t b = o * stride - pad;
  const int64_t e = b + kernel < in + pad ? b + kernel : in + pad;
  return {b > 0 ? b : 0, e < in ? e : in, e - b};
}

// Outputs o in [lo, hi) whose windows [o*stride - pad, + kernel) contain input index i.
DYNSIM_HD void windows_containing(int64_t i, int stride, int pad, int kernel, int64_t n_out,
                                  int64_t& lo, int64_t& hi) {
  const int64_t a = i + pad - kernel + 1;  // o*stride >= a
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  hi = (i + pad) / stride + 1;  // o*stride <= i + pad (i + pad >= 0)
  hi = hi < n_out ? hi : n_out;
  hi = hi < lo ? lo : hi;
}

}  // namespace dynsim::pool
