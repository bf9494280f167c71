// CUDA twins of the elementwise ops (kernels/elementwise.h), f32, grid-stride loops on the
// context's stream.
#include <algorithm>

#include "engine/cuda_check.h"
#include "kernels/elementwise.h"

namespace dynsim::cuda {
namespace {

template <class F>
__global__ void map_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    f(i);
}

template <class F>
void launch(Context& c, int64_t n, F f) {
  if (n == 0) return;
  unsigned grid = unsigned(std::min<int64_t>((n + 255) / 256, 65535));
  map_kernel<<<grid, 256, 0, static_cast<cudaStream_t>(c.stream())>>>(n, f);
  DYNSIM_CUDA_CHECK(cudaGetLastError());
}

float* f32(const char* op, const char* role, const Tensor& t, const Tensor& like) {
  if (t.device() != Device::Cuda || t.dtype() != DType::F32)
    throw DataError(concat(op, ": ", role, " must be a CUDA f32 tensor, got ", t.str()));
  check_shape(op, role, t, like.shape());
  return t.data<float>();
}

__device__ __forceinline__ void put(float& d, float v, bool acc) { d = acc ? d + v : v; }

}  // namespace

void add(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  const float *pa = f32("add", "a", a, a), *pb = f32("add", "b", b, a);
  float* py = f32("add", "y", y, a);
  launch(c, a.numel(), [=] __device__(int64_t i) { py[i] = pa[i] + pb[i]; });
}
void mul(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  const float *pa = f32("mul", "a", a, a), *pb = f32("mul", "b", b, a);
  float* py = f32("mul", "y", y, a);
  launch(c, a.numel(), [=] __device__(int64_t i) { py[i] = pa[i] * pb[i]; });
}
void mul_backward(Context& c, const Tensor& grad_y, const Tensor& a, const Tensor& b,
                  const Tensor& grad_a, const Tensor& grad_b, GradMode m) {
  const char* op = "mul_backward";
  const float *g = f32(op, "grad_y", grad_y, grad_y), *pa = f32(op, "a", a, grad_y),
              *pb = f32(op, "b", b, grad_y);
  const bool acc = m == GradMode::Accumulate;
  if (grad_a.defined()) {
    float* ga = f32(op, "grad_a", grad_a, grad_y);
    launch(c, a.numel(), [=] __device__(int64_t i) { put(ga[i], g[i] * pb[i], acc); });
  }
  if (grad_b.defined()) {
    float* gb = f32(op, "grad_b", grad_b, grad_y);
    launch(c, a.numel(), [=] __device__(int64_t i) { put(gb[i], g[i] * pa[i], acc); });
  }
}
void axpy(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  const float* px = f32("axpy", "x", x, x);
  float* py = f32("axpy", "y", y, x);
  const float al = float(alpha);
  launch(c, x.numel(), [=] __device__(int64_t i) { py[i] = __fadd_rn(py[i], __fmul_rn(al, px[i])); });
}
void scale(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  const float* px = f32("scale", "x", x, x);
  float* py = f32("scale", "y", y, x);
  const float al = float(alpha);
  launch(c, x.numel(), [=] __device__(int64_t i) { py[i] = al * px[i]; });
}
void fill(Context& c, double value, const Tensor& y) {
  float* py = f32("fill", "y", y, y);
  const float v = float(value);
  launch(c, y.numel(), [=] __device__(int64_t i) { py[i] = v; });
}
void relu_forward(Context& c, const Tensor& x, const Tensor& y) {
  const float* px = f32("relu_forward", "x", x, x);
  float* py = f32("relu_forward", "y", y, x);
  launch(c, x.numel(), [=] __device__(int64_t i) { py[i] = px[i] > 0.f ? px[i] : 0.f; });
}
void relu_backward(Context& c, const Tensor& x, const Tensor& grad_y, const Tensor& grad_x,
                   GradMode m) {
  const char* op = "relu_backward";
  const float *px = f32(op, "x", x, x), *g = f32(op, "grad_y", grad_y, x);
  float* gx = f32(op, "grad_x", grad_x, x);
  const bool acc = m == GradMode::Accumulate;
  launch(c, x.numel(), [=] __device__(int64_t i) { put(gx[i], px[i] > 0.f ? g[i] : 0.f, acc); });
}

void mul_one_plus_tanh(Context& c, const Tensor& x, const Tensor& g, const Tensor& y) {
  const char* op = "mul_one_plus_tanh";
  const float *px = f32(op, "x", x, x), *pg = f32(op, "g", g, x);
  float* py = f32(op, "y", y, x);
  launch(c, x.numel(), [=] __device__(int64_t i) { py[i] = __fmul_rn(px[i], 1.f + tanhf(pg[i])); });
}
void mul_one_plus_tanh_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& g,
                                const Tensor& grad_x, const Tensor& grad_g, GradMode m) {
  const char* op = "mul_one_plus_tanh_backward";
  const float *px = f32(op, "x", x, x), *pg = f32(op, "g", g, x), *gy = f32(op, "grad_y", grad_y, x);
  const bool acc = m == GradMode::Accumulate;
  if (grad_x.defined()) {
    float* gx = f32(op, "grad_x", grad_x, x);
    launch(c, x.numel(), [=] __device__(int64_t i) { put(gx[i], gy[i] * (1.f + tanhf(pg[i])), acc); });
  }
  if (grad_g.defined()) {
    float* gg = f32(op, "grad_g", grad_g, x);
    launch(c, x.numel(), [=] __device__(int64_t i) {
      const float th = tanhf(pg[i]);
      put(gg[i], gy[i] * px[i] * (1.f - th * th), acc);
    });
  }
}

}  // namespace dynsim::cuda
