// Additive Gaussian noise (training only): y = x + sigma * z, z from the context's counter-based
// stream (engine/core/rng.h), element i drawing index offset + i, where offset is reserved from the
// context's Rng (so CPU and GPU draw identical z for the same seed). Not training: y = x.
// Backward: grad_x = grad_y. add_normal is the fused forward; fill_normal writes mean + std * z
// with the same stream; fill_uniform_bits the raw 32-bit words (for stream comparisons).
#pragma once
#include "kernels/op_common.h"

namespace dynsim {

struct NoiseParams {
  double sigma = 0.1;
  bool training = true;
};

namespace cpu {
// y = x + sigma * z(seed, offset + i) in one pass (no temporary).
void add_normal(Context& c, uint64_t seed, uint64_t offset, double sigma, const Tensor& x,
                const Tensor& y);
void fill_normal(Context& c, uint64_t seed, uint64_t offset, double mean, double std,
                 const Tensor& y);
void fill_uniform_bits(Context& c, uint64_t seed, uint64_t offset, const Tensor& y /* i32 */);
}  // namespace cpu
namespace cuda {
void add_normal(Context& c, uint64_t seed, uint64_t offset, double sigma, const Tensor& x,
                const Tensor& y);
void fill_normal(Context& c, uint64_t seed, uint64_t offset, double mean, double std,
                 const Tensor& y);
void fill_uniform_bits(Context& c, uint64_t seed, uint64_t offset, const Tensor& y /* i32 */);
}  // namespace cuda
}  // namespace dynsim
