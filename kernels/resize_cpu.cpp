// CPU reference of the nearest-neighbour resize (kernels/resize.h): y[n,c,i,j] =
// x[n,c, floor(i*H/Ho), floor(j*W/Wo)], H and W independent, up or down by any factor. The
// backward is the adjoint: every grad_y element is added to the input pixel it read.
// x [N,C,H,W], y [N,C,Ho,Wo]; planes run in parallel.
#include <algorithm>

#include "kernels/resize.h"

namespace dynsim::cpu {
namespace {


// x and y must be defined 4-d tensors with the same N, C, dtype and device and non-empty planes.
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

// Source column of every output column, in scratch memory (valid until the next get()).
const int64_t* source_columns(Context& c, int64_t in, int64_t out) {
  auto* cols = static_cast<int64_t*>(c.scratch().get(size_t(out) * sizeof(int64_t)));
  for (int64_t j = 0; j < out; ++j) cols[j] = nearest_source_index(j, in, out);
  return cols;
}

}  // namespace

void resize_nearest_forward(Context& c, const Tensor& x, const Tensor& y) {
  const char* op = "resize_nearest_forward";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    check_pair(op, "x", x, "y", y);
    const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
    const int64_t ho = y.dim(2), wo = y.dim(3);
    const int64_t* cols = source_columns(c, w, wo);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (y.numel() > kParallelMin)
    for (int64_t k = 0; k < planes; ++k) {
      const T* xp = px + k * h * w;
      T* yp = py + k * ho * wo;
      for (int64_t i = 0; i < ho; ++i) {
        const T* xr = xp + nearest_source_index(i, h, ho) * w;
        T* yr = yp + i * wo;
        for (int64_t j = 0; j < wo; ++j) yr[j] = xr[cols[j]];
      }
    }
  });
}

void resize_nearest_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  const char* op = "resize_nearest_backward";
  with_float_type(op, grad_y, [&](auto t) {
    using T = decltype(t);
    if (!grad_x.defined()) throw DataError(concat(op, ": grad_x is undefined"));
    check_pair(op, "grad_x", grad_x, "grad_y", grad_y);
    const int64_t planes = grad_x.dim(0) * grad_x.dim(1), h = grad_x.dim(2), w = grad_x.dim(3);
    const int64_t ho = grad_y.dim(2), wo = grad_y.dim(3);
    const int64_t* cols = source_columns(c, w, wo);
    const T* g = grad_y.data<T>();
    T* gx = grad_x.data<T>();
    // Planes are disjoint, so each thread scatters into its own planes without races.
#pragma omp parallel for num_threads(c.threads()) \
    schedule(static) if (std::max(grad_y.numel(), grad_x.numel()) > kParallelMin)
    for (int64_t k = 0; k < planes; ++k) {
      T* xp = gx + k * h * w;
      if (m == GradMode::Overwrite) std::fill(xp, xp + h * w, T(0));
      const T* gp = g + k * ho * wo;
      for (int64_t i = 0; i < ho; ++i) {
        T* xr = xp + nearest_source_index(i, h, ho) * w;
        const T* gr = gp + i * wo;
        for (int64_t j = 0; j < wo; ++j) xr[cols[j]] += gr[j];
      }
    }
  });
}

}  // namespace dynsim::cpu
