// CUDA twin of the fused step tail (kernels/leak_tail.h), f32 and f64 (and a bf16-storage
// forward: bf16 terms, h, x, r with f32 tau and f32 math): one grid-stride kernel
// per forward, one per backward (plus segmented_sum's small second pass over its parts when
// grad_tau is wanted). Per-element math is kernels/leak_tail_math.h, the CPU twin's, so with the
// library's --fmad=false the Euler and RK4 forwards give the CPU's bits. grad_tau is a
// deterministic double sum per sample (kernels/cuda_common.cuh), no float atomics.
#include "kernels/cuda_common.cuh"
#include "kernels/leak_tail.h"

namespace dynsim::cuda {

// S: the storage type of the terms, h, x and r (f32, f64, or bf16 with f32 tau and f32 math:
// the f32 forward's math on the widened values, x and r rounded once: the bits of the f32 op on
// widened copies, kernels/bf16_widen.h). tau is in S's arithmetic type.
template <class S>
void leak_tail_forward_t(Context& c, const LeakTailParams& p, const LeakTailLayout& l,
                         const LeakTailTerms& terms, const Tensor& h, const Tensor& tau,
                         const Tensor& x, const Tensor& r) {
  using T = compute_t<S>;
  const LeakTailTermPtrs<S> u = leak_tail_term_ptrs<S>(terms);
  const LeakTailSupra<T> s = leak_tail_supra<T>(p);
  const S* ph = data_or_null<const S>(h);
  const T* ptau = tau.data<T>();
  S* px = data_or_null<S>(x);
  S* pr = r.data<S>();
  const LeakRule rule = p.rule;
  const double dt = p.dt;
  const bool per_sample = l.per_sample_tau;
  const int64_t per = l.per;
  launch(c, l.n, [=] __device__(int64_t i) {
    const T tb = ptau[per_sample ? i / per : 0];
    const T hv = ph ? widen_value(ph[i]) : T(0);
    const T xi = leak_step<T>(rule, u.sum(i), hv, ph != nullptr, tb, dt);
    if (px) px[i] = narrow_value<S>(xi);
    pr[i] = narrow_value<S>(leak_tail_rate(xi, s));
  });
}

template <class T>
void leak_tail_backward_t(Context& c, const LeakTailParams& p, const LeakTailLayout& l,
                          const Tensor& grad_r, const Tensor& grad_x, const LeakTailTerms& terms,
                          const Tensor& h, const Tensor& tau, const Tensor& grad_u,
                          const Tensor& grad_h, const Tensor& grad_tau, GradMode m) {
  const LeakTailTermPtrs<T> u = leak_tail_term_ptrs<T>(terms);
  const LeakTailSupra<T> s = leak_tail_supra<T>(p);
  const T *ph = data_or_null<const T>(h), *ptau = tau.data<T>();
  const T *gr = data_or_null<const T>(grad_r), *gx = data_or_null<const T>(grad_x);
  T* gu = data_or_null<T>(grad_u);
  T* gh = ph ? data_or_null<T>(grad_h) : nullptr;
  const LeakRule rule = p.rule;
  const double dt = p.dt;
  const bool per_sample = l.per_sample_tau, acc = m == GradMode::Accumulate;
  const int64_t per = l.per;
  // The elementwise gradients of element i, returning its grad_tau term. Every input of element
  // i is read before its outputs are written (outputs may be the very same tensors as inputs).
  auto term = [=] __device__(int64_t i) -> double {
    const T tb = ptau[per_sample ? i / per : 0];
    const T ui = u.sum(i), hv = ph ? ph[i] : T(0);
    const T xi = leak_step<T>(rule, ui, hv, ph != nullptr, tb, dt);
    T g = gr ? leak_tail_rate_grad(xi, gr[i], s) : T(0);
    if (gx) g = gr ? T(g + gx[i]) : gx[i];
    const LeakGrad<T> d = leak_step_grad<T>(rule, ui, hv, ph != nullptr, tb, dt);
    if (gu) put_grad(gu[i], T(g * d.du), acc);
    if (gh) put_grad(gh[i], T(g * d.dh), acc);
    return double(g) * double(d.dtau);
  };
  if (!grad_tau.defined()) {
    launch(c, l.n, [=] __device__(int64_t i) { term(i); });
    return;
  }
  T* gt = grad_tau.data<T>();
  const int64_t segments = per_sample ? l.batch : 1;  // an empty segment sums to 0
  segmented_sum(c, segments, l.n / segments, term,
                [=] __device__(int64_t sgm, double v) { put_grad(gt[sgm], T(v), acc); });
}

void leak_tail_forward(Context& c, const LeakTailParams& p, const LeakTailTerms& terms,
                       const Tensor& h, const Tensor& tau, const Tensor& x, const Tensor& r) {
  const char* op = "leak_tail_forward";
  const Tensor& u0 = leak_tail_first_term(op, terms);
  if (u0.dtype() == DType::BF16 && u0.device() == Device::Cuda) {
    const LeakTailLayout l = check_leak_tail_forward(op, p, terms, h, tau, x, r);
    return leak_tail_forward_t<bf16>(c, p, l, terms, h, tau, x, r);
  }
  const bool f64 = is_f64(op, u0);
  const LeakTailLayout l = check_leak_tail_forward(op, p, terms, h, tau, x, r);
  if (f64)
    leak_tail_forward_t<double>(c, p, l, terms, h, tau, x, r);
  else
    leak_tail_forward_t<float>(c, p, l, terms, h, tau, x, r);
}

void leak_tail_backward(Context& c, const LeakTailParams& p, const Tensor& grad_r,
                        const Tensor& grad_x, const LeakTailTerms& terms, const Tensor& h,
                        const Tensor& tau, const Tensor& grad_u, const Tensor& grad_h,
                        const Tensor& grad_tau, GradMode m) {
  const char* op = "leak_tail_backward";
  const bool f64 = is_f64(op, leak_tail_first_term(op, terms));
  const LeakTailLayout l =
      check_leak_tail_backward(op, p, grad_r, grad_x, terms, h, tau, grad_u, grad_h, grad_tau);
  if (f64)
    leak_tail_backward_t<double>(c, p, l, grad_r, grad_x, terms, h, tau, grad_u, grad_h, grad_tau,
                                 m);
  else
    leak_tail_backward_t<float>(c, p, l, grad_r, grad_x, terms, h, tau, grad_u, grad_h, grad_tau,
                                m);
}

}  // namespace dynsim::cuda
