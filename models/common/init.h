// Seeded parameter initialisation from the engine's counter-based stream (engine/core/rng.h): each
// call draws a fresh block of indices from the Rng, so the result depends only on the seed and
// the order of calls. Distributions are DynVision's (spec §6); the streams are not PyTorch's.
#pragma once
#include "engine/core/rng.h"
#include "engine/core/tensor.h"

namespace dynsim::init {
void uniform(Tensor& t, double lo, double hi, Rng& rng);
void normal(Tensor& t, double std, Rng& rng);
// Normal(0, std) truncated to [a, b] (absolute bounds, as torch.nn.init.trunc_normal_).
void trunc_normal(Tensor& t, double std, double a, double b, Rng& rng);
// Kaiming normal, fan_in mode, ReLU gain: std = sqrt(2 / fan_in).
void kaiming_normal_relu(Tensor& t, Rng& rng);
void zeros(Tensor& t);
}  // namespace dynsim::init
