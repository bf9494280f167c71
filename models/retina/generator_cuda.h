// The retina generator's CUDA twins (generator_cuda.cu), defined only in CUDA builds and called
// through the Context overloads of generator.h (generator_device.cpp), which validate the specs
// first. Each kernel evaluates generator_math.h's functions, as the CPU code does, so the bits
// agree: one thread per (frame, 128-pixel block) for checkerboards, per pixel pair for white
// noise, per (frame, subunit) for drives and per frame for signal, rate and spikes.
#pragma once
#include <cstdint>

#include "engine/core/context.h"
#include "models/retina/generator_math.h"

namespace dynsim::retina::cuda {

// Frames [end - begin, H, W] f32 on ctx's device: +-contrast checkerboard or white noise of
// std contrast (natural images: NotImplemented, they are made on the CPU).
Tensor stimulus_frames(Context& ctx, bool white_noise, int H, int W, double contrast, uint64_t seed,
                       int64_t begin, int64_t end);

// Counts i32 [T] for rates f32 [T] (Hz), both on the device: Poisson (bernoulli_draws 0) or
// Bernoulli with that many draws. DataError naming the first frame with a negative or non-finite
// rate, as on the CPU.
Tensor spike_counts(Context& ctx, const Tensor& rate, int bernoulli_draws, uint64_t stream,
                    double dt);

// A cell's FlatCell copied to the device; view points into the tensors.
struct DeviceCell {
  Tensor offsets, pixels, values, k, w;
  math::CellView view;
};
DeviceCell upload_cell(Context& ctx, const math::FlatCell& c);

// s[j, t0 + i] = subunit j's drive in frame i of frames [n, H, W] (f32, device); s is [J, T] f64.
void add_drives(Context& ctx, const DeviceCell& c, const Tensor& frames, const Tensor& s,
                int64_t t0);
// The generator signal g [T] f64 from the drives s [J, T] (device).
Tensor signal(Context& ctx, const DeviceCell& c, const Tensor& s);
// r = A max(0, g - theta) as f32 [T] (device).
Tensor rate_from_signal(Context& ctx, const Tensor& g, double gain, double theta);

}  // namespace dynsim::retina::cuda
