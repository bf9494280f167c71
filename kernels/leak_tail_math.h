// Per-element math of the fused step tail (kernels/leak_tail.h), shared by the CPU and CUDA twins:
// u = t_0 + t_1 + ... (left to right, rounded in T after each add, as a chain of ops::add),
// x = leak_step(u, h) (kernels/leak_math.h), r = S(relu(x)) with DynVision's supralinearity S
// (kernels/supralinearity_math.h) when enabled. The backward's dr/dx uses the same functions as
// relu_backward and supralinearity_backward, so the fused op reproduces the unfused chain's bits.
#pragma once
#include <cstdint>

#include "engine/core/bf16.h"
#include "kernels/leak_math.h"
#include "kernels/supralinearity_math.h"

namespace dynsim {

constexpr int kLeakTailMaxTerms = 8;

// The drive terms' data pointers (by value, so a CUDA lambda can capture them). sum(i) adds
// them left to right; its loop has a constant trip count (the compiler unrolls it and indexes p
// with constants) and skips the slots past n.
template <class T>
struct LeakTailTermPtrs {
  const T* p[kLeakTailMaxTerms];
  int n;
  // In T's arithmetic type (engine/core/bf16.h: f32 for bf16 terms, T itself otherwise).
  DYNSIM_HD compute_t<T> sum(int64_t i) const {
    compute_t<T> u = widen_value(p[0][i]);
    for (int k = 1; k < kLeakTailMaxTerms; ++k)
      if (k < n) u = u + widen_value(p[k][i]);
    return u;
  }
};

// The nonlinearity's scalars in T (as supralinearity_forward converts them), `on` false: relu only.
template <class T>
struct LeakTailSupra {
  bool on;
  T n, k, clamp;
};

// r = S(relu(x)): relu as relu_forward computes it (x > 0 ? x : 0, so NaN gives 0), then S.
template <class T>
DYNSIM_HD T leak_tail_rate(T x, const LeakTailSupra<T>& s) {
  const T r = x > T(0) ? x : T(0);
  return s.on ? math::supralinearity(r, s.n, s.k, s.clamp) : r;
}

// dL/dx of r = S(relu(x)) for dL/dr = g: supralinearity_backward's g f'(relu(x)) rounded to T,
// then relu_backward's mask x > 0 (relu(x) = x wherever the mask passes).
template <class T>
DYNSIM_HD T leak_tail_rate_grad(T x, T g, const LeakTailSupra<T>& s) {
  if (!(x > T(0))) return T(0);
  return s.on ? T(g * math::supralinearity_grad(x, s.n, s.k, s.clamp)) : g;
}

}  // namespace dynsim
