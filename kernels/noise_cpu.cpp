// CPU twin of the counter-based normal and raw-bit fills (kernels/noise.h, engine/core/rng.h).
#include "engine/core/rng.h"
#include "kernels/noise.h"

namespace dynsim::cpu {

void fill_normal(Context& c, uint64_t seed, uint64_t offset, double mean, double std,
                 const Tensor& y) {
  with_float_type("fill_normal", y, [&](auto t) {
    using T = decltype(t);
    T* py = y.data<T>();
    const int64_t n = y.numel();
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (n > 4096)
    for (int64_t i = 0; i < n; ++i)
      py[i] = T(rng::affine_normal<T>(seed, offset + uint64_t(i), mean, std));
  });
}

void add_normal(Context& c, uint64_t seed, uint64_t offset, double sigma, const Tensor& x,
                const Tensor& y) {
  with_float_type("add_normal", x, [&](auto t) {
    using T = decltype(t);
    check_arg("add_normal", "y", y, x, x.shape());
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (n > 4096)
    for (int64_t i = 0; i < n; ++i)
      py[i] = px[i] + T(rng::affine_normal<T>(seed, offset + uint64_t(i), 0.0, sigma));
  });
}

void fill_uniform_bits(Context& c, uint64_t seed, uint64_t offset, const Tensor& y) {
  if (y.dtype() != DType::I32 || !y.is_cpu())
    throw DataError(concat("fill_uniform_bits: needs a host i32 tensor, got ", y.str()));
  auto* py = reinterpret_cast<uint32_t*>(y.data<int32_t>());
  const int64_t n = y.numel();
  for (int64_t i = 0; i < n; ++i) py[i] = rng::bits(seed, offset + uint64_t(i), 0).v[0];
}

}  // namespace dynsim::cpu
