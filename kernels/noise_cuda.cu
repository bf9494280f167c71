// CUDA twin of kernels/noise_cpu.cpp: the same counter-based stream, bit for bit.
#include "engine/core/cuda_check.h"
#include "engine/core/rng.h"
#include "kernels/noise.h"

namespace dynsim::cuda {
namespace {

template <class T>
__global__ void fill_normal_kernel(T* y, int64_t n, uint64_t seed, uint64_t offset, double mean,
                                   double std) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = T(rng::affine_normal<T>(seed, offset + uint64_t(i), mean, std));
}

__global__ void add_normal_kernel(const float* x, float* y, int64_t n, uint64_t seed,
                                  uint64_t offset, double sigma) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __fadd_rn(x[i], float(rng::affine_normal<float>(seed, offset + uint64_t(i), 0.0, sigma)));
}

__global__ void fill_bits_kernel(uint32_t* y, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = rng::bits(seed, offset + uint64_t(i), 0).v[0];
}

unsigned grid_for(int64_t n) { return unsigned(std::min<int64_t>((n + 255) / 256, 65535)); }

}  // namespace

void fill_normal(Context& c, uint64_t seed, uint64_t offset, double mean, double std,
                 const Tensor& y) {
  if (y.device() != Device::Cuda || y.dtype() != DType::F32)
    throw DataError(concat("cuda::fill_normal: needs a CUDA f32 tensor, got ", y.str()));
  if (y.numel() == 0) return;
  auto s = static_cast<cudaStream_t>(c.stream());
  fill_normal_kernel<float><<<grid_for(y.numel()), 256, 0, s>>>(y.data<float>(), y.numel(), seed,
                                                               offset, mean, std);
  DYNSIM_CUDA_CHECK(cudaGetLastError());
}

void add_normal(Context& c, uint64_t seed, uint64_t offset, double sigma, const Tensor& x,
                const Tensor& y) {
  for (const Tensor* t : {&x, &y})
    if (t->device() != Device::Cuda || t->dtype() != DType::F32)
      throw DataError(concat("cuda::add_normal: needs CUDA f32 tensors, got ", t->str()));
  check_shape("add_normal", "y", y, x.shape());
  if (x.numel() == 0) return;
  auto s = static_cast<cudaStream_t>(c.stream());
  add_normal_kernel<<<grid_for(x.numel()), 256, 0, s>>>(x.data<float>(), y.data<float>(),
                                                        x.numel(), seed, offset, sigma);
  DYNSIM_CUDA_CHECK(cudaGetLastError());
}

void fill_uniform_bits(Context& c, uint64_t seed, uint64_t offset, const Tensor& y) {
  if (y.device() != Device::Cuda || y.dtype() != DType::I32)
    throw DataError(concat("cuda::fill_uniform_bits: needs a CUDA i32 tensor, got ", y.str()));
  if (y.numel() == 0) return;
  auto s = static_cast<cudaStream_t>(c.stream());
  fill_bits_kernel<<<grid_for(y.numel()), 256, 0, s>>>(
      reinterpret_cast<uint32_t*>(y.data<int32_t>()), y.numel(), seed, offset);
  DYNSIM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace dynsim::cuda
