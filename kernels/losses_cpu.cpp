// CPU twins of the losses (kernels/losses.h), each a mean reduced to loss [1]; backward scales
// by the upstream scalar grad_loss [1]. Cross-entropy uses a max-shifted log-softmax per row;
// rows labelled ignore_index are left out of the mean. Sums accumulate in double.
#include <cmath>

#include "kernels/losses.h"
#include "kernels/losses_math.h"
#include "kernels/reduce_math.h"

namespace dynsim::cpu {
namespace {

void check_loss(const char* op, const char* role, const Tensor& t, const Tensor& like) {
  check_arg(op, role, t, like, Shape{1});
}

// Checks labels [N] i32 against K classes and returns the number of valid (not ignored) rows.
int64_t count_valid_labels(const char* op, const CrossEntropyParams& p, const Tensor& logits,
                           const Tensor& labels) {
  if (logits.rank() != 2)
    throw DataError(concat(op, ": logits must be [N, K], got ", logits.str()));
  check_shape(op, "labels", labels, Shape{logits.dim(0)});
  if (labels.dtype() != DType::I32 || !labels.is_cpu())
    throw DataError(concat(op, ": labels must be host i32, got ", labels.str()));
  if (logits.dim(1) < 1) throw DataError(concat(op, ": logits ", logits.str(), " has no classes"));
  const int32_t* lab = labels.data<int32_t>();
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

using loss_math::row_logsumexp;

}  // namespace

void cross_entropy_forward(Context& c, const CrossEntropyParams& p, const Tensor& logits,
                           const Tensor& labels, const Tensor& loss) {
  const char* op = "cross_entropy_forward";
  with_float_type(op, logits, [&](auto t) {
    using T = decltype(t);
    const int64_t valid = count_valid_labels(op, p, logits, labels);
    check_loss(op, "loss", loss, logits);
    const int64_t N = logits.dim(0), K = logits.dim(1);
    const T* z = logits.data<T>();
    const int32_t* lab = labels.data<int32_t>();
    // Per-row terms summed in row order: -log softmax(z_r)[label_r] = max + lse - z_label.
    const double s = blocked_sum(c, N, [&](int64_t r) {
      if (lab[r] == p.ignore_index) return 0.0;
      double mx, lse;
      row_logsumexp(z + r * K, K, mx, lse);
      return mx + lse - double(z[r * K + lab[r]]);
    });
    loss.data<T>()[0] = valid == 0 ? T(0) : T(s / double(valid));
  });
}

void cross_entropy_backward(Context& c, const CrossEntropyParams& p, const Tensor& grad_loss,
                            const Tensor& logits, const Tensor& labels, const Tensor& grad_logits,
                            GradMode m) {
  const char* op = "cross_entropy_backward";
  with_float_type(op, logits, [&](auto t) {
    using T = decltype(t);
    const int64_t valid = count_valid_labels(op, p, logits, labels);
    check_loss(op, "grad_loss", grad_loss, logits);
    check_arg(op, "grad_logits", grad_logits, logits, logits.shape());
    const int64_t N = logits.dim(0), K = logits.dim(1);
    const T* z = logits.data<T>();
    const int32_t* lab = labels.data<int32_t>();
    T* gz = grad_logits.data<T>();
    // d loss / d z_rj = (softmax_rj - [j == label_r]) / valid; ignored rows get 0.
    const double scale = valid == 0 ? 0.0 : double(grad_loss.data<T>()[0]) / double(valid);
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (N * K >= (1 << 15))
    for (int64_t r = 0; r < N; ++r) {
      const T* zr = z + r * K;
      T* gr = gz + r * K;
      if (lab[r] == p.ignore_index || valid == 0) {
        for (int64_t j = 0; j < K; ++j) write_grad(gr[j], T(0), m);
        continue;
      }
      double mx, lse;
      row_logsumexp(zr, K, mx, lse);
      for (int64_t j = 0; j < K; ++j) {
        const double sm = std::exp(double(zr[j]) - mx - lse);
        write_grad(gr[j], T(scale * (sm - (j == lab[r] ? 1.0 : 0.0))), m);
      }
    }
  });
}

void poisson_nll_forward(Context& c, const PoissonNllParams& p, const Tensor& pred,
                         const Tensor& target, const Tensor& loss) {
  const char* op = "poisson_nll_forward";
  with_float_type(op, pred, [&](auto t) {
    using T = decltype(t);
    check_arg(op, "target", target, pred, pred.shape());
    check_loss(op, "loss", loss, pred);
    const int64_t n = pred.numel();
    if (n == 0) throw DataError(concat(op, ": pred ", pred.str(), " is empty"));
    const T *x = pred.data<T>(), *y = target.data<T>();
    const double eps = p.eps;
    const bool log_input = p.log_input;
    const double s = blocked_sum(c, n, [&](int64_t i) {
      return loss_math::poisson_term(double(x[i]), double(y[i]), log_input, eps);
    });
    loss.data<T>()[0] = T(s / double(n));
  });
}

void poisson_nll_backward(Context& c, const PoissonNllParams& p, const Tensor& grad_loss,
                          const Tensor& pred, const Tensor& target, const Tensor& grad_pred,
                          GradMode m) {
  const char* op = "poisson_nll_backward";
  with_float_type(op, pred, [&](auto t) {
    using T = decltype(t);
    check_arg(op, "target", target, pred, pred.shape());
    check_loss(op, "grad_loss", grad_loss, pred);
    check_arg(op, "grad_pred", grad_pred, pred, pred.shape());
    const int64_t n = pred.numel();
    if (n == 0) throw DataError(concat(op, ": pred ", pred.str(), " is empty"));
    const T *x = pred.data<T>(), *y = target.data<T>();
    T* gx = grad_pred.data<T>();
    const double scale = double(grad_loss.data<T>()[0]) / double(n), eps = p.eps;
    const bool log_input = p.log_input;
    parallel_elements(c, n, [&](int64_t i) {
      const double d = loss_math::poisson_grad(double(x[i]), double(y[i]), log_input, eps);
      write_grad(gx[i], T(scale * d), m);
    });
  });
}

void mse_forward(Context& c, const Tensor& pred, const Tensor& target, const Tensor& loss) {
  const char* op = "mse_forward";
  with_float_type(op, pred, [&](auto t) {
    using T = decltype(t);
    check_arg(op, "target", target, pred, pred.shape());
    check_loss(op, "loss", loss, pred);
    const int64_t n = pred.numel();
    if (n == 0) throw DataError(concat(op, ": pred ", pred.str(), " is empty"));
    const T *x = pred.data<T>(), *y = target.data<T>();
    const double s = blocked_sum(
        c, n, [&](int64_t i) { return loss_math::squared_error(double(x[i]), double(y[i])); });
    loss.data<T>()[0] = T(s / double(n));
  });
}

void mse_backward(Context& c, const Tensor& grad_loss, const Tensor& pred, const Tensor& target,
                  const Tensor& grad_pred, const Tensor& grad_target, GradMode m) {
  const char* op = "mse_backward";
  with_float_type(op, pred, [&](auto t) {
    using T = decltype(t);
    check_arg(op, "target", target, pred, pred.shape());
    check_loss(op, "grad_loss", grad_loss, pred);
    if (grad_pred.defined()) check_arg(op, "grad_pred", grad_pred, pred, pred.shape());
    if (grad_target.defined()) check_arg(op, "grad_target", grad_target, pred, pred.shape());
    const int64_t n = pred.numel();
    if (n == 0) throw DataError(concat(op, ": pred ", pred.str(), " is empty"));
    const T *x = pred.data<T>(), *y = target.data<T>();
    const double scale = 2.0 * double(grad_loss.data<T>()[0]) / double(n);
    if (grad_pred.defined()) {
      T* gp = grad_pred.data<T>();
      parallel_elements(
          c, n, [&](int64_t i) { write_grad(gp[i], T(scale * (double(x[i]) - double(y[i]))), m); });
    }
    if (grad_target.defined()) {
      T* gt = grad_target.data<T>();
      parallel_elements(
          c, n, [&](int64_t i) { write_grad(gt[i], T(scale * (double(y[i]) - double(x[i]))), m); });
    }
  });
}

}  // namespace dynsim::cpu
