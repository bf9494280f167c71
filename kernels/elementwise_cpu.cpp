// CPU twins of the elementwise ops (kernels/elementwise.h). Large tensors are split over the
// context's threads; small ones run inline (a parallel region costs more than they do).
#include <algorithm>
#include <cmath>

#include "kernels/elementwise.h"

namespace dynsim::cpu {
namespace {

void check_like(const char* op, const char* role, const Tensor& t, const Tensor& like) {
  check_arg(op, role, t, like, like.shape());
}

}  // namespace

void add(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  with_float_type("add", a, [&](auto t) {
    using T = decltype(t);
    check_like("add", "b", b, a);
    check_like("add", "y", y, a);
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T* py = y.data<T>();
    for_each_index(c, a.numel(), [&](int64_t i) { py[i] = pa[i] + pb[i]; });
  });
}

void mul(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  with_float_type("mul", a, [&](auto t) {
    using T = decltype(t);
    check_like("mul", "b", b, a);
    check_like("mul", "y", y, a);
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T* py = y.data<T>();
    for_each_index(c, a.numel(), [&](int64_t i) { py[i] = pa[i] * pb[i]; });
  });
}

void mul_backward(Context& c, const Tensor& grad_y, const Tensor& a, const Tensor& b,
                  const Tensor& grad_a, const Tensor& grad_b, GradMode m) {
  with_float_type("mul_backward", grad_y, [&](auto t) {
    using T = decltype(t);
    check_like("mul_backward", "a", a, grad_y);
    check_like("mul_backward", "b", b, grad_y);
    const T *g = grad_y.data<T>(), *pa = a.data<T>(), *pb = b.data<T>();
    if (grad_a.defined()) {
      check_like("mul_backward", "grad_a", grad_a, grad_y);
      T* ga = grad_a.data<T>();
      for_each_index(c, a.numel(), [&](int64_t i) { write_grad(ga[i], T(g[i] * pb[i]), m); });
    }
    if (grad_b.defined()) {
      check_like("mul_backward", "grad_b", grad_b, grad_y);
      T* gb = grad_b.data<T>();
      for_each_index(c, a.numel(), [&](int64_t i) { write_grad(gb[i], T(g[i] * pa[i]), m); });
    }
  });
}

void axpy(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  with_float_type("axpy", x, [&](auto t) {
    using T = decltype(t);
    check_like("axpy", "y", y, x);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T al = T(alpha);
    for_each_index(c, x.numel(), [&](int64_t i) { py[i] += al * px[i]; });
  });
}

void scale(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  with_float_type("scale", x, [&](auto t) {
    using T = decltype(t);
    check_like("scale", "y", y, x);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T al = T(alpha);
    for_each_index(c, x.numel(), [&](int64_t i) { py[i] = al * px[i]; });
  });
}

void fill(Context& c, double value, const Tensor& y) {
  with_float_type("fill", y, [&](auto t) {
    using T = decltype(t);
    T* py = y.data<T>();
    std::fill(py, py + y.numel(), T(value));
  });
}

void relu_forward(Context& c, const Tensor& x, const Tensor& y) {
  with_float_type("relu_forward", x, [&](auto t) {
    using T = decltype(t);
    check_like("relu_forward", "y", y, x);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for_each_index(c, x.numel(), [&](int64_t i) { py[i] = px[i] > T(0) ? px[i] : T(0); });
  });
}

void relu_backward(Context& c, const Tensor& x, const Tensor& grad_y, const Tensor& grad_x,
                   GradMode m) {
  with_float_type("relu_backward", x, [&](auto t) {
    using T = decltype(t);
    check_like("relu_backward", "grad_y", grad_y, x);
    check_like("relu_backward", "grad_x", grad_x, x);
    const T *px = x.data<T>(), *g = grad_y.data<T>();
    T* gx = grad_x.data<T>();
    for_each_index(c, x.numel(),
                   [&](int64_t i) { write_grad(gx[i], px[i] > T(0) ? g[i] : T(0), m); });
  });
}

void mul_one_plus_tanh(Context& c, const Tensor& x, const Tensor& g, const Tensor& y) {
  with_float_type("mul_one_plus_tanh", x, [&](auto t) {
    using T = decltype(t);
    check_like("mul_one_plus_tanh", "g", g, x);
    check_like("mul_one_plus_tanh", "y", y, x);
    const T *px = x.data<T>(), *pg = g.data<T>();
    T* py = y.data<T>();
    for_each_index(c, x.numel(), [&](int64_t i) { py[i] = px[i] * (T(1) + std::tanh(pg[i])); });
  });
}

void mul_one_plus_tanh_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& g,
                                const Tensor& grad_x, const Tensor& grad_g, GradMode m) {
  with_float_type("mul_one_plus_tanh_backward", x, [&](auto t) {
    using T = decltype(t);
    const char* op = "mul_one_plus_tanh_backward";
    check_like(op, "g", g, x);
    check_like(op, "grad_y", grad_y, x);
    const T *px = x.data<T>(), *pg = g.data<T>(), *gy = grad_y.data<T>();
    if (grad_x.defined()) {
      check_like(op, "grad_x", grad_x, x);
      T* gx = grad_x.data<T>();
      for_each_index(c, x.numel(),
                     [&](int64_t i) { write_grad(gx[i], T(gy[i] * (T(1) + std::tanh(pg[i]))), m); });
    }
    if (grad_g.defined()) {
      check_like(op, "grad_g", grad_g, x);
      T* gg = grad_g.data<T>();
      for_each_index(c, x.numel(), [&](int64_t i) {
        const T th = std::tanh(pg[i]);
        write_grad(gg[i], T(gy[i] * px[i] * (T(1) - th * th)), m);
      });
    }
  });
}

}  // namespace dynsim::cpu
