// Retina analysis and baselines (models/retina/analysis.h, baselines.h): metrics against hand
// values and their formulas, FEVE/bits-per-spike on Poisson repeats of a known rate, rank-1
// decomposition of exact outer products, the Hungarian assignment against brute force, subunit
// scoring on planted filters, conv-unit STAs of a known ReLU unit, the LN model on a synthetic LN
// cell and STNMF on a synthetic 4-subunit LNLN cell (the reference layout of retina-notes §2.1).
// All data are tiny and made here from Philox streams.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "engine/core/rng.h"
#include "models/retina/analysis.h"
#include "models/retina/baselines.h"

using namespace dynsim;
using namespace dynsim::retina;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

double uniform01(uint64_t seed, uint64_t index) {
  const rng::U4 r = rng::bits(seed, index, 0);
  return double((uint64_t(r.v[0]) << 21) ^ (r.v[1] >> 11)) * (1.0 / 9007199254740992.0);
}

// Poisson(lam) by inversion of one uniform (lam is small here).
int poisson(double lam, uint64_t seed, uint64_t index) {
  const double u = uniform01(seed, index);
  double p = std::exp(-lam), F = p;
  int k = 0;
  while (u > F && k < 1000) {
    ++k;
    p *= lam / k;
    F += p;
  }
  return k;
}

Tensor vec(const std::vector<double>& v) {
  return Tensor::from({int64_t(v.size())}, v, DType::F64);
}

// Binary +-0.5 checkerboard [T, H, W].
Tensor binary_stimulus(int64_t T, int64_t H, int64_t W, uint64_t seed) {
  Tensor s = Tensor::empty({T, H, W});
  float* d = s.data<float>();
  for (int64_t i = 0; i < T * H * W; ++i)
    d[i] = (rng::bits(seed, uint64_t(i), 0).v[0] >> 31) ? 0.5f : -0.5f;
  return s;
}

// retina-notes §2.1: the OFF biphasic filter by lag 0..19 and the four 2x2 masks on 8x8.
const std::vector<double> kRefFilter = {0,     0,    0,    -.124, -.406, -.527, -.428,
                                        -.215, 0,    .155, .238,  .261,  .245,  .209,
                                        .167,  .127, .093, .066,  .046,  .031};
Tensor reference_masks() {
  Tensor m = Tensor::zeros({4, 8, 8}, DType::F64);
  const int r0[4] = {2, 2, 4, 4}, c0[4] = {2, 4, 2, 4};
  for (int j = 0; j < 4; ++j)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 2; ++x) m.set(j * 64 + (r0[j] + y) * 8 + c0[j] + x, 1.0);
  return m;
}

// drive_j(t) = sum_lag k[lag] <mask_j, frame(t - lag)>, for every frame (zero history before 0).
std::vector<std::vector<double>> subunit_drives(const Tensor& stim, const Tensor& masks,
                                                const std::vector<double>& k) {
  const int64_t T = stim.dim(0), P = stim.dim(1) * stim.dim(2), J = masks.dim(0);
  const auto s = stim.to_vector(), m = masks.to_vector();
  std::vector<std::vector<double>> drive(size_t(J), std::vector<double>(size_t(T), 0.0));
  for (int64_t j = 0; j < J; ++j) {
    std::vector<double> proj(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      double a = 0;
      for (int64_t q = 0; q < P; ++q) a += m[size_t(j * P + q)] * s[size_t(t * P + q)];
      proj[size_t(t)] = a;
    }
    for (int64_t t = 0; t < T; ++t)
      for (size_t lag = 0; lag < k.size() && int64_t(lag) <= t; ++lag)
        drive[size_t(j)][size_t(t)] += k[lag] * proj[size_t(t - int64_t(lag))];
  }
  return drive;
}

std::vector<int> poisson_counts(const std::vector<double>& rate, uint64_t seed) {
  std::vector<int> y(rate.size());
  for (size_t t = 0; t < rate.size(); ++t) y[t] = poisson(rate[t], seed, t);
  return y;
}

Tensor counts_tensor(const std::vector<int>& y) {
  std::vector<double> v(y.begin(), y.end());
  return Tensor::from({int64_t(v.size())}, v, DType::I32);
}

double cosine(const std::vector<double>& a, const std::vector<double>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
  return ab / std::sqrt(aa * bb);
}

}  // namespace

TEST_CASE("pearson_cc: hand values, epsilon variant, NaN frames, errors") {
  const Tensor x = vec({1, 2, 3, 4, 5}), y = vec({2, 1, 4, 3, 5});
  // x~ = [-2 -1 0 1 2], y~ = [-1 -2 1 0 2]: Sxy = 8, Sxx = Syy = 10.
  CHECK(pearson_cc(x, y) == doctest::Approx(0.8).epsilon(1e-14));
  // Epsilon variant: sum (x~ + eps)^2 = Sxx + N eps^2 because sum x~ = 0.
  CHECK(pearson_cc(x, y, true, 0.01) == doctest::Approx(8.0 / (10.0 + 5 * 1e-4)).epsilon(1e-14));
  CHECK(pearson_cc(x, y, true, 0.5) == doctest::Approx(8.0 / 11.25).epsilon(1e-14));
  // Against the formula on random data with different variances.
  std::vector<double> a(50), b(50);
  for (int i = 0; i < 50; ++i) a[i] = uniform01(3, i), b[i] = 0.1 * a[i] + 0.05 * uniform01(4, i);
  double ma = 0, mb = 0;
  for (int i = 0; i < 50; ++i) ma += a[i] / 50, mb += b[i] / 50;
  double sab = 0, sa = 0, sb = 0;
  for (int i = 0; i < 50; ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    sa += (a[i] - ma + 0.01) * (a[i] - ma + 0.01);
    sb += (b[i] - mb + 0.01) * (b[i] - mb + 0.01);
  }
  const double want = sab / std::sqrt(sa * sb);
  CHECK(pearson_cc(vec(a), vec(b), true) == doctest::Approx(want).epsilon(1e-12));
  CHECK(pearson_cc(vec(a), vec(b), true) < pearson_cc(vec(a), vec(b)));  // eps shrinks r here
  // A NaN in either operand drops that frame from every sum.
  CHECK(pearson_cc(vec({1, 2, kNaN, 3, 4, 5}), vec({2, 1, 100, 4, 3, 5})) ==
        doctest::Approx(0.8).epsilon(1e-14));
  CHECK(pearson_cc(vec({1, 2, 3, 4, 5, 7}), vec({2, 1, 4, 3, 5, kNaN})) ==
        doctest::Approx(0.8).epsilon(1e-14));
  CHECK(std::isnan(pearson_cc(vec({1, 1, 1}), vec({1, 2, 3}))));  // zero variance
  CHECK_THROWS_AS(pearson_cc(vec({1, 2, 3}), vec({1, 2})), DataError);
  CHECK_THROWS_AS(pearson_cc(vec({1, kNaN}), vec({1, 2})), DataError);  // < 2 frames left
  // RMSE and single-trace FEV by hand.
  CHECK(rmse(vec({1, 2, 3}), vec({1, 4, 3})) == doctest::Approx(std::sqrt(4.0 / 3)));
  CHECK(rmse(vec({1, kNaN, 3}), vec({2, 4, 3})) == doctest::Approx(std::sqrt(0.5)));
  CHECK(fev(vec({1, 2, 3}), vec({1, 2, 4})) == doctest::Approx(1 - (1.0 / 3) / (2.0 / 3)));
  CHECK_THROWS_AS(rmse(vec({1, 2, 3}), vec({1, 2})), DataError);
  CHECK_THROWS_AS(fev(vec({1, 2}), vec({1, 2, 3})), DataError);
}

TEST_CASE("repeat_metrics and bits_per_spike on Poisson repeats of a known rate") {
  const int64_t T = 200, N = 200;
  std::vector<double> lam(T), mean_pred(T), noisy(T), trials(size_t(N * T));
  for (int64_t t = 0; t < T; ++t) lam[size_t(t)] = 0.2 + 2.8 * uniform01(11, t);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t)
      trials[size_t(n * T + t)] = poisson(lam[size_t(t)], 12, n * T + t);
  const double lmean = std::accumulate(lam.begin(), lam.end(), 0.0) / T;
  for (int64_t t = 0; t < T; ++t) {
    noisy[size_t(t)] = std::max(0.0, lam[size_t(t)] + 0.6 * rng::normal(13, t));
    mean_pred[size_t(t)] = lmean;
  }
  const Tensor Y = Tensor::from({N, T}, trials, DType::F32);
  const RepeatMetrics truth = repeat_metrics(Y, vec(lam));
  CHECK(truth.n_frames == T);
  CHECK(truth.feve == doctest::Approx(1.0).epsilon(0.03));
  // The noise variance of Poisson counts is the mean rate; the signal variance is var(lam).
  CHECK(truth.noise_var == doctest::Approx(lmean).epsilon(0.05));
  CHECK(truth.explainable > 0.2);
  CHECK(truth.explainable < 0.5);
  CHECK(truth.fev > 0.95);  // the trial mean of 200 trials is close to lam
  const RepeatMetrics bad = repeat_metrics(Y, vec(noisy));
  CHECK(bad.feve < 0.85);
  CHECK(bad.feve > 0.2);
  CHECK(bad.fev < truth.fev);
  CHECK(repeat_metrics(Y, vec(mean_pred)).feve == doctest::Approx(0.0).epsilon(0.05));
  // A NaN prediction frame and a NaN trial entry drop those frames.
  auto lam2 = lam;
  lam2[5] = kNaN;
  auto trials2 = trials;
  trials2[size_t(3 * T + 9)] = kNaN;
  const RepeatMetrics holed = repeat_metrics(Tensor::from({N, T}, trials2, DType::F64), vec(lam2));
  CHECK(holed.n_frames == T - 2);
  CHECK(holed.feve == doctest::Approx(truth.feve).epsilon(0.02));
  CHECK_THROWS_AS(repeat_metrics(Y, vec(std::vector<double>(T - 1, 1.0))), DataError);
  CHECK_THROWS_AS(repeat_metrics(Y.slice(0, 1), vec(lam)), DataError);  // one trial
  // By hand: trials [[1 4 7] [3 2 9]], pred [1 3 8]. ybar = [2 3 8], s_t^2 = [2 2 2] -> noise 2;
  // the six values have mean 26/6 and squared deviations summing to 142/3 -> total_var 142/15;
  // mse_trials = (0 + 1 + 1 + 4 + 1 + 1) / 6; fev = 1 - (1/3) / var(ybar), var(ybar) = 62/9.
  const RepeatMetrics hand =
      repeat_metrics(Tensor::from({2, 3}, {1, 4, 7, 3, 2, 9}, DType::I32), vec({1, 3, 8}));
  CHECK(hand.noise_var == doctest::Approx(2.0));
  CHECK(hand.total_var == doctest::Approx(142.0 / 15));
  CHECK(hand.mse_trials == doctest::Approx(8.0 / 6));
  CHECK(hand.feve == doctest::Approx(1 - (8.0 / 6 - 2.0) / (142.0 / 15 - 2.0)));
  CHECK(hand.explainable == doctest::Approx((142.0 / 15 - 2.0) / (142.0 / 15)));
  CHECK(hand.fev == doctest::Approx(1 - (1.0 / 3) / (62.0 / 9)));
  // Nothing explainable (noise_var >= total_var): FEVE is undefined.
  CHECK(std::isnan(
      repeat_metrics(Tensor::from({2, 3}, {1, 2, 4, 3, 2, 0}, DType::I32), vec({1, 2, 3})).feve));

  // bits/spike: > 0 for the true rate, exactly 0 for the empirical mean, lower when noisy.
  const double b_true = bits_per_spike(Y, vec(lam));
  CHECK(b_true > 0.1);
  std::vector<double> emp(T, 0.0);
  double tot = 0;
  for (double v : trials) tot += v;
  for (auto& v : emp) v = tot / double(N * T);
  CHECK(std::abs(bits_per_spike(Y, vec(emp))) < 1e-12);
  CHECK(bits_per_spike(Y, vec(noisy)) < b_true);
  // Units: spikes/s with dt = 1/30 is the same prediction.
  std::vector<double> hz(lam);
  for (auto& v : hz) v *= 30;
  CHECK(bits_per_spike(Y, vec(hz), 1.0 / 30) == doctest::Approx(b_true).epsilon(1e-12));
  // One trace by hand: y = [0 1 2 1], lam = [.5 1 1.5 1], lam0 = 1.
  const double ll = 1 * std::log(1.0) + 2 * std::log(1.5) - 4.0, ll0 = -4.0;
  CHECK(bits_per_spike(vec({0, 1, 2, 1}), vec({0.5, 1, 1.5, 1})) ==
        doctest::Approx((ll - ll0) / (4 * std::log(2.0))).epsilon(1e-12));
  CHECK(bits_per_spike(vec({0, 1, 2, 1, 7}), vec({0.5, 1, 1.5, 1, kNaN})) ==
        doctest::Approx((ll - ll0) / (4 * std::log(2.0))).epsilon(1e-12));
  CHECK(std::isnan(bits_per_spike(vec({0, 0, 0}), vec({1, 1, 1}))));
  CHECK_THROWS_AS(bits_per_spike(vec({0, 1}), vec({1, 1, 1})), DataError);
}

TEST_CASE("rank1_decompose recovers an exact outer product; channel order") {
  for (int64_t kh : {3, 1}) {  // L <= P and L > P (the other Gram side)
    const int64_t L = 20, kw = kh == 3 ? 4 : 2, P = kh * kw;
    std::vector<double> t(static_cast<size_t>(L)), s(static_cast<size_t>(P)),
        f(static_cast<size_t>(L * P));
    for (int64_t l = 0; l < L; ++l) t[size_t(l)] = rng::normal(21, l);
    for (int64_t q = 0; q < P; ++q) s[size_t(q)] = rng::normal(22, q);
    for (int64_t l = 0; l < L; ++l)
      for (int64_t q = 0; q < P; ++q) f[size_t(l * P + q)] = -2.5 * t[size_t(l)] * s[size_t(q)];
    const Rank1 r = rank1_decompose(Tensor::from({L, kh, kw}, f, DType::F64), vec(t));
    double nt = 0, ns = 0;
    for (double v : t) nt += v * v;
    for (double v : s) ns += v * v;
    CHECK(r.sigma == doctest::Approx(2.5 * std::sqrt(nt * ns)).epsilon(1e-12));
    CHECK(r.explained == doctest::Approx(1.0).epsilon(1e-12));
    // Temporal sign follows the reference, so the spatial map carries the minus sign.
    for (int64_t l = 0; l < L; ++l)
      CHECK(r.temporal.item(l) == doctest::Approx(t[size_t(l)] / std::sqrt(nt)).epsilon(1e-10));
    for (int64_t q = 0; q < P; ++q)
      CHECK(r.spatial.item(q) == doctest::Approx(-s[size_t(q)] / std::sqrt(ns)).epsilon(1e-10));
    // The reference decides the sign whichever way the eigenvector came out: -filter gives the
    // same temporal vector and the opposite spatial map.
    std::vector<double> fneg(f);
    for (double& v : fneg) v = -v;
    const Rank1 rn = rank1_decompose(Tensor::from({L, kh, kw}, fneg, DType::F64), vec(t));
    for (int64_t l = 0; l < L; ++l)
      CHECK(rn.temporal.item(l) == doctest::Approx(r.temporal.item(l)));
    for (int64_t q = 0; q < P; ++q)
      CHECK(rn.spatial.item(q) == doctest::Approx(-r.spatial.item(q)));
    // Without a reference the largest spatial entry is positive.
    const Rank1 r2 = rank1_decompose(Tensor::from({L, kh, kw}, f, DType::F64));
    int64_t arg = 0;
    for (int64_t q = 1; q < P; ++q)
      if (std::abs(s[size_t(q)]) > std::abs(s[size_t(arg)])) arg = q;
    CHECK(r2.spatial.item(arg) > 0);
  }
  // A rank-2 filter: sigma^2 is the larger eigenvalue, explained < 1.
  std::vector<double> f2(20 * 4, 0.0);
  for (int l = 0; l < 20; ++l)
    f2[size_t(l * 4 + 0)] = 3 * (l == 2), f2[size_t(l * 4 + 3)] = (l == 7);
  const Rank1 r3 = rank1_decompose(Tensor::from({20, 2, 2}, f2, DType::F64));
  CHECK(r3.sigma == doctest::Approx(3.0));
  CHECK(r3.explained == doctest::Approx(0.9));
  CHECK(r3.spatial.item(0) == doctest::Approx(1.0));
  CHECK_THROWS_AS(rank1_decompose(Tensor::zeros({20, 4})), DataError);
  // Channel c of a 20-frame window sees lag 20 - c.
  const Tensor kc = lag_to_channel_order(vec(kRefFilter), 20);
  CHECK(kc.item(0) == 0.0);
  CHECK(kc.item(15) == kRefFilter[5]);
  CHECK(kc.item(19) == kRefFilter[1]);
}

TEST_CASE("hungarian: known matrices, rectangular, ties, brute force on random 5x5") {
  // Max on a 3x3 whose greedy choice (row 0 -> col 0) is wrong.
  const std::vector<double> s = {9, 8, 1,  //
                                 8, 1, 1,  //
                                 1, 1, 5};
  Assignment a = hungarian_maximize(s, 3, 3);
  CHECK(a.row_to_col == std::vector<int>{1, 0, 2});
  CHECK(a.total == 21);
  Assignment mn = hungarian_minimize({4, 1, 3, 2, 0, 5, 3, 2, 2}, 3, 3);
  CHECK(mn.total == 5);
  CHECK(mn.row_to_col == std::vector<int>{1, 0, 2});
  // Rectangular: 2 rows, 4 columns, and its transpose (two rows stay unassigned).
  const std::vector<double> r24 = {1, 7, 3, 6,  //
                                   2, 8, 4, 1};
  a = hungarian_maximize(r24, 2, 4);
  CHECK(a.total == 14);  // 6 + 8
  CHECK(a.row_to_col == std::vector<int>{3, 1});
  std::vector<double> r42(8);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) r42[size_t(j * 2 + i)] = r24[size_t(i * 4 + j)];
  a = hungarian_maximize(r42, 4, 2);
  CHECK(a.total == 14);
  CHECK(a.row_to_col == std::vector<int>{-1, 1, -1, 0});
  // Ties: a constant matrix has every permutation optimal; any valid one will do.
  a = hungarian_maximize(std::vector<double>(16, 2.0), 4, 4);
  CHECK(a.total == 8);
  std::vector<int> cols = a.row_to_col;
  std::sort(cols.begin(), cols.end());
  CHECK(cols == std::vector<int>{0, 1, 2, 3});
  // Random 5x5 (max and min) and 3x5 against all permutations.
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    for (int rows : {5, 3}) {
      const int n = 5;
      std::vector<double> m(size_t(rows * n));
      for (size_t i = 0; i < m.size(); ++i) m[i] = std::round(10 * rng::normal(100 + seed, i)) / 4;
      std::vector<int> perm(n);
      std::iota(perm.begin(), perm.end(), 0);
      double best_max = -1e300, best_min = 1e300;
      do {
        double v = 0;
        for (int i = 0; i < rows; ++i) v += m[size_t(i * n + perm[size_t(i)])];
        best_max = std::max(best_max, v), best_min = std::min(best_min, v);
      } while (std::next_permutation(perm.begin(), perm.end()));
      const Assignment hx = hungarian_maximize(m, rows, n), hn = hungarian_minimize(m, rows, n);
      CHECK(hx.total == doctest::Approx(best_max).epsilon(1e-12));
      CHECK(hn.total == doctest::Approx(best_min).epsilon(1e-12));
      double check = 0;
      std::vector<char> used(n, 0);
      for (int i = 0; i < rows; ++i) {
        const int c = hx.row_to_col[size_t(i)];
        REQUIRE(c >= 0);
        CHECK(!used[size_t(c)]);
        used[size_t(c)] = 1;
        check += m[size_t(i * n + c)];
      }
      CHECK(check == doctest::Approx(hx.total));
    }
  }
  CHECK_THROWS_AS(hungarian_maximize({1, 2, 3}, 2, 2), DataError);
  CHECK_THROWS_AS(hungarian_maximize({1, kNaN, 3, 4}, 2, 2), DataError);
}

namespace {
// Planted CNN: filters 0..3 carry subunit perm[k] at output position pos[k] (the 2x2 mask in
// filter coordinates plus noise, times the true temporal filter in channel order); filters
// 4..7 are weak noise with small readout weights.
struct Planted {
  Tensor conv, dense;
};
const int kPerm[4] = {2, 0, 3, 1};
const int kPos[4] = {3, 0, 1, 2};  // output positions (y*2 + x) on the 2x2 map
Planted planted_cnn(double noise, uint64_t seed) {
  const Tensor masks = reference_masks();
  const Tensor kch = lag_to_channel_order(vec(kRefFilter), 20);
  Planted p{Tensor::zeros({8, 20, 7, 7}, DType::F64), Tensor::zeros({1, 8 * 4}, DType::F64)};
  uint64_t n = 0;
  for (int k = 0; k < 8; ++k) {
    const int py = k < 4 ? kPos[k] / 2 : 0, px = k < 4 ? kPos[k] % 2 : 0;
    for (int c = 0; c < 20; ++c)
      for (int y = 0; y < 7; ++y)
        for (int x = 0; x < 7; ++x) {
          const double m = k < 4 ? masks.item(kPerm[k] * 64 + (py + y) * 8 + px + x) : 0.0;
          const double t = kch.item(c) + 0.02 * rng::normal(seed, n++);
          p.conv.set(((k * 20 + c) * 7 + y) * 7 + x,
                     (k < 4 ? 1.0 : 0.05) * (m + noise * rng::normal(seed + 1, n++)) * t);
        }
    for (int q = 0; q < 4; ++q)
      p.dense.set(k * 4 + q, k < 4 ? (q == kPos[k] ? 1.0 + 0.1 * k : 0.02) : 0.01);
  }
  return p;
}
}  // namespace

TEST_CASE(
    "score_recovery on planted filters: 4 recovered, 0 spurious; a strong extra is spurious") {
  const Tensor masks = reference_masks(), k = vec(kRefFilter);
  Planted p = planted_cnn(0.05, 31);
  const Candidates c = candidates_from_cnn(p.conv, p.dense, 8, 8, k);
  CHECK(c.spatial.dim(0) == 4);  // filters 4..7 have no readout weight above 5 % of the max
  const RecoveryScore s = score_recovery(c, masks, k);
  CHECK(s.recovered == 4);
  CHECK(s.significant == 4);
  CHECK(s.spurious_filters.empty());
  CHECK(s.min_cosine > 0.9);
  for (int k2 = 0; k2 < 4; ++k2) {
    const SubunitMatch& m = s.per_subunit[size_t(kPerm[k2])];
    CHECK(m.filter == k2);
    CHECK(m.iou == doctest::Approx(1.0));
    CHECK(m.centroid_error < 0.2);
    CHECK(m.temporal_cc > 0.95);
  }
  // The same filters with the true temporal filter given per subunit [J, L] score the same.
  std::vector<double> kj;
  for (int j = 0; j < 4; ++j) kj.insert(kj.end(), kRefFilter.begin(), kRefFilter.end());
  const RecoveryScore s2 = score_recovery(c, masks, Tensor::from({4, 20}, kj, DType::F64));
  CHECK(s2.recovered == 4);
  CHECK(s2.mean_cosine == doctest::Approx(s.mean_cosine));
  // A strong random filter with a big readout weight is significant and matches nothing.
  for (int i = 0; i < 20 * 49; ++i) p.conv.set(4 * 20 * 49 + i, 0.05 * rng::normal(77, i));
  p.dense.set(4 * 4 + 1, 1.5);
  const RecoveryScore s3 = score_recovery(candidates_from_cnn(p.conv, p.dense, 8, 8, k), masks, k);
  CHECK(s3.recovered == 4);
  CHECK(s3.spurious_filters == std::vector<int>{4});
  // Noisier filters fall below a strict threshold: recovered drops, spurious rises.
  RecoveryOptions strict;
  strict.cosine_threshold = 0.999;
  const RecoveryScore s4 = score_recovery(c, masks, k, strict);
  CHECK(s4.recovered == 0);
  CHECK(s4.spurious_filters.size() == 4);
  // AllAbove: a second strong position adds a candidate for that filter.
  Planted q = planted_cnn(0.05, 31);
  q.dense.set(0 * 4 + 0, 0.9);
  RecoveryOptions all;
  all.placement = Placement::AllAbove;
  CHECK(candidates_from_cnn(q.conv, q.dense, 8, 8, k, all).spatial.dim(0) == 5);
  CHECK_THROWS_AS(candidates_from_cnn(p.conv, Tensor::zeros({1, 31}), 8, 8, k), DataError);
  // Per-subunit filters: subunit kPerm[0] is an ON subunit (filter -k) and its planted filter is
  // ON too. The candidate's temporal vector is signed against the mean (OFF) filter, so its map
  // comes out negative; matching flips it back by sign(v . k_j).
  Planted on = planted_cnn(0.05, 31);
  for (int i = 0; i < 20 * 49; ++i) on.conv.set(i, -on.conv.item(i));
  std::vector<double> kon;
  for (int j = 0; j < 4; ++j)
    for (double v : kRefFilter) kon.push_back(j == kPerm[0] ? -v : v);
  const Tensor kj_on = Tensor::from({4, 20}, kon, DType::F64);
  const Candidates con = candidates_from_cnn(on.conv, on.dense, 8, 8, kj_on);
  const RecoveryScore son = score_recovery(con, masks, kj_on);
  CHECK(son.recovered == 4);
  const SubunitMatch& mon = son.per_subunit[size_t(kPerm[0])];
  CHECK(mon.filter == 0);
  CHECK(mon.iou == doctest::Approx(1.0));
  CHECK(mon.temporal_cc > 0.95);
  CHECK(mon.centroid_error < 0.2);
  CHECK_THROWS_AS(score_recovery(c, Tensor::zeros({4, 7, 8}), k), DataError);
}

TEST_CASE("conv_unit_stas of known ReLU units recover their filters") {
  // Two 7x7 valid conv units on 8x8, 20 channels: a rank-1 OFF filter on a 2x2 patch and an
  // ON filter on a 3x1 bar. Plain-loop forward.
  const int64_t C = 20, H = 8, W = 8, K = 2, kh = 7, kw = 7;
  const Tensor kch = lag_to_channel_order(vec(kRefFilter), C);
  std::vector<double> f(size_t(K * C * kh * kw), 0.0);
  for (int64_t c = 0; c < C; ++c) {
    for (int y = 2; y < 4; ++y)
      for (int x = 2; x < 4; ++x) f[size_t(((0 * C + c) * kh + y) * kw + x)] = kch.item(c);
    for (int y = 1; y < 4; ++y) f[size_t(((1 * C + c) * kh + y) * kw + 5)] = -kch.item(c);
  }
  auto fwd = [&](const Tensor& x) {
    const int64_t B = x.dim(0);
    Tensor y = Tensor::zeros({B, K, 2, 2});
    const float* xd = x.data<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < K; ++k)
        for (int py = 0; py < 2; ++py)
          for (int px = 0; px < 2; ++px) {
            double a = 0;
            for (int64_t c = 0; c < C; ++c)
              for (int yy = 0; yy < kh; ++yy)
                for (int xx = 0; xx < kw; ++xx)
                  a += f[size_t(((k * C + c) * kh + yy) * kw + xx)] *
                       xd[((b * C + c) * H + py + yy) * W + px + xx];
            y.set(((b * K + k) * 2 + py) * 2 + px, std::max(0.0, a));
          }
    return y;
  };
  ConvStaOptions o;
  o.n_samples = 3000;
  o.batch = 500;
  const ConvStas s = conv_unit_stas(fwd, C, H, W, o);
  REQUIRE(s.sta.shape() == Shape({K, C, kh, kw}));
  for (int64_t k = 0; k < K; ++k) {
    const auto sv = s.sta.slice(k, k + 1).to_vector();
    const std::vector<double> fk(f.begin() + k * C * kh * kw, f.begin() + (k + 1) * C * kh * kw);
    CHECK(cosine(sv, fk) > 0.9);
    CHECK(s.mean_activation[size_t(k)] > 0);
  }
  // Exact scale: one pixel, one channel, a = relu(x) on +-0.5 noise: sum a x / sum |a| = 0.5.
  auto relu1 = [](const Tensor& x) {
    Tensor y = Tensor::zeros({x.dim(0), 1, 1, 1});
    for (int64_t b = 0; b < x.dim(0); ++b) y.set(b, std::max(0.0, x.item(b)));
    return y;
  };
  const ConvStas one = conv_unit_stas(relu1, 1, 1, 1, o);
  CHECK(one.sta.item(0) == doctest::Approx(0.5));
  CHECK(one.mean_activation[0] == doctest::Approx(0.25).epsilon(0.05));
  auto bad = [](const Tensor& x) { return Tensor::zeros({x.dim(0) + 1, 1, 2, 2}); };
  CHECK_THROWS_AS(conv_unit_stas(bad, C, H, W, o), DataError);
}

TEST_CASE("LN model on a synthetic LN cell: CC > 0.9 against its noise-free rate") {
  // Filter: the reference temporal filter on a 2x3 patch of a 6x6 stimulus; rate (counts per
  // frame) = 1.2 * max(0, g + 0.3).
  const int64_t T = 16000, Tt = 3000, H = 6, W = 6;
  const Tensor mask = [&] {
    Tensor m = Tensor::zeros({1, H, W}, DType::F64);
    for (int y = 2; y < 4; ++y)
      for (int x = 1; x < 4; ++x) m.set(y * W + x, 1.0);
    return m;
  }();
  auto rate_of = [&](const Tensor& stim) {
    auto g = subunit_drives(stim, mask, kRefFilter)[0];
    for (auto& v : g) v = 1.2 * std::max(0.0, v + 0.3);
    return g;
  };
  const Tensor train = binary_stimulus(T, H, W, 41), test = binary_stimulus(Tt, H, W, 42);
  const auto r_train = rate_of(train), r_test = rate_of(test);
  const Tensor y = counts_tensor(poisson_counts(r_train, 43));
  const LnModel ln = fit_ln(train, y);
  const Tensor pred = ln.predict(test);
  CHECK(std::isnan(pred.item(19)));
  CHECK(!std::isnan(pred.item(20)));
  const double cc = pearson_cc(pred, vec(r_test));
  MESSAGE("LN held-out CC vs noise-free rate: " << cc);
  CHECK(cc > 0.9);
  // The nonlinearity is non-negative and rising overall (threshold-linear cell).
  CHECK(ln.knot_rate.front() < 0.1 * ln.knot_rate.back());
  for (double v : ln.knot_rate) CHECK(v >= 0);
  // The STA's spatial energy peaks at the filter's largest tap (lag 5 = channel 15).
  const Rank1 r1 = rank1_decompose(ln.filter, lag_to_channel_order(vec(kRefFilter), 20));
  CHECK(cosine(r1.temporal.to_vector(), lag_to_channel_order(vec(kRefFilter), 20).to_vector()) >
        0.95);
  CHECK_THROWS_AS(fit_ln(train, y.slice(0, T - 1)), DataError);
  CHECK_THROWS_AS(fit_ln(train, Tensor::zeros({T})), DataError);  // no spikes
  // By hand, one pixel and a one-frame history: stimulus [1 2 3 4], spikes [0 1 0 2]. Windows
  // t = 1..3 hold frames 1, 2, 3 with counts 1, 0, 2: STA = (1*1 + 3*2) / 3 - 2 = 1/3.
  const Tensor s4 = Tensor::from({4, 1, 1}, {1, 2, 3, 4}, DType::F64);
  CHECK(sta_minus_mean_window(s4, vec({0, 1, 0, 2}), 1).item(0) == doctest::Approx(1.0 / 3));
  // Tied generator values merge into one knot: a binary pixel and a cell that fires once after
  // every bright frame gives two knots, (-c, 0) and (+c, 1), and an exact prediction.
  const int64_t T2 = 400;
  const Tensor s2 = binary_stimulus(T2, 1, 1, 61);
  std::vector<double> y2(T2, 0.0);
  for (int64_t t = 1; t < T2; ++t) y2[size_t(t)] = s2.item(t - 1) > 0 ? 1.0 : 0.0;
  LnOptions o2;
  o2.history = 1;
  o2.n_bins = 10;
  const LnModel ln2 = fit_ln(s2, vec(y2), o2);
  REQUIRE(ln2.knot_g.size() == 2);
  CHECK(ln2.knot_rate == std::vector<double>{0.0, 1.0});
  const Tensor p2 = ln2.predict(s2);
  for (int64_t t = 1; t < T2; ++t) CHECK(p2.item(t) == doctest::Approx(y2[size_t(t)]));
}

TEST_CASE("STNMF on a synthetic 4-subunit LNLN cell recovers the 4 masks") {
  // Reference layout and filter, rectified subunits, r = A max(0, sum_j b_j - theta).
  const int64_t T = 24000;
  const Tensor masks = reference_masks();
  const Tensor stim = binary_stimulus(T, 8, 8, 51);
  const auto drive = subunit_drives(stim, masks, kRefFilter);
  std::vector<double> rate(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    double s = 0;
    for (int j = 0; j < 4; ++j) s += std::max(0.0, drive[size_t(j)][size_t(t)]);
    rate[size_t(t)] = 0.5 * std::max(0.0, s - 0.5);
  }
  const Tensor y = counts_tensor(poisson_counts(rate, 52));
  StnmfOptions o;
  o.n_modules = 4;
  const StnmfResult r = fit_stnmf(stim, y, o);
  MESSAGE("STNMF: " << r.n_spikes << " spikes, peak channel " << r.peak_channel << ", residual "
                    << r.residual);
  CHECK(r.peak_channel == 15);  // lag 5, the filter's largest tap
  CHECK(r.n_spikes > 3000);
  for (int64_t i = 0; i < r.modules.numel(); ++i) CHECK(r.modules.item(i) >= 0);
  const RecoveryScore s = score_recovery(candidates_from_maps(r.modules, r.module_power), masks);
  for (auto& m : s.per_subunit) MESSAGE("module cosine " << m.cosine << " iou " << m.iou);
  CHECK(s.recovered == 4);
  CHECK(s.spurious_filters.empty());
  // Sign convention: the STA's map is positive over the receptive field, so the effective
  // stimulus filters with the cell's own (OFF) filter: it is the subunits' drive.
  const auto kch = lag_to_channel_order(vec(kRefFilter), 20).to_vector();
  CHECK(cosine(r.temporal.to_vector(), kch) > 0.9);
  // Deterministic; a random start (Philox) reaches the same modules here.
  const StnmfResult again = fit_stnmf(stim, y, o);
  CHECK(again.modules.to_vector() == r.modules.to_vector());
  StnmfOptions rnd = o;
  rnd.init = StnmfInit::Random;
  rnd.restarts = 2;
  CHECK(score_recovery(candidates_from_maps(fit_stnmf(stim, y, rnd).modules), masks).recovered ==
        4);
  // Cropped to the receptive field: the 4x4 block grown by one pixel, same recovery.
  StnmfOptions roi = o;
  roi.roi_frac = 0.3;
  const StnmfResult rr = fit_stnmf(stim, y, roi);
  CHECK(rr.n_pixels == 36);
  CHECK(score_recovery(candidates_from_maps(rr.modules), masks).recovered == 4);
  // PeakLag: one frame, the peak channel, signed like the rank-1 STA map.
  StnmfOptions pk = o;
  pk.effective = EffectiveStimulus::PeakLag;
  const StnmfResult rp = fit_stnmf(stim, y, pk);
  for (int64_t c = 0; c < 20; ++c) CHECK(rp.temporal.item(c) == (c == 15 ? -1.0 : 0.0));
  CHECK_THROWS_AS(fit_stnmf(stim, Tensor::zeros({T}), o), DataError);
  StnmfOptions bad = o;
  bad.n_modules = 0;
  CHECK_THROWS_AS(fit_stnmf(stim, y, bad), DataError);
}
