// CUDA twin of the fused step tail (kernels/leak_tail.h), f32 and f64 (and a bf16-storage
// forward: bf16 terms, h, x, r with f32 tau and f32 math): one grid-stride kernel
// per forward, one per backward (plus segmented_sum's small second pass over its parts when
// grad_tau is wanted). Per-element math is kernels/leak_tail_math.h, the CPU twin's, so with the
// library's --fmad=false the Euler and RK4 forwards give the CPU's bits. grad_tau is a
// deterministic double sum per sample (kernels/cuda_common.cuh), no float atomics.
#include "kernels/cuda_common.cuh"
#include "kernels/leak_tail.h"

namespace dynsim::cuda {

template <class T>
void leak_tail_forward_t(Context& c, const LeakTailParams& p, const LeakTailLayout& l,
                         const LeakTailTerms& terms, const Tensor& h, const Tensor& tau,
                         const Tensor& x, const Tensor& r) {
  const LeakTailTermPtrs<T> u = leak_tail_term_ptrs<T>(terms);
  const LeakTailSupra<T> s = leak_tail_supra<T>(p);
  const T *ph = data_or_null<const T>(h), *ptau = tau.data<T>();
  T* px = data_or_null<T>(x);
  T* pr = r.data<T>();
  const LeakRule rule = p.rule;
  const double dt = p.dt;
  const bool per_sample = l.per_sample_tau;
  const int64_t per = l.per;
  launch(c, l.n, [=] __device__(int64_t i) {
    const T tb = ptau[per_sample ? i / per : 0];
    const T xi = leak_step<T>(rule, u.sum(i), ph ? ph[i] : T(0), ph != nullptr, tb, dt);
    if (px) px[i] = xi;
    pr[i] = leak_tail_rate(xi, s);
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

// The bf16 terms' pointers, by value for the kernel's lambda.
struct Bf16TermPtrs {
  const bf16* p[kLeakTailMaxTerms];
  int n;
};

// bf16 storage: bf16 terms, h, x and r, f32 tau; the f32 forward's math on the widened values,
// x and r rounded once (to nearest even): the bits of the f32 op on widened copies
// (engine/bf16_widen.h), the reference the gpu suite holds it to.
void leak_tail_forward_bf16(Context& c, const LeakTailParams& p, const LeakTailLayout& l,
                            const LeakTailTerms& terms, const Tensor& h, const Tensor& tau,
                            const Tensor& x, const Tensor& r) {
  Bf16TermPtrs u{};
  u.n = terms.size();
  for (int k = 0; k < terms.size(); ++k) u.p[k] = terms[k].data<bf16>();
  const LeakTailSupra<float> s = leak_tail_supra<float>(p);
  const bf16* ph = data_or_null<const bf16>(h);
  const float* ptau = tau.data<float>();
  bf16* px = data_or_null<bf16>(x);
  bf16* pr = r.data<bf16>();
  const LeakRule rule = p.rule;
  const double dt = p.dt;
  const bool per_sample = l.per_sample_tau;
  const int64_t per = l.per;
  launch(c, l.n, [=] __device__(int64_t i) {
    float ui = bf16_to_f32(u.p[0][i]);
    for (int k = 1; k < kLeakTailMaxTerms; ++k)
      if (k < u.n) ui = ui + bf16_to_f32(u.p[k][i]);
    const float tb = ptau[per_sample ? i / per : 0];
    const float hv = ph ? bf16_to_f32(ph[i]) : 0.0f;
    const float xi = leak_step<float>(rule, ui, hv, ph != nullptr, tb, dt);
    if (px) px[i] = bf16_from_f32(xi);
    pr[i] = bf16_from_f32(leak_tail_rate(xi, s));
  });
}

void leak_tail_forward(Context& c, const LeakTailParams& p, const LeakTailTerms& terms,
                       const Tensor& h, const Tensor& tau, const Tensor& x, const Tensor& r) {
  const char* op = "leak_tail_forward";
  const Tensor& u0 = leak_tail_first_term(op, terms);
  if (u0.dtype() == DType::BF16 && u0.device() == Device::Cuda) {
    const LeakTailLayout l = check_leak_tail_forward(op, p, terms, h, tau, x, r);
    return leak_tail_forward_bf16(c, p, l, terms, h, tau, x, r);
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
