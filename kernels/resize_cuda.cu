// CUDA twin of the nearest-neighbour resize (kernels/resize.h), f32 and f64, with the same
// source-index rule (nearest_source_index, PyTorch's float formula). Forward: one thread per
// output pixel. Backward is a gather, one thread per input pixel: the outputs that read it form
// a contiguous block of rows and columns (the rule is non-decreasing; nearest_first_reader),
// summed in the CPU scatter's order, so the result matches the CPU bit for bit without atomics.
#include "kernels/cuda_common.cuh"
#include "kernels/resize.h"

namespace dynsim::cuda {
namespace {

// x and y: 4-d CUDA tensors with the same N, C, dtype and non-empty planes.
void check_pair(const char* op, const char* x_role, const Tensor& x, const char* y_role,
                const Tensor& y) {
  check_same(op, y_role, y, x);
  if (x.rank() != 4) throw DataError(concat(op, ": ", x_role, " must be [N,C,H,W], got ", x.str()));
  if (y.rank() != 4) throw DataError(concat(op, ": ", y_role, " must be [N,C,H,W], got ", y.str()));
  if (y.dim(0) != x.dim(0) || y.dim(1) != x.dim(1))
    throw DataError(concat(op, ": ", y_role, " has shape ", y.shape().str(), " but ", x_role,
                           " has shape ", x.shape().str(), " (N and C must match)"));
  if (x.dim(2) < 1 || x.dim(3) < 1 || y.dim(2) < 1 || y.dim(3) < 1)
    throw DataError(concat(op, ": empty plane: ", x_role, " ", x.shape().str(), ", ", y_role, " ",
                           y.shape().str()));
}

}  // namespace

template <class T>
void resize_forward_t(Context& c, const Tensor& x, const Tensor& y) {
  const int64_t h = x.dim(2), w = x.dim(3), ho = y.dim(2), wo = y.dim(3);
  const T* px = x.data<T>();
  T* py = y.data<T>();
  launch(c, y.numel(), [=] __device__(int64_t o) {
    const int64_t k = o / (ho * wo), i = (o / wo) % ho, j = o % wo;
    py[o] = px[k * h * w + nearest_source_index(i, h, ho) * w + nearest_source_index(j, w, wo)];
  });
}

template <class T>
void resize_backward_t(Context& c, const Tensor& grad_y, const Tensor& grad_x, bool acc) {
  const int64_t h = grad_x.dim(2), w = grad_x.dim(3), ho = grad_y.dim(2), wo = grad_y.dim(3);
  const T* g = grad_y.data<T>();
  T* gx = grad_x.data<T>();
  launch(c, grad_x.numel(), [=] __device__(int64_t e) {
    const int64_t k = e / (h * w), ih = (e / w) % h, iw = e % w;
    const int64_t i0 = nearest_first_reader(ih, h, ho), i1 = nearest_first_reader(ih + 1, h, ho);
    const int64_t j0 = nearest_first_reader(iw, w, wo), j1 = nearest_first_reader(iw + 1, w, wo);
    const T* gp = g + k * ho * wo;
    T s = acc ? gx[e] : T(0);
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) s += gp[i * wo + j];
    gx[e] = s;
  });
}

void resize_nearest_forward(Context& c, const Tensor& x, const Tensor& y) {
  const char* op = "resize_nearest_forward";
  const bool f64 = is_f64(op, x);
  check_pair(op, "x", x, "y", y);
  if (f64)
    resize_forward_t<double>(c, x, y);
  else
    resize_forward_t<float>(c, x, y);
}

void resize_nearest_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  const char* op = "resize_nearest_backward";
  const bool f64 = is_f64(op, grad_y);
  if (!grad_x.defined()) throw DataError(concat(op, ": grad_x is undefined"));
  check_pair(op, "grad_x", grad_x, "grad_y", grad_y);
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    resize_backward_t<double>(c, grad_y, grad_x, acc);
  else
    resize_backward_t<float>(c, grad_y, grad_x, acc);
}

}  // namespace dynsim::cuda
