// CPU twin of the optimiser updates (kernels/optim.h): one pass over the tensor per step,
// scalars prepared once in double and rounded to T as torch does (kernels/optim_math.h, shared
// with the CUDA twin). Elementwise, so any thread split gives the same bits.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")  // keep torch's unfused products (e.g. -march=native)
#endif
#include <cmath>

#include "kernels/optim.h"
#include "kernels/optim_math.h"

namespace dynsim::cpu {

void sgd_step(Context& c, const SgdParams& hp, const Tensor& param, const Tensor& grad,
              const Tensor& momentum_buf) {
  const char* op = "sgd_step";
  optim::check_sgd_params(op, hp);
  with_float_type(op, param, [&](auto tag) {
    using T = decltype(tag);
    check_arg(op, "grad", grad, param, param.shape());
    const optim::SgdScalars<T> s = optim::sgd_scalars<T>(hp);
    if (s.use_momentum) check_arg(op, "momentum_buf", momentum_buf, param, param.shape());
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* b = s.use_momentum ? momentum_buf.data<T>() : nullptr;
    const bool first = hp.first_step;
    for_each_index(c, param.numel(), [&](int64_t i) {
      T dummy = T(0);
      optim::sgd_update(p[i], g[i], b ? b[i] : dummy, first, s);
    });
  });
}

void adam_step(Context& c, const AdamParams& hp, const Tensor& param, const Tensor& grad,
               const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  const char* op = "adam_step";
  optim::check_adam_params(op, hp);
  with_float_type(op, param, [&](auto tag) {
    using T = decltype(tag);
    check_arg(op, "grad", grad, param, param.shape());
    check_arg(op, "exp_avg", exp_avg, param, param.shape());
    check_arg(op, "exp_avg_sq", exp_avg_sq, param, param.shape());
    const optim::AdamScalars<T> s = optim::adam_scalars<T>(hp);
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* m = exp_avg.data<T>();
    T* v = exp_avg_sq.data<T>();
    for_each_index(c, param.numel(),
                   [&](int64_t i) { optim::adam_update(p[i], g[i], m[i], v[i], s); });
  });
}

double sum_squares(Context& c, const Tensor& x) {
  return with_float_type("sum_squares", x, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const int64_t n = x.numel();
    double acc = 0.0;
#pragma omp parallel for num_threads(c.threads()) reduction(+ : acc) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) acc += double(px[i]) * double(px[i]);
    return acc;
  });
}

}  // namespace dynsim::cpu
