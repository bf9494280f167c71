// The LNLN ganglion-cell generator (generator.h): subunit layouts, the causal filter /
// nonlinearity / output chain (generator_math.h's operations, which the CUDA twin shares),
// calibration of A and theta, spikes and whole runs. Stimuli are in generator_stimulus.cpp,
// JSON and folders in generator_io.cpp, HDF5 in generator_hdf5.cpp, the device choice in
// generator_device.cpp.
#include "models/retina/generator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "engine/core/errors.h"
#include "engine/core/rng.h"
#include "models/retina/generator_detail.h"
#include "models/retina/generator_math.h"

namespace dynsim::retina {
using detail::kParallelWork;
using math::unit_u32;

// ---- cells -----------------------------------------------------------------------------------

std::vector<double> temporal_filter(const TemporalSpec& t, int polarity, double dt) {
  if (t.taps < 1 || !(t.theta1 > 0) || !(t.theta2 > 0) || !(t.n1 >= 1) || !(t.n2 >= 1) || !(dt > 0))
    throw ConfigError(concat("temporal filter: taps ", t.taps, " (>= 1), theta ", t.theta1, ", ",
                             t.theta2, " (> 0), n ", t.n1, ", ", t.n2, " (>= 1), dt ", dt));
  if (polarity != 1 && polarity != -1)
    throw ConfigError(
        concat("temporal filter: polarity ", polarity, " must be +1 (ON) or -1 (OFF)"));
  auto gamma = [](double x, double n, double th) {
    return x <= 0 ? 0.0 : std::pow(x / th, n - 1) * std::exp(-x / th) / (th * std::tgamma(n));
  };
  std::vector<double> g(size_t(t.taps));
  double sq = 0;
  for (int lag = 0; lag < t.taps; ++lag) {
    const double x = (lag - t.delay_frames) * dt;  // exactly 0 at lag == delay
    g[size_t(lag)] = t.a1 * gamma(x, t.n1, t.theta1) - t.a2 * gamma(x, t.n2, t.theta2);
    sq += g[size_t(lag)] * g[size_t(lag)];
  }
  const double norm = std::sqrt(sq);
  if (!(norm > 0) || !std::isfinite(norm))
    throw ConfigError(concat("temporal filter: all ", t.taps, " taps are zero (delay ",
                             t.delay_frames, " frames too long?) or not finite"));
  for (double& v : g) v = polarity * v / norm;
  return g;
}

Tensor box_mask(int H, int W, int row0, int col0, int h, int w) {
  Tensor m = Tensor::zeros(Shape{H, W});
  for (int y = std::max(0, row0); y < std::min(H, row0 + h); ++y)
    for (int x = std::max(0, col0); x < std::min(W, col0 + w); ++x) m.set(int64_t(y) * W + x, 1.0);
  return m;
}

Tensor gaussian_mask(int H, int W, double cy, double cx, double sigma, double cutoff) {
  if (!(sigma > 0)) throw ConfigError(concat("gaussian_mask: sigma ", sigma, " must be positive"));
  Tensor m = Tensor::zeros(Shape{H, W});
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const double d2 = (y - cy) * (y - cy) + (x - cx) * (x - cx);
      if (cutoff <= 0 || d2 <= cutoff * cutoff * sigma * sigma)
        m.set(int64_t(y) * W + x, std::exp(-d2 / (2 * sigma * sigma)));
    }
  return m;
}

std::vector<Subunit> reference_subunits() {
  std::vector<Subunit> s;
  for (int r : {2, 4})
    for (int c : {2, 4}) {
      Subunit u;
      u.mask = box_mask(8, 8, r, c, 2, 2);
      s.push_back(u);
    }
  return s;
}

std::vector<Subunit> lattice_subunits(const LatticeSpec& l) {
  if (l.rows < 1 || l.cols < 1 || !(l.spacing > 0) || !(l.sigma > 0) || l.jitter_px < 0 ||
      !(l.sigma_jitter >= 0 && l.sigma_jitter < 1))
    throw ConfigError(concat("lattice: rows ", l.rows, ", cols ", l.cols, " (>= 1), spacing ",
                             l.spacing, ", sigma ", l.sigma, " (> 0), jitter_px ", l.jitter_px,
                             " (>= 0), sigma_jitter ", l.sigma_jitter, " (in [0, 1))"));
  std::vector<Subunit> out;
  const double dy = l.hexagonal ? l.spacing * std::sqrt(3.0) / 2 : l.spacing;
  for (int r = 0; r < l.rows; ++r)
    for (int c = 0; c < l.cols; ++c) {
      const rng::U4 u = rng::bits(l.seed, uint64_t(r) * uint64_t(l.cols) + c, 0);
      const double cy = l.offset_y + r * dy + (2 * unit_u32(u.v[0]) - 1) * l.jitter_px;
      const double cx = l.offset_x + c * l.spacing + (l.hexagonal && (r & 1) ? l.spacing / 2 : 0) +
                        (2 * unit_u32(u.v[1]) - 1) * l.jitter_px;
      const double sigma = l.sigma * (1 + (2 * unit_u32(u.v[2]) - 1) * l.sigma_jitter);
      Subunit s;
      s.mask = gaussian_mask(l.height, l.width, cy, cx, sigma, l.cutoff);
      s.weight = l.weight;
      s.polarity = l.polarity;
      s.temporal = l.temporal;
      out.push_back(s);
    }
  return out;
}

static_assert(int(NlKind::Relu) == math::kRelu && int(NlKind::Softplus) == math::kSoftplus &&
                  int(NlKind::Nl3) == math::kNl3,
              "generator_math.h numbers the nonlinearities as NlKind does");

math::NlParams detail::nl_params(const Nonlinearity& f) {
  math::NlParams p;
  p.kind = int(f.kind);
  p.threshold = f.threshold, p.scale = f.scale, p.power = f.power, p.beta = f.beta;
  return p;
}

// Portable (generator_math.h): powers and softplus from portable_log / portable_exp, so the
// CUDA twin gives the same bits.
double Nonlinearity::operator()(double x) const {
  return math::apply_nl(detail::nl_params(*this), x);
}

namespace {
const char* const kNlNames[] = {
    "relu", "threshold_quadratic", "sublinear", "superlinear", "softplus", "nl2", "nl3"};

void check_nl(const Nonlinearity& f, const std::string& cell) {
  const double p = f.power;
  const bool ok = std::isfinite(f.threshold) && f.scale > 0 && std::isfinite(f.scale) &&
                  f.beta > 0 && std::isfinite(f.beta) &&
                  (f.kind != NlKind::Sublinear || p == 0 || (p > 0 && p <= 1)) &&
                  (f.kind != NlKind::Superlinear || p == 0 || (p >= 1 && std::isfinite(p)));
  if (!ok)
    throw ConfigError(concat("cell ", cell, ": nonlinearity ", nl_name(f.kind), " with threshold ",
                             f.threshold, ", scale ", f.scale, " (> 0), power ", p,
                             " (sublinear (0, 1], superlinear >= 1, 0 = default), beta ", f.beta,
                             " (> 0)"));
}
}  // namespace

const char* nl_name(NlKind k) {
  return kNlNames[int(k)];
}

NlKind nl_kind(const std::string& name) {
  for (int i = 0; i < 7; ++i)
    if (name == kNlNames[i]) return NlKind(i);
  throw ConfigError(concat("unknown subunit nonlinearity '", name, "' (relu, threshold_quadratic, ",
                           "sublinear, superlinear, softplus, nl2, nl3)"));
}

CellSpec reference_cell() {
  CellSpec c;
  c.name = "reference";
  c.subunits = reference_subunits();
  c.output.calibration = Calibration::Gain;
  c.output.theta = 2.5;
  return c;
}

CellSpec paper_cell() {
  CellSpec c = reference_cell();
  c.name = "paper";
  c.output.calibration = Calibration::None;
  c.output.gain = 2.0;
  return c;
}

CellTruth build_cell(const CellSpec& spec, int H, int W, double dt) {
  const std::string& n = spec.name;
  if (spec.subunits.empty()) throw ConfigError(concat("cell ", n, ": no subunits"));
  check_nl(spec.nonlinearity, n);
  const OutputSpec& o = spec.output;
  if (!std::isfinite(o.gain) || !std::isfinite(o.theta) ||
      (o.calibration != Calibration::None &&
       !(o.target_rate_hz > 0 && std::isfinite(o.target_rate_hz))) ||
      (o.calibration == Calibration::ThresholdAndGain &&
       !(o.theta_quantile > 0 && o.theta_quantile < 1)))
    throw ConfigError(concat("cell ", n, ": output gain ", o.gain, ", theta ", o.theta,
                             ", target_rate_hz ", o.target_rate_hz, " (> 0), theta_quantile ",
                             o.theta_quantile, " (in (0, 1))"));
  const int64_t J = int64_t(spec.subunits.size());
  const int L = spec.subunits[0].temporal.taps;
  CellTruth c;
  c.name = n;
  c.masks = Tensor::empty(Shape{J, H, W});
  c.filters = Tensor::empty(Shape{J, L});
  for (int64_t j = 0; j < J; ++j) {
    const Subunit& u = spec.subunits[size_t(j)];
    if (!u.mask.defined() || u.mask.shape() != Shape{H, W} || !u.mask.is_cpu())
      throw ConfigError(concat("cell ", n, ": subunit ", j, " mask ",
                               u.mask.defined() ? u.mask.str() : "undefined", " must be a host [",
                               H, ",", W, "] tensor (the stimulus size)"));
    const std::vector<double> m = u.mask.to_vector();
    double total = 0;
    for (double v : m) {
      if (!(v >= 0) || !std::isfinite(v))
        throw ConfigError(concat("cell ", n, ": subunit ", j, " mask has a negative or non-finite ",
                                 "value ", v, " (masks are >= 0; use polarity or weight)"));
      total += v;
    }
    if (total == 0) throw ConfigError(concat("cell ", n, ": subunit ", j, " mask is all zero"));
    if (!std::isfinite(u.weight))
      throw ConfigError(concat("cell ", n, ": subunit ", j, " weight ", u.weight));
    if (u.temporal.taps != L)
      throw ConfigError(concat("cell ", n, ": subunit ", j, " has ", u.temporal.taps,
                               " filter taps, subunit 0 has ", L, " (all must agree)"));
    for (int64_t p = 0; p < int64_t(H) * W; ++p) c.masks.set(j * H * W + p, m[size_t(p)]);
    const std::vector<double> k = temporal_filter(u.temporal, u.polarity, dt);
    for (int l = 0; l < L; ++l) c.filters.set(j * L + l, k[size_t(l)]);  // rounded to f32
    c.weights.push_back(u.weight);
    c.polarity.push_back(u.polarity);
    c.temporal.push_back(u.temporal);
  }
  c.nonlinearity = spec.nonlinearity;
  c.gain = o.gain;
  c.theta = o.theta;
  c.target_rate_hz = o.calibration == Calibration::None ? 0.0 : o.target_rate_hz;
  c.calibration = o.calibration;
  c.theta_quantile = o.calibration == Calibration::ThresholdAndGain ? o.theta_quantile : 0.0;
  return c;
}

math::FlatCell detail::flat_cell(const CellTruth& c) {
  math::FlatCell f;
  const int64_t J = c.masks.dim(0), P = c.masks.dim(1) * c.masks.dim(2), L = c.filters.dim(1);
  const float* m = c.masks.data<float>();
  const float* k = c.filters.data<float>();
  f.J = int(J), f.L = int(L);
  f.offsets.push_back(0);
  for (int64_t j = 0; j < J; ++j) {
    for (int64_t p = 0; p < P; ++p)
      if (m[j * P + p] != 0) {
        f.pixels.push_back(int32_t(p));
        f.values.push_back(double(m[j * P + p]));
      }
    f.offsets.push_back(int32_t(f.pixels.size()));
  }
  f.k.assign(k, k + J * L);
  f.w = c.weights;
  f.nl = nl_params(c.nonlinearity);
  return f;
}

namespace {

// s_j(t0 + i) for frames [n, P]; s is [J, T] row-major.
void add_drives(const math::CellView& c, const float* frames, int64_t n, int64_t P, double* s,
                int64_t T, int64_t t0) {
  const int64_t nnz = c.offsets[c.J];
#pragma omp parallel for schedule(static) if (n * nnz > kParallelWork)
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < c.J; ++j) s[j * T + t0 + i] = math::subunit_drive(c, j, frames + i * P);
}

// g(t) = sum_j w_j f((k_j * s_j)(t)), causal, zero before frame 0. Optional traces x, b [J, T].
std::vector<double> signal_from_drives(const math::CellView& c, const double* s, int64_t T,
                                       double* x_out, double* b_out) {
  std::vector<double> g(static_cast<size_t>(T));
#pragma omp parallel for schedule(static) if (T * c.J * c.L > kParallelWork)
  for (int64_t t = 0; t < T; ++t) g[size_t(t)] = math::signal_at(c, s, T, t, x_out, b_out);
  return g;
}

void check_frames(const CellTruth& c, const Tensor& stim) {
  if (!stim.defined() || stim.rank() != 3 || stim.dtype() != DType::F32 || !stim.is_cpu() ||
      stim.dim(1) != c.masks.dim(1) || stim.dim(2) != c.masks.dim(2))
    throw DataError(concat("cell ", c.name, ": stimulus ",
                           stim.defined() ? stim.str() : "undefined", " must be a host f32 [T,",
                           c.masks.dim(1), ",", c.masks.dim(2), "]"));
}

}  // namespace

CellTrace trace_cell(const CellTruth& c, const Tensor& stim) {
  check_frames(c, stim);
  const math::FlatCell f = detail::flat_cell(c);
  const math::CellView K = f.view();
  const int64_t T = stim.dim(0), J = c.masks.dim(0);
  CellTrace tr;
  tr.s = Tensor::zeros(Shape{J, T}, DType::F64);
  tr.x = Tensor::zeros(Shape{J, T}, DType::F64);
  tr.b = Tensor::zeros(Shape{J, T}, DType::F64);
  add_drives(K, stim.data<float>(), T, stim.dim(1) * stim.dim(2), tr.s.data<double>(), T, 0);
  const std::vector<double> g =
      signal_from_drives(K, tr.s.data<double>(), T, tr.x.data<double>(), tr.b.data<double>());
  tr.g = Tensor::empty(Shape{T}, DType::F64);
  tr.r = Tensor::empty(Shape{T}, DType::F64);
  for (int64_t t = 0; t < T; ++t) {
    tr.g.data<double>()[t] = g[size_t(t)];
    tr.r.data<double>()[t] = math::rate_of(g[size_t(t)], c.gain, c.theta);
  }
  return tr;
}

Tensor noise_free_rate(const CellTruth& c, const Tensor& stim) {
  check_frames(c, stim);
  const math::FlatCell f = detail::flat_cell(c);
  const math::CellView K = f.view();
  const int64_t T = stim.dim(0), J = c.masks.dim(0);
  std::vector<double> s(size_t(J * T));
  add_drives(K, stim.data<float>(), T, stim.dim(1) * stim.dim(2), s.data(), T, 0);
  const std::vector<double> g = signal_from_drives(K, s.data(), T, nullptr, nullptr);
  Tensor r = Tensor::empty(Shape{T});
  for (int64_t t = 0; t < T; ++t)
    r.data<float>()[t] = float(math::rate_of(g[size_t(t)], c.gain, c.theta));
  return r;
}

// ---- calibration and whole runs --------------------------------------------------------------
void detail::check_run(const GeneratorSpec& g) {
  if (g.cells.empty()) throw ConfigError("generator: no cells");
  if (!(g.dt > 0) || g.frames < 1 || g.test_frames < 0 || (g.test_frames > 0 && g.test_trials < 1))
    throw ConfigError(concat("generator: dt ", g.dt, " (> 0), frames ", g.frames, " (>= 1), ",
                             "test_frames ", g.test_frames, " (>= 0), test_trials ", g.test_trials,
                             " (>= 1)"));
  detail::check_stimulus(g.stimulus);
}

void detail::calibrate(CellTruth& c, const std::vector<double>& g, int64_t skip,
                       const GeneratorSpec& spec, uint32_t cell) {
  std::vector<double> v(g.begin() + skip, g.end());
  if (v.empty())
    throw ConfigError(concat("cell ", c.name, ": calibration_frames ", spec.calibration_frames,
                             " must exceed the filter length ", skip + 1));
  if (c.calibration == Calibration::ThresholdAndGain) {
    const double pos = c.theta_quantile * double(v.size() - 1);
    const size_t lo = size_t(pos);
    std::vector<double> w = v;
    std::nth_element(w.begin(), w.begin() + lo, w.end());
    const double a = w[lo];
    double b = a;
    if (lo + 1 < w.size()) b = *std::min_element(w.begin() + lo + 1, w.end());
    c.theta = a + (pos - double(lo)) * (b - a);  // linear interpolation between order statistics
  }
  double excess = 0;
  int64_t active = 0;
  for (double x : v) {
    excess += std::max(0.0, x - c.theta);
    active += x > c.theta;
  }
  excess /= double(v.size());
  if (c.calibration != Calibration::None) {
    if (!(excess > 0))
      throw ConfigError(concat("cell ", c.name, ": theta ", c.theta, " is above every generator ",
                               "value over the ", v.size(),
                               " calibration frames: no rate to scale"));
    c.gain = c.target_rate_hz / excess;
  }
  c.calibration_rate_hz = c.gain * excess;
  c.active_fraction = double(active) / double(v.size());
  if (spec.spikes.model != SpikeModel::Lif) return;

  // LIF: bisect the input gain on the same stretch with frozen noise until the rate matches.
  const detail::LifSteps st = detail::lif_steps(spec.spikes.lif, spec.dt);
  std::vector<float> r(v.size());
  for (size_t t = 0; t < v.size(); ++t) r[t] = float(c.gain * std::max(0.0, v[t] - c.theta));
  std::vector<double> noise;
  if (spec.spikes.lif.noise_mv > 0) {
    const uint64_t stream = stream_seed(spec.seed, Stream::CalibrationSpikes, cell);
    noise.resize(r.size() * size_t(st.n));
    for (size_t m = 0; m < noise.size(); ++m) noise[m] = rng::normal(stream, m);
  }
  const double target =
      c.calibration == Calibration::None ? c.calibration_rate_hz : c.target_rate_hz;
  const double seconds = double(r.size()) * spec.dt;
  auto rate_at = [&](double gain) {
    return double(detail::run_lif(
               r.data(), int64_t(r.size()), spec.spikes.lif, st, gain,
               [&](uint64_t m) { return noise[m]; }, nullptr)) /
           seconds;
  };
  double lo = 0, hi = 1, best = hi, best_err = std::numeric_limits<double>::infinity();
  for (int i = 0; rate_at(hi) < target; ++i) {
    if (i == 60)
      throw ConfigError(concat("cell ", c.name, ": the LIF cannot reach ", target, " Hz"));
    lo = hi, hi *= 2;
  }
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi), rate = rate_at(mid);
    if (std::abs(rate - target) < best_err) best_err = std::abs(rate - target), best = mid;
    if (best_err <= 0.002 * target) break;
    (rate < target ? lo : hi) = mid;
  }
  c.lif_gain = best;
}

namespace {

void calibrate_all(const GeneratorSpec& spec, std::vector<CellTruth>& cells,
                   const std::vector<size_t>& which) {
  const int64_t T = spec.calibration_frames,
                P = int64_t(spec.stimulus.height) * spec.stimulus.width;
  int64_t skip = 0;
  std::vector<math::FlatCell> K;
  std::vector<std::vector<double>> s;
  for (size_t i : which) {
    skip = std::max<int64_t>(skip, cells[i].filters.dim(1) - 1);
    K.push_back(detail::flat_cell(cells[i]));
    s.emplace_back(size_t(cells[i].masks.dim(0) * std::max<int64_t>(T, 0)));
  }
  if (T <= skip)
    throw ConfigError(
        concat("generator: calibration_frames ", T, " must exceed the filter length ", skip + 1));
  const uint64_t seed = stream_seed(spec.seed, Stream::CalibrationStimulus);
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 22) / P);  // 16 MiB of frames
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t t1 = std::min(T, t0 + chunk);
    const Tensor frames = make_stimulus(spec.stimulus, seed, t0, t1);
    for (size_t q = 0; q < which.size(); ++q)
      add_drives(K[q].view(), frames.data<float>(), t1 - t0, P, s[q].data(), T, t0);
  }
  for (size_t q = 0; q < which.size(); ++q) {
    const std::vector<double> g = signal_from_drives(K[q].view(), s[q].data(), T, nullptr, nullptr);
    detail::calibrate(cells[which[q]], g, skip, spec, uint32_t(which[q]));
  }
}

// Rates [n_cells, T] and spikes [trials, n_cells, T] for one stimulus stretch.
void respond(const GeneratorSpec& spec, const std::vector<CellTruth>& cells, const Tensor& stim,
             Stream spikes, int trials, Tensor& rate, Tensor& counts) {
  const int64_t n = int64_t(cells.size()), T = stim.dim(0);
  rate = Tensor::empty(Shape{n, T});
  counts = Tensor::empty(Shape{trials, n, T}, DType::I32);
  for (int64_t i = 0; i < n; ++i) {
    const Tensor r = noise_free_rate(cells[size_t(i)], stim);
    std::copy(r.data<float>(), r.data<float>() + T, rate.data<float>() + i * T);
    for (int k = 0; k < trials; ++k) {
      const Tensor c =
          sample_spikes(r, spec.spikes, stream_seed(spec.seed, spikes, uint32_t(i), uint32_t(k)),
                        spec.dt, cells[size_t(i)].lif_gain);
      std::copy(c.data<int32_t>(), c.data<int32_t>() + T, counts.data<int32_t>() + (k * n + i) * T);
    }
  }
}

}  // namespace

CellTruth calibrate_cell(const GeneratorSpec& spec, size_t i) {
  detail::check_run(spec);
  if (i >= spec.cells.size())
    throw ConfigError(concat("calibrate_cell: cell ", i, " of ", spec.cells.size()));
  std::vector<CellTruth> cells(spec.cells.size());
  cells[i] = build_cell(spec.cells[i], spec.stimulus.height, spec.stimulus.width, spec.dt);
  calibrate_all(spec, cells, {i});
  return cells[i];
}

Recording generate(const GeneratorSpec& spec) {
  detail::check_run(spec);
  Recording rec;
  rec.spec = spec;
  std::vector<size_t> all;
  for (size_t i = 0; i < spec.cells.size(); ++i) {
    rec.truth.push_back(
        build_cell(spec.cells[i], spec.stimulus.height, spec.stimulus.width, spec.dt));
    all.push_back(i);
  }
  calibrate_all(spec, rec.truth, all);
  rec.stimulus =
      make_stimulus(spec.stimulus, stream_seed(spec.seed, Stream::TrainStimulus), 0, spec.frames);
  Tensor counts;
  respond(spec, rec.truth, rec.stimulus, Stream::TrainSpikes, 1, rec.rate, counts);
  rec.spikes = counts.view(Shape{int64_t(spec.cells.size()), spec.frames});
  if (spec.test_frames > 0) {
    rec.test_stimulus = make_stimulus(spec.stimulus, stream_seed(spec.seed, Stream::TestStimulus),
                                      0, spec.test_frames);
    respond(spec, rec.truth, rec.test_stimulus, Stream::TestSpikes, spec.test_trials, rec.test_rate,
            rec.test_spikes);
  }
  rec.ground_truth = truth_to_json(rec.truth, spec.seed, spec.dt);
  return rec;
}

}  // namespace dynsim::retina