// CUDA linear layer (kernels/linear.h) through cuBLAS, f32 (Sgemm) and f64 (Dgemm). Row-major
// [r, c] memory is column-major [c, r] to cuBLAS, so y^T = w x^T is one GEMM on the tensors as
// they lie: y = gemm(T, N) of w and x; grad_x^T = w^T grad_y^T; grad_w^T = x^T grad_y; the bias
// enters as a rank-1 update (ger) with a ones vector and grad_b = grad_y^T ones (gemv). GradMode
// maps to beta (0 overwrite, 1 accumulate). The context's cuBLAS handle uses pedantic math
// (no TF32) unless its precision allows TF32; the ones vector is cached in the plan cache.
#include <algorithm>
#include <climits>
#include <memory>
#include <vector>

#include "engine/core/cuda_check.h"
#include "kernels/linear.h"

namespace dynsim::cuda {
namespace {

cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, const float* al, const float* a, int lda, const float* b, int ldb,
                    const float* be, float* c, int ldc) {
  return cublasSgemm(h, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc);
}
cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, const double* al, const double* a, int lda, const double* b, int ldb,
                    const double* be, double* c, int ldc) {
  return cublasDgemm(h, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc);
}
cublasStatus_t gemv(cublasHandle_t h, int m, int n, const float* al, const float* a, int lda,
                    const float* x, const float* be, float* y) {
  return cublasSgemv(h, CUBLAS_OP_N, m, n, al, a, lda, x, 1, be, y, 1);
}
cublasStatus_t gemv(cublasHandle_t h, int m, int n, const double* al, const double* a, int lda,
                    const double* x, const double* be, double* y) {
  return cublasDgemv(h, CUBLAS_OP_N, m, n, al, a, lda, x, 1, be, y, 1);
}
cublasStatus_t ger(cublasHandle_t h, int m, int n, const float* al, const float* x, const float* y,
                   float* a, int lda) {
  return cublasSger(h, m, n, al, x, 1, y, 1, a, lda);
}
cublasStatus_t ger(cublasHandle_t h, int m, int n, const double* al, const double* x,
                   const double* y, double* a, int lda) {
  return cublasDger(h, m, n, al, x, 1, y, 1, a, lda);
}

struct Dims {
  int n, in, out;
};

// Checks x and w like the CPU twin; sizes must fit cuBLAS's int.
Dims check_inputs(const char* op, const Tensor& x, const Tensor& w) {
  if (!x.defined()) throw DataError(concat(op, ": x is undefined"));
  if (x.device() != Device::Cuda) throw DataError(concat(op, ": CUDA op got ", x.str()));
  if (x.dtype() != DType::F32 && x.dtype() != DType::F64)
    throw DataError(concat(op, ": needs f32 or f64, got ", x.str()));
  if (x.rank() != 2) throw DataError(concat(op, ": x must be [N, In], got ", x.str()));
  check_same(op, "w", w, x);
  if (w.rank() != 2 || w.dim(1) != x.dim(1))
    throw DataError(concat(op, ": w has shape ", w.shape().str(), ", expected [Out, ", x.dim(1),
                           "] for x ", x.shape().str()));
  for (int64_t v : {x.dim(0), x.dim(1), w.dim(0)})
    if (v > INT_MAX) throw NotImplemented(concat(op, ": dimension ", v, " exceeds cuBLAS's int"));
  return {int(x.dim(0)), int(x.dim(1)), int(w.dim(0))};
}

// A device vector of at least n ones of type T, kept per context (grown, never shrunk). A grown
// vector's predecessors stay allocated: a captured CUDA graph (engine/core/cuda_graph.h) may hold
// their address.
struct Ones {
  Tensor t;
  std::vector<Tensor> retired;
};
template <class T>
const T* ones(Context& c, int64_t n) {
  Ones& o = c.plans().get_or_create<Ones>(PlanKey("linear ones") << int64_t(dtype_of<T>()),
                                          [] { return std::make_shared<Ones>(); });
  if (!o.t.defined() || o.t.numel() < n) {
    const int64_t len = std::max<int64_t>(n, 256);
    Tensor host = Tensor::empty(Shape{len}, dtype_of<T>());
    std::fill(host.data<T>(), host.data<T>() + len, T(1));
    if (o.t.defined()) o.retired.push_back(o.t);
    o.t = c.to_device(host);
  }
  return o.t.data<T>();
}

int ld(int v) {
  return v > 1 ? v : 1;
}  // cuBLAS wants leading dimensions >= 1

template <class T>
void forward_t(Context& c, const Dims& d, const Tensor& x, const Tensor& w, const Tensor& b,
               const Tensor& y) {
  if (d.n == 0 || d.out == 0) return;
  auto h = static_cast<cublasHandle_t>(c.cublas());
  const T one = 1, zero = 0;
  CUBLAS_CHECK(gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, d.out, d.n, d.in, &one, w.data<T>(), ld(d.in),
                    x.data<T>(), ld(d.in), &zero, y.data<T>(), ld(d.out)));
  if (b.defined())
    CUBLAS_CHECK(ger(h, d.out, d.n, &one, b.data<T>(), ones<T>(c, d.n), y.data<T>(), ld(d.out)));
}

template <class T>
void backward_t(Context& c, const Dims& d, const Tensor& grad_y, const Tensor& x, const Tensor& w,
                const Tensor& grad_x, const Tensor& grad_w, const Tensor& grad_b, GradMode m) {
  auto h = static_cast<cublasHandle_t>(c.cublas());
  const T one = 1, zero = 0;
  const T* beta = m == GradMode::Accumulate ? &one : &zero;
  if (d.n == 0) {  // grad_x is empty; grad_w and grad_b are sums of nothing
    if (m == GradMode::Overwrite)
      for (const Tensor* t : {&grad_w, &grad_b})
        if (t->defined())
          DYNSIM_CUDA_CHECK(
              cudaMemsetAsync(t->raw(), 0, t->nbytes(), static_cast<cudaStream_t>(c.stream())));
    return;
  }
  if (grad_x.defined() && d.in > 0)
    CUBLAS_CHECK(gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, d.in, d.n, d.out, &one, w.data<T>(), ld(d.in),
                      grad_y.data<T>(), ld(d.out), beta, grad_x.data<T>(), ld(d.in)));
  if (grad_w.defined() && d.in > 0 && d.out > 0)
    CUBLAS_CHECK(gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, d.in, d.out, d.n, &one, x.data<T>(), ld(d.in),
                      grad_y.data<T>(), ld(d.out), beta, grad_w.data<T>(), ld(d.in)));
  if (grad_b.defined() && d.out > 0)
    CUBLAS_CHECK(gemv(h, d.out, d.n, &one, grad_y.data<T>(), ld(d.out), ones<T>(c, d.n), beta,
                      grad_b.data<T>()));
}

}  // namespace

void linear_forward(Context& c, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y) {
  const char* op = "linear_forward";
  const Dims d = check_inputs(op, x, w);
  check_arg(op, "y", y, x, Shape{d.n, d.out});
  if (b.defined()) check_arg(op, "b", b, x, Shape{d.out});
  if (x.dtype() == DType::F64)
    forward_t<double>(c, d, x, w, b, y);
  else
    forward_t<float>(c, d, x, w, b, y);
}

void linear_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& w,
                     const Tensor& grad_x, const Tensor& grad_w, const Tensor& grad_b, GradMode m) {
  const char* op = "linear_backward";
  const Dims d = check_inputs(op, x, w);
  check_arg(op, "grad_y", grad_y, x, Shape{d.n, d.out});
  if (grad_x.defined()) check_arg(op, "grad_x", grad_x, x, x.shape());
  if (grad_w.defined()) check_arg(op, "grad_w", grad_w, x, w.shape());
  if (grad_b.defined()) check_arg(op, "grad_b", grad_b, x, Shape{d.out});
  if (x.dtype() == DType::F64)
    backward_t<double>(c, d, grad_y, x, w, grad_x, grad_w, grad_b, m);
  else
    backward_t<float>(c, d, grad_y, x, w, grad_x, grad_w, grad_b, m);
}

}  // namespace dynsim::cuda
