// Spike generation of the retina generator (generator.h): Poisson counts by inversion of one
// 53-bit uniform per frame, the authors' Bernoulli draws (rand < r dt, np of them), and the LIF
// neuron with Euler sub-steps. Every draw is keyed by (stream, frame) so trials and stretches
// never depend on generation order; Poisson and Bernoulli draws are generator_math.h's, shared
// with the CUDA twin (generator_cuda.cu) bit for bit.
#include <algorithm>
#include <cmath>

#include "engine/core/errors.h"
#include "engine/core/rng.h"
#include "models/retina/generator.h"
#include "models/retina/generator_detail.h"
#include "models/retina/generator_math.h"

namespace dynsim::retina {
using detail::kParallelWork;

detail::LifSteps detail::lif_steps(const LifSpec& l, double dt) {
  if (!(l.tau_m_ms > 0) || !(l.max_substep_ms > 0) || !(l.v_th_mv > l.v_reset_mv) ||
      l.refractory_ms < 0 || l.noise_mv < 0 || !std::isfinite(l.r_m) || !std::isfinite(l.v_rest_mv))
    throw ConfigError(concat("lif: tau_m_ms ", l.tau_m_ms, " (> 0), max_substep_ms ",
                             l.max_substep_ms, " (> 0), v_th_mv ", l.v_th_mv, " (> v_reset_mv ",
                             l.v_reset_mv, "), refractory_ms ", l.refractory_ms, " and noise_mv ",
                             l.noise_mv, " (>= 0)"));
  const double frame_ms = dt * 1000;
  LifSteps s;
  s.n = std::max(1, int(std::ceil(frame_ms / l.max_substep_ms - 1e-9)));
  s.h = frame_ms / s.n;
  return s;
}

void detail::check_bernoulli(const SpikeSpec& s) {
  if (s.bernoulli_draws < 1 || s.bernoulli_draws > 64)
    throw ConfigError(concat("spikes: bernoulli_draws ", s.bernoulli_draws, " must be in [1, 64]"));
}

Tensor sample_spikes(const Tensor& rate, const SpikeSpec& s, uint64_t stream, double dt,
                     double lif_gain) {
  if (!rate.defined() || rate.rank() != 1 || rate.dtype() != DType::F32 || !rate.is_cpu())
    throw DataError(concat("sample_spikes: rate ", rate.defined() ? rate.str() : "undefined",
                           " must be a host f32 [T]"));
  const int64_t T = rate.dim(0);
  const float* r = rate.data<float>();
  for (int64_t t = 0; t < T; ++t)
    if (!(r[t] >= 0) || !std::isfinite(r[t]))
      throw DataError(
          concat("sample_spikes: rate ", r[t], " at frame ", t, " (must be >= 0, finite)"));
  Tensor out = Tensor::zeros(Shape{T}, DType::I32);
  int32_t* c = out.data<int32_t>();
  if (s.model == SpikeModel::Poisson) {
#pragma omp parallel for schedule(static) if (T * 8 > kParallelWork)
    for (int64_t t = 0; t < T; ++t)
      c[t] = math::poisson_count(math::rn_mul(double(r[t]), dt), stream, uint64_t(t));
  } else if (s.model == SpikeModel::Bernoulli) {
    detail::check_bernoulli(s);
#pragma omp parallel for schedule(static) if (T * s.bernoulli_draws * 2 > kParallelWork)
    for (int64_t t = 0; t < T; ++t)
      c[t] = math::bernoulli_count(math::rn_mul(double(r[t]), dt), s.bernoulli_draws, stream,
                                   uint64_t(t));
  } else {
    if (!(lif_gain >= 0) || !std::isfinite(lif_gain))
      throw ConfigError(concat("spikes: lif gain ", lif_gain, " must be >= 0"));
    detail::run_lif(
        r, T, s.lif, detail::lif_steps(s.lif, dt), lif_gain,
        [&](uint64_t m) { return rng::normal(stream, m); }, c);
  }
  return out;
}

}  // namespace dynsim::retina
