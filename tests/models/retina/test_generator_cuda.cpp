// The retina generator's portable streams and its CUDA twin (generator_cuda.cu). On the CPU:
// portable_exp against std::exp (within 1 ulp), the portable powers and softplus, white noise
// built from rng::normal's portable draws (mean 0, sd c, independent pixels, reproducible),
// Poisson counts with the right pmf, mean and variance (also beyond lam = 500), and the
// Context overloads on a CPU context equal to the plain functions. The gpu suite (Skipped
// without a device) checks CPU vs CUDA bit for bit: checkerboard and white-noise frames,
// Poisson and Bernoulli counts, noise-free rates for every nonlinearity, and whole runs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "engine/core/context.h"
#include "engine/core/device.h"
#include "engine/core/rng.h"
#include "models/retina/generator.h"

using namespace dynsim;
using namespace dynsim::retina;

namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

double ulp_of(double x) {
  const double a = std::fabs(x);
  return std::nextafter(a, INFINITY) - a;
}

bool no_device() {
  if (cuda_device_count() > 0) return false;
  MESSAGE("SKIPPED: no CUDA device");
  return true;
}

Context cuda_context() {
  ContextOptions o;
  o.device = Device::Cuda;
  return Context(o);
}

// Rates in Hz with zeros, the Bernoulli p > 1 range and (optionally) lam = r dt > 500.
Tensor test_rates(int64_t T, bool huge) {
  Tensor r = Tensor::empty(Shape{T});
  std::mt19937_64 g(5);
  std::uniform_real_distribution<double> u(0, 200);
  for (int64_t t = 0; t < T; ++t) r.set(t, t % 7 == 0 ? 0.0 : u(g));
  if (huge)
    for (int64_t t = 0; t < T; t += 11) r.set(t, 16000 + 40 * double(t % 100));  // lam ~ 533-667
  return r;
}

// Cells covering every nonlinearity on a 16x16 stimulus: Gaussian lattices (ON and OFF) and
// boxes, with the output stage as given (no calibration).
std::vector<CellTruth> nl_cells() {
  std::vector<CellTruth> out;
  const NlKind kinds[] = {NlKind::Relu,        NlKind::ThresholdQuadratic, NlKind::Sublinear,
                          NlKind::Superlinear, NlKind::Softplus,           NlKind::Nl2,
                          NlKind::Nl3};
  for (NlKind k : kinds) {
    LatticeSpec l;
    l.rows = 2, l.cols = 3, l.jitter_px = 0.7, l.sigma_jitter = 0.2, l.seed = uint64_t(k) + 3;
    l.polarity = int(k) % 2 ? 1 : -1;
    CellSpec c;
    c.name = nl_name(k);
    c.subunits = lattice_subunits(l);
    c.subunits.push_back(Subunit{box_mask(16, 16, 9, 2, 3, 2), -0.5, 1, TemporalSpec{}});
    c.nonlinearity.kind = k;
    c.nonlinearity.threshold = 0.3, c.nonlinearity.scale = 1.7, c.nonlinearity.beta = 2.5;
    c.nonlinearity.power = k == NlKind::Sublinear ? 0.7 : k == NlKind::Superlinear ? 2.5 : 0;
    CellTruth t = build_cell(c, 16, 16);
    t.gain = 3, t.theta = 0.2;
    out.push_back(t);
  }
  return out;
}

GeneratorSpec run_spec(StimulusKind kind, SpikeModel model) {
  GeneratorSpec g;
  g.seed = 17;
  g.frames = 5000;
  g.test_frames = 150;
  g.test_trials = 4;
  g.calibration_frames = 8000;
  g.stimulus.kind = kind;
  g.spikes.model = model;
  g.spikes.bernoulli_draws = 2;
  CellSpec on = reference_cell();
  on.name = "on";
  for (Subunit& u : on.subunits) u.polarity = +1;
  on.nonlinearity.kind = NlKind::Softplus;
  on.output.calibration = Calibration::ThresholdAndGain;
  g.cells = {reference_cell(), on};
  return g;
}

void check_same_run(const Recording& a, const Recording& b) {
  CHECK(same_bits(a.stimulus, b.stimulus));
  CHECK(same_bits(a.rate, b.rate));
  CHECK(same_bits(a.spikes, b.spikes));
  CHECK(same_bits(a.test_stimulus, b.test_stimulus));
  CHECK(same_bits(a.test_rate, b.test_rate));
  CHECK(same_bits(a.test_spikes, b.test_spikes));
  CHECK(a.ground_truth == b.ground_truth);
}

}  // namespace

TEST_CASE("retina portable math: portable_exp within 1 ulp of std::exp") {
  std::mt19937_64 g(1);
  std::vector<double> xs = {0.0,
                            -0.0,
                            1.0,
                            -1.0,
                            0.5,
                            1e-300,
                            -1e-300,
                            1e-10,
                            0.34657359027997264,
                            -0.34657359027997264,
                            709.78,
                            -708.39,
                            -740.0,
                            -745.1,
                            88.7,
                            -87.3};
  std::uniform_real_distribution<double> wide(-745.1, 709.78), unit(-1, 1);
  for (int i = 0; i < 400000; ++i) xs.push_back(wide(g));
  for (int i = 0; i < 200000; ++i) xs.push_back(unit(g));
  for (int i = 0; i < 100000; ++i) xs.push_back(-std::ldexp(1.0, int(i % 60) - 30) * unit(g));
  double worst = 0, worst_x = 0;
  int64_t differ = 0;
  for (double x : xs) {
    const double want = std::exp(x), got = rng::portable_exp(x);
    const double err = std::fabs(got - want) / ulp_of(want);
    differ += got != want;
    if (err > worst) worst = err, worst_x = x;
  }
  INFO("worst ", worst, " ulp at x = ", worst_x, "; ", differ, " of ", xs.size(), " differ");
  CHECK(worst <= 1.0);
  CHECK(double(differ) < 0.05 * double(xs.size()));  // mostly the correctly rounded value
  CHECK(rng::portable_exp(0.0) == 1.0);
  CHECK(rng::portable_exp(1.0) == doctest::Approx(2.718281828459045).epsilon(1e-16));
  CHECK(rng::portable_exp(710.0) == INFINITY);
  CHECK(rng::portable_exp(INFINITY) == INFINITY);
  CHECK(rng::portable_exp(-746.0) == 0.0);
  CHECK(rng::portable_exp(-INFINITY) == 0.0);
  CHECK(std::isnan(rng::portable_exp(NAN)));
}

TEST_CASE("retina portable math: powers and softplus agree with libm") {
  std::mt19937_64 g(2);
  std::uniform_real_distribution<double> y(-6, 4), p(0.1, 4);
  double worst = 0;
  for (int i = 0; i < 50000; ++i) {
    const double x = std::pow(10.0, y(g)), q = p(g);
    const Nonlinearity f{NlKind::Superlinear, 0, 1, q, 1};
    worst = std::max(worst, std::fabs(f(x) - std::pow(x, q)) / std::pow(x, q));
  }
  CHECK(worst < 2e-14);  // |p ln y| 2^-52 + 1 ulp, |p ln y| < 37
  const Nonlinearity sq{NlKind::Superlinear, 0, 1, 2, 1}, rt{NlKind::Sublinear, 0, 1, 0, 1};
  CHECK(sq(1.1) == 1.1 * 1.1);  // exact shortcuts
  CHECK(rt(2.0) == std::sqrt(2.0));
  for (double beta : {0.5, 1.0, 3.0})
    for (double x = -40; x < 40; x += 0.37) {
      const Nonlinearity sp{NlKind::Softplus, 0, 1, 0, beta};
      const double bx = beta * x;
      const double want = (bx > 30 ? bx : std::log1p(std::exp(bx))) / beta;
      CHECK(sp(x) == doctest::Approx(want).epsilon(1e-14));
    }
}

TEST_CASE("retina white noise: portable draws, mean 0 and sd c, independent pixels") {
  StimulusSpec s;
  s.kind = StimulusKind::WhiteNoise;
  s.contrast = 0.35;
  const int64_t n = 20000, P = 64;
  const Tensor a = make_stimulus(s, 123, 0, n);
  // Pixel 2q is contrast * rng::normal(seed, q): the portable polar draw (CPU == CUDA by
  // test_noise's gpu case), not a libm-dependent one.
  for (int64_t q = 0; q < 5000; ++q)
    REQUIRE(a.item(2 * q) == double(float(0.35 * rng::normal(123, uint64_t(q)))));
  double m = 0, sq = 0, cross = 0, tail = 0;
  const int64_t N = n * P;
  for (int64_t i = 0; i < N; ++i) m += a.item(i);
  m /= double(N);
  for (int64_t i = 0; i < N; ++i) {
    const double v = a.item(i) - m;
    sq += v * v;
    tail += std::fabs(v) > 2 * 0.35;
    if (i % 2 == 0) cross += v * (a.item(i + 1) - m);  // the two values of one polar pair
  }
  const double sd = std::sqrt(sq / double(N - 1)), c = 0.35;
  CHECK(std::fabs(m) < 5 * c / std::sqrt(double(N)));
  CHECK(std::fabs(sd * sd - c * c) < 5 * c * c * std::sqrt(2.0 / double(N - 1)));
  CHECK(std::fabs(tail / double(N) - 0.0455003) < 5 * std::sqrt(0.0455 * 0.9545 / double(N)));
  CHECK(std::fabs(cross / double(N / 2) / (c * c)) < 5 / std::sqrt(double(N / 2)));
  // Reproducible by (seed, frame): a range is the same frames; another seed differs.
  const Tensor b = make_stimulus(s, 123, 7777, 7800);
  CHECK(std::memcmp(a.data<float>() + 7777 * P, b.raw(), b.nbytes()) == 0);
  CHECK_FALSE(same_bits(make_stimulus(s, 124, 7777, 7800), b));
  // An odd frame size: pairs straddle frames, still only a function of the global index.
  s.height = 5, s.width = 7;
  const Tensor o = make_stimulus(s, 9, 0, 40), o2 = make_stimulus(s, 9, 13, 40);
  CHECK(std::memcmp(o.data<float>() + 13 * 35, o2.raw(), o2.nbytes()) == 0);
}

TEST_CASE("retina spikes: Poisson counts follow the pmf, mean and variance") {
  const int64_t T = 200000;
  for (double hz : {1.5, 15.0, 90.0}) {
    CAPTURE(hz);
    Tensor r = Tensor::empty(Shape{T});
    r.fill(hz);
    const Tensor c = sample_spikes(r, SpikeSpec{}, 77);
    const double lam = hz / 30;
    std::vector<int64_t> hist(8, 0);
    double m = 0, m2 = 0;
    for (int64_t t = 0; t < T; ++t) {
      const double k = c.item(t);
      m += k, m2 += k * k;
      if (k < 8) ++hist[size_t(k)];
    }
    m /= double(T);
    const double var = m2 / double(T) - m * m;
    CHECK(std::fabs(m - lam) < 5 * std::sqrt(lam / double(T)));
    CHECK(var / m == doctest::Approx(1.0).epsilon(0.03));
    double pk = std::exp(-lam);
    int checked = 0;
    for (int k = 0; k < 8; ++k) {  // frequencies expected >= 10 times: within 5 binomial se
      CAPTURE(k);
      if (pk * double(T) >= 10) {
        CHECK(std::fabs(double(hist[size_t(k)]) / double(T) - pk) <
              5 * std::sqrt(pk * (1 - pk) / double(T)));
        ++checked;
      }
      pk *= lam / (k + 1);
    }
    CHECK(checked >= 3);
  }
  // Beyond lam = 500 a rounded normal: mean lam, variance lam.
  Tensor r = Tensor::empty(Shape{20000});
  r.fill(18000);  // lam = 600
  const Tensor c = sample_spikes(r, SpikeSpec{}, 78);
  double m = 0, m2 = 0;
  for (int64_t t = 0; t < 20000; ++t) m += c.item(t), m2 += c.item(t) * c.item(t);
  m /= 20000;
  CHECK(std::fabs(m - 600) < 5 * std::sqrt(600.0 / 20000));
  CHECK((m2 / 20000 - m * m) / 600 == doctest::Approx(1.0).epsilon(0.05));
}

TEST_CASE("retina generator: the Context overloads on a CPU context are the plain functions") {
  Context cpu;
  StimulusSpec s;
  for (StimulusKind k : {StimulusKind::Checkerboard, StimulusKind::WhiteNoise}) {
    s.kind = k;
    CHECK(same_bits(make_stimulus(cpu, s, 5, 10, 300), make_stimulus(s, 5, 10, 300)));
  }
  const Tensor r = test_rates(3000, true);
  SpikeSpec b;
  b.model = SpikeModel::Bernoulli;
  b.bernoulli_draws = 3;
  CHECK(same_bits(sample_spikes(cpu, r, SpikeSpec{}, 4), sample_spikes(r, SpikeSpec{}, 4)));
  CHECK(same_bits(sample_spikes(cpu, r, b, 4), sample_spikes(r, b, 4)));
  const CellTruth c = build_cell(reference_cell(), 8, 8);
  const Tensor x = make_stimulus(s, 3, 0, 500);
  CHECK(same_bits(noise_free_rate(cpu, c, x), noise_free_rate(c, x)));
  GeneratorSpec g = run_spec(StimulusKind::Checkerboard, SpikeModel::Poisson);
  g.frames = 500, g.calibration_frames = 2000;
  check_same_run(generate(g, cpu), generate(g));
  // Without a device a CUDA context is refused up front, naming the missing device or backend.
  if (cuda_device_count() == 0) {
    MESSAGE("no CUDA device here: the CPU-vs-CUDA cases run in the gpu suite (Skipped)");
    CHECK_THROWS_WITH_AS(cuda_context(), doctest::Contains("CUDA device(s) found"), Error);
  }
}

// ---- CPU vs CUDA (gpu suite) ------------------------------------------------------------------

TEST_CASE("retina generator CPU vs CUDA: stimulus frames bit for bit" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context gpu = cuda_context();
  struct Case {
    StimulusKind kind;
    int h, w;
    int64_t begin, end;
  };
  const Case cases[] = {{StimulusKind::Checkerboard, 8, 8, 0, 3000},
                        {StimulusKind::Checkerboard, 40, 40, 12345, 12600},  // 13 blocks
                        {StimulusKind::Checkerboard, 5, 7, 3, 400},
                        {StimulusKind::WhiteNoise, 8, 8, 0, 3000},
                        {StimulusKind::WhiteNoise, 5, 7, 13, 420},  // pairs straddle frames
                        {StimulusKind::WhiteNoise, 1, 1, 7, 1000},
                        {StimulusKind::WhiteNoise, 40, 40, 99, 230}};
  for (const Case& c : cases) {
    StimulusSpec s;
    s.kind = c.kind, s.height = c.h, s.width = c.w, s.contrast = 0.3;
    CAPTURE(int(c.kind));
    CAPTURE(c.h);
    const Tensor d = make_stimulus(gpu, s, 0xabcdef12345ull, c.begin, c.end);
    CHECK(d.device() == Device::Cuda);
    CHECK(same_bits(gpu.to_host(d), make_stimulus(s, 0xabcdef12345ull, c.begin, c.end)));
  }
  // Natural images are made on the CPU and copied: the same frames.
  StimulusSpec ni;
  ni.kind = StimulusKind::NaturalImages;
  ni.images = {Tensor::empty(Shape{32, 40})};
  for (int64_t i = 0; i < 32 * 40; ++i) ni.images[0].set(i, std::sin(0.1 * double(i)));
  CHECK(same_bits(gpu.to_host(make_stimulus(gpu, ni, 4, 0, 200)), make_stimulus(ni, 4, 0, 200)));
}

TEST_CASE("retina generator CPU vs CUDA: Poisson and Bernoulli counts bit for bit" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context gpu = cuda_context();
  const Tensor r = test_rates(100000, true);
  const Tensor rd = gpu.to_device(r);
  for (uint64_t stream : {1ull, 0xfeedfacecafebeefull}) {
    CAPTURE(stream);
    const Tensor p = sample_spikes(gpu, rd, SpikeSpec{}, stream);
    CHECK(same_bits(gpu.to_host(p), sample_spikes(r, SpikeSpec{}, stream)));
    for (int draws : {1, 3, 7, 64}) {
      CAPTURE(draws);
      SpikeSpec b;
      b.model = SpikeModel::Bernoulli;
      b.bernoulli_draws = draws;
      CHECK(same_bits(gpu.to_host(sample_spikes(gpu, rd, b, stream)), sample_spikes(r, b, stream)));
    }
  }
  // LIF runs on the CPU and is copied; bad rates are the CPU's errors.
  SpikeSpec lif;
  lif.model = SpikeModel::Lif;
  const Tensor small = test_rates(500, false);
  CHECK(same_bits(gpu.to_host(sample_spikes(gpu, gpu.to_device(small), lif, 3, kFrameDt, 0.5)),
                  sample_spikes(small, lif, 3, kFrameDt, 0.5)));
  Tensor bad = small.clone();
  bad.set(5, -1.0);
  CHECK_THROWS_WITH_AS(sample_spikes(gpu, gpu.to_device(bad), SpikeSpec{}, 1),
                       doctest::Contains("at frame 5"), DataError);
  CHECK_THROWS_AS(sample_spikes(gpu, small, SpikeSpec{}, 1), DataError);  // a host rate
}

TEST_CASE("retina generator CPU vs CUDA: noise-free rates bit for bit" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context gpu = cuda_context();
  StimulusSpec s;
  s.height = s.width = 16;
  for (StimulusKind k : {StimulusKind::Checkerboard, StimulusKind::WhiteNoise}) {
    s.kind = k;
    const Tensor x = make_stimulus(s, 31, 0, 4000), xd = gpu.to_device(x);
    for (const CellTruth& c : nl_cells()) {
      CAPTURE(c.name);
      const Tensor want = noise_free_rate(c, x);
      double mean = 0;
      for (int64_t t = 0; t < want.numel(); ++t) mean += want.item(t);
      CHECK(mean > 0);  // the cell responds: the comparison is not of zeros
      CHECK(same_bits(gpu.to_host(noise_free_rate(gpu, c, xd)), want));
    }
  }
}

TEST_CASE("retina generator CPU vs CUDA: whole runs bit for bit" * doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context gpu = cuda_context();
  for (auto [kind, model] : {std::pair{StimulusKind::Checkerboard, SpikeModel::Poisson},
                             {StimulusKind::WhiteNoise, SpikeModel::Bernoulli},
                             {StimulusKind::WhiteNoise, SpikeModel::Lif}}) {
    CAPTURE(int(kind));
    CAPTURE(int(model));
    const GeneratorSpec g = run_spec(kind, model);
    check_same_run(generate(g, gpu), generate(g));
  }
}
