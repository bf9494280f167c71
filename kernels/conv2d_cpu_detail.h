// Internals shared by the CPU conv2d's source files (kernels/conv2d.h; not part of its API):
// conv2d_cpu.cpp (checks, im2col + GEMM paths, bias gradient, entry points),
// conv2d_avx2_cpu.cpp (the AVX2/FMA f32 GEMM) and conv2d_depthwise_cpu.cpp (direct depthwise
// loops). The problem's geometry, the tap ranges and the thread count live here.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/conv2d.h"
#include "kernels/conv2d_math.h"

namespace dynsim::cpu::conv2d_detail {

// The problem, resolved once per call.
struct Geom {
  int64_t N, Cin, H, W, Cout, KH, KW, Ho, Wo;
  int64_t G, Cg, Co;  // groups, input and output channels per group
  int64_t K, P, HW;   // GEMM depth Cg*KH*KW, output pixels, input pixels
  int64_t sh, sw, ph, pw;
  PadMode mode;
  bool pointwise;  // 1x1, stride 1, no padding: x itself is the column matrix
  bool depthwise;  // one input channel per group: direct loops beat a K = KH*KW GEMM
};

// ---- f32 GEMM with AVX2/FMA, chosen at run time ---------------------------------------------
// The default build targets baseline x86-64 (SSE2), where Eigen's kernels reach a quarter of
// what AVX2+FMA does. This Goto-style GEMM compiles its packing and 6x16 micro-kernel for
// AVX2+FMA via target attributes and runs only when the CPU has them; otherwise Eigen runs
// (-DDYNSIM_CONV_NO_AVX2 forces Eigen, e.g. to compare).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__) && \
    !defined(DYNSIM_CONV_NO_AVX2)
#define DYNSIM_CONV_AVX2 1
#endif

namespace avx2 {  // conv2d_avx2_cpu.cpp
bool available();  // compiled in, and the CPU has AVX2 and FMA
// Packing space in floats: gemm's pa for an M x K A, pb for a K x N B.
size_t a_elems(int64_t M, int64_t K);
size_t b_elems(int64_t N, int64_t K);
#ifdef DYNSIM_CONV_AVX2
// C (M x N) (+)= A * B, strided A and B (see the definition).
void gemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t a_rs, int64_t a_cs,
          const float* b, int64_t b_rs, int64_t b_cs, float* c, int64_t ldc, float* pa, float* pb,
          bool overwrite);
#endif
}  // namespace avx2

// Output columns [lo, hi) of kernel column kw read input column o*sw + off inside the row; the
// others read padding. Computed once per kernel column (it costs two divisions).
struct ColTaps {
  int64_t lo, hi, off;
};
inline ColTaps col_taps(const Geom& g, int64_t kw) {
  ColTaps c;
  conv::interior_range(g.W, g.Wo, g.sw, g.pw, kw, c.lo, c.hi);
  c.off = kw - g.pw;
  return c;
}
// The taps of output row oh for kernel offset (kh, kw): input row ih (-1: zero padding).
struct RowTaps : ColTaps {
  int64_t ih;
};
inline RowTaps row_taps(const Geom& g, int64_t oh, int64_t kh, const ColTaps& c) {
  RowTaps r;
  static_cast<ColTaps&>(r) = c;
  r.ih = conv::pad_index(oh * g.sh - g.ph + kh, g.H, g.mode);
  return r;
}

// Calls edge(o, i) for the padded output columns of a row (i = -1 for a zero).
template <class F>
inline void for_each_edge(const Geom& g, const RowTaps& r, F&& edge) {
  for (int64_t o = 0; o < r.lo; ++o) edge(o, conv::pad_index(o * g.sw + r.off, g.W, g.mode));
  for (int64_t o = r.hi; o < g.Wo; ++o) edge(o, conv::pad_index(o * g.sw + r.off, g.W, g.mode));
}

// Calls f(o, i) for the interior output columns of a row; the unit-stride case is spelled out
// so that the compiler sees contiguous indices and vectorizes.
template <class F>
inline void for_each_interior(const Geom& g, const RowTaps& r, F&& f) {
  if (g.sw == 1) {
    for (int64_t o = r.lo; o < r.hi; ++o) f(o, o + r.off);
  } else {
    for (int64_t o = r.lo; o < r.hi; ++o) f(o, o * g.sw + r.off);
  }
}

// Threads for a problem of `flops` multiply-adds split into `tasks` independent pieces.
inline int team_size(const Context& c, int64_t tasks, double flops) {
  if (flops < double(1 << 18)) return 1;
  return int(std::max<int64_t>(1, std::min<int64_t>(c.threads(), tasks)));
}

// ---- depthwise (one input channel per group): direct loops, conv2d_depthwise_cpu.cpp -------
// Forward, grad_x and grad_w; instantiated for float and double.
template <class T>
void depthwise_forward(const Context& c, const Geom& g, const T* x, const T* w, const T* b, T* y);
template <class T>
void depthwise_dgrad(const Context& c, const Geom& g, const T* gy, const T* w, T* gx, GradMode m);
template <class T>
void depthwise_wgrad(const Context& c, const Geom& g, const T* gy, const T* x, T* gw, GradMode m);

}  // namespace dynsim::cpu::conv2d_detail
