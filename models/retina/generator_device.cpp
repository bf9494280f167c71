// The retina generator's device choice (generator.h, "the device choice"): the Context overloads
// run the CPU functions on a CPU context and the CUDA twins (generator_cuda.h) on a CUDA one,
// after the same validation. This file is the generator's only device switch: callers never
// hold #ifdefs, and in a build without CUDA the CUDA branches are discarded at compile time
// (`if constexpr`), leaving NotImplemented "built without CUDA".
#include <algorithm>

#include "engine/core/context.h"
#include "engine/core/errors.h"
#include "models/retina/generator.h"
#include "models/retina/generator_cuda.h"
#include "models/retina/generator_detail.h"

namespace dynsim::retina {
namespace {

constexpr bool kCudaBuilt = DYNSIM_WITH_CUDA;

bool on_cuda(const Context& c) {
  return c.device() == Device::Cuda;
}

[[noreturn]] void built_without_cuda(const char* what) {
  throw NotImplemented(concat("retina::", what, ": built without CUDA (no CUDA backend)"));
}

void require_device(const char* fn, const char* role, const Tensor& t, DType d, int rank) {
  if (!t.defined() || t.device() != Device::Cuda || t.dtype() != d || t.rank() != rank)
    throw DataError(concat(fn, ": ", role, " ", t.defined() ? t.str() : "undefined",
                           " must be a CUDA ", dtype_name(d), " tensor of rank ", rank,
                           " on a CUDA context"));
}

std::vector<double> f64_vector(const Tensor& host) {
  const double* p = host.data<double>();
  return std::vector<double>(p, p + host.numel());
}

// Copies row i of a device [T] tensor into row i of a host [n, T] tensor.
void put_row(Context& ctx, const Tensor& dev, const Tensor& host, int64_t row) {
  ctx.copy(host.view(Shape{host.numel()}).slice(row * dev.numel(), (row + 1) * dev.numel()), dev);
}

}  // namespace

Tensor make_stimulus(Context& ctx, const StimulusSpec& s, uint64_t seed, int64_t begin,
                     int64_t end) {
  if (!on_cuda(ctx)) return make_stimulus(s, seed, begin, end);
  if constexpr (kCudaBuilt) {
    detail::check_stimulus(s);
    if (begin < 0 || end < begin)
      throw ConfigError(concat("stimulus: frame range [", begin, ", ", end, ") is invalid"));
    if (s.kind == StimulusKind::NaturalImages)  // CPU only: the frames are copied
      return ctx.to_device(make_stimulus(s, seed, begin, end));
    return cuda::stimulus_frames(ctx, s.kind == StimulusKind::WhiteNoise, s.height, s.width,
                                 s.contrast, seed, begin, end);
  } else {
    built_without_cuda("make_stimulus");
  }
}

Tensor sample_spikes(Context& ctx, const Tensor& rate, const SpikeSpec& s, uint64_t stream,
                     double dt, double lif_gain) {
  if (!on_cuda(ctx)) return sample_spikes(rate, s, stream, dt, lif_gain);
  if constexpr (kCudaBuilt) {
    require_device("sample_spikes", "rate", rate, DType::F32, 1);
    if (s.model == SpikeModel::Lif)  // sequential in time: the CPU's, copied
      return ctx.to_device(sample_spikes(ctx.to_host(rate), s, stream, dt, lif_gain));
    if (s.model == SpikeModel::Bernoulli) detail::check_bernoulli(s);
    return cuda::spike_counts(ctx, rate, s.model == SpikeModel::Bernoulli ? s.bernoulli_draws : 0,
                              stream, dt);
  } else {
    built_without_cuda("sample_spikes");
  }
}

Tensor noise_free_rate(Context& ctx, const CellTruth& c, const Tensor& stim) {
  if (!on_cuda(ctx)) return noise_free_rate(c, stim);
  if constexpr (kCudaBuilt) {
    require_device("noise_free_rate", "stimulus", stim, DType::F32, 3);
    if (stim.dim(1) != c.masks.dim(1) || stim.dim(2) != c.masks.dim(2))
      throw DataError(concat("cell ", c.name, ": stimulus ", stim.str(), " must be [T,",
                             c.masks.dim(1), ",", c.masks.dim(2), "]"));
    const cuda::DeviceCell d = cuda::upload_cell(ctx, detail::flat_cell(c));
    const Tensor s = ctx.empty(Shape{c.masks.dim(0), stim.dim(0)}, DType::F64);
    cuda::add_drives(ctx, d, stim, s, 0);
    return cuda::rate_from_signal(ctx, cuda::signal(ctx, d, s), c.gain, c.theta);
  } else {
    built_without_cuda("noise_free_rate");
  }
}

// generate(spec) step by step with the frames, drives, signals, rates and spikes on the device;
// the calibration itself (quantile, gain, LIF bisection) runs on the host from the signals.
Recording generate(const GeneratorSpec& spec, Context& ctx) {
  if (!on_cuda(ctx)) return generate(spec);
  if constexpr (kCudaBuilt) {
    detail::check_run(spec);
    Recording rec;
    rec.spec = spec;
    const int64_t n = int64_t(spec.cells.size()), T = spec.calibration_frames;
    const int64_t P = int64_t(spec.stimulus.height) * spec.stimulus.width;
    int64_t skip = 0;
    for (const CellSpec& c : spec.cells)
      rec.truth.push_back(build_cell(c, spec.stimulus.height, spec.stimulus.width, spec.dt));
    std::vector<cuda::DeviceCell> cells;
    for (const CellTruth& c : rec.truth) {
      skip = std::max<int64_t>(skip, c.filters.dim(1) - 1);
      cells.push_back(cuda::upload_cell(ctx, detail::flat_cell(c)));
    }
    if (T <= skip)
      throw ConfigError(
          concat("generator: calibration_frames ", T, " must exceed the filter length ", skip + 1));
    std::vector<Tensor> s;
    for (const CellTruth& c : rec.truth)
      s.push_back(ctx.empty(Shape{c.masks.dim(0), T}, DType::F64));
    const uint64_t cal_seed = stream_seed(spec.seed, Stream::CalibrationStimulus);
    const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 26) / P);  // 256 MiB of frames
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
      const Tensor frames =
          make_stimulus(ctx, spec.stimulus, cal_seed, t0, std::min(T, t0 + chunk));
      for (int64_t i = 0; i < n; ++i)
        cuda::add_drives(ctx, cells[size_t(i)], frames, s[size_t(i)], t0);
    }
    for (int64_t i = 0; i < n; ++i) {
      const Tensor g = ctx.to_host(cuda::signal(ctx, cells[size_t(i)], s[size_t(i)]));
      detail::calibrate(rec.truth[size_t(i)], f64_vector(g), skip, spec, uint32_t(i));
    }
    s.clear();

    // One stretch: frames, then per cell its rate and `trials` spike draws.
    auto stretch = [&](Stream stim, Stream spikes, int64_t frames, int trials, Tensor& x_host,
                       Tensor& rate, Tensor& counts) {
      const Tensor x = make_stimulus(ctx, spec.stimulus, stream_seed(spec.seed, stim), 0, frames);
      x_host = ctx.to_host(x);
      rate = Tensor::empty(Shape{n, frames});
      counts = Tensor::empty(Shape{int64_t(trials) * n, frames}, DType::I32);
      for (int64_t i = 0; i < n; ++i) {
        const CellTruth& c = rec.truth[size_t(i)];
        const Tensor sd = ctx.empty(Shape{c.masks.dim(0), frames}, DType::F64);
        cuda::add_drives(ctx, cells[size_t(i)], x, sd, 0);
        const Tensor r =
            cuda::rate_from_signal(ctx, cuda::signal(ctx, cells[size_t(i)], sd), c.gain, c.theta);
        put_row(ctx, r, rate, i);
        for (int k = 0; k < trials; ++k) {
          const uint64_t st = stream_seed(spec.seed, spikes, uint32_t(i), uint32_t(k));
          put_row(ctx, sample_spikes(ctx, r, spec.spikes, st, spec.dt, c.lif_gain), counts,
                  k * n + i);
        }
      }
      counts = counts.view(Shape{trials, n, frames});
    };
    Tensor counts;
    stretch(Stream::TrainStimulus, Stream::TrainSpikes, spec.frames, 1, rec.stimulus, rec.rate,
            counts);
    rec.spikes = counts.view(Shape{n, spec.frames});
    if (spec.test_frames > 0)
      stretch(Stream::TestStimulus, Stream::TestSpikes, spec.test_frames, spec.test_trials,
              rec.test_stimulus, rec.test_rate, rec.test_spikes);
    rec.ground_truth = truth_to_json(rec.truth, spec.seed, spec.dt);
    return rec;
  } else {
    built_without_cuda("generate");
  }
}

}  // namespace dynsim::retina
