// CUDA twins of the retina generator's random streams and noise-free rate (generator_cuda.h).
// Every thread evaluates generator_math.h's functions on the same counters and in the same
// order as the CPU loops, so frames, counts and rates are the CPU's bits (the build compiles
// CUDA with --fmad=false, and generator_math.h uses rn_* operations besides).
#include <algorithm>
#include <cstring>

#include "engine/core/cuda_check.h"
#include "models/retina/generator_cuda.h"

namespace dynsim::retina::cuda {
namespace {

constexpr int kThreads = 256;
unsigned grid_for(int64_t n) {
  return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}
cudaStream_t stream_of(Context& c) {
  return static_cast<cudaStream_t>(c.stream());
}

// Item (frame i, block blk) of n frames with nblk 128-pixel blocks each.
__global__ void checker_kernel(float* out, int64_t n, int64_t P, int64_t nblk, uint64_t seed,
                               int64_t begin, float c) {
  for (int64_t it = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; it < n * nblk;
       it += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = it / nblk, blk = it % nblk;
    math::checker_block(seed, uint64_t(begin + i), uint32_t(blk),
                        P - blk * 128 < 128 ? P - blk * 128 : 128, c, out + i * P + blk * 128);
  }
}

// Pixel pairs q0 + it cover global pixels [g0, g1) (g = frame P + pixel, pair g / 2).
__global__ void white_noise_kernel(float* out, uint64_t g0, uint64_t g1, uint64_t seed,
                                   double contrast) {
  const uint64_t q0 = g0 / 2, pairs = (g1 - 1) / 2 - q0 + 1;
  for (int64_t it = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; it < int64_t(pairs);
       it += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t q = q0 + uint64_t(it);
    double z[2];
    math::normal_pair(seed, q, z);
    for (int e = 0; e < 2; ++e) {
      const uint64_t g = 2 * q + uint64_t(e);
      if (g >= g0 && g < g1) out[g - g0] = float(math::rn_mul(contrast, z[e]));
    }
  }
}

__global__ void drives_kernel(math::CellView c, const float* frames, int64_t n, int64_t P,
                              double* s, int64_t T, int64_t t0) {
  for (int64_t it = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; it < n * c.J;
       it += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = it / c.J;
    const int j = int(it % c.J);
    s[j * T + t0 + i] = math::subunit_drive(c, j, frames + i * P);
  }
}

__global__ void signal_kernel(math::CellView c, const double* s, int64_t T, double* g) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < T;
       t += int64_t(gridDim.x) * blockDim.x)
    g[t] = math::signal_at(c, s, T, t, nullptr, nullptr);
}

__global__ void rate_kernel(const double* g, int64_t T, double gain, double theta, float* r) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < T;
       t += int64_t(gridDim.x) * blockDim.x)
    r[t] = float(math::rate_of(g[t], gain, theta));
}

// The first frame whose rate is negative, NaN or infinite (atomicMin; all ones if none).
__global__ void bad_rate_kernel(const float* r, int64_t T, unsigned long long* first) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < T;
       t += int64_t(gridDim.x) * blockDim.x)
    if (!(r[t] >= 0) || !isfinite(r[t])) atomicMin(first, (unsigned long long)t);
}

__global__ void spikes_kernel(const float* r, int64_t T, int draws, uint64_t stream, double dt,
                              int32_t* out) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < T;
       t += int64_t(gridDim.x) * blockDim.x) {
    const double p = math::rn_mul(double(r[t]), dt);
    out[t] = draws == 0 ? math::poisson_count(p, stream, uint64_t(t))
                        : math::bernoulli_count(p, draws, stream, uint64_t(t));
  }
}

template <class T>
Tensor upload(Context& ctx, const std::vector<T>& v) {
  Tensor h = Tensor::empty(Shape{int64_t(v.size())}, dtype_of<T>());
  if (!v.empty()) std::memcpy(h.raw(), v.data(), v.size() * sizeof(T));
  return ctx.to_device(h);
}

void check_launch() {
  DYNSIM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

Tensor stimulus_frames(Context& ctx, bool white_noise, int H, int W, double contrast, uint64_t seed,
                       int64_t begin, int64_t end) {
  const int64_t n = end - begin, P = int64_t(H) * W;
  Tensor out = ctx.empty(Shape{n, H, W});
  if (n * P == 0) return out;
  if (white_noise) {
    const uint64_t g0 = uint64_t(begin) * uint64_t(P), g1 = uint64_t(end) * uint64_t(P);
    const int64_t pairs = int64_t((g1 - 1) / 2 - g0 / 2 + 1);
    white_noise_kernel<<<grid_for(pairs), kThreads, 0, stream_of(ctx)>>>(out.data<float>(), g0, g1,
                                                                         seed, contrast);
  } else {
    const int64_t nblk = (P + 127) / 128;
    checker_kernel<<<grid_for(n * nblk), kThreads, 0, stream_of(ctx)>>>(
        out.data<float>(), n, P, nblk, seed, begin, float(contrast));
  }
  check_launch();
  return out;
}

Tensor spike_counts(Context& ctx, const Tensor& rate, int bernoulli_draws, uint64_t stream,
                    double dt) {
  const int64_t T = rate.dim(0);
  Tensor out = ctx.zeros(Shape{T}, DType::I32);
  if (T == 0) return out;
  // Validation first, as on the CPU: the first bad frame and its value make the message.
  Tensor first = ctx.empty(Shape{1}, DType::F64);  // 8 bytes for an unsigned long long
  auto* fp = static_cast<unsigned long long*>(first.raw());
  DYNSIM_CUDA_CHECK(cudaMemsetAsync(fp, 0xff, sizeof(unsigned long long), stream_of(ctx)));
  bad_rate_kernel<<<grid_for(T), kThreads, 0, stream_of(ctx)>>>(rate.data<float>(), T, fp);
  check_launch();
  unsigned long long bad = 0;
  std::memcpy(&bad, ctx.to_host(first).raw(), sizeof bad);
  if (bad != ~0ull) {
    const float v = float(ctx.to_host(rate.slice(int64_t(bad), int64_t(bad) + 1)).item(0));
    throw DataError(
        concat("sample_spikes: rate ", v, " at frame ", bad, " (must be >= 0, finite)"));
  }
  spikes_kernel<<<grid_for(T), kThreads, 0, stream_of(ctx)>>>(
      rate.data<float>(), T, bernoulli_draws, stream, dt, out.data<int32_t>());
  check_launch();
  return out;
}

DeviceCell upload_cell(Context& ctx, const math::FlatCell& c) {
  DeviceCell d;
  d.offsets = upload(ctx, c.offsets);
  d.pixels = upload(ctx, c.pixels);
  d.values = upload(ctx, c.values);
  d.k = upload(ctx, c.k);
  d.w = upload(ctx, c.w);
  d.view.J = c.J, d.view.L = c.L, d.view.nl = c.nl;
  d.view.offsets = d.offsets.data<int32_t>();
  d.view.pixels = d.pixels.data<int32_t>();
  d.view.values = d.values.data<double>();
  d.view.k = d.k.data<double>();
  d.view.w = d.w.data<double>();
  return d;
}

void add_drives(Context& ctx, const DeviceCell& c, const Tensor& frames, const Tensor& s,
                int64_t t0) {
  const int64_t n = frames.dim(0), P = frames.dim(1) * frames.dim(2), T = s.dim(1);
  if (s.dim(0) != c.view.J || t0 < 0 || t0 + n > T)
    throw DataError(concat("retina::cuda::add_drives: frames ", frames.str(), " at ", t0,
                           " do not fit drives ", s.str(), " of ", c.view.J, " subunits"));
  if (n == 0) return;
  drives_kernel<<<grid_for(n * c.view.J), kThreads, 0, stream_of(ctx)>>>(
      c.view, frames.data<float>(), n, P, s.data<double>(), T, t0);
  check_launch();
}

Tensor signal(Context& ctx, const DeviceCell& c, const Tensor& s) {
  const int64_t T = s.dim(1);
  Tensor g = ctx.empty(Shape{T}, DType::F64);
  if (T == 0) return g;
  signal_kernel<<<grid_for(T), kThreads, 0, stream_of(ctx)>>>(c.view, s.data<double>(), T,
                                                              g.data<double>());
  check_launch();
  return g;
}

Tensor rate_from_signal(Context& ctx, const Tensor& g, double gain, double theta) {
  const int64_t T = g.dim(0);
  Tensor r = ctx.empty(Shape{T});
  if (T == 0) return r;
  rate_kernel<<<grid_for(T), kThreads, 0, stream_of(ctx)>>>(g.data<double>(), T, gain, theta,
                                                            r.data<float>());
  check_launch();
  return r;
}

}  // namespace dynsim::retina::cuda
