// CUDA twin of the reflect padding (kernels/pad.h), f32 and f64, one thread per output element:
// forward reads conv::pad_index, backward gathers the padded pixels that read each pixel
// (conv::reflect_readers, in the CPU twin's order), so both give the CPU's bits without atomics.
// conv2d_cudnn.cpp calls the raw forms on its scratch buffers.
#include "kernels/conv2d_math.h"
#include "kernels/cuda_common.cuh"
#include "kernels/pad.h"

namespace dynsim::cuda {
namespace {

template <class T>
void pad_t(Context& c, int64_t planes, int64_t h, int64_t w, int ph, int pw, const T* x, T* xp) {
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw;
  launch(c, planes * hp * wp, [=] __device__(int64_t e) {
    const int64_t k = e / (hp * wp), i = (e / wp) % hp, j = e % wp;
    xp[e] = x[k * h * w + conv::pad_index(i - ph, h, PadMode::Reflect) * w +
              conv::pad_index(j - pw, w, PadMode::Reflect)];
  });
}

template <class T>
void fold_t(Context& c, int64_t planes, int64_t h, int64_t w, int ph, int pw, const T* gp, T* gx,
            bool acc) {
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw;
  launch(c, planes * h * w, [=] __device__(int64_t e) {
    const int64_t k = e / (h * w), s = (e / w) % h, u = e % w;
    int64_t rows[3], cols[3];
    const int nr = conv::reflect_readers(s, h, ph, rows);
    const int nc = conv::reflect_readers(u, w, pw, cols);
    const T* plane = gp + k * hp * wp;
    T g = 0;
    for (int a = 0; a < nr; ++a)
      for (int b = 0; b < nc; ++b) g += plane[rows[a] * wp + cols[b]];
    put_grad(gx[e], g, acc);
  });
}

}  // namespace

void reflect_pad_forward_raw(Context& c, bool f64, int64_t planes, int64_t h, int64_t w, int pad_h,
                             int pad_w, const void* x, void* xp) {
  if (f64)
    pad_t(c, planes, h, w, pad_h, pad_w, static_cast<const double*>(x), static_cast<double*>(xp));
  else
    pad_t(c, planes, h, w, pad_h, pad_w, static_cast<const float*>(x), static_cast<float*>(xp));
}

void reflect_pad_backward_raw(Context& c, bool f64, int64_t planes, int64_t h, int64_t w, int pad_h,
                              int pad_w, const void* grad_xp, void* grad_x, GradMode m) {
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    fold_t(c, planes, h, w, pad_h, pad_w, static_cast<const double*>(grad_xp),
           static_cast<double*>(grad_x), acc);
  else
    fold_t(c, planes, h, w, pad_h, pad_w, static_cast<const float*>(grad_xp),
           static_cast<float*>(grad_x), acc);
}

void reflect_pad_forward(Context& c, int pad_h, int pad_w, const Tensor& x, const Tensor& xp) {
  const char* op = "reflect_pad_forward";
  const bool f64 = is_f64(op, x);
  check_arg(op, "xp", xp, x, reflect_pad_shape(op, "x", pad_h, pad_w, x.shape()));
  reflect_pad_forward_raw(c, f64, x.dim(0) * x.dim(1), x.dim(2), x.dim(3), pad_h, pad_w, x.raw(),
                          xp.raw());
}

void reflect_pad_backward(Context& c, int pad_h, int pad_w, const Tensor& grad_xp,
                          const Tensor& grad_x, GradMode m) {
  const char* op = "reflect_pad_backward";
  if (!grad_x.defined()) return;
  const bool f64 = is_f64(op, grad_xp);
  check_same(op, "grad_x", grad_x, grad_xp);
  check_shape(op, "grad_xp", grad_xp,
              reflect_pad_shape(op, "grad_x", pad_h, pad_w, grad_x.shape()));
  reflect_pad_backward_raw(c, f64, grad_x.dim(0) * grad_x.dim(1), grad_x.dim(2), grad_x.dim(3),
                           pad_h, pad_w, grad_xp.raw(), grad_x.raw(), m);
}

}  // namespace dynsim::cuda
