// Retina CNNs (models/retina/cnn.h): window/target alignment, f64 gradient checks of the whole
// loss (penalties and training noise included) for the paper's net, deep-retina's two-layer net
// and a multi-cell readout, learning a synthetic LN cell, a population, readout refit and
// fine-tuning, and save/load. The data are made here: +-0.5 checkerboards, a known filter, a
// rectifier and Poisson counts from Philox.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/core/rng.h"
#include "models/retina/cnn.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::retina;
using dynsim::test::require_equal;

namespace {

// ---- synthetic data -------------------------------------------------------------------------

Tensor checkerboard(int64_t T, int H, int W, uint64_t seed) {
  Tensor x = Tensor::empty(Shape{T, H, W});
  float* p = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i)
    p[i] = (rng::bits(seed, uint64_t(i), 0).v[0] >> 31) ? 0.5f : -0.5f;
  return x;
}

// Biphasic OFF filter of the paper's generator (notes §2.1), k[lag], lag 0..19.
const double kFilter[20] = {0,    0,    0,    -.124, -.406, -.527, -.428, -.215, 0,    .155,
                            .238, .261, .245, .209,  .167,  .127,  .093,  .066,  .046, .031};

// Noise-free rate (counts/frame) gain * max(0, sign * sum_lag k[lag] s(t - lag) - theta), s the
// sum over the block rows [r0, r0+4) x cols [c0, c0+4); sign +1 is an OFF cell (k is OFF).
std::vector<double> ln_rate(const Tensor& x, int r0, int c0, double sign, double gain,
                            double theta) {
  const int64_t T = x.dim(0), H = x.dim(1), W = x.dim(2);
  std::vector<double> s(size_t(T), 0.0), r(size_t(T), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int i = r0; i < r0 + 4; ++i)
      for (int j = c0; j < c0 + 4; ++j) s[size_t(t)] += x.item((t * H + i) * W + j);
  for (int64_t t = 0; t < T; ++t) {
    double d = 0;
    for (int lag = 0; lag < 20 && lag <= t; ++lag) d += kFilter[lag] * s[size_t(t - lag)];
    r[size_t(t)] = gain * std::max(0.0, sign * d - theta);
  }
  return r;
}

// Poisson counts (Knuth's product of uniforms), one Philox counter per frame.
std::vector<double> poisson(const std::vector<double>& rate, uint64_t seed) {
  std::vector<double> n(rate.size());
  for (size_t t = 0; t < rate.size(); ++t) {
    const double L = std::exp(-rate[t]);
    double p = 1;
    int k = 0;
    for (uint32_t a = 0;; ++a) {
      p *= rng::uniform_f32(rng::bits(seed, t, a).v[0]);
      if (p <= L) break;
      ++k;
    }
    n[t] = k;
  }
  return n;
}

Tensor rows(const std::vector<std::vector<double>>& v) {
  Tensor t = Tensor::empty(Shape{int64_t(v.size()), int64_t(v[0].size())});
  for (size_t j = 0; j < v.size(); ++j)
    for (size_t i = 0; i < v[j].size(); ++i) t.set(int64_t(j * v[j].size() + i), v[j][i]);
  return t;
}

double pearson(const std::vector<double>& a, const std::vector<double>& b) {
  double ma = 0, mb = 0;
  for (size_t i = 0; i < a.size(); ++i) ma += a[i], mb += b[i];
  ma /= double(a.size()), mb /= double(a.size());
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i)
    sab += (a[i] - ma) * (b[i] - mb), saa += (a[i] - ma) * (a[i] - ma),
        sbb += (b[i] - mb) * (b[i] - mb);
  return sab / std::sqrt(saa * sbb);
}

// CC of predict()'s row j against a rate on the frames that have a window.
double held_out_cc(const CnnModel& m, const Tensor& stim, const std::vector<double>& rate, int j) {
  const Tensor p = predict(m, stim, 2);
  const int64_t T = stim.dim(0);
  std::vector<double> a, b;
  for (int64_t t = kHistory; t < T; ++t)
    a.push_back(p.item(j * T + t)), b.push_back(rate[size_t(t)]);
  return pearson(a, b);
}

CnnFitOptions quick_options(int64_t iterations, int batch = 200, double lr = 3e-3) {
  CnnFitOptions o;
  o.batch_size = batch;
  o.lr = lr;
  o.max_iterations = iterations;
  o.validate_every = 50;
  o.seed = 11;
  o.threads = 2;
  return o;
}

// ---- f64 gradient check of the whole loss -----------------------------------------------------

// Central differences of CnnRunner::loss (training mode: the noise stream is rewound before
// every evaluation) at a few elements of every trainable tensor. Returns the gradients.
ParamStore check_model_gradients(const CnnModel& given, int B, uint64_t seed) {
  CnnModel m = cast_model(given, DType::F64);  // a deep copy: the caller's model stays as it is
  const CnnSpec& s = m.spec;
  Tensor x = test::random_uniform(Shape{B, s.history, s.height, s.width}, -0.5, 0.5, seed);
  Tensor y = test::random_ints(Shape{s.n_out, B}, 0, 3, seed + 1, DType::F64);
  // Nonzero biases and distinct softplus parameters, so every term is exercised.
  for (auto& e : m.params.entries())
    if (e.name.find("bias") != std::string::npos || e.name.rfind("softplus", 0) == 0) {
      const Tensor r = test::random_uniform(e.value.shape(), -0.1, 0.1, seed + 2);
      for (int64_t i = 0; i < e.value.numel(); ++i)
        e.value.set(i, e.name[0] == 's' ? e.value.item(i) * (1 + r.item(i)) : r.item(i));
    }
  ContextOptions co;
  co.threads = 2;
  Context ctx(co);
  CnnRunner runner;
  auto loss = [&](ParamStore* g) {
    ctx.rng().set_state(seed, 0);
    return runner.loss(ctx, m, x, y, true, g);
  };
  ParamStore grads;
  const CnnLossTerms t0 = loss(&grads);
  CHECK(t0.conv_penalty > 0);
  CHECK(t0.dense_penalty > 0);
  CHECK(t0.activity_penalty > 0);
  const double h = 1e-6;
  for (auto& e : m.params.entries()) {
    if (!e.trainable) {
      CHECK_MESSAGE(!grads.has(e.name), e.name, " is frozen but got a gradient");
      continue;
    }
    REQUIRE_MESSAGE(grads.has(e.name), "no gradient for ", e.name);
    const Tensor g = grads.get(e.name);
    const int64_t n = e.value.numel();
    for (int64_t i : {int64_t(0), n / 3, n / 2, n - 1}) {
      const double v = e.value.item(i);
      e.value.set(i, v + h);
      const double lp = loss(nullptr).total();
      e.value.set(i, v - h);
      const double lm = loss(nullptr).total();
      e.value.set(i, v);
      const double fd = (lp - lm) / (2 * h);
      CHECK_MESSAGE(std::abs(fd - g.item(i)) <= 1e-7 + 1e-5 * std::abs(fd), e.name, "[", i,
                    "]: analytic ", g.item(i), ", central difference ", fd);
    }
  }
  return grads;
}

std::string temp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() /
                 concat("dynsim_rcnn_", name, "_", std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

}  // namespace

TEST_CASE("retina cnn: window i is frames i..i+19 and targets frame i+20") {
  CHECK(window_count(25) == 5);
  CHECK(window_count(20) == 0);
  CHECK(window_count(3) == 0);
  CHECK(target_frame(0) == kHistory);
  // Frame t holds the value t; response (cell j, frame t) = 100 j + t.
  const int64_t T = 30;
  Tensor stim = Tensor::empty(Shape{T, 3, 2});
  for (int64_t i = 0; i < stim.numel(); ++i) stim.set(i, double(i / 6));
  Tensor resp = Tensor::empty(Shape{2, T}, DType::I32);
  for (int64_t j = 0; j < 2; ++j)
    for (int64_t t = 0; t < T; ++t) resp.set(j * T + t, double(100 * j + t));
  const int64_t w[2] = {0, 9};
  Tensor x = Tensor::empty(Shape{2, kHistory, 3, 2});
  gather_windows(stim, w, 2, x);
  for (int b = 0; b < 2; ++b)
    for (int c = 0; c < kHistory; ++c)
      for (int p = 0; p < 6; ++p) REQUIRE(x.item((b * kHistory + c) * 6 + p) == double(w[b] + c));
  Tensor y = Tensor::empty(Shape{2, 2});
  gather_targets(resp, w, 2, kHistory, y);
  for (int j = 0; j < 2; ++j)
    for (int b = 0; b < 2; ++b) CHECK(y.item(j * 2 + b) == double(100 * j + w[b] + kHistory));
  // The last window (9) targets frame 29; window 10 would need frame 30.
  const int64_t past[1] = {10};
  CHECK_THROWS_AS(gather_targets(resp, past, 1, kHistory, Tensor::empty(Shape{2, 1})), DataError);
  CHECK_THROWS_AS(gather_windows(stim, past + 0, 1, Tensor::empty(Shape{1, 21, 3, 2})), DataError);

  // predict: the first 20 frames have no target (NaN); column t is the window t - 20.
  CnnSpec s = yan_spec(6, 6, 3, 2);
  const CnnModel m = make_cnn(s, 5);
  const Tensor st = checkerboard(40, 6, 6, 9);
  const Tensor p = predict(m, st, 2, 7);  // batches of 7: a partial last batch too
  REQUIRE(p.shape() == Shape{2, 40});
  Context ctx;
  CnnRunner runner;
  for (int64_t t = 0; t < 40; ++t) {
    if (t < kHistory) {
      CHECK(std::isnan(p.item(t)));
      CHECK(std::isnan(p.item(40 + t)));
      continue;
    }
    const int64_t win[1] = {t - kHistory};
    Tensor xw = Tensor::empty(Shape{1, kHistory, 6, 6});
    gather_windows(st, win, 1, xw);
    const Tensor r = runner.forward(ctx, m, xw);
    CHECK(p.item(t) == doctest::Approx(r.item(0)).epsilon(1e-6));
    CHECK(p.item(40 + t) == doctest::Approx(r.item(1)).epsilon(1e-6));
  }
}

TEST_CASE("retina cnn: architectures and their shapes") {
  const CnnSpec y = yan_spec(8, 8, 32);
  CHECK(y.conv_output(0) == std::vector<int64_t>{32, 2, 2});
  const CnnModel m = make_cnn(y, 1);
  // notes §2.3: 32*20*49 + 32 + 129 + 2 parameters.
  CHECK(m.params.count(false) == 32 * 20 * 49 + 32 + 128 + 1 + 2);
  const CnnSpec d8 = deep_retina_spec(8, 8), d16 = deep_retina_spec(16, 16),
                d50 = deep_retina_spec(50, 50);
  CHECK(d8.conv[0].kernel == 5);
  CHECK(d8.conv[1].kernel == 3);
  CHECK(d8.conv_output(1) == std::vector<int64_t>{8, 2, 2});
  CHECK(d16.conv[0].kernel == 10);
  CHECK(d16.conv[1].kernel == 6);
  CHECK(d16.conv_output(1) == std::vector<int64_t>{8, 2, 2});
  CHECK(d50.conv[0].kernel == 15);
  CHECK(d50.conv_output(1) == std::vector<int64_t>{8, 28, 28});
  CnnSpec bad = yan_spec(8, 8);
  bad.conv[0].kernel = 9;
  CHECK_THROWS_AS(make_cnn(bad, 0), ConfigError);
  // Same seed, same weights; another seed, others.
  require_equal(make_cnn(y, 1).params.get("conv0.weight"), m.params.get("conv0.weight"), "seeded");
  CHECK(make_cnn(y, 2).params.get("conv0.weight").item(0) != m.params.get("conv0.weight").item(0));
}

TEST_CASE("retina cnn: f64 gradients of the whole loss, Yan net") {
  CnnSpec s = yan_spec(8, 8, 3);
  check_model_gradients(make_cnn(s, 3), 6, 21);
}

TEST_CASE("retina cnn: f64 gradients of the whole loss, deep-retina net") {
  CnnSpec s = deep_retina_spec(8, 8, 2);
  s.train_softplus = true;  // check the softplus parameters here too
  s.conv[0].l1 = 2e-4;      // and the L1 term on both layers
  s.conv[1].l1 = 3e-4;
  check_model_gradients(make_cnn(s, 4), 5, 31);
}

TEST_CASE("retina cnn: f64 gradients of a multi-cell readout, full and readout-only") {
  const CnnSpec s = yan_spec(8, 8, 2, 3);
  CnnModel m = cast_model(make_cnn(s, 6), DType::F64);
  const ParamStore full = check_model_gradients(m, 4, 41);
  set_trainable(m, false, true);
  const ParamStore readout = check_model_gradients(m, 4, 41);
  CHECK(!readout.has("conv0.weight"));
  for (const char* name : {"dense.weight", "dense.bias", "softplus.alpha", "softplus.beta"})
    require_equal(readout.get(name), full.get(name), name);
}

namespace {

// The single OFF cell of the learning test, trained once and shared with the transfer test.
struct OffCell {
  Tensor stim, test_stim;
  std::vector<double> rate, counts, test_rate;
  CnnModel model;
  CnnFitResult fit;
  double spikes = 0;
};
const OffCell& trained_off_cell() {
  static OffCell c = [] {
    OffCell o;
    o.stim = checkerboard(20000, 8, 8, 101);
    o.rate = ln_rate(o.stim, 2, 2, 1.0, 0.4, 0.0);
    o.counts = poisson(o.rate, 202);
    for (double v : o.counts) o.spikes += v;
    o.test_stim = checkerboard(3000, 8, 8, 303);
    o.test_rate = ln_rate(o.test_stim, 2, 2, 1.0, 0.4, 0.0);
    o.model = make_cnn(yan_spec(8, 8, 4), 7);
    CnnFitOptions opt = quick_options(300, 500);
    opt.patience = 3;
    o.fit = fit_cnn(o.model, CnnData{o.stim, rows({o.counts})}, opt);
    return o;
  }();
  return c;
}

}  // namespace

TEST_CASE("retina cnn: learns a synthetic LN cell (held-out CC vs the noise-free rate)") {
  const OffCell& c = trained_off_cell();
  MESSAGE("spikes ", c.spikes, ", iterations ", c.fit.iterations, ", best val CC ",
          c.fit.best_val_cc, " at ", c.fit.best_iteration);
  CHECK(c.spikes > 3000);
  CHECK(c.spikes < 10000);
  const double cc = held_out_cc(c.model, c.test_stim, c.test_rate, 0);
  MESSAGE("held-out CC against the noise-free rate: ", cc);
  CHECK(cc >= 0.8);
  CHECK(c.fit.history.front().iteration == 0);
  CHECK(c.fit.best_val_cc > c.fit.history.front().val_cc + 0.2);
  // The model holds the best snapshot: its CC on the held-out last 10% of the windows (targets
  // from frame 20 + 17982 on) is the best validation CC, not the last one.
  REQUIRE(c.fit.best_iteration > 0);
  CHECK(c.fit.best_iteration < c.fit.iterations);
  CHECK(c.fit.history.back().val_cc < c.fit.best_val_cc);
  const Tensor p = predict(c.model, c.stim, 2);
  std::vector<double> a, b;
  for (int64_t t = kHistory + 17982; t < 20000; ++t)
    a.push_back(p.item(t)), b.push_back(c.counts[size_t(t)]);
  CHECK(pearson(a, b) == doctest::Approx(c.fit.best_val_cc).epsilon(1e-4));
}

TEST_CASE("retina cnn: a cell driven by the frame L back is learned at channel 20 - L") {
  for (int L : {1, 4}) {
    const Tensor stim = checkerboard(2000, 8, 8, 500 + L);
    std::vector<double> rate(2000, 0.05);
    for (int64_t t = L; t < 2000; ++t)
      rate[size_t(t)] += stim.item(((t - L) * 8 + 3) * 8 + 3) > 0 ? 0.5 : 0.0;
    CnnModel m = make_cnn(yan_spec(8, 8, 1), 3);
    fit_cnn(m, CnnData{stim, rows({rate})}, quick_options(100, 100, 1e-2));
    const Tensor w = m.params.get("conv0.weight");  // [1, 20, 7, 7]
    std::vector<double> energy(kHistory, 0.0);
    for (int c = 0; c < kHistory; ++c)
      for (int k = 0; k < 49; ++k) energy[size_t(c)] += w.item(c * 49 + k) * w.item(c * 49 + k);
    const int best = int(std::max_element(energy.begin(), energy.end()) - energy.begin());
    CHECK_MESSAGE(best == kHistory - L, "L = ", L, ": the largest filter channel is ", best);
    CHECK(held_out_cc(m, stim, rate, 0) > 0.6);
  }
}

TEST_CASE("retina cnn: a population shares one core with per-cell readouts") {
  const Tensor stim = checkerboard(8000, 8, 8, 601);
  const Tensor test_stim = checkerboard(2000, 8, 8, 602);
  // An OFF cell and an ON cell on the same block, with different thresholds.
  const std::vector<double> off = ln_rate(stim, 2, 2, 1.0, 0.4, 0.0),
                            on = ln_rate(stim, 2, 2, -1.0, 0.4, 0.5);
  CnnModel m = make_cnn(yan_spec(8, 8, 2, 2), 8);
  CHECK(m.params.get("dense.weight").shape() == Shape{2, 8});
  CHECK(m.params.get("softplus.alpha").shape() == Shape{2});
  fit_cnn(m, CnnData{stim, rows({poisson(off, 1), poisson(on, 2)})}, quick_options(200, 200));
  const double cc_off = held_out_cc(m, test_stim, ln_rate(test_stim, 2, 2, 1.0, 0.4, 0.0), 0);
  const double cc_on = held_out_cc(m, test_stim, ln_rate(test_stim, 2, 2, -1.0, 0.4, 0.5), 1);
  MESSAGE("population CC: OFF ", cc_off, ", ON ", cc_on);
  CHECK(cc_off >= 0.7);
  CHECK(cc_on >= 0.7);
}

TEST_CASE("retina cnn: readout refit on a frozen core, then fine-tuning from given weights") {
  const OffCell& c = trained_off_cell();
  // Another OFF cell of the same block: higher threshold and gain.
  const Tensor stim = checkerboard(8000, 8, 8, 701);
  const std::vector<double> rate = ln_rate(stim, 2, 2, 1.0, 0.6, 1.0);
  const CnnData data{stim, rows({poisson(rate, 3)})};
  CnnModel m = with_new_readout(c.model, 1, 99);
  require_equal(m.params.get("conv0.weight"), c.model.params.get("conv0.weight"), "core copied");
  const Tensor dense0 = m.params.get("dense.weight").clone();
  const CnnFitResult r = refit_readout(m, data, quick_options(100, 200, 1e-2));
  require_equal(m.params.get("conv0.weight"), c.model.params.get("conv0.weight"), "core frozen");
  require_equal(m.params.get("conv0.bias"), c.model.params.get("conv0.bias"), "core frozen");
  CHECK(m.params.get("dense.weight").item(0) != dense0.item(0));
  for (const auto& e : m.params.entries()) CHECK_MESSAGE(e.trainable, e.name, " flag restored");
  const double cc = held_out_cc(m, c.test_stim, ln_rate(c.test_stim, 2, 2, 1.0, 0.6, 1.0), 0);
  MESSAGE("readout refit: val CC ", r.best_val_cc, ", held-out CC vs rate ", cc);
  CHECK(r.history.front().val_cc < r.best_val_cc);
  CHECK(cc >= 0.75);

  // Fine-tuning starts where the given weights are: its first validation equals the refit's best.
  CnnModel f = cast_model(m, DType::F32);  // a deep copy
  CnnFitOptions o = quick_options(20, 100);
  o.snapshot_after = o.max_iterations;  // keep the final weights, not the starting point
  const CnnFitResult ft = fine_tune(f, data, o);
  CHECK(ft.history.front().val_cc == doctest::Approx(r.best_val_cc).epsilon(1e-6));
  CHECK(f.params.get("conv0.weight").item(100) != m.params.get("conv0.weight").item(100));
  // Deterministic: the same run again gives the same weights.
  CnnModel g = cast_model(m, DType::F32);
  fine_tune(g, data, o);
  require_equal(g.params.get("conv0.weight"), f.params.get("conv0.weight"), "same seed, same run");
}

TEST_CASE("retina cnn: save and load with the architecture sidecar") {
  const std::string dir = temp_dir("io");
  const std::string path = dir + "/model.safetensors";
  CnnModel m = make_cnn(deep_retina_spec(8, 8, 2), 12);
  save_cnn(m, path);
  REQUIRE(std::filesystem::exists(dir + "/model.json"));
  const CnnModel l = load_cnn(path);
  CHECK(l.spec.name == "deep_retina");
  CHECK(l.spec.conv.size() == 2);
  CHECK(l.spec.conv[1].kernel == 3);
  CHECK(!l.spec.train_softplus);
  CHECK(cnn_spec_json(l.spec) == cnn_spec_json(m.spec));
  for (const auto& e : m.params.entries()) require_equal(l.params.get(e.name), e.value, e.name);
  const Tensor st = checkerboard(30, 8, 8, 4);
  const Tensor pl = predict(l, st, 1), pm = predict(m, st, 1);
  for (int64_t i = 0; i < pm.numel(); ++i)
    CHECK(((std::isnan(pl.item(i)) && std::isnan(pm.item(i))) || pl.item(i) == pm.item(i)));

  // Without the sidecar the metadata copy is used.
  std::filesystem::remove(dir + "/model.json");
  CHECK(load_cnn(path).spec.n_out == 2);
  // A sidecar that disagrees with the tensors names the tensor.
  CnnSpec other = m.spec;
  other.n_out = 3;
  std::ofstream(dir + "/model.json") << cnn_spec_json(other);
  try {
    load_cnn(path);
    FAIL("expected a DataError");
  } catch (const DataError& e) {
    CHECK(std::string(e.what()).find("dense.weight") != std::string::npos);
  }
  std::ofstream(dir + "/model.json") << "{\"format\": \"something else\"}";
  CHECK_THROWS_AS(load_cnn(path), ConfigError);
  CHECK_THROWS_AS(load_cnn(dir + "/missing.safetensors"), NoInputError);
  std::filesystem::remove_all(dir);
}
