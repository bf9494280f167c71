// The retina generator (models/retina/generator.h): the reference layout and the notes' filter
// values, the causal convolution (impulse responses), nonlinearities, lattices, calibration of
// the mean rate, Poisson / Bernoulli / LIF spike statistics, determinism by (seed, index),
// populations with ON and OFF cells, natural-image sequences, and the files: recording folders
// round-trip bit for bit and are written atomically, bad inputs are DataErrors naming the
// file, and both HDF5 layouts round-trip when this build has HDF5.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include "engine/io/hdf5_io.h"
#include "engine/io/npy.h"
#include "models/retina/generator.h"

using namespace dynsim;
using namespace dynsim::retina;
namespace fs = std::filesystem;

namespace {

struct ScratchDir {
  fs::path path = fs::temp_directory_path() / ("dynsim_test_rgen_" + std::to_string(::getpid()));
  ScratchDir() { fs::create_directories(path); }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
fs::path scratch(const std::string& name) {
  static const ScratchDir dir;
  fs::remove_all(dir.path / name);
  return dir.path / name;
}
size_t entries(const fs::path& d) {
  return size_t(std::distance(fs::directory_iterator(d), fs::directory_iterator()));
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

double mean_of(const Tensor& t) {
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += t.item(i);
  return s / double(t.numel());
}

// A small two-cell run (OFF reference + ON copy) used by the file tests.
GeneratorSpec small_run(uint64_t seed = 7) {
  GeneratorSpec g;
  g.seed = seed;
  g.frames = 3000;
  g.test_frames = 120;
  g.test_trials = 5;
  g.calibration_frames = 20000;
  CellSpec on = reference_cell();
  on.name = "on";
  for (Subunit& u : on.subunits) u.polarity = +1;
  g.cells = {reference_cell(), on};
  return g;
}

const double kNotesFilter[20] = {0,    0,    0,    -.124, -.406, -.527, -.428, -.215, 0,    .155,
                                 .238, .261, .245, .209,  .167,  .127,  .093,  .066,  .046, .031};

}  // namespace

TEST_CASE("retina generator: reference layout and the notes' temporal filter") {
  const std::vector<Subunit> ref = reference_subunits();
  REQUIRE(ref.size() == 4);
  const int rows[4] = {2, 2, 4, 4}, cols[4] = {2, 4, 2, 4};
  for (int j = 0; j < 4; ++j) {
    CHECK(ref[size_t(j)].polarity == -1);
    CHECK(ref[size_t(j)].weight == 1.0);
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x) {
        const bool in = y >= rows[j] && y < rows[j] + 2 && x >= cols[j] && x < cols[j] + 2;
        CHECK(ref[size_t(j)].mask.item(y * 8 + x) == (in ? 1.0 : 0.0));
      }
  }
  const CellTruth c = build_cell(reference_cell(), 8, 8);
  REQUIRE(c.filters.shape() == Shape{4, 20});
  double sq = 0;
  for (int l = 0; l < 20; ++l) {
    for (int j = 0; j < 4; ++j)
      CHECK(std::abs(c.filters.item(j * 20 + l) - kNotesFilter[l]) < 2e-3);
    sq += c.filters.item(l) * c.filters.item(l);
  }
  CHECK(sq == doctest::Approx(1.0).epsilon(1e-6));
  const std::vector<double> on = temporal_filter(TemporalSpec{}, +1);
  for (int l = 0; l < 20; ++l)
    CHECK(on[size_t(l)] == doctest::Approx(-kNotesFilter[l]).epsilon(0.02).scale(1e-3));
  TemporalSpec late;
  late.delay_frames = 30;
  CHECK_THROWS_AS(temporal_filter(late, -1), ConfigError);
}

TEST_CASE("retina generator: causal convolution, impulse responses and the output stage") {
  // One bright frame at t0: s_j(t0) = mask sum, so x_j(t) = k_j[t - t0] * mask sum, 0 before t0.
  CellSpec spec = reference_cell();
  spec.subunits[1].polarity = +1;  // an ON subunit: the filter changes sign
  spec.subunits.push_back(Subunit{gaussian_mask(8, 8, 1.3, 5.7, 1.1), 0.5, -1, TemporalSpec{}});
  CellTruth c = build_cell(spec, 8, 8);
  c.gain = 3, c.theta = 0.25;
  const int64_t T = 40, t0 = 7;
  Tensor stim = Tensor::zeros(Shape{T, 8, 8});
  for (int p = 0; p < 64; ++p) stim.set(t0 * 64 + p, 1.0);
  const CellTrace tr = trace_cell(c, stim);
  for (int64_t j = 0; j < 5; ++j) {
    double msum = 0;
    for (int p = 0; p < 64; ++p) msum += c.masks.item(j * 64 + p);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t lag = t - t0;
      const double want = lag >= 0 && lag < 20 ? c.filters.item(j * 20 + lag) * msum : 0.0;
      CHECK(tr.x.item(j * T + t) == doctest::Approx(want).epsilon(1e-12).scale(1e-12));
      CHECK(tr.s.item(j * T + t) == doctest::Approx(t == t0 ? msum : 0.0).epsilon(1e-12));
      CHECK(tr.b.item(j * T + t) ==
            doctest::Approx(std::max(0.0, want)).epsilon(1e-12).scale(1e-12));
    }
  }
  CHECK(tr.x.item(1 * T + t0 + 5) > 0);  // ON subunit: positive after a bright flash
  CHECK(tr.x.item(0 * T + t0 + 5) < 0);  // OFF subunit: negative
  const Tensor r = noise_free_rate(c, stim);
  for (int64_t t = 0; t < T; ++t) {
    double g = 0;
    for (int64_t j = 0; j < 5; ++j) g += c.weights[size_t(j)] * tr.b.item(j * T + t);
    CHECK(tr.g.item(t) == doctest::Approx(g).epsilon(1e-12));
    CHECK(r.item(t) == doctest::Approx(3 * std::max(0.0, g - 0.25)).epsilon(1e-6));
  }
}

TEST_CASE("retina generator: nonlinearities, lattices, jitter and mixed sizes") {
  Nonlinearity f;
  CHECK(f(-1) == 0);
  CHECK(f(1.5) == 1.5);
  f.kind = NlKind::ThresholdQuadratic, f.threshold = 0.5;
  CHECK(f(0.4) == 0);
  CHECK(f(2.5) == doctest::Approx(4.0));
  f = Nonlinearity{NlKind::Sublinear, 0, 2, 0, 1};
  CHECK(f(0.5) == doctest::Approx(2 * std::sqrt(0.25)));
  CHECK(f(-3) == 0);
  f = Nonlinearity{NlKind::Superlinear, 0, 1, 3, 1};
  CHECK(f(2) == doctest::Approx(8.0));
  f = Nonlinearity{NlKind::Softplus, 0, 1, 0, 2};
  CHECK(f(0.3) == doctest::Approx(std::log1p(std::exp(0.6)) / 2));
  CHECK(f(100) == doctest::Approx(100));
  f = Nonlinearity{NlKind::Nl2, 0, 0.5, 0, 1};
  CHECK(f(0.3) == doctest::Approx(0.5 - std::sqrt(0.25 - 0.09)));
  CHECK(f(9) == doctest::Approx(0.5));
  f.kind = NlKind::Nl3;
  CHECK(f(0.3) == doctest::Approx(std::sqrt(0.25 - 0.04)));
  CHECK(nl_kind("threshold_quadratic") == NlKind::ThresholdQuadratic);
  CHECK_THROWS_WITH_AS(nl_kind("cubic"), doctest::Contains("relu, threshold_quadratic"),
                       ConfigError);

  LatticeSpec l;
  l.rows = 2, l.cols = 3, l.spacing = 5, l.offset_y = 3, l.offset_x = 3, l.sigma = 1;
  std::vector<Subunit> a = lattice_subunits(l);
  REQUIRE(a.size() == 6);
  // Peak 1 at the centre (3 + 5, 3 + 5 * 2) of subunit 5.
  CHECK(a[5].mask.item(8 * 16 + 13) == doctest::Approx(1.0));
  l.jitter_px = 1, l.sigma_jitter = 0.3, l.seed = 11;
  const std::vector<Subunit> j1 = lattice_subunits(l), j2 = lattice_subunits(l);
  l.seed = 12;
  const std::vector<Subunit> j3 = lattice_subunits(l);
  CHECK(same_bits(j1[2].mask, j2[2].mask));
  CHECK_FALSE(same_bits(j1[2].mask, j3[2].mask));
  CHECK_FALSE(same_bits(j1[2].mask, a[2].mask));
  l = LatticeSpec{};
  l.sigma = 2.5, l.rows = 1, l.cols = 1, l.polarity = +1;
  const std::vector<Subunit> big = lattice_subunits(l);
  a.insert(a.end(), big.begin(), big.end());  // mixed sizes and polarities in one cell
  CellSpec cs;
  cs.subunits = a;
  const CellTruth c = build_cell(cs, 16, 16);
  CHECK(c.masks.dim(0) == 7);
  CHECK(c.polarity[6] == 1);
  CHECK(c.filters.item(6 * 20 + 5) == doctest::Approx(-c.filters.item(5)));
  // Masks must fit the stimulus and be >= 0.
  CHECK_THROWS_WITH_AS(build_cell(cs, 8, 8), doctest::Contains("mask"), ConfigError);
  cs.subunits[0].mask.set(3, -0.1);
  CHECK_THROWS_WITH_AS(build_cell(cs, 16, 16), doctest::Contains("negative"), ConfigError);
}

TEST_CASE("retina generator: calibration to a target rate, and the paper's output stage") {
  GeneratorSpec g;
  g.seed = 3;
  g.frames = 100000;
  g.test_frames = 0;
  g.cells = {reference_cell(), paper_cell()};
  LatticeSpec l;
  l.height = l.width = 8, l.rows = l.cols = 2, l.spacing = 2.5, l.offset_y = l.offset_x = 2.5;
  l.sigma = 0.8;
  CellSpec q;
  q.name = "lattice";
  q.subunits = lattice_subunits(l);
  q.nonlinearity.kind = NlKind::ThresholdQuadratic;
  q.output.target_rate_hz = 20;
  q.output.theta_quantile = 0.7;
  g.cells.push_back(q);
  const Recording rec = generate(g);
  REQUIRE(rec.rate.shape() == Shape{3, 100000});
  // The training stretch is a fresh stimulus stream: its mean rate is within 5% of the target.
  CHECK(mean_of(rec.rate.slice(0, 1)) == doctest::Approx(10.0).epsilon(0.05));
  CHECK(mean_of(rec.rate.slice(2, 3)) == doctest::Approx(20.0).epsilon(0.05));
  CHECK(rec.truth[0].theta == 2.5);
  CHECK(rec.truth[0].calibration_rate_hz == doctest::Approx(10.0));
  CHECK(rec.truth[2].active_fraction == doctest::Approx(0.3).epsilon(0.01));
  // The paper's A = 2, theta = 2.5: about 0.36 Hz, r > 0 in about 21% of frames (notes §2.1).
  CHECK(rec.truth[1].gain == 2.0);
  CHECK(rec.truth[1].calibration_rate_hz == doctest::Approx(0.365).epsilon(0.08));
  CHECK(rec.truth[1].active_fraction == doctest::Approx(0.21).epsilon(0.05));
  CHECK(mean_of(rec.rate.slice(1, 2)) == doctest::Approx(0.365).epsilon(0.1));
  // The recorded spikes follow the rate: sum of counts ~ sum of r dt.
  double want = 0, got = 0;
  for (int64_t t = 0; t < 100000; ++t) want += rec.rate.item(t) * g.dt, got += rec.spikes.item(t);
  CHECK(got == doctest::Approx(want).epsilon(0.03));
  // theta above every value: no rate to scale.
  g.cells = {reference_cell()};
  g.cells[0].output.theta = 100;
  g.frames = 10;
  g.calibration_frames = 1000;
  CHECK_THROWS_WITH_AS(generate(g), doctest::Contains("above every generator value"), ConfigError);
}

TEST_CASE("retina generator: Poisson and Bernoulli spike statistics") {
  const int64_t T = 200000;
  for (double hz : {15.0, 90.0}) {
    Tensor r = Tensor::empty(Shape{T});
    r.fill(hz);
    const Tensor c = sample_spikes(r, SpikeSpec{}, 42);
    double m = 0, m2 = 0;
    for (int64_t t = 0; t < T; ++t) m += c.item(t), m2 += c.item(t) * c.item(t);
    m /= double(T);
    const double var = m2 / double(T) - m * m;
    CHECK(m == doctest::Approx(hz / 30).epsilon(0.015));
    CHECK(var / m == doctest::Approx(1.0).epsilon(0.03));
  }
  // Bernoulli (the authors' rand < r dt): at most one spike per frame, probability min(1, r dt).
  SpikeSpec b;
  b.model = SpikeModel::Bernoulli;
  Tensor r = Tensor::empty(Shape{T});
  for (int64_t t = 0; t < T; ++t) r.set(t, t % 2 ? 9.0 : 120.0);  // p = 0.3 and 4 (clipped to 1)
  const Tensor c = sample_spikes(r, b, 5);
  int64_t ones = 0, max = 0;
  for (int64_t t = 0; t < T; ++t) {
    max = std::max<int64_t>(max, int64_t(c.item(t)));
    if (t % 2 == 0)
      CHECK(c.item(t) == 1);
    else
      ones += int64_t(c.item(t));
  }
  CHECK(max == 1);
  CHECK(double(ones) / double(T / 2) == doctest::Approx(0.3).epsilon(0.02));
  b.bernoulli_draws = 2;
  const Tensor c2 = sample_spikes(r, b, 5);
  for (int64_t t = 0; t < T; t += 2) CHECK(c2.item(t) == 2);
  // Same stream: the same counts; another stream: different ones.
  CHECK(same_bits(sample_spikes(r, SpikeSpec{}, 9), sample_spikes(r, SpikeSpec{}, 9)));
  CHECK_FALSE(same_bits(sample_spikes(r, SpikeSpec{}, 9), sample_spikes(r, SpikeSpec{}, 10)));
  r.set(5, std::nan(""));
  CHECK_THROWS_WITH_AS(sample_spikes(r, SpikeSpec{}, 1), doctest::Contains("frame 5"), DataError);
}

TEST_CASE("retina generator: LIF spikes are calibrated to the target rate") {
  GeneratorSpec g;
  g.frames = 20000;
  g.calibration_frames = 20000;
  g.test_frames = 60;
  g.test_trials = 3;
  g.spikes.model = SpikeModel::Lif;
  g.spikes.lif.refractory_ms = 2;
  g.spikes.lif.noise_mv = 1;
  g.cells = {reference_cell()};
  const Recording rec = generate(g);
  CHECK(rec.truth[0].lif_gain > 0);
  const double hz = mean_of(rec.spikes) / g.dt;
  CHECK(hz == doctest::Approx(10.0).epsilon(0.1));
  // 34 sub-steps of 0.98 ms per frame; a spike and 3 refractory steps: at most 9 per frame.
  int64_t most = 0;
  for (int64_t t = 0; t < g.frames; ++t)
    most = std::max<int64_t>(most, int64_t(rec.spikes.item(t)));
  CHECK(most <= 9);
  CHECK(most >= 2);
  // The LIF fires where the rate is high, not elsewhere.
  double on = 0, off = 0;
  int64_t n_on = 0;
  for (int64_t t = 0; t < g.frames; ++t) {
    if (rec.rate.item(t) > 0)
      on += rec.spikes.item(t), ++n_on;
    else
      off += rec.spikes.item(t);
  }
  CHECK(on / double(n_on) > 20 * off / double(g.frames - n_on) + 1e-9);
}

TEST_CASE("retina generator: streams depend only on (seed, index)") {
  StimulusSpec s;
  for (StimulusKind k : {StimulusKind::Checkerboard, StimulusKind::WhiteNoise}) {
    s.kind = k;
    s.height = s.width =
        k == StimulusKind::Checkerboard ? 40 : 8;  // 40x40: 13 Philox calls a frame
    const Tensor a = make_stimulus(s, 99, 0, 1000), b = make_stimulus(s, 99, 500, 1000);
    CHECK(std::memcmp(a.data<float>() + 500 * s.height * s.width, b.raw(), b.nbytes()) == 0);
    CHECK_FALSE(same_bits(make_stimulus(s, 98, 500, 1000), b));
    double m = 0, sq = 0;
    for (int64_t i = 0; i < a.numel(); ++i) m += a.item(i), sq += a.item(i) * a.item(i);
    CHECK(std::abs(m / double(a.numel())) < 0.01);
    CHECK(std::sqrt(sq / double(a.numel())) == doctest::Approx(0.5).epsilon(0.01));
  }
  GeneratorSpec g = small_run();
  const Recording a = generate(g), b = generate(g);
  CHECK(same_bits(a.stimulus, b.stimulus));
  CHECK(same_bits(a.spikes, b.spikes));
  CHECK(same_bits(a.rate, b.rate));
  CHECK(same_bits(a.test_spikes, b.test_spikes));
  CHECK(a.ground_truth == b.ground_truth);
  g.seed = 8;
  const Recording c = generate(g);
  CHECK_FALSE(same_bits(a.stimulus, c.stimulus));
  CHECK_FALSE(same_bits(a.spikes, c.spikes));
  // The test segment: the same frames in every trial, independent draws, another stream.
  REQUIRE(a.test_spikes.shape() == Shape{5, 2, 120});
  CHECK_FALSE(std::memcmp(a.test_spikes.data<int32_t>(), a.test_spikes.data<int32_t>() + 240,
                          240 * 4) == 0);
  CHECK_FALSE(std::memcmp(a.test_stimulus.raw(), a.stimulus.raw(), a.test_stimulus.nbytes()) == 0);
  CHECK(same_bits(a.test_rate.slice(0, 1).view(Shape{120}).clone(),
                  noise_free_rate(a.truth[0], a.test_stimulus)));
  // A longer run starts with the same frames and spikes (nothing depends on the length).
  g.seed = 7;
  g.frames = 4000;
  const Recording d = generate(g);
  CHECK(std::memcmp(d.stimulus.raw(), a.stimulus.raw(), a.stimulus.nbytes()) == 0);
  CHECK(std::memcmp(d.spikes.data<int32_t>(), a.spikes.data<int32_t>(), 3000 * 4) == 0);
}

TEST_CASE("retina generator: a population of ON and OFF cells shares the stimulus") {
  GeneratorSpec g;
  g.frames = 30000;
  g.calibration_frames = 20000;
  g.test_frames = 0;
  g.stimulus.height = g.stimulus.width = 16;
  LatticeSpec l;
  l.rows = l.cols = 2, l.spacing = 3, l.offset_y = l.offset_x = 3, l.sigma = 1;
  CellSpec off;
  off.name = "off";
  off.subunits = lattice_subunits(l);
  l.polarity = +1, l.offset_y = l.offset_x = 9;
  CellSpec on;
  on.name = "on";
  on.subunits = lattice_subunits(l);
  g.cells = {off, on};
  const Recording rec = generate(g);
  REQUIRE(rec.spikes.shape() == Shape{2, 30000});
  // STA at lag 5 (the filter's extreme): negative over the OFF cell's subunits, positive for ON.
  const Tensor s_off =
      spike_triggered_average(rec.stimulus, rec.spikes.slice(0, 1).view(Shape{30000}), 20);
  const Tensor s_on =
      spike_triggered_average(rec.stimulus, rec.spikes.slice(1, 2).view(Shape{30000}), 20);
  CHECK(s_off.item(5 * 256 + 3 * 16 + 3) < -0.05);
  CHECK(s_on.item(5 * 256 + 9 * 16 + 9) > 0.05);
  CHECK(std::abs(s_on.item(5 * 256 + 3 * 16 + 3)) < 0.03);  // the ON cell ignores the OFF's place
}

TEST_CASE("retina generator: natural-image sequences") {
  // A 64x48 image with structure at several scales, written as PNG and as .npy.
  const int IW = 64, IH = 48;
  std::vector<unsigned char> px(size_t(IW * IH));
  for (int y = 0; y < IH; ++y)
    for (int x = 0; x < IW; ++x)
      px[size_t(y * IW + x)] = (unsigned char)(127 + 60 * std::sin(x * 0.21) * std::cos(y * 0.13) +
                                               50 * ((x / 7 + y / 5) % 2));
  const fs::path png = scratch("scene.png"), npy = scratch("scene.npy");
  REQUIRE(stbi_write_png(png.c_str(), IW, IH, 1, px.data(), IW) != 0);
  const Tensor im = load_grey_image(png.string());
  REQUIRE(im.shape() == Shape{IH, IW});
  CHECK(im.item(5 * IW + 9) == doctest::Approx(px[5 * IW + 9] / 255.0).epsilon(1e-6));
  save_npy(npy.string(), im);
  CHECK(same_bits(load_grey_image(npy.string()), im));

  StimulusSpec s;
  s.kind = StimulusKind::NaturalImages;
  s.images = {im};
  s.image_sources = {png.string()};
  s.flash_frames = 4, s.gap_frames = 2, s.crop_scale = 2;
  const Tensor a = make_stimulus(s, 5, 0, 6000), b = make_stimulus(s, 5, 3001, 6000);
  CHECK(std::memcmp(a.data<float>() + 3001 * 64, b.raw(), b.nbytes()) == 0);
  // Flashes of 4 identical frames, then 2 grey frames; contrast matched over the flashes.
  double m = 0, sq = 0;
  int64_t n = 0;
  for (int64_t t = 0; t < 6000; ++t) {
    const float* f = a.data<float>() + t * 64;
    if (t % 6 >= 4) {
      CHECK(*std::max_element(f, f + 64) == 0.0f);
      CHECK(*std::min_element(f, f + 64) == 0.0f);
    } else {
      if (t % 6) CHECK(std::memcmp(f, f - 64, 64 * 4) == 0);
      for (int p = 0; p < 64; ++p) m += f[p], sq += double(f[p]) * f[p], ++n;
    }
  }
  CHECK(std::abs(m / double(n)) < 0.05);
  CHECK(std::sqrt(sq / double(n)) == doctest::Approx(0.5).epsilon(0.15));
  s.match_per_crop = true;
  const Tensor c = make_stimulus(s, 5, 0, 12);
  for (int64_t t : {0, 6}) {
    double cm = 0, cs = 0;
    for (int p = 0; p < 64; ++p)
      cm += c.item(t * 64 + p), cs += c.item(t * 64 + p) * c.item(t * 64 + p);
    CHECK(std::abs(cm / 64) < 1e-6);
    CHECK(std::sqrt(cs / 64) == doctest::Approx(0.5).epsilon(1e-5));
  }
  // The images come back from the config by path; a run regenerates identically.
  GeneratorSpec g;
  g.stimulus = s;
  g.frames = 500, g.test_frames = 0, g.calibration_frames = 5000;
  g.cells = {reference_cell()};
  const Recording r1 = generate(g);
  const Recording r2 = generate(spec_from_json(spec_to_json(g), "spec"));
  CHECK(same_bits(r1.stimulus, r2.stimulus));
  CHECK(same_bits(r1.spikes, r2.spikes));
  s.images[0] = Tensor::zeros(Shape{4, 4});
  CHECK_THROWS_WITH_AS(make_stimulus(s, 1, 0, 1), doctest::Contains("smaller than a crop"),
                       ConfigError);

  const std::vector<std::string> sk = skimage_image_paths();
  if (sk.empty()) {
    MESSAGE(
        "python3-skimage is not installed: skipping its CC0 images (apt-get install "
        "python3-skimage)");
  } else {
    const Tensor cam = load_grey_image(sk[0]);
    CHECK(cam.rank() == 2);
    CHECK(cam.dim(0) >= 64);
  }
  CHECK_THROWS_AS(load_grey_image(scratch("none.png").string()), NoInputError);
  const fs::path empty = scratch("empty.png");
  std::ofstream(empty).close();
  CHECK_THROWS_WITH_AS(load_grey_image(empty.string()), doctest::Contains("empty.png: empty"),
                       DataError);
}

TEST_CASE("retina generator: recording folders round-trip bit for bit") {
  const Recording a = generate(small_run());
  const fs::path d = scratch("recs") / "rec";
  write_recording(d.string(), a);  // creates the parent folder too
  for (const char* f : {"stimulus.npy", "spikes.npy", "rate.npy", "test_stimulus.npy",
                        "test_spikes.npy", "test_rate.npy", "ground_truth.json", "config.json"})
    CHECK(fs::is_regular_file(d / f));
  // int8 checkerboard, u8 counts (1 byte per frame and pixel).
  CHECK(fs::file_size(d / "stimulus.npy") == 128 + 3000 * 64);
  CHECK(fs::file_size(d / "spikes.npy") == 128 + 2 * 3000);
  const Recording b = read_recording(d.string());
  CHECK(same_bits(a.stimulus, b.stimulus));
  CHECK(same_bits(a.spikes, b.spikes));
  CHECK(same_bits(a.rate, b.rate));
  CHECK(same_bits(a.test_stimulus, b.test_stimulus));
  CHECK(same_bits(a.test_spikes, b.test_spikes));
  CHECK(same_bits(a.test_rate, b.test_rate));
  CHECK(a.ground_truth == b.ground_truth);
  CHECK(spec_to_json(a.spec) == spec_to_json(b.spec));
  REQUIRE(b.truth.size() == 2);
  CHECK(same_bits(a.truth[1].masks, b.truth[1].masks));
  CHECK(same_bits(a.truth[1].filters, b.truth[1].filters));
  CHECK(b.truth[1].gain == a.truth[1].gain);
  // The folder's config regenerates the same run.
  const Recording c = generate(b.spec);
  CHECK(same_bits(a.spikes, c.spikes));
  // White noise is stored as f32; an existing folder needs overwrite.
  GeneratorSpec w = small_run();
  w.stimulus.kind = StimulusKind::WhiteNoise;
  w.calibration_frames = 5000;
  const Recording wn = generate(w);
  CHECK_THROWS_WITH_AS(write_recording(d.string(), wn), doctest::Contains("already exists"),
                       IoError);
  CHECK(same_bits(read_recording(d.string()).stimulus, a.stimulus));
  write_recording(d.string(), wn, true);
  CHECK(same_bits(read_recording(d.string()).stimulus, wn.stimulus));
  CHECK(entries(d.parent_path()) == 1);  // no temporary or old folder left
}

TEST_CASE("retina generator: bad recordings and files are clear errors and write nothing") {
  const Recording good = generate(small_run());
  const fs::path parent = scratch("bad");
  fs::create_directories(parent);
  Recording r = good;
  r.spikes = Tensor::zeros(Shape{2, 2999}, DType::I32);
  CHECK_THROWS_WITH_AS(write_recording((parent / "a").string(), r), doctest::Contains("2999"),
                       DataError);
  r = good;
  r.rate = good.rate.clone();
  r.rate.set(17, std::nan(""));
  CHECK_THROWS_WITH_AS(write_recording((parent / "a").string(), r), doctest::Contains("rate"),
                       DataError);
  r = good;
  r.test_spikes = Tensor::zeros(Shape{5, 2, 119}, DType::I32);
  CHECK_THROWS_WITH_AS(write_recording((parent / "a").string(), r),
                       doctest::Contains("test_spikes"), DataError);
  CHECK(entries(parent) == 0);

  // Reading: each damage names the file.
  const fs::path d = parent / "rec";
  auto fresh = [&] {
    fs::remove_all(d);
    write_recording(d.string(), good);
  };
  fresh();
  save_npy((d / "spikes.npy").string(), Tensor::zeros(Shape{2, 2999}, DType::I32));
  CHECK_THROWS_WITH_AS(read_recording(d.string()), doctest::Contains("spikes.npy: 2999 frames"),
                       DataError);
  fresh();
  std::ofstream(d / "stimulus.npy", std::ios::trunc).close();
  CHECK_THROWS_WITH_AS(read_recording(d.string()), doctest::Contains("stimulus.npy: empty file"),
                       DataError);
  fresh();
  Tensor bad_rate = good.rate.clone();
  bad_rate.set(4, std::nan(""));
  save_npy((d / "rate.npy").string(), bad_rate);
  CHECK_THROWS_WITH_AS(read_recording(d.string()), doctest::Contains("rate.npy: NaN"), DataError);
  fresh();
  std::ofstream(d / "config.json", std::ios::trunc) << "{\"cells\": [";
  CHECK_THROWS_WITH_AS(read_recording(d.string()), doctest::Contains("config.json: not valid JSON"),
                       DataError);
  CHECK_THROWS_AS(read_recording((parent / "missing").string()), NoInputError);
}

TEST_CASE("retina generator: HDF5 layouts (Yan et al. and deep-retina)") {
  const Recording a = generate(small_run());
  const fs::path d = scratch("h5");
  if (!hdf5_available()) {
    MESSAGE("this build has no HDF5: checking only that the HDF5 writers refuse cleanly");
    CHECK_THROWS_AS(write_yan_hdf5((d / "yan").string(), a), NotImplemented);
    CHECK_THROWS_AS(read_deep_retina_hdf5((d / "dr.h5").string()), NotImplemented);
    CHECK_FALSE(fs::exists(d / "yan"));
    return;
  }
  fs::create_directories(d);
  write_yan_hdf5((d / "yan").string(), a, 1);
  for (const char* f : {"train.hdf5", "test.hdf5", "config.hdf5"})
    CHECK(fs::is_regular_file(d / "yan" / f));
  const auto train = read_hdf5((d / "yan" / "train.hdf5").string());
  CHECK(train.at("y").shape() == Shape{3000});
  CHECK(read_hdf5((d / "yan" / "test.hdf5").string()).at("y").shape() == Shape{120, 5});
  const Recording y = read_yan_hdf5((d / "yan").string());
  CHECK(same_bits(y.stimulus, a.stimulus));
  CHECK(same_bits(y.spikes, a.spikes.slice(1, 2)));
  CHECK(same_bits(y.rate, a.rate.slice(1, 2)));
  CHECK(same_bits(y.test_stimulus, a.test_stimulus));
  REQUIRE(y.test_spikes.shape() == Shape{5, 1, 120});
  for (int64_t k = 0; k < 5; ++k)
    CHECK(std::memcmp(y.test_spikes.data<int32_t>() + k * 120,
                      a.test_spikes.data<int32_t>() + (k * 2 + 1) * 120, 120 * 4) == 0);
  REQUIRE(y.truth.size() == 1);
  CHECK(y.truth[0].name == "on");
  CHECK(same_bits(y.truth[0].filters, a.truth[1].filters));

  write_deep_retina_hdf5((d / "dr.h5").string(), a);
  const auto m = read_hdf5((d / "dr.h5").string());
  CHECK(m.at("train/stas/cell01").shape() == Shape{20, 8, 8});
  CHECK(m.at("test/repeats/cell02").shape() == Shape{5, 120});
  CHECK(m.at("train/response/firing_rate_10ms").shape() == Shape{2, 3000});
  const Recording dr = read_deep_retina_hdf5((d / "dr.h5").string());
  CHECK(same_bits(dr.stimulus, a.stimulus));
  CHECK(same_bits(dr.spikes, a.spikes));
  CHECK(same_bits(dr.rate, a.rate));
  CHECK(same_bits(dr.test_spikes, a.test_spikes));
  CHECK(same_bits(dr.test_rate, a.test_rate));
  CHECK(dr.ground_truth == a.ground_truth);
  CHECK_THROWS_WITH_AS(write_deep_retina_hdf5((d / "dr.h5").string(), a),
                       doctest::Contains("exists"), IoError);

  // Bad files: y shorter than X, an empty file, NaN in the stimulus.
  write_hdf5((d / "yan" / "train.hdf5").string(),
             {{"X", a.stimulus}, {"y", Tensor::zeros(Shape{2999}, DType::I32)}, {"r", a.rate}});
  CHECK_THROWS_WITH_AS(read_yan_hdf5((d / "yan").string()),
                       doctest::Contains("train.hdf5: y [2999]"), DataError);
  std::ofstream(d / "empty.h5").close();
  CHECK_THROWS_WITH_AS(read_deep_retina_hdf5((d / "empty.h5").string()),
                       doctest::Contains("empty.h5: empty"), DataError);
  Tensor X = a.stimulus.clone();
  X.set(100, std::nan(""));
  write_hdf5((d / "nan.h5").string(), {{"train/stimulus", X}, {"train/response/binned", a.spikes}});
  CHECK_THROWS_WITH_AS(read_deep_retina_hdf5((d / "nan.h5").string()),
                       doctest::Contains("nan.h5:train/stimulus: NaN"), DataError);
  Recording r = a;
  r.spikes = Tensor::zeros(Shape{2, 10}, DType::I32);
  CHECK_THROWS_AS(write_yan_hdf5((d / "yan2").string(), r), DataError);
  CHECK_THROWS_AS(write_deep_retina_hdf5((d / "dr2.h5").string(), r), DataError);
  CHECK_FALSE(fs::exists(d / "yan2"));
  CHECK_FALSE(fs::exists(d / "dr2.h5"));
}
