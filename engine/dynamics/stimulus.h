// Built-in stimuli for simulations, in the model's normalised input units (background 0, the
// dataset-mean grey of DynVision's experiments, spec §9): sinusoidal gratings, full-field
// flashes, Gaussian white noise (seeded, counter-based), natural images (PNG/JPEG via stb_image,
// resized and normalised with the ImageNet mean/std) and user arrays (.npy). A stimulus is one
// frame [C, H, W]; sequences come from engine/dynamics/sequence.h's schedules (contrast, onset,
// duration).
#pragma once
#include <string>

#include "engine/core/tensor.h"

namespace dynsim::stim {

struct GratingParams {
  double cycles = 4.0;       // cycles per image width
  double orientation = 0.0;  // degrees, 0 = vertical bars
  double phase = 0.0;        // degrees
  double amplitude = 1.0;
};
Tensor grating(int C, int H, int W, const GratingParams& p);
Tensor flash(int C, int H, int W, double value);
Tensor white_noise(int C, int H, int W, double std, uint64_t seed);
// An image file resized (bilinear) to H x W, channels replicated for grey images, mapped to
// (x - mean) / std with ImageNet's statistics (3 channels) or 0.5 / 0.25 (other counts).
Tensor image(const std::string& path, int C, int H, int W);
// A .npy array: [C, H, W], [H, W] (replicated to C), or [T, C, H, W] / [B, T, C, H, W] kept.
Tensor array(const std::string& path, int C, int H, int W);

}  // namespace dynsim::stim
