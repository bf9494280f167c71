// CUDA twin of the leaky-integration step (kernels/leak.h): the per-element math is
// kernels/leak_math.h, the same functions the CPU twin calls, so with the library's --fmad=false
// Euler and RK4 give the CPU's bits. tau is [1] or [B] (per sample); grad_tau is a deterministic
// double sum per sample (kernels/cuda_common.cuh) fused with the elementwise gradients.
#include "kernels/cuda_common.cuh"
#include "kernels/leak.h"

namespace dynsim::cuda {
namespace {

// Checks tau against u ([1] or [B], same dtype and device) and returns whether it is per sample.
bool tau_per_sample(const char* op, const Tensor& u, const Tensor& tau) {
  const int64_t B = u.rank() > 0 ? u.dim(0) : 0;
  if (!tau.defined() || (tau.numel() != 1 && tau.numel() != B))
    throw DataError(concat(op, ": tau must have 1 or ", B, " elements, got ",
                           tau.defined() ? tau.str() : std::string("undefined")));
  check_same(op, "tau", tau, u);
  return tau.numel() == B && B > 1;
}


}  // namespace

template <class T>
void leak_forward_t(Context& c, const LeakParams& p, const Tensor& u, const Tensor& h,
                    const Tensor& tau, const Tensor& x) {
  const char* op = "leak_forward";
  check_arg(op, "x", x, u, u.shape());
  if (h.defined()) check_arg(op, "h", h, u, u.shape());
  const bool per_sample = tau_per_sample(op, u, tau);
  const int64_t n = u.numel(), per = u.dim(0) ? n / u.dim(0) : 0;
  const T *pu = u.data<T>(), *ph = data_or_null<const T>(h), *ptau = tau.data<T>();
  T* px = x.data<T>();
  const LeakRule rule = p.rule;
  const double dt = p.dt;
  launch(c, n, [=] __device__(int64_t i) {
    const T tb = ptau[per_sample ? i / per : 0];
    px[i] = leak_step<T>(rule, pu[i], ph ? ph[i] : T(0), ph != nullptr, tb, dt);
  });
}

template <class T>
void leak_backward_t(Context& c, const LeakParams& p, const Tensor& grad_x, const Tensor& u,
                     const Tensor& h, const Tensor& tau, const Tensor& grad_u, const Tensor& grad_h,
                     const Tensor& grad_tau, GradMode m) {
  const char* op = "leak_backward";
  check_arg(op, "grad_x", grad_x, u, u.shape());
  if (h.defined()) check_arg(op, "h", h, u, u.shape());
  if (grad_u.defined()) check_arg(op, "grad_u", grad_u, u, u.shape());
  if (grad_h.defined() && h.defined()) check_arg(op, "grad_h", grad_h, u, u.shape());
  const bool per_sample = tau_per_sample(op, u, tau);
  if (grad_tau.defined()) check_arg(op, "grad_tau", grad_tau, tau, tau.shape());
  const int64_t n = u.numel(), per = u.dim(0) ? n / u.dim(0) : 0;
  const T *g = grad_x.data<T>(), *pu = u.data<T>(), *ptau = tau.data<T>();
  const T* ph = data_or_null<const T>(h);
  T* gu = data_or_null<T>(grad_u);
  T* gh = ph ? data_or_null<T>(grad_h) : nullptr;
  const LeakRule rule = p.rule;
  const double dt = p.dt;
  const bool acc = m == GradMode::Accumulate;
  // The elementwise gradients, returning the grad_tau term of element i.
  auto term = [=] __device__(int64_t i) -> double {
    const T tb = ptau[per_sample ? i / per : 0];
    const LeakGrad<T> d = leak_step_grad<T>(rule, pu[i], ph ? ph[i] : T(0), ph != nullptr, tb, dt);
    if (gu) put_grad(gu[i], T(g[i] * d.du), acc);
    if (gh) put_grad(gh[i], T(g[i] * d.dh), acc);
    return double(g[i]) * double(d.dtau);
  };
  if (!grad_tau.defined()) {
    launch(c, n, [=] __device__(int64_t i) { term(i); });
    return;
  }
  T* gt = grad_tau.data<T>();
  const int64_t segments = per_sample ? u.dim(0) : 1;
  segmented_sum(c, segments, n / segments, term,
                [=] __device__(int64_t s, double v) { put_grad(gt[s], T(v), acc); });
}

template <class T>
void leak_slope_t(Context& c, const Tensor& u, const Tensor& r, const Tensor& tau,
                  const Tensor& k) {
  const char* op = "leak_slope";
  check_arg(op, "r", r, u, u.shape());
  check_arg(op, "k", k, u, u.shape());
  const bool per_sample = tau_per_sample(op, u, tau);
  const int64_t n = u.numel(), per = u.dim(0) ? n / u.dim(0) : 0;
  const T *pu = u.data<T>(), *pr = r.data<T>(), *ptau = tau.data<T>();
  T* pk = k.data<T>();
  launch(c, n, [=] __device__(int64_t i) {
    pk[i] = leak_slope_value(pu[i], pr[i], ptau[per_sample ? i / per : 0]);
  });
}

template <class T>
void leak_slope_backward_t(Context& c, const Tensor& grad_k, const Tensor& u, const Tensor& r,
                           const Tensor& tau, const Tensor& grad_u, const Tensor& grad_r,
                           const Tensor& grad_tau, GradMode m) {
  const char* op = "leak_slope_backward";
  check_arg(op, "grad_k", grad_k, u, u.shape());
  check_arg(op, "r", r, u, u.shape());
  if (grad_u.defined()) check_arg(op, "grad_u", grad_u, u, u.shape());
  if (grad_r.defined()) check_arg(op, "grad_r", grad_r, u, u.shape());
  const bool per_sample = tau_per_sample(op, u, tau);
  if (grad_tau.defined()) check_arg(op, "grad_tau", grad_tau, tau, tau.shape());
  const int64_t n = u.numel(), per = u.dim(0) ? n / u.dim(0) : 0;
  const T *pg = grad_k.data<T>(), *pu = u.data<T>(), *pr = r.data<T>(), *ptau = tau.data<T>();
  T* gu = data_or_null<T>(grad_u);
  T* gr = data_or_null<T>(grad_r);
  const bool acc = m == GradMode::Accumulate;
  auto term = [=] __device__(int64_t i) -> double {
    const LeakSlopeGrad<T> d = leak_slope_grad(pg[i], pu[i], pr[i], ptau[per_sample ? i / per : 0]);
    if (gu) put_grad(gu[i], d.du, acc);
    if (gr) put_grad(gr[i], d.dr, acc);
    return d.dtau;
  };
  if (!grad_tau.defined()) {
    launch(c, n, [=] __device__(int64_t i) { term(i); });
    return;
  }
  T* gt = grad_tau.data<T>();
  const int64_t segments = per_sample ? u.dim(0) : 1;
  segmented_sum(c, segments, n / segments, term,
                [=] __device__(int64_t s, double v) { put_grad(gt[s], T(v), acc); });
}

void leak_forward(Context& c, const LeakParams& p, const Tensor& u, const Tensor& h,
                  const Tensor& tau, const Tensor& x) {
  if (is_f64("leak_forward", u))
    leak_forward_t<double>(c, p, u, h, tau, x);
  else
    leak_forward_t<float>(c, p, u, h, tau, x);
}
void leak_backward(Context& c, const LeakParams& p, const Tensor& grad_x, const Tensor& u,
                   const Tensor& h, const Tensor& tau, const Tensor& grad_u, const Tensor& grad_h,
                   const Tensor& grad_tau, GradMode m) {
  if (is_f64("leak_backward", u))
    leak_backward_t<double>(c, p, grad_x, u, h, tau, grad_u, grad_h, grad_tau, m);
  else
    leak_backward_t<float>(c, p, grad_x, u, h, tau, grad_u, grad_h, grad_tau, m);
}
void leak_slope(Context& c, const Tensor& u, const Tensor& r, const Tensor& tau, const Tensor& k) {
  if (is_f64("leak_slope", u))
    leak_slope_t<double>(c, u, r, tau, k);
  else
    leak_slope_t<float>(c, u, r, tau, k);
}
void leak_slope_backward(Context& c, const Tensor& grad_k, const Tensor& u, const Tensor& r,
                         const Tensor& tau, const Tensor& grad_u, const Tensor& grad_r,
                         const Tensor& grad_tau, GradMode m) {
  if (is_f64("leak_slope_backward", u))
    leak_slope_backward_t<double>(c, grad_k, u, r, tau, grad_u, grad_r, grad_tau, m);
  else
    leak_slope_backward_t<float>(c, grad_k, u, r, tau, grad_u, grad_r, grad_tau, m);
}

}  // namespace dynsim::cuda
