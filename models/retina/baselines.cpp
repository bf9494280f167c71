// LN and STNMF baselines (models/retina/baselines.h). Host code in double; the stimulus is read
// once into a vector and windows are addressed in place (never materialised).
#include "models/retina/baselines.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "engine/core/errors.h"
#include "engine/core/rng.h"
#include "models/retina/analysis.h"

namespace dynsim::retina {

namespace {

struct Recording {
  std::vector<double> stim, y;  // [T, P], [T]
  int64_t T = 0, H = 0, W = 0, P = 0;
};

Recording read_recording(const char* op, const Tensor& stimulus, const Tensor& spikes,
                         int64_t history) {
  if (!stimulus.defined() || stimulus.rank() != 3 || !stimulus.is_cpu())
    throw DataError(concat(op, ": stimulus ", stimulus.str(), " must be a host [T, H, W]"));
  if (!spikes.defined() || !spikes.is_cpu() || spikes.numel() != stimulus.dim(0))
    throw DataError(concat(op, ": spikes ", spikes.str(), " must have one count per frame of ",
                           stimulus.str()));
  if (history < 1 || stimulus.dim(0) <= history)
    throw DataError(concat(op, ": history ", history, " needs more than that many frames, got ",
                           stimulus.dim(0)));
  Recording r;
  r.T = stimulus.dim(0), r.H = stimulus.dim(1), r.W = stimulus.dim(2), r.P = r.H * r.W;
  r.stim = stimulus.to_vector();
  r.y = spikes.to_vector();
  for (double v : r.stim)
    if (!std::isfinite(v)) throw DataError(concat(op, ": stimulus has a non-finite value"));
  for (double v : r.y)
    if (!std::isfinite(v) || v < 0)
      throw DataError(concat(op, ": spikes must be finite counts >= 0"));
  return r;
}

// sum_t y_t X_t / sum y - mean_t X_t over t >= C, as [C, P].
std::vector<double> sta_of(const char* op, const Recording& r, int64_t C) {
  const int64_t P = r.P;
  std::vector<double> trig(size_t(C * P), 0.0), mean(size_t(C * P), 0.0);
  // Frame f is channel c of window t = f + C - c; accumulate per frame to avoid C-fold work.
  std::vector<double> frame_trig(size_t(r.T), 0.0);
  double n_spk = 0;
  for (int64_t t = C; t < r.T; ++t) n_spk += r.y[size_t(t)];
  if (!(n_spk > 0)) throw DataError(concat(op, ": no spikes after the first ", C, " frames"));
  for (int64_t t = C; t < r.T; ++t) {
    const double yt = r.y[size_t(t)];
    for (int64_t c = 0; c < C; ++c) {
      const double* f = &r.stim[size_t((t - C + c) * P)];
      double* m = &mean[size_t(c * P)];
      for (int64_t q = 0; q < P; ++q) m[q] += f[q];
      if (yt == 0) continue;
      double* s = &trig[size_t(c * P)];
      for (int64_t q = 0; q < P; ++q) s[q] += yt * f[q];
    }
  }
  const double nw = double(r.T - C);
  for (size_t i = 0; i < trig.size(); ++i) trig[i] = trig[i] / n_spk - mean[i] / nw;
  return trig;
}

// Solves (A + rho I) x = b for symmetric positive semi-definite A [n x n] by Cholesky;
// rhs has `m` columns (row-major [n, m]), overwritten with the solution.
void spd_solve(std::vector<double> A, int n, std::vector<double>& rhs, int m) {
  double tr = 0;
  for (int i = 0; i < n; ++i) tr += A[size_t(i) * n + i];
  const double rho = 1e-10 * (tr > 0 ? tr / n : 1.0);
  for (int i = 0; i < n; ++i) A[size_t(i) * n + i] += rho;
  for (int j = 0; j < n; ++j) {  // A = L L^T in the lower triangle
    double d = A[size_t(j) * n + j];
    for (int k = 0; k < j; ++k) d -= A[size_t(j) * n + k] * A[size_t(j) * n + k];
    d = std::sqrt(std::max(d, rho));
    A[size_t(j) * n + j] = d;
    for (int i = j + 1; i < n; ++i) {
      double s = A[size_t(i) * n + j];
      for (int k = 0; k < j; ++k) s -= A[size_t(i) * n + k] * A[size_t(j) * n + k];
      A[size_t(i) * n + j] = s / d;
    }
  }
  for (int c = 0; c < m; ++c) {
    for (int i = 0; i < n; ++i) {  // L z = b
      double s = rhs[size_t(i) * m + c];
      for (int k = 0; k < i; ++k) s -= A[size_t(i) * n + k] * rhs[size_t(k) * m + c];
      rhs[size_t(i) * m + c] = s / A[size_t(i) * n + i];
    }
    for (int i = n - 1; i >= 0; --i) {  // L^T x = z
      double s = rhs[size_t(i) * m + c];
      for (int k = i + 1; k < n; ++k) s -= A[size_t(k) * n + i] * rhs[size_t(k) * m + c];
      rhs[size_t(i) * m + c] = s / A[size_t(i) * n + i];
    }
  }
}

double unit_uniform(uint64_t seed, uint64_t index) {
  const rng::U4 r = rng::bits(seed, index, 0);
  return double((uint64_t(r.v[0]) << 21) ^ (r.v[1] >> 11)) * (1.0 / 9007199254740992.0);
}

}  // namespace

Tensor sta_minus_mean_window(const Tensor& stimulus, const Tensor& spikes, int64_t history) {
  const char* op = "sta_minus_mean_window";
  const Recording r = read_recording(op, stimulus, spikes, history);
  return Tensor::from({history, r.H, r.W}, sta_of(op, r, history), DType::F64);
}

// ---- LN -----------------------------------------------------------------------------------------

LnModel fit_ln(const Tensor& stimulus, const Tensor& spikes, const LnOptions& opt) {
  const char* op = "fit_ln";
  if (opt.n_bins < 2) throw DataError(concat(op, ": n_bins must be >= 2, got ", opt.n_bins));
  const Recording r = read_recording(op, stimulus, spikes, opt.history);
  const int64_t C = opt.history;
  LnModel m;
  m.filter = Tensor::from({C, r.H, r.W}, sta_of(op, r, C), DType::F64);
  const Tensor g = m.generator(stimulus);
  const double* gv = g.data<double>();
  std::vector<int64_t> order(size_t(r.T - C));
  std::iota(order.begin(), order.end(), C);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return gv[a] < gv[b]; });
  const int64_t n = int64_t(order.size()), bins = std::min<int64_t>(opt.n_bins, n);
  std::vector<double> knot_count;
  for (int64_t b = 0; b < bins; ++b) {
    const int64_t lo = b * n / bins, hi = (b + 1) * n / bins;
    double sg = 0, sy = 0;
    for (int64_t i = lo; i < hi; ++i)
      sg += gv[order[size_t(i)]], sy += r.y[size_t(order[size_t(i)])];
    const double cnt = double(hi - lo), mg = sg / cnt;
    if (!m.knot_g.empty() && mg <= m.knot_g.back()) {  // tied generator values: merge the bins
      m.knot_rate.back() =
          (m.knot_rate.back() * knot_count.back() + sy) / (knot_count.back() + cnt);
      knot_count.back() += cnt;
      continue;
    }
    m.knot_g.push_back(mg);
    m.knot_rate.push_back(sy / cnt);
    knot_count.push_back(cnt);
  }
  return m;
}

double LnModel::nonlinearity(double g) const {
  if (knot_g.empty()) return std::numeric_limits<double>::quiet_NaN();
  if (g <= knot_g.front()) return knot_rate.front();
  if (g >= knot_g.back()) return knot_rate.back();
  const size_t i = size_t(std::upper_bound(knot_g.begin(), knot_g.end(), g) - knot_g.begin());
  const double w = (g - knot_g[i - 1]) / (knot_g[i] - knot_g[i - 1]);
  return (1 - w) * knot_rate[i - 1] + w * knot_rate[i];
}

Tensor LnModel::generator(const Tensor& stimulus) const {
  const char* op = "LnModel::generator";
  if (!filter.defined()) throw DataError(concat(op, ": the model has no filter (not fitted)"));
  const int64_t C = filter.dim(0), H = filter.dim(1), W = filter.dim(2), P = H * W;
  if (!stimulus.defined() || !stimulus.is_cpu() || stimulus.rank() != 3 || stimulus.dim(1) != H ||
      stimulus.dim(2) != W)
    throw DataError(
        concat(op, ": stimulus ", stimulus.str(), " must be a host [T, ", H, ", ", W, "]"));
  const int64_t T = stimulus.dim(0);
  const auto s = stimulus.to_vector();
  const double* k = filter.data<double>();
  // Per-frame projections onto every channel, then g_t = sum_c proj[t - C + c][c].
  std::vector<double> proj(size_t(T * C), 0.0);
  for (int64_t f = 0; f < T; ++f)
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t q = 0; q < P; ++q) acc += k[c * P + q] * s[size_t(f * P + q)];
      proj[size_t(f * C + c)] = acc;
    }
  Tensor g = Tensor::empty({T}, DType::F64);
  double* gv = g.data<double>();
  for (int64_t t = 0; t < T; ++t) {
    if (t < C) {
      gv[t] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    double acc = 0;
    for (int64_t c = 0; c < C; ++c) acc += proj[size_t((t - C + c) * C + c)];
    gv[t] = acc;
  }
  return g;
}

Tensor LnModel::predict(const Tensor& stimulus) const {
  Tensor g = generator(stimulus);
  double* v = g.data<double>();
  for (int64_t t = 0; t < g.numel(); ++t)
    if (!std::isnan(v[t])) v[t] = nonlinearity(v[t]);
  return g;
}

// ---- STNMF --------------------------------------------------------------------------------------

StnmfResult fit_stnmf(const Tensor& stimulus, const Tensor& spikes, const StnmfOptions& opt) {
  const char* op = "fit_stnmf";
  if (opt.n_modules < 1 || opt.iterations < 1 || opt.restarts < 1 || !(opt.sparsity >= 0) ||
      !(opt.ridge >= 0) || !(opt.roi_frac >= 0 && opt.roi_frac < 1) || opt.roi_margin < 0)
    throw DataError(concat(op,
                           ": need n_modules, iterations, restarts >= 1, sparsity, ridge, "
                           "roi_margin >= 0 and roi_frac in [0, 1)"));
  const Recording r = read_recording(op, stimulus, spikes, opt.history);
  const int64_t C = opt.history, K = opt.n_modules;
  const auto sta = sta_of(op, r, C);
  StnmfResult res;
  double best_energy = -1;
  for (int64_t c = 0; c < C; ++c) {
    double e = 0;
    for (int64_t q = 0; q < r.P; ++q) e += sta[size_t(c * r.P + q)] * sta[size_t(c * r.P + q)];
    if (e > best_energy) best_energy = e, res.peak_channel = c;
  }
  // Rank-1 STA: spatial u positive at its largest entry; v then signs the effective stimulus.
  const Rank1 r1 = rank1_decompose(Tensor::from({C, r.H, r.W}, sta, DType::F64));
  const double* u = r1.spatial.data<double>();
  std::vector<double> tw(static_cast<size_t>(C), 0.0);
  if (opt.effective == EffectiveStimulus::TemporalFilter) {
    for (int64_t c = 0; c < C; ++c) tw[size_t(c)] = r1.temporal.data<double>()[c];
  } else {
    double d = 0;
    for (int64_t q = 0; q < r.P; ++q) d += sta[size_t(res.peak_channel * r.P + q)] * u[q];
    tw[size_t(res.peak_channel)] = d < 0 ? -1.0 : 1.0;
  }
  res.temporal = Tensor::from({C}, tw, DType::F64);
  // Region of interest.
  std::vector<int64_t> pix;
  {
    double umax = 0;
    for (int64_t q = 0; q < r.P; ++q) umax = std::max(umax, std::abs(u[q]));
    for (int64_t q = 0; q < r.P; ++q) {
      bool in = opt.roi_frac == 0;
      for (int64_t dy = -opt.roi_margin; !in && dy <= opt.roi_margin; ++dy)
        for (int64_t dx = -opt.roi_margin; !in && dx <= opt.roi_margin; ++dx) {
          const int64_t y = q / r.W + dy, x = q % r.W + dx;
          in = y >= 0 && y < r.H && x >= 0 && x < r.W &&
               std::abs(u[y * r.W + x]) >= opt.roi_frac * umax && umax > 0;
        }
      if (in) pix.push_back(q);
    }
  }
  const int64_t P = int64_t(pix.size());
  res.n_pixels = P;
  // Ensemble X [S, P].
  std::vector<double> X;
  for (int64_t t = C; t < r.T; ++t) {
    const double yt = r.y[size_t(t)];
    if (yt <= 0) continue;
    const double s = std::sqrt(yt);
    for (int64_t q : pix) {
      double v = 0;
      for (int64_t c = 0; c < C; ++c)
        if (tw[size_t(c)] != 0) v += tw[size_t(c)] * r.stim[size_t((t - C + c) * r.P + q)];
      X.push_back(s * v);
    }
    ++res.n_rows;
    res.n_spikes += int64_t(std::llround(yt));
  }
  const int64_t S = res.n_rows;
  if (S < K) throw DataError(concat(op, ": ", S, " spike bins for ", K, " modules"));
  std::vector<double> G(size_t(P * P), 0.0);  // X^T X
  for (int64_t i = 0; i < S; ++i) {
    const double* x = &X[size_t(i * P)];
    for (int64_t a = 0; a < P; ++a)
      for (int64_t b = a; b < P; ++b) G[size_t(a * P + b)] += x[a] * x[b];
  }
  double x2 = 0;
  for (int64_t a = 0; a < P; ++a) {
    for (int64_t b = 0; b < a; ++b) G[size_t(a * P + b)] = G[size_t(b * P + a)];
    x2 += G[size_t(a * P + a)];
  }
  if (!(x2 > 0)) throw DataError(concat(op, ": the spike-triggered ensemble is all zero"));
  const double lamS = opt.sparsity * x2 / double(P);  // lambda * S with lambda = sparsity mean(X^2)
  const double ridge = opt.ridge > 0 ? opt.ridge : 1e-12;

  uint64_t draw = 0;  // index into the Philox init stream, shared by restarts and reseeds
  auto seed_random = [&](double* m) {
    for (int64_t q = 0; q < P; ++q) m[q] = unit_uniform(opt.seed, draw++);
  };
  auto normalise = [&](double* m) {
    double n2 = 0;
    for (int64_t q = 0; q < P; ++q) n2 += m[q] * m[q];
    if (!(n2 > 0)) return false;
    for (int64_t q = 0; q < P; ++q) m[q] /= std::sqrt(n2);
    return true;
  };
  // Q = M M^T + ridge I; B = Q^-1 M G (= W^T X); A = Q^-1 (M G M^T) Q^-1 (= W^T W);
  // f = tr G - tr(Q^-1 M G M^T) (= min_W ||X - W M||^2 + ridge ||W||^2).
  std::vector<double> Q, B, A;
  double fit = 0;
  auto weights_stats = [&](const std::vector<double>& M) {
    Q.assign(size_t(K * K), 0.0);
    for (int64_t a = 0; a < K; ++a)
      for (int64_t b = 0; b < K; ++b) {
        double v = a == b ? ridge : 0.0;
        for (int64_t q = 0; q < P; ++q) v += M[size_t(a * P + q)] * M[size_t(b * P + q)];
        Q[size_t(a * K + b)] = v;
      }
    std::vector<double> MG(size_t(K * P), 0.0), H(size_t(K * K), 0.0);
    for (int64_t a = 0; a < K; ++a)
      for (int64_t q = 0; q < P; ++q) {
        double v = 0;
        for (int64_t p2 = 0; p2 < P; ++p2) v += M[size_t(a * P + p2)] * G[size_t(p2 * P + q)];
        MG[size_t(a * P + q)] = v;
      }
    for (int64_t a = 0; a < K; ++a)
      for (int64_t b = 0; b < K; ++b)
        for (int64_t q = 0; q < P; ++q)
          H[size_t(a * K + b)] += MG[size_t(a * P + q)] * M[size_t(b * P + q)];
    B = MG;
    spd_solve(Q, int(K), B, int(P));
    std::vector<double> Z = H;  // Q^-1 H, then A = (Q^-1 (Q^-1 H)^T)^T
    spd_solve(Q, int(K), Z, int(K));
    fit = x2;
    for (int64_t a = 0; a < K; ++a) fit -= Z[size_t(a * K + a)];
    std::vector<double> Zt(size_t(K * K));
    for (int64_t a = 0; a < K; ++a)
      for (int64_t b = 0; b < K; ++b) Zt[size_t(a * K + b)] = Z[size_t(b * K + a)];
    spd_solve(Q, int(K), Zt, int(K));
    A.assign(size_t(K * K), 0.0);
    for (int64_t a = 0; a < K; ++a)
      for (int64_t b = 0; b < K; ++b) A[size_t(a * K + b)] = Zt[size_t(b * K + a)];
  };
  auto objective = [&](const std::vector<double>& M) {
    double l1 = 0;
    for (double v : M) l1 += v;
    return (fit + lamS * l1) / double(S);
  };

  std::vector<double> bestM;
  double best_obj = std::numeric_limits<double>::infinity();
  for (int rs = 0; rs < opt.restarts; ++rs) {
    std::vector<double> M(size_t(K * P), 0.0);
    if (rs == 0 && opt.init == StnmfInit::Svd) {
      const SymmetricEigen e = symmetric_eigen(G, int(P));
      for (int64_t k = 0; k < K; ++k) {
        double* m = &M[size_t(k * P)];
        if (k >= P) {
          seed_random(m);
        } else {
          double np2 = 0, nn2 = 0;
          for (int64_t q = 0; q < P; ++q) {
            const double v = e.vectors[size_t(k * P + q)];
            (v > 0 ? np2 : nn2) += v * v;
          }
          const double sg = np2 >= nn2 ? 1.0 : -1.0;
          for (int64_t q = 0; q < P; ++q)
            m[q] = std::max(0.0, sg * e.vectors[size_t(k * P + q)]) + 1e-3;
        }
      }
    } else {
      for (int64_t k = 0; k < K; ++k) seed_random(&M[size_t(k * P)]);
    }
    for (int64_t k = 0; k < K; ++k) normalise(&M[size_t(k * P)]);
    for (int it = 0; it < opt.iterations; ++it) {
      weights_stats(M);
      double change = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double akk = A[size_t(k * K + k)];
        if (!(akk > 0)) continue;
        for (int64_t q = 0; q < P; ++q) {
          double g = B[size_t(k * P + q)] - lamS;
          for (int64_t l = 0; l < K; ++l) g -= A[size_t(k * K + l)] * M[size_t(l * P + q)];
          double& mq = M[size_t(k * P + q)];
          const double next = std::max(0.0, mq + g / akk);
          change = std::max(change, std::abs(next - mq));
          mq = next;
        }
      }
      for (int64_t k = 0; k < K; ++k)
        if (!normalise(&M[size_t(k * P)])) {  // a module that died starts again
          seed_random(&M[size_t(k * P)]);
          normalise(&M[size_t(k * P)]);
          change = 1;
        }
      if (change < 1e-12) break;
    }
    weights_stats(M);
    const double obj = objective(M);
    if (obj < best_obj) best_obj = obj, bestM = M;
  }
  // Final weights W = X M^T Q^-1, residual, power.
  weights_stats(bestM);
  res.objective = objective(bestM);
  double wsq = 0;
  for (int64_t a = 0; a < K; ++a) wsq += A[size_t(a * K + a)];
  res.residual = (fit - ridge * wsq) / x2;
  std::vector<double> R(size_t(K * S), 0.0);  // M X^T, then Q^-1 M X^T = W^T
  for (int64_t i = 0; i < S; ++i)
    for (int64_t k = 0; k < K; ++k) {
      double v = 0;
      for (int64_t q = 0; q < P; ++q) v += bestM[size_t(k * P + q)] * X[size_t(i * P + q)];
      R[size_t(k * S + i)] = v;
    }
  spd_solve(Q, int(K), R, int(S));
  std::vector<double> power(static_cast<size_t>(K), 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < S; ++i)
      power[size_t(k)] += R[size_t(k * S + i)] * R[size_t(k * S + i)] / double(S);
  std::vector<int64_t> order(static_cast<size_t>(K));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return power[size_t(a)] > power[size_t(b)]; });
  res.modules = Tensor::zeros({K, r.H, r.W}, DType::F64);
  res.weights = Tensor::zeros({S, K}, DType::F64);
  double* mo = res.modules.data<double>();
  double* wo = res.weights.data<double>();
  for (int64_t j = 0; j < K; ++j) {
    const int64_t k = order[size_t(j)];
    for (int64_t q = 0; q < P; ++q) mo[j * r.P + pix[size_t(q)]] = bestM[size_t(k * P + q)];
    for (int64_t i = 0; i < S; ++i) wo[i * K + j] = R[size_t(k * S + i)];
    res.module_power.push_back(power[size_t(k)]);
  }
  return res;
}

}  // namespace dynsim::retina
