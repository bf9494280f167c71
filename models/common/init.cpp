// Parameter initialisation (models/common/init.h).
#include "models/common/init.h"

#include <cmath>

namespace dynsim::init {

namespace {
double unit_uniform(uint64_t seed, uint64_t index) {  // [0, 1) with 53 random bits
  rng::U4 r = rng::bits(seed, index, 0);
  return double((uint64_t(r.v[0]) << 21) ^ (r.v[1] >> 11)) * (1.0 / 9007199254740992.0);
}
// Box-Muller from one Philox block: fast (libm), reproducible on any one platform. The engine's
// bit-portable rng::normal is kept for what must match across CPU and GPU (noise).
double fast_normal(uint64_t seed, uint64_t index) {
  rng::U4 r = rng::bits(seed, index, 1);
  const double u1 = (double(r.v[0] >> 8) + 0.5) * (1.0 / 16777216.0);
  const double u2 = double(r.v[1]) * (1.0 / 4294967296.0);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}
}  // namespace

void uniform(Tensor& t, double lo, double hi, Rng& rng) {
  const uint64_t o = rng.advance(uint64_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, lo + (hi - lo) * unit_uniform(rng.seed(), o + i));
}
void normal(Tensor& t, double std, Rng& rng) {
  const uint64_t o = rng.advance(uint64_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, std * fast_normal(rng.seed(), o + i));
}
void trunc_normal(Tensor& t, double std, double a, double b, Rng& rng) {
  for (int64_t i = 0; i < t.numel(); ++i) {
    double v;
    do {
      v = std * fast_normal(rng.seed(), rng.advance(1));
    } while (v < a || v > b);
    t.set(i, v);
  }
}
void kaiming_normal_relu(Tensor& t, Rng& rng) {
  const int64_t fan_in = t.numel() / t.dim(0);
  normal(t, std::sqrt(2.0 / double(fan_in)), rng);
}
void zeros(Tensor& t) { t.fill(0.0); }

}  // namespace dynsim::init
