// CPU twin of the optimiser updates (kernels/optim.h): one pass over the tensor per step,
// scalars prepared once in double and rounded to T as torch does. Elementwise, so any thread
// split gives the same bits.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")  // keep torch's unfused products (e.g. -march=native)
#endif
#include <cmath>

#include "kernels/optim.h"
#include "kernels/optim_math.h"

namespace dynsim::cpu {
namespace {

// for_each_index and kParallelMin come from kernels/op_common.h.
void check_finite_hyper(const char* op, const char* name, double v) {
  if (!std::isfinite(v)) throw DataError(concat(op, ": ", name, " must be finite, got ", v));
}

}  // namespace

void sgd_step(Context& c, const SgdParams& hp, const Tensor& param, const Tensor& grad,
              const Tensor& momentum_buf) {
  const char* op = "sgd_step";
  check_finite_hyper(op, "lr", hp.lr);
  check_finite_hyper(op, "momentum", hp.momentum);
  check_finite_hyper(op, "weight_decay", hp.weight_decay);
  if (hp.nesterov && hp.momentum <= 0.0)
    throw DataError(concat(op, ": nesterov needs momentum > 0, got ", hp.momentum));
  with_float_type(op, param, [&](auto tag) {
    using T = decltype(tag);
    check_arg(op, "grad", grad, param, param.shape());
    const bool use_momentum = hp.momentum != 0.0;
    if (use_momentum) check_arg(op, "momentum_buf", momentum_buf, param, param.shape());
    optim::SgdScalars<T> s{T(hp.weight_decay),     T(hp.momentum), T(-hp.lr),
                           hp.weight_decay != 0.0, use_momentum,   hp.nesterov};
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* b = use_momentum ? momentum_buf.data<T>() : nullptr;
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
  check_finite_hyper(op, "lr", hp.lr);
  check_finite_hyper(op, "weight_decay", hp.weight_decay);
  check_finite_hyper(op, "eps", hp.eps);
  if (!(hp.beta1 >= 0.0 && hp.beta1 < 1.0) || !(hp.beta2 >= 0.0 && hp.beta2 < 1.0))
    throw DataError(concat(op, ": betas must lie in [0, 1), got ", hp.beta1, ", ", hp.beta2));
  if (hp.step < 1) throw DataError(concat(op, ": step must be >= 1, got ", hp.step));
  with_float_type(op, param, [&](auto tag) {
    using T = decltype(tag);
    check_arg(op, "grad", grad, param, param.shape());
    check_arg(op, "exp_avg", exp_avg, param, param.shape());
    check_arg(op, "exp_avg_sq", exp_avg_sq, param, param.shape());
    // Host scalars exactly as torch's Python code forms them (doubles), then rounded to T.
    const double t = double(hp.step);
    const double bc1 = 1.0 - std::pow(hp.beta1, t);
    const double bc2 = 1.0 - std::pow(hp.beta2, t);
    optim::AdamScalars<T> s;
    s.weight_decay = T(hp.weight_decay);
    s.decay_factor = T(1.0 - hp.lr * hp.weight_decay);
    s.beta1 = T(hp.beta1);
    s.one_minus_beta1 = T(1.0 - hp.beta1);
    s.beta2 = T(hp.beta2);
    s.one_minus_beta2 = T(1.0 - hp.beta2);
    s.bias2_sqrt = T(std::sqrt(bc2));
    s.eps = T(hp.eps);
    s.neg_step_size = T(-(hp.lr / bc1));
    s.coupled = !hp.decoupled && hp.weight_decay != 0.0;
    s.decoupled = hp.decoupled;  // torch's AdamW multiplies even when wd = 0 (factor 1: exact)
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
