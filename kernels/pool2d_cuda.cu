// CUDA twin of max and average pooling (kernels/pool2d.h), f32 and f64, window arithmetic from
// kernels/pool2d_math.h. Forward: one thread per output, scanning its window in the CPU's order
// (first maximum wins, NaN wins). Backward is a gather, one thread per input element summing the
// outputs whose windows contain it in row-major output order: no atomics, and the same additions
// in the same order as the CPU's scatter, so the results match it bit for bit. An argmax entry
// outside its own window (not from a forward of this shape) is ignored; the CPU twin reports it,
// but the device cannot without a host sync.
#include <cmath>

#include "kernels/cuda_common.cuh"
#include "kernels/pool2d.h"
#include "kernels/pool2d_math.h"

namespace dynsim::cuda {
namespace {

struct PoolGeom {
  int64_t planes, h, w, ho, wo;
  int kh, kw, sh, sw, ph, pw;
  bool include_pad;
};
PoolGeom geom_of(const Pool2dParams& p, const Shape& x, const Shape& y) {
  return {x[0] * x[1], x[2],       x[3],       y[2],    y[3],    p.kernel_h,
          p.kernel_w,  p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.count_include_pad};
}

void check_argmax(const char* op, const Tensor& argmax, const Shape& ys) {
  check_shape(op, "argmax", argmax, ys);
  if (argmax.dtype() != DType::I32 || argmax.device() != Device::Cuda)
    throw DataError(concat(op, ": argmax must be a CUDA i32 tensor, got ", argmax.str()));
}

}  // namespace

// S: the storage type (f32, f64, or bf16: the maximum compared in f32, widening being exact,
// and stored rounded: the bits of the f32 op on widened copies, NaN quieted as bf16_from_f32
// does).
template <class S>
void maxpool2d_forward_t(Context& c, const PoolGeom& g, const S* px, S* py, int32_t* pa) {
  using T = compute_t<S>;
  launch(c, g.planes * g.ho * g.wo, [=] __device__(int64_t o) {
    const int64_t k = o / (g.ho * g.wo), oh = (o / g.wo) % g.ho, ow = o % g.wo;
    const pool::Window wh = pool::window(oh, g.sh, g.ph, g.kh, g.h);
    const pool::Window ww = pool::window(ow, g.sw, g.pw, g.kw, g.w);
    const S* xp = px + k * g.h * g.w;
    T best = -INFINITY;
    int64_t arg = wh.begin * g.w + ww.begin;
    for (int64_t ih = wh.begin; ih < wh.end; ++ih)
      for (int64_t iw = ww.begin; iw < ww.end; ++iw) {
        const T v = widen_value(xp[ih * g.w + iw]);
        if (v > best || isnan(v)) best = v, arg = ih * g.w + iw;
      }
    py[o] = narrow_value<S>(best);
    pa[o] = int32_t(arg);
  });
}

template <class T>
void maxpool2d_backward_t(Context& c, const PoolGeom& g, const T* gy, const int32_t* pa, T* gx,
                          bool acc) {
  launch(c, g.planes * g.h * g.w, [=] __device__(int64_t e) {
    const int64_t k = e / (g.h * g.w), ih = (e / g.w) % g.h, iw = e % g.w;
    int64_t oh0, oh1, ow0, ow1;
    pool::windows_containing(ih, g.sh, g.ph, g.kh, g.ho, oh0, oh1);
    pool::windows_containing(iw, g.sw, g.pw, g.kw, g.wo, ow0, ow1);
    const int32_t self = int32_t(ih * g.w + iw);
    const int64_t base = k * g.ho * g.wo;
    T s = acc ? gx[e] : T(0);
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow)
        if (pa[base + oh * g.wo + ow] == self) s += gy[base + oh * g.wo + ow];
    gx[e] = s;
  });
}

template <class T>
void avgpool2d_forward_t(Context& c, const PoolGeom& g, const T* px, T* py) {
  launch(c, g.planes * g.ho * g.wo, [=] __device__(int64_t o) {
    const int64_t k = o / (g.ho * g.wo), oh = (o / g.wo) % g.ho, ow = o % g.wo;
    const pool::Window wh = pool::window(oh, g.sh, g.ph, g.kh, g.h);
    const pool::Window ww = pool::window(ow, g.sw, g.pw, g.kw, g.w);
    const T* xp = px + k * g.h * g.w;
    T sum = T(0);
    for (int64_t ih = wh.begin; ih < wh.end; ++ih)
      for (int64_t iw = ww.begin; iw < ww.end; ++iw) sum += xp[ih * g.w + iw];
    const int64_t div =
        g.include_pad ? wh.padded * ww.padded : (wh.end - wh.begin) * (ww.end - ww.begin);
    py[o] = sum / T(div);
  });
}

template <class T>
void avgpool2d_backward_t(Context& c, const PoolGeom& g, const T* gy, T* gx, bool acc) {
  launch(c, g.planes * g.h * g.w, [=] __device__(int64_t e) {
    const int64_t k = e / (g.h * g.w), ih = (e / g.w) % g.h, iw = e % g.w;
    int64_t oh0, oh1, ow0, ow1;
    pool::windows_containing(ih, g.sh, g.ph, g.kh, g.ho, oh0, oh1);
    pool::windows_containing(iw, g.sw, g.pw, g.kw, g.wo, ow0, ow1);
    const T* gp = gy + k * g.ho * g.wo;
    T s = acc ? gx[e] : T(0);
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      const pool::Window wh = pool::window(oh, g.sh, g.ph, g.kh, g.h);
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        const pool::Window ww = pool::window(ow, g.sw, g.pw, g.kw, g.w);
        const int64_t div =
            g.include_pad ? wh.padded * ww.padded : (wh.end - wh.begin) * (ww.end - ww.begin);
        s += gp[oh * g.wo + ow] / T(div);
      }
    }
    gx[e] = s;
  });
}

void maxpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y,
                       const Tensor& argmax) {
  const char* op = "maxpool2d_forward";
  const bool bf16_x = x.defined() && x.dtype() == DType::BF16 && x.device() == Device::Cuda;
  const bool f64 = !bf16_x && is_f64(op, x);
  const Shape ys = p.output_shape(x.shape());
  check_arg(op, "y", y, x, ys);
  check_argmax(op, argmax, ys);
  const PoolGeom g = geom_of(p, x.shape(), ys);
  if (bf16_x)
    maxpool2d_forward_t(c, g, x.data<bf16>(), y.data<bf16>(), argmax.data<int32_t>());
  else if (f64)
    maxpool2d_forward_t(c, g, x.data<double>(), y.data<double>(), argmax.data<int32_t>());
  else
    maxpool2d_forward_t(c, g, x.data<float>(), y.data<float>(), argmax.data<int32_t>());
}

void maxpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                        const Tensor& argmax, const Tensor& grad_x, GradMode m) {
  const char* op = "maxpool2d_backward";
  const bool f64 = is_f64(op, grad_y);
  if (!grad_x.defined()) throw DataError(concat(op, ": grad_x is undefined"));
  const Shape ys = p.output_shape(grad_x.shape());
  check_arg(op, "grad_y", grad_y, grad_y, ys);
  check_same(op, "grad_x", grad_x, grad_y);
  check_argmax(op, argmax, ys);
  const PoolGeom g = geom_of(p, grad_x.shape(), ys);
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    maxpool2d_backward_t(c, g, grad_y.data<double>(), argmax.data<int32_t>(), grad_x.data<double>(),
                         acc);
  else
    maxpool2d_backward_t(c, g, grad_y.data<float>(), argmax.data<int32_t>(), grad_x.data<float>(),
                         acc);
}

void avgpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y) {
  const char* op = "avgpool2d_forward";
  const bool f64 = is_f64(op, x);
  const Shape ys = p.output_shape(x.shape());
  check_arg(op, "y", y, x, ys);
  const PoolGeom g = geom_of(p, x.shape(), ys);
  if (f64)
    avgpool2d_forward_t(c, g, x.data<double>(), y.data<double>());
  else
    avgpool2d_forward_t(c, g, x.data<float>(), y.data<float>());
}

void avgpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                        const Tensor& grad_x, GradMode m) {
  const char* op = "avgpool2d_backward";
  const bool f64 = is_f64(op, grad_y);
  if (!grad_x.defined()) throw DataError(concat(op, ": grad_x is undefined"));
  const Shape ys = p.output_shape(grad_x.shape());
  check_arg(op, "grad_y", grad_y, grad_y, ys);
  check_same(op, "grad_x", grad_x, grad_y);
  const PoolGeom g = geom_of(p, grad_x.shape(), ys);
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    avgpool2d_backward_t(c, g, grad_y.data<double>(), grad_x.data<double>(), acc);
  else
    avgpool2d_backward_t(c, g, grad_y.data<float>(), grad_x.data<float>(), acc);
}

}  // namespace dynsim::cuda
