// CPU reference of max and average pooling (kernels/pool2d.h), PyTorch semantics in floor mode.
// Window of output (oh, ow): rows [oh*stride_h - pad_h, +kernel_h) clipped to the input; max
// pooling keeps the first maximum in row-major window order (PyTorch CPU's tie rule) and lets NaN
// win; average pooling divides the window sum by kernel_h*kernel_w (count_include_pad) or by the
// number of in-bounds elements. x [N,C,H,W] -> y [N,C,Ho,Wo]; planes run in parallel.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/pool2d.h"
#include "kernels/pool2d_math.h"

namespace dynsim {
namespace {

// Validates the parameters against x and returns y's shape; messages start with `op`.
Shape pool_output_shape(const char* op, const Pool2dParams& p, const Shape& x) {
  if (x.rank() != 4) throw DataError(concat(op, ": x must be [N,C,H,W], got shape ", x.str()));
  if (p.kernel_h < 1 || p.kernel_w < 1)
    throw DataError(concat(op, ": kernel ", p.kernel_h, "x", p.kernel_w, " must be >= 1"));
  if (p.stride_h < 1 || p.stride_w < 1)
    throw DataError(concat(op, ": stride ", p.stride_h, "x", p.stride_w, " must be >= 1"));
  if (p.pad_h < 0 || p.pad_w < 0)
    throw DataError(concat(op, ": padding ", p.pad_h, "x", p.pad_w, " must be >= 0"));
  // PyTorch's rule; it also guarantees that every window overlaps the input.
  if (p.pad_h > p.kernel_h / 2 || p.pad_w > p.kernel_w / 2)
    throw DataError(concat(op, ": padding ", p.pad_h, "x", p.pad_w,
                           " must be at most half the kernel ", p.kernel_h, "x", p.kernel_w));
  const int64_t h = x[2] + 2 * p.pad_h, w = x[3] + 2 * p.pad_w;
  // Checked before dividing: C++ division truncates toward zero, so a negative numerator would
  // give a size of 1 instead of an error.
  if (x[2] < 1 || x[3] < 1 || h < p.kernel_h || w < p.kernel_w)
    throw DataError(concat(op, ": input ", x.str(), " padded by ", p.pad_h, "x", p.pad_w,
                           " is smaller than the kernel ", p.kernel_h, "x", p.kernel_w,
                           " (output would be empty)"));
  return Shape{x[0], x[1], (h - p.kernel_h) / p.stride_h + 1, (w - p.kernel_w) / p.stride_w + 1};
}

using pool::window;
using pool::Window;

// Parallelise over planes only when there is enough work to pay for a parallel region.

struct Planes {
  int64_t count, h, w, ho, wo;
};
Planes planes_of(const Shape& x, const Shape& y) {
  return {x[0] * x[1], x[2], x[3], y[2], y[3]};
}

}  // namespace

Shape Pool2dParams::output_shape(const Shape& x) const {
  return pool_output_shape("pool2d", *this, x);
}

namespace cpu {

void maxpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y,
                       const Tensor& argmax) {
  const char* op = "maxpool2d_forward";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    const Shape ys = pool_output_shape(op, p, x.shape());
    check_arg(op, "y", y, x, ys);
    check_shape(op, "argmax", argmax, ys);
    if (argmax.dtype() != DType::I32 || !argmax.is_cpu())
      throw DataError(concat(op, ": argmax must be a host i32 tensor, got ", argmax.str()));
    const Planes pl = planes_of(x.shape(), ys);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    int32_t* pa = argmax.data<int32_t>();
#pragma omp parallel for num_threads(c.threads()) \
    schedule(static) if (y.numel() * p.kernel_h * p.kernel_w > kParallelMin)
    for (int64_t k = 0; k < pl.count; ++k) {
      const T* xp = px + k * pl.h * pl.w;
      T* yp = py + k * pl.ho * pl.wo;
      int32_t* ap = pa + k * pl.ho * pl.wo;
      for (int64_t oh = 0; oh < pl.ho; ++oh) {
        const Window wh = window(oh, p.stride_h, p.pad_h, p.kernel_h, pl.h);
        for (int64_t ow = 0; ow < pl.wo; ++ow) {
          const Window ww = window(ow, p.stride_w, p.pad_w, p.kernel_w, pl.w);
          // Padding is -inf, so it never wins: scanning only the in-bounds part is equivalent.
          T best = -std::numeric_limits<T>::infinity();
          int64_t arg = wh.begin * pl.w + ww.begin;
          for (int64_t ih = wh.begin; ih < wh.end; ++ih)
            for (int64_t iw = ww.begin; iw < ww.end; ++iw) {
              const T v = xp[ih * pl.w + iw];
              if (v > best || std::isnan(v)) best = v, arg = ih * pl.w + iw;
            }
          yp[oh * pl.wo + ow] = best;
          ap[oh * pl.wo + ow] = int32_t(arg);
        }
      }
    }
  });
}

void maxpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                        const Tensor& argmax, const Tensor& grad_x, GradMode m) {
  const char* op = "maxpool2d_backward";
  with_float_type(op, grad_y, [&](auto t) {
    using T = decltype(t);
    if (!grad_x.defined()) throw DataError(concat(op, ": grad_x is undefined"));
    const Shape ys = pool_output_shape(op, p, grad_x.shape());
    check_arg(op, "grad_y", grad_y, grad_y, ys);
    check_same(op, "grad_x", grad_x, grad_y);
    check_shape(op, "argmax", argmax, ys);
    if (argmax.dtype() != DType::I32 || !argmax.is_cpu())
      throw DataError(concat(op, ": argmax must be a host i32 tensor, got ", argmax.str()));
    const Planes pl = planes_of(grad_x.shape(), ys);
    const int64_t plane = pl.h * pl.w;
    const T* g = grad_y.data<T>();
    const int32_t* pa = argmax.data<int32_t>();
    T* gx = grad_x.data<T>();
    // Planes are disjoint, so the scatter has no races; an index outside the plane (argmax not
    // from this input shape) is counted and reported after the loop (no throw inside OpenMP).
    int64_t bad = 0;
#pragma omp parallel for num_threads(c.threads()) schedule(static) reduction(+ : bad) \
    if (grad_x.numel() > kParallelMin)
    for (int64_t k = 0; k < pl.count; ++k) {
      T* xp = gx + k * plane;
      if (m == GradMode::Overwrite)
        for (int64_t i = 0; i < plane; ++i) xp[i] = T(0);
      const T* gp = g + k * pl.ho * pl.wo;
      const int32_t* ap = pa + k * pl.ho * pl.wo;
      for (int64_t i = 0; i < pl.ho * pl.wo; ++i) {
        if (ap[i] < 0 || ap[i] >= plane) {
          ++bad;
          continue;
        }
        xp[ap[i]] += gp[i];
      }
    }
    if (bad)
      throw DataError(concat(op, ": argmax holds ", bad, " indices outside the ", pl.h, "x", pl.w,
                             " input plane (not from a forward of this shape)"));
  });
}

void avgpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y) {
  const char* op = "avgpool2d_forward";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    const Shape ys = pool_output_shape(op, p, x.shape());
    check_arg(op, "y", y, x, ys);
    const Planes pl = planes_of(x.shape(), ys);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for num_threads(c.threads()) \
    schedule(static) if (y.numel() * p.kernel_h * p.kernel_w > kParallelMin)
    for (int64_t k = 0; k < pl.count; ++k) {
      const T* xp = px + k * pl.h * pl.w;
      T* yp = py + k * pl.ho * pl.wo;
      for (int64_t oh = 0; oh < pl.ho; ++oh) {
        const Window wh = window(oh, p.stride_h, p.pad_h, p.kernel_h, pl.h);
        for (int64_t ow = 0; ow < pl.wo; ++ow) {
          const Window ww = window(ow, p.stride_w, p.pad_w, p.kernel_w, pl.w);
          T sum = T(0);
          for (int64_t ih = wh.begin; ih < wh.end; ++ih)
            for (int64_t iw = ww.begin; iw < ww.end; ++iw) sum += xp[ih * pl.w + iw];
          const int64_t div = p.count_include_pad ? wh.padded * ww.padded
                                                  : (wh.end - wh.begin) * (ww.end - ww.begin);
          yp[oh * pl.wo + ow] = sum / T(div);
        }
      }
    }
  });
}

void avgpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                        const Tensor& grad_x, GradMode m) {
  const char* op = "avgpool2d_backward";
  with_float_type(op, grad_y, [&](auto t) {
    using T = decltype(t);
    if (!grad_x.defined()) throw DataError(concat(op, ": grad_x is undefined"));
    const Shape ys = pool_output_shape(op, p, grad_x.shape());
    check_arg(op, "grad_y", grad_y, grad_y, ys);
    check_same(op, "grad_x", grad_x, grad_y);
    const Planes pl = planes_of(grad_x.shape(), ys);
    const int64_t plane = pl.h * pl.w;
    const T* g = grad_y.data<T>();
    T* gx = grad_x.data<T>();
#pragma omp parallel for num_threads(c.threads()) \
    schedule(static) if (grad_y.numel() * p.kernel_h * p.kernel_w > kParallelMin)
    for (int64_t k = 0; k < pl.count; ++k) {
      T* xp = gx + k * plane;
      if (m == GradMode::Overwrite)
        for (int64_t i = 0; i < plane; ++i) xp[i] = T(0);
      const T* gp = g + k * pl.ho * pl.wo;
      for (int64_t oh = 0; oh < pl.ho; ++oh) {
        const Window wh = window(oh, p.stride_h, p.pad_h, p.kernel_h, pl.h);
        for (int64_t ow = 0; ow < pl.wo; ++ow) {
          const Window ww = window(ow, p.stride_w, p.pad_w, p.kernel_w, pl.w);
          const int64_t div = p.count_include_pad ? wh.padded * ww.padded
                                                  : (wh.end - wh.begin) * (ww.end - ww.begin);
          const T share = gp[oh * pl.wo + ow] / T(div);
          for (int64_t ih = wh.begin; ih < wh.end; ++ih)
            for (int64_t iw = ww.begin; iw < ww.end; ++iw) xp[ih * pl.w + iw] += share;
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace dynsim
