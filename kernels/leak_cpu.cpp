// CPU twin of the leaky-integration step (kernels/leak.h).
#include "kernels/leak.h"

#include <vector>

namespace dynsim::cpu {

void leak_forward(Context& c, const LeakParams& p, const Tensor& u, const Tensor& h,
                  const Tensor& tau, const Tensor& x) {
  with_float_type("leak_forward", u, [&](auto t) {
    using T = decltype(t);
    check_arg("leak_forward", "x", x, u, u.shape());
    if (h.defined()) check_arg("leak_forward", "h", h, u, u.shape());
    const int64_t B = u.dim(0), per = B ? u.numel() / B : 0;
    if (!tau.defined() || (tau.numel() != 1 && tau.numel() != B))
      throw DataError(concat("leak_forward: tau must have 1 or ", B, " elements, got ",
                             tau.str()));
    check_same("leak_forward", "tau", tau, u);
    const T* pu = u.data<T>();
    const T* ph = h.defined() ? h.data<T>() : nullptr;
    const T* ptau = tau.data<T>();
    T* px = x.data<T>();
    const bool per_sample = tau.numel() == B && B > 1;
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (u.numel() > 32768)
    for (int64_t b = 0; b < B; ++b) {
      const T tb = ptau[per_sample ? b : 0];
      const int64_t o = b * per;
      for (int64_t i = 0; i < per; ++i)
        px[o + i] = leak_step<T>(p.rule, pu[o + i], ph ? ph[o + i] : T(0), ph != nullptr, tb, p.dt);
    }
  });
}

void leak_backward(Context& c, const LeakParams& p, const Tensor& grad_x, const Tensor& u,
                   const Tensor& h, const Tensor& tau, const Tensor& grad_u, const Tensor& grad_h,
                   const Tensor& grad_tau, GradMode m) {
  with_float_type("leak_backward", u, [&](auto t) {
    using T = decltype(t);
    const char* op = "leak_backward";
    check_arg(op, "grad_x", grad_x, u, u.shape());
    if (h.defined()) check_arg(op, "h", h, u, u.shape());
    if (grad_u.defined()) check_arg(op, "grad_u", grad_u, u, u.shape());
    if (grad_h.defined() && h.defined()) check_arg(op, "grad_h", grad_h, u, u.shape());
    const int64_t B = u.dim(0), per = B ? u.numel() / B : 0;
    if (!tau.defined() || (tau.numel() != 1 && tau.numel() != B))
      throw DataError(concat(op, ": tau must have 1 or ", B, " elements, got ", tau.str()));
    check_same(op, "tau", tau, u);
    if (grad_tau.defined()) check_arg(op, "grad_tau", grad_tau, tau, tau.shape());
    const bool per_sample = tau.numel() == B && B > 1;
    const T *g = grad_x.data<T>(), *pu = u.data<T>(), *ptau = tau.data<T>();
    const T* ph = h.defined() ? h.data<T>() : nullptr;
    T* gu = grad_u.defined() ? grad_u.data<T>() : nullptr;
    T* gh = grad_h.defined() && ph ? grad_h.data<T>() : nullptr;
    std::vector<double> gtau(size_t(tau.numel()), 0.0);
    for (int64_t b = 0; b < B; ++b) {
      const T tb = ptau[per_sample ? b : 0];
      double acc = 0;
      for (int64_t i = b * per; i < (b + 1) * per; ++i) {
        const LeakGrad<T> d = leak_step_grad<T>(p.rule, pu[i], ph ? ph[i] : T(0), ph != nullptr, tb, p.dt);
        if (gu) write_grad(gu[i], T(g[i] * d.du), m);
        if (gh) write_grad(gh[i], T(g[i] * d.dh), m);
        acc += double(g[i]) * double(d.dtau);
      }
      gtau[size_t(per_sample ? b : 0)] += acc;
    }
    if (grad_tau.defined()) {
      T* gt = grad_tau.data<T>();
      for (int64_t k = 0; k < tau.numel(); ++k) write_grad(gt[k], T(gtau[size_t(k)]), m);
    }
  });
}

void leak_slope(Context& c, const Tensor& u, const Tensor& r, const Tensor& tau, const Tensor& k) {
  with_float_type("leak_slope", u, [&](auto t) {
    using T = decltype(t);
    check_arg("leak_slope", "r", r, u, u.shape());
    check_arg("leak_slope", "k", k, u, u.shape());
    const int64_t B = u.dim(0), per = B ? u.numel() / B : 0;
    if (!tau.defined() || (tau.numel() != 1 && tau.numel() != B))
      throw DataError(concat("leak_slope: tau must have 1 or ", B, " elements, got ", tau.str()));
    check_same("leak_slope", "tau", tau, u);
    const T *pu = u.data<T>(), *pr = r.data<T>(), *ptau = tau.data<T>();
    T* pk = k.data<T>();
    const bool per_sample = tau.numel() == B && B > 1;
    for (int64_t b = 0; b < B; ++b) {
      const T tb = ptau[per_sample ? b : 0];
      for (int64_t i = b * per; i < (b + 1) * per; ++i) pk[i] = leak_slope_value(pu[i], pr[i], tb);
    }
  });
}

void leak_slope_backward(Context& c, const Tensor& grad_k, const Tensor& u, const Tensor& r,
                         const Tensor& tau, const Tensor& grad_u, const Tensor& grad_r,
                         const Tensor& grad_tau, GradMode m) {
  with_float_type("leak_slope_backward", u, [&](auto t) {
    using T = decltype(t);
    check_arg("leak_slope_backward", "grad_k", grad_k, u, u.shape());
    check_arg("leak_slope_backward", "r", r, u, u.shape());
    if (grad_u.defined()) check_arg("leak_slope_backward", "grad_u", grad_u, u, u.shape());
    if (grad_r.defined()) check_arg("leak_slope_backward", "grad_r", grad_r, u, u.shape());
    const int64_t B = u.dim(0), per = B ? u.numel() / B : 0;
    if (!tau.defined() || (tau.numel() != 1 && tau.numel() != B))
      throw DataError(concat("leak_slope_backward: tau must have 1 or ", B, " elements, got ",
                             tau.str()));
    if (grad_tau.defined()) check_arg("leak_slope_backward", "grad_tau", grad_tau, u, tau.shape());
    const T *pg = grad_k.data<T>(), *pu = u.data<T>(), *pr = r.data<T>(), *ptau = tau.data<T>();
    T* gu = grad_u.defined() ? grad_u.data<T>() : nullptr;
    T* gr = grad_r.defined() ? grad_r.data<T>() : nullptr;
    T* gt = grad_tau.defined() ? grad_tau.data<T>() : nullptr;
    const bool per_sample = tau.numel() == B && B > 1;
    double total = 0;
    for (int64_t b = 0; b < B; ++b) {
      const T tb = ptau[per_sample ? b : 0];
      double acc = 0;  // d k / d tau = -(u - r) / tau^2, summed in double
      for (int64_t i = b * per; i < (b + 1) * per; ++i) {
        const LeakSlopeGrad<T> d = leak_slope_grad(pg[i], pu[i], pr[i], tb);
        if (gu) write_grad(gu[i], d.du, m);
        if (gr) write_grad(gr[i], d.dr, m);
        acc += d.dtau;
      }
      if (gt && per_sample) write_grad(gt[b], T(acc), m);
      total += acc;
    }
    if (gt && !per_sample) write_grad(gt[0], T(total), m);
  });
}

}  // namespace dynsim::cpu
