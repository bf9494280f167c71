// CPU twin of the reflect padding (kernels/pad.h): forward reads conv::pad_index, backward
// gathers the 1-3 padded rows times 1-3 padded columns that read each pixel
// (conv::reflect_readers), in increasing padded order, exactly as the CUDA twin does.
#include "kernels/conv2d_math.h"
#include "kernels/pad.h"

namespace dynsim {

Shape reflect_pad_shape(const char* op, const char* role, int pad_h, int pad_w, const Shape& x) {
  if (x.rank() != 4) throw DataError(concat(op, ": ", role, " must be [N,C,H,W], got ", x.str()));
  if (pad_h < 0 || pad_w < 0 || pad_h >= x[2] || pad_w >= x[3])
    throw DataError(concat(op, ": reflect padding (", pad_h, ", ", pad_w,
                           ") must be >= 0 and smaller than the input size ", x[2], "x", x[3]));
  return Shape{x[0], x[1], x[2] + 2 * pad_h, x[3] + 2 * pad_w};
}

namespace cpu {

void reflect_pad_forward(Context& c, int pad_h, int pad_w, const Tensor& x, const Tensor& xp) {
  const char* op = "reflect_pad_forward";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    const Shape ps = reflect_pad_shape(op, "x", pad_h, pad_w, x.shape());
    check_arg(op, "xp", xp, x, ps);
    const int64_t h = x.dim(2), w = x.dim(3), hp = ps[2], wp = ps[3];
    const T* px = x.data<T>();
    T* pp = xp.data<T>();
    cpu::for_each_index(c, xp.numel(), [&](int64_t e) {
      const int64_t k = e / (hp * wp), i = (e / wp) % hp, j = e % wp;
      pp[e] = px[k * h * w + conv::pad_index(i - pad_h, h, PadMode::Reflect) * w +
                 conv::pad_index(j - pad_w, w, PadMode::Reflect)];
    });
  });
}

void reflect_pad_backward(Context& c, int pad_h, int pad_w, const Tensor& grad_xp,
                          const Tensor& grad_x, GradMode m) {
  const char* op = "reflect_pad_backward";
  if (!grad_x.defined()) return;
  with_float_type(op, grad_xp, [&](auto t) {
    using T = decltype(t);
    check_same(op, "grad_x", grad_x, grad_xp);
    const Shape ps = reflect_pad_shape(op, "grad_x", pad_h, pad_w, grad_x.shape());
    check_shape(op, "grad_xp", grad_xp, ps);
    const int64_t h = grad_x.dim(2), w = grad_x.dim(3), hp = ps[2], wp = ps[3];
    const T* gp = grad_xp.data<T>();
    T* gx = grad_x.data<T>();
    cpu::for_each_index(c, grad_x.numel(), [&](int64_t e) {
      const int64_t k = e / (h * w), s = (e / w) % h, u = e % w;
      int64_t rows[3], cols[3];
      const int nr = conv::reflect_readers(s, h, pad_h, rows);
      const int nc = conv::reflect_readers(u, w, pad_w, cols);
      const T* plane = gp + k * hp * wp;
      T g = 0;
      for (int a = 0; a < nr; ++a)
        for (int b = 0; b < nc; ++b) g += plane[rows[a] * wp + cols[b]];
      write_grad(gx[e], g, m);
    });
  });
}

}  // namespace cpu
}  // namespace dynsim
