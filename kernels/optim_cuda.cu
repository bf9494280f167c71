// CUDA twin of the optimiser updates (kernels/optim.h), f32 and f64: the per-element functions,
// hyperparameter checks and scalar rounding of kernels/optim_math.h (torch's operation order,
// explicit fused multiply-adds where torch fuses, none elsewhere: the library's CUDA code is
// compiled with --fmad=false), so an update gives the CPU twin's bits. sum_squares is a
// deterministic double sum (kernels/cuda_common.cuh) copied back to the host (one stream sync).
#include <memory>

#include "kernels/cuda_common.cuh"
#include "kernels/optim.h"
#include "kernels/optim_math.h"

namespace dynsim::cuda {

template <class T>
void sgd_step_t(Context& c, const optim::SgdScalars<T>& s, bool first, const Tensor& param,
                const Tensor& grad, const Tensor& momentum_buf) {
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  T* b = s.use_momentum ? momentum_buf.data<T>() : nullptr;
  launch(c, param.numel(), [=] __device__(int64_t i) {
    T dummy = T(0);
    optim::sgd_update(p[i], g[i], b ? b[i] : dummy, first, s);
  });
}

template <class T>
void adam_step_t(Context& c, const optim::AdamScalars<T>& s, const Tensor& param,
                 const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  T* m = exp_avg.data<T>();
  T* v = exp_avg_sq.data<T>();
  launch(c, param.numel(),
         [=] __device__(int64_t i) { optim::adam_update(p[i], g[i], m[i], v[i], s); });
}

template <class T>
void sum_squares_t(Context& c, const Tensor& x, double* out) {
  const T* px = x.data<T>();
  segmented_sum(
      c, 1, x.numel(), [=] __device__(int64_t i) { return double(px[i]) * double(px[i]); },
      [=] __device__(int64_t, double v) { out[0] = v; });
}

void sgd_step(Context& c, const SgdParams& hp, const Tensor& param, const Tensor& grad,
              const Tensor& momentum_buf) {
  const char* op = "sgd_step";
  optim::check_sgd_params(op, hp);
  const bool f64 = is_f64(op, param);
  check_arg(op, "grad", grad, param, param.shape());
  if (hp.momentum != 0.0) check_arg(op, "momentum_buf", momentum_buf, param, param.shape());
  if (f64)
    sgd_step_t(c, optim::sgd_scalars<double>(hp), hp.first_step, param, grad, momentum_buf);
  else
    sgd_step_t(c, optim::sgd_scalars<float>(hp), hp.first_step, param, grad, momentum_buf);
}

void adam_step(Context& c, const AdamParams& hp, const Tensor& param, const Tensor& grad,
               const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  const char* op = "adam_step";
  optim::check_adam_params(op, hp);
  const bool f64 = is_f64(op, param);
  check_arg(op, "grad", grad, param, param.shape());
  check_arg(op, "exp_avg", exp_avg, param, param.shape());
  check_arg(op, "exp_avg_sq", exp_avg_sq, param, param.shape());
  if (f64)
    adam_step_t(c, optim::adam_scalars<double>(hp), param, grad, exp_avg, exp_avg_sq);
  else
    adam_step_t(c, optim::adam_scalars<float>(hp), param, grad, exp_avg, exp_avg_sq);
}

namespace {
// A device double that receives sum_squares, kept per context in its plan cache.
struct SumSquaresSlot {
  Tensor value;
};
}  // namespace

double sum_squares(Context& c, const Tensor& x) {
  const char* op = "sum_squares";
  const bool f64 = is_f64(op, x);
  SumSquaresSlot& slot = c.plans().get_or_create<SumSquaresSlot>(
      PlanKey("sum_squares result"), [] { return std::make_shared<SumSquaresSlot>(); });
  if (!slot.value.defined()) slot.value = c.empty(Shape{1}, DType::F64);
  double* out = slot.value.data<double>();
  if (f64)
    sum_squares_t<double>(c, x, out);
  else
    sum_squares_t<float>(c, x, out);
  return c.to_host(slot.value).item(0);
}

}  // namespace dynsim::cuda
