// CPU twin of the leaky-integration step (kernels/leak.h).
#include "kernels/leak.h"

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
      for (int64_t i = b * per; i < (b + 1) * per; ++i) pk[i] = (pu[i] - pr[i]) / tb;
    }
  });
}

}  // namespace dynsim::cpu
