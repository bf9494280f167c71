// CUDA twins of the losses (kernels/losses.h), f32 and f64, math from kernels/losses_math.h.
// Each loss is a deterministic double sum (kernels/cuda_common.cuh) divided on the device; the
// backward reads grad_loss [1] on the device, so nothing waits for the host except the
// cross-entropy labels: they are copied to the host once per call (N ints, one stream sync) to
// reject a label outside [0, K) by row, as the CPU twin does, and to count the valid rows.
#include "kernels/cuda_common.cuh"
#include "kernels/losses.h"
#include "kernels/losses_math.h"

namespace dynsim::cuda {
namespace {

void check_loss(const char* op, const char* role, const Tensor& t, const Tensor& like) {
  check_arg(op, role, t, like, Shape{1});
}

// Checks labels [N] (CUDA i32) against K classes on the host; returns the valid (not ignored)
// row count.
int64_t count_valid_labels(Context& c, const char* op, const CrossEntropyParams& p,
                           const Tensor& logits, const Tensor& labels) {
  if (logits.rank() != 2)
    throw DataError(concat(op, ": logits must be [N, K], got ", logits.str()));
  check_shape(op, "labels", labels, Shape{logits.dim(0)});
  if (labels.dtype() != DType::I32 || labels.device() != Device::Cuda)
    throw DataError(concat(op, ": labels must be CUDA i32, got ", labels.str()));
  if (logits.dim(1) < 1) throw DataError(concat(op, ": logits ", logits.str(), " has no classes"));
  const Tensor host = c.to_host(labels);
  const int32_t* lab = host.data<int32_t>();
  const int64_t K = logits.dim(1);
  int64_t valid = 0;
  for (int64_t r = 0; r < logits.dim(0); ++r) {
    if (lab[r] == p.ignore_index) continue;
    if (lab[r] < 0 || lab[r] >= K)
      throw DataError(concat(op, ": labels[", r, "] = ", lab[r], " is outside [0, ", K,
                             ") and is not ignore_index (", p.ignore_index, ")"));
    ++valid;
  }
  return valid;
}

void check_pair(const char* op, const Tensor& pred, const Tensor& target) {
  check_arg(op, "target", target, pred, pred.shape());
  if (pred.numel() == 0) throw DataError(concat(op, ": pred ", pred.str(), " is empty"));
}

}  // namespace

template <class T>
void cross_entropy_forward_t(Context& c, int ignore, int64_t valid, const Tensor& logits,
                             const Tensor& labels, const Tensor& loss) {
  const int64_t N = logits.dim(0), K = logits.dim(1);
  const T* z = logits.data<T>();
  const int32_t* lab = labels.data<int32_t>();
  T* out = loss.data<T>();
  auto term = [=] __device__(int64_t r) -> double {
    if (lab[r] == ignore) return 0.0;
    double mx, lse;
    loss_math::row_logsumexp(z + r * K, K, mx, lse);
    return mx + lse - double(z[r * K + lab[r]]);
  };
  segmented_sum(c, 1, N, term, [=] __device__(int64_t, double s) {
    out[0] = valid == 0 ? T(0) : T(s / double(valid));
  });
}

template <class T>
void cross_entropy_backward_t(Context& c, int ignore, int64_t valid, const Tensor& grad_loss,
                              const Tensor& logits, const Tensor& labels, const Tensor& grad_logits,
                              bool acc) {
  const int64_t K = logits.dim(1);
  const T *z = logits.data<T>(), *gl = grad_loss.data<T>();
  const int32_t* lab = labels.data<int32_t>();
  T* gz = grad_logits.data<T>();
  launch(c, logits.dim(0), [=] __device__(int64_t r) {
    const T* zr = z + r * K;
    T* gr = gz + r * K;
    if (lab[r] == ignore || valid == 0) {
      for (int64_t j = 0; j < K; ++j) put_grad(gr[j], T(0), acc);
      return;
    }
    const double scale = double(gl[0]) / double(valid);
    double mx, lse;
    loss_math::row_logsumexp(zr, K, mx, lse);
    for (int64_t j = 0; j < K; ++j) {
      const double sm = exp(double(zr[j]) - mx - lse);
      put_grad(gr[j], T(scale * (sm - (j == lab[r] ? 1.0 : 0.0))), acc);
    }
  });
}

template <class T>
void poisson_forward_t(Context& c, const PoissonNllParams& p, const Tensor& pred,
                       const Tensor& target, const Tensor& loss) {
  const int64_t n = pred.numel();
  const T *x = pred.data<T>(), *y = target.data<T>();
  T* out = loss.data<T>();
  const bool log_input = p.log_input;
  const double eps = p.eps;
  auto term = [=] __device__(int64_t i) {
    return loss_math::poisson_term(double(x[i]), double(y[i]), log_input, eps);
  };
  segmented_sum(c, 1, n, term, [=] __device__(int64_t, double s) { out[0] = T(s / double(n)); });
}

template <class T>
void poisson_backward_t(Context& c, const PoissonNllParams& p, const Tensor& grad_loss,
                        const Tensor& pred, const Tensor& target, const Tensor& grad_pred,
                        bool acc) {
  const int64_t n = pred.numel();
  const T *x = pred.data<T>(), *y = target.data<T>(), *gl = grad_loss.data<T>();
  T* gx = grad_pred.data<T>();
  const bool log_input = p.log_input;
  const double eps = p.eps;
  launch(c, n, [=] __device__(int64_t i) {
    const double scale = double(gl[0]) / double(n);
    const double d = loss_math::poisson_grad(double(x[i]), double(y[i]), log_input, eps);
    put_grad(gx[i], T(scale * d), acc);
  });
}

template <class T>
void mse_forward_t(Context& c, const Tensor& pred, const Tensor& target, const Tensor& loss) {
  const int64_t n = pred.numel();
  const T *x = pred.data<T>(), *y = target.data<T>();
  T* out = loss.data<T>();
  auto term = [=] __device__(int64_t i) {
    return loss_math::squared_error(double(x[i]), double(y[i]));
  };
  segmented_sum(c, 1, n, term, [=] __device__(int64_t, double s) { out[0] = T(s / double(n)); });
}

template <class T>
void mse_backward_t(Context& c, const Tensor& grad_loss, const Tensor& pred, const Tensor& target,
                    const Tensor& grad_pred, const Tensor& grad_target, bool acc) {
  const int64_t n = pred.numel();
  const T *x = pred.data<T>(), *y = target.data<T>(), *gl = grad_loss.data<T>();
  T* gp = grad_pred.defined() ? grad_pred.data<T>() : nullptr;
  T* gt = grad_target.defined() ? grad_target.data<T>() : nullptr;
  launch(c, n, [=] __device__(int64_t i) {
    const double scale = 2.0 * double(gl[0]) / double(n);
    if (gp) put_grad(gp[i], T(scale * (double(x[i]) - double(y[i]))), acc);
    if (gt) put_grad(gt[i], T(scale * (double(y[i]) - double(x[i]))), acc);
  });
}

void cross_entropy_forward(Context& c, const CrossEntropyParams& p, const Tensor& logits,
                           const Tensor& labels, const Tensor& loss) {
  const char* op = "cross_entropy_forward";
  const bool f64 = is_f64(op, logits);
  const int64_t valid = count_valid_labels(c, op, p, logits, labels);
  check_loss(op, "loss", loss, logits);
  if (f64)
    cross_entropy_forward_t<double>(c, p.ignore_index, valid, logits, labels, loss);
  else
    cross_entropy_forward_t<float>(c, p.ignore_index, valid, logits, labels, loss);
}

void cross_entropy_backward(Context& c, const CrossEntropyParams& p, const Tensor& grad_loss,
                            const Tensor& logits, const Tensor& labels, const Tensor& grad_logits,
                            GradMode m) {
  const char* op = "cross_entropy_backward";
  const bool f64 = is_f64(op, logits);
  const int64_t valid = count_valid_labels(c, op, p, logits, labels);
  check_loss(op, "grad_loss", grad_loss, logits);
  check_arg(op, "grad_logits", grad_logits, logits, logits.shape());
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    cross_entropy_backward_t<double>(c, p.ignore_index, valid, grad_loss, logits, labels,
                                     grad_logits, acc);
  else
    cross_entropy_backward_t<float>(c, p.ignore_index, valid, grad_loss, logits, labels,
                                    grad_logits, acc);
}

void poisson_nll_forward(Context& c, const PoissonNllParams& p, const Tensor& pred,
                         const Tensor& target, const Tensor& loss) {
  const char* op = "poisson_nll_forward";
  const bool f64 = is_f64(op, pred);
  check_pair(op, pred, target);
  check_loss(op, "loss", loss, pred);
  if (f64)
    poisson_forward_t<double>(c, p, pred, target, loss);
  else
    poisson_forward_t<float>(c, p, pred, target, loss);
}

void poisson_nll_backward(Context& c, const PoissonNllParams& p, const Tensor& grad_loss,
                          const Tensor& pred, const Tensor& target, const Tensor& grad_pred,
                          GradMode m) {
  const char* op = "poisson_nll_backward";
  const bool f64 = is_f64(op, pred);
  check_pair(op, pred, target);
  check_loss(op, "grad_loss", grad_loss, pred);
  check_arg(op, "grad_pred", grad_pred, pred, pred.shape());
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    poisson_backward_t<double>(c, p, grad_loss, pred, target, grad_pred, acc);
  else
    poisson_backward_t<float>(c, p, grad_loss, pred, target, grad_pred, acc);
}

void mse_forward(Context& c, const Tensor& pred, const Tensor& target, const Tensor& loss) {
  const char* op = "mse_forward";
  const bool f64 = is_f64(op, pred);
  check_pair(op, pred, target);
  check_loss(op, "loss", loss, pred);
  if (f64)
    mse_forward_t<double>(c, pred, target, loss);
  else
    mse_forward_t<float>(c, pred, target, loss);
}

void mse_backward(Context& c, const Tensor& grad_loss, const Tensor& pred, const Tensor& target,
                  const Tensor& grad_pred, const Tensor& grad_target, GradMode m) {
  const char* op = "mse_backward";
  const bool f64 = is_f64(op, pred);
  check_pair(op, pred, target);
  check_loss(op, "grad_loss", grad_loss, pred);
  if (grad_pred.defined()) check_arg(op, "grad_pred", grad_pred, pred, pred.shape());
  if (grad_target.defined()) check_arg(op, "grad_target", grad_target, pred, pred.shape());
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    mse_backward_t<double>(c, grad_loss, pred, target, grad_pred, grad_target, acc);
  else
    mse_backward_t<float>(c, grad_loss, pred, target, grad_pred, grad_target, acc);
}

}  // namespace dynsim::cuda
