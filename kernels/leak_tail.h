// The fused elementwise tail of one area's step (DESIGN §9), one pass over memory:
//   u = t_0 + t_1 + ... + t_{n-1}  (left to right in T, 1 <= n <= 8 drive terms)
//   x = leak_step(u, h, tau)       (kernels/leak_math.h; h undefined: no previous state)
//   r = S(relu(x))                 (S: DynVision's supralinearity when p.supralinear, else identity)
// terms, h, x, r [B, ...] of one shape; tau [1] or [B] (per sample). On one device the result has
// the bits of ops::add (in order), leak_forward, relu_forward, supralinearity_forward.
#pragma once
#include <functional>
#include <initializer_list>

#include "kernels/leak.h"
#include "kernels/leak_tail_math.h"
#include "kernels/supralinearity.h"

namespace dynsim {

struct LeakTailParams {
  LeakRule rule = LeakRule::Euler;
  double dt = 2.0;
  // Apply S after the ReLU. The scheduler applies it where an area's supralinearity n != 1
  // (S with n = 1 is 0.8 x, not the identity), with supra.n = n and the other fields default.
  bool supralinear = false;
  SupralinearityParams supra;
};

// The drive's additive terms in summation order. Holds references: the tensors must outlive it.
// Counts past kMax (the ops reject that by name) instead of throwing without an op to name.
class LeakTailTerms {
 public:
  static constexpr int kMax = kLeakTailMaxTerms;
  LeakTailTerms() = default;
  LeakTailTerms(std::initializer_list<std::reference_wrapper<const Tensor>> ts) {
    for (const Tensor& t : ts) push(t);
  }
  void push(const Tensor& t) {
    if (n_ < kMax) t_[n_] = &t;
    ++n_;
  }
  int size() const { return n_; }
  const Tensor& operator[](int i) const { return *t_[i]; }

 private:
  const Tensor* t_[kMax] = {};
  int n_ = 0;
};

// Aliasing: an output may be the very same tensor (same storage, offset and shape) as an
// elementwise input (r or x in place of h or of a term; grad_u or grad_h in place of grad_r, grad_x,
// h or a term): every element is read before it is written, and the result is computed from the
// inputs as they were before the call. Partial overlaps, two outputs sharing memory (x with r,
// grad_u with grad_h) and any output overlapping tau or grad_tau are rejected.
namespace cpu {
// x may be undefined (not wanted); r is required.
void leak_tail_forward(Context& c, const LeakTailParams& p, const LeakTailTerms& terms,
                       const Tensor& h, const Tensor& tau, const Tensor& x, const Tensor& r);
// Gradients of leak_tail_forward for dL/dr = grad_r and dL/dx = grad_x (the gradient reaching x
// directly, e.g. through the next step's h); either may be undefined (zero), not both. x is
// recomputed from terms, h and tau (the forward's bits; pass the stored drive as the one term to
// skip the sum). grad_u is the gradient of u, i.e. of every term; grad_h (ignored without h) and
// grad_tau ([1]: summed over everything; [B]: per sample; in double, in leak_backward's order)
// as in leak_backward. Any of the three may be undefined. Bits: those of supralinearity_backward,
// relu_backward, adding grad_x, then leak_backward.
void leak_tail_backward(Context& c, const LeakTailParams& p, const Tensor& grad_r,
                        const Tensor& grad_x, const LeakTailTerms& terms, const Tensor& h,
                        const Tensor& tau, const Tensor& grad_u, const Tensor& grad_h,
                        const Tensor& grad_tau, GradMode m);
}  // namespace cpu
namespace cuda {  // kernels/leak_tail_cuda.cu (f32, f64; the forward also bf16 storage: bf16
                  // terms, h, x and r, f32 tau, f32 math, x and r rounded once)
void leak_tail_forward(Context& c, const LeakTailParams& p, const LeakTailTerms& terms,
                       const Tensor& h, const Tensor& tau, const Tensor& x, const Tensor& r);
void leak_tail_backward(Context& c, const LeakTailParams& p, const Tensor& grad_r,
                        const Tensor& grad_x, const LeakTailTerms& terms, const Tensor& h,
                        const Tensor& tau, const Tensor& grad_u, const Tensor& grad_h,
                        const Tensor& grad_tau, GradMode m);
}  // namespace cuda

// The kernels' views of the terms and the supralinearity (both twins).
template <class T>
LeakTailTermPtrs<T> leak_tail_term_ptrs(const LeakTailTerms& terms) {
  LeakTailTermPtrs<T> t{};
  t.n = terms.size();
  for (int k = 0; k < t.n; ++k) t.p[k] = terms[k].data<T>();
  return t;
}
template <class T>
LeakTailSupra<T> leak_tail_supra(const LeakTailParams& p) {
  return {p.supralinear, T(p.supra.n), T(p.supra.k), T(p.supra.clamp)};
}

// Argument checks shared by both twins (kernels/leak_tail_cpu.cpp); they throw DataError naming
// the op and the argument. Called after the twin has checked terms[0]'s device and dtype.
struct LeakTailLayout {
  int64_t n = 0, batch = 0, per = 0;  // elements, samples, elements per sample
  bool per_sample_tau = false;
};
LeakTailLayout check_leak_tail_forward(const char* op, const LeakTailParams& p,
                                       const LeakTailTerms& terms, const Tensor& h,
                                       const Tensor& tau, const Tensor& x, const Tensor& r);
LeakTailLayout check_leak_tail_backward(const char* op, const LeakTailParams& p,
                                        const Tensor& grad_r, const Tensor& grad_x,
                                        const LeakTailTerms& terms, const Tensor& h,
                                        const Tensor& tau, const Tensor& grad_u,
                                        const Tensor& grad_h, const Tensor& grad_tau);
// The first term, checked for a count of 1..kMax (with_float_type / is_f64 then check it).
const Tensor& leak_tail_first_term(const char* op, const LeakTailTerms& terms);

}  // namespace dynsim
