// CPU reference of the fully connected layer (kernels/linear.h) with Eigen on row-major maps of
// the tensors (no copies): y = x w^T + b; grad_x = grad_y w, grad_w = grad_y^T x,
// grad_b = column sums of grad_y. x [N, In], w [Out, In], b [Out], y [N, Out].
#include <Eigen/Core>

#include "kernels/linear.h"

namespace dynsim::cpu {
namespace {

template <class T>
using Mat = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class T>
using ConstMat =
    Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class T>
using Vec = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstVec = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;

// Checks x and w (and b if defined) and returns {N, In, Out}.
struct Dims {
  int64_t n, in, out;
};
Dims check_inputs(const char* op, const Tensor& x, const Tensor& w) {
  if (x.rank() != 2) throw DataError(concat(op, ": x must be [N, In], got ", x.str()));
  check_same(op, "w", w, x);
  if (w.rank() != 2 || w.dim(1) != x.dim(1))
    throw DataError(concat(op, ": w has shape ", w.shape().str(), ", expected [Out, ", x.dim(1),
                           "] for x ", x.shape().str()));
  return {x.dim(0), x.dim(1), w.dim(0)};
}

}  // namespace

void linear_forward(Context& c, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y) {
  const char* op = "linear_forward";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    const Dims d = check_inputs(op, x, w);
    check_arg(op, "y", y, x, Shape{d.n, d.out});
    if (b.defined()) check_arg(op, "b", b, x, Shape{d.out});
    // One product per row: a sample's logits do not depend on the other samples in the batch
    // (a batched GEMM blocks the sum differently from the GEMV of a batch of one), so a scan's
    // runs packed into one batch give the bits they give alone (engine/scan/README.md).
    // noalias: y is a separate output (aliasing x or w is not supported).
    const ConstMat<T> W(w.data<T>(), d.out, d.in);
    for (int64_t i = 0; i < d.n; ++i) {
      Mat<T> Y(y.data<T>() + i * d.out, 1, d.out);
      Y.noalias() = ConstMat<T>(x.data<T>() + i * d.in, 1, d.in) * W.transpose();
      if (b.defined()) Y.rowwise() += ConstVec<T>(b.data<T>(), d.out).transpose();
    }
  });
}

void linear_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& w,
                     const Tensor& grad_x, const Tensor& grad_w, const Tensor& grad_b, GradMode m) {
  const char* op = "linear_backward";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    const Dims d = check_inputs(op, x, w);
    check_arg(op, "grad_y", grad_y, x, Shape{d.n, d.out});
    const ConstMat<T> G(grad_y.data<T>(), d.n, d.out);
    const bool acc = m == GradMode::Accumulate;
    if (grad_x.defined()) {
      check_arg(op, "grad_x", grad_x, x, x.shape());
      Mat<T> GX(grad_x.data<T>(), d.n, d.in);
      const ConstMat<T> W(w.data<T>(), d.out, d.in);
      if (acc)
        GX.noalias() += G * W;
      else
        GX.noalias() = G * W;
    }
    if (grad_w.defined()) {
      check_arg(op, "grad_w", grad_w, x, w.shape());
      Mat<T> GW(grad_w.data<T>(), d.out, d.in);
      const ConstMat<T> X(x.data<T>(), d.n, d.in);
      if (acc)
        GW.noalias() += G.transpose() * X;
      else
        GW.noalias() = G.transpose() * X;
    }
    if (grad_b.defined()) {
      check_arg(op, "grad_b", grad_b, x, Shape{d.out});
      Vec<T> GB(grad_b.data<T>(), d.out);
      if (acc)
        GB += G.colwise().sum().transpose();
      else
        GB = G.colwise().sum().transpose();
    }
  });
}

}  // namespace dynsim::cpu
