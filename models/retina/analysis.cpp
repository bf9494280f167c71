// Retina analysis (models/retina/analysis.h): metrics, rank-1 decomposition, Hungarian
// assignment, subunit-recovery scoring and conv-unit STAs. Everything runs in double on the
// host; inputs are read through Tensor::item so any dtype works. This file: the response
// metrics and the host-tensor helpers; analysis_recovery.cpp: the Jacobi eigen-solver, rank-1,
// Hungarian, subunit recovery and conv-unit STAs; analysis_detail.h: what both share.
#include "models/retina/analysis.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/core/errors.h"
#include "models/retina/analysis_detail.h"

namespace dynsim::retina {

using analysis_detail::host_values;
using analysis_detail::kNaN;

std::vector<double> analysis_detail::host_values(const Tensor& t, const char* op,
                                                 const char* role) {
  if (!t.defined()) throw DataError(concat(op, ": ", role, " is undefined"));
  if (!t.is_cpu()) throw DataError(concat(op, ": ", role, " ", t.str(), " must be a host tensor"));
  return t.to_vector();
}

namespace {

void require_same_length(const char* op, const char* ra, const Tensor& a, const char* rb,
                         const Tensor& b) {
  if (a.numel() != b.numel())
    throw DataError(
        concat(op, ": ", ra, " ", a.str(), " and ", rb, " ", b.str(), " differ in length"));
}

// Frames where no listed vector is NaN; at least min_kept of them or a DataError.
std::vector<int64_t> kept_frames(const char* op, const std::vector<const std::vector<double>*>& v,
                                 int64_t min_kept = 2) {
  std::vector<int64_t> keep;
  const size_t n = v[0]->size();
  for (size_t t = 0; t < n; ++t) {
    bool ok = true;
    for (auto* p : v) ok = ok && !std::isnan((*p)[t]);
    if (ok) keep.push_back(int64_t(t));
  }
  if (int64_t(keep.size()) < min_kept)
    throw DataError(concat(op, ": only ", keep.size(), " of ", n,
                           " frames are free of NaN; need at least ", min_kept));
  return keep;
}

}  // namespace

// ---- Metrics ----------------------------------------------------------------------------------

double pearson_cc(const Tensor& x, const Tensor& y, bool epsilon_compat, double eps) {
  const char* op = "pearson_cc";
  require_same_length(op, "x", x, "y", y);
  const auto a = host_values(x, op, "x"), b = host_values(y, op, "y");
  const auto keep = kept_frames(op, {&a, &b});
  double ma = 0, mb = 0;
  for (int64_t t : keep) ma += a[t], mb += b[t];
  const double n = double(keep.size());
  ma /= n, mb /= n;
  double sab = 0, saa = 0, sbb = 0, sae = 0, sbe = 0;
  for (int64_t t : keep) {
    const double da = a[t] - ma, db = b[t] - mb;
    sab += da * db, saa += da * da, sbb += db * db;
    sae += (da + eps) * (da + eps), sbe += (db + eps) * (db + eps);
  }
  if (epsilon_compat) return std::clamp(sab / std::sqrt(sae * sbe), -1.0, 1.0);
  return (saa > 0 && sbb > 0) ? sab / std::sqrt(saa * sbb) : kNaN;
}

double rmse(const Tensor& pred, const Tensor& target) {
  const char* op = "rmse";
  require_same_length(op, "pred", pred, "target", target);
  const auto p = host_values(pred, op, "pred"), y = host_values(target, op, "target");
  const auto keep = kept_frames(op, {&p, &y}, 1);
  double s = 0;
  for (int64_t t : keep) s += (p[t] - y[t]) * (p[t] - y[t]);
  return std::sqrt(s / double(keep.size()));
}

double fev(const Tensor& target, const Tensor& pred) {
  const char* op = "fev";
  require_same_length(op, "target", target, "pred", pred);
  const auto y = host_values(target, op, "target"), p = host_values(pred, op, "pred");
  const auto keep = kept_frames(op, {&y, &p});
  double m = 0;
  for (int64_t t : keep) m += y[t];
  m /= double(keep.size());
  double mse = 0, var = 0;
  for (int64_t t : keep) mse += (p[t] - y[t]) * (p[t] - y[t]), var += (y[t] - m) * (y[t] - m);
  return var > 0 ? 1 - mse / var : kNaN;
}

RepeatMetrics repeat_metrics(const Tensor& trials, const Tensor& pred) {
  const char* op = "repeat_metrics";
  if (trials.rank() != 2 || trials.dim(0) < 2)
    throw DataError(concat(op, ": trials ", trials.str(), " must be [n_trials >= 2, T]"));
  const int64_t N = trials.dim(0), T = trials.dim(1);
  if (pred.numel() != T)
    throw DataError(concat(op, ": pred ", pred.str(), " does not match trials ", trials.str()));
  const auto y = host_values(trials, op, "trials"), p = host_values(pred, op, "pred");
  std::vector<double> frame_ok(size_t(T), 0.0);  // NaN where any trial is NaN
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t)
      if (std::isnan(y[size_t(n * T + t)])) frame_ok[size_t(t)] = kNaN;
  const auto keep = kept_frames(op, {&p, &frame_ok});
  const double nk = double(keep.size());
  RepeatMetrics r;
  r.n_frames = int64_t(keep.size());
  std::vector<double> ybar(keep.size());
  double grand = 0;
  for (size_t i = 0; i < keep.size(); ++i) {
    double s = 0;
    for (int64_t n = 0; n < N; ++n) s += y[size_t(n * T + keep[i])];
    ybar[i] = s / double(N);
    grand += s;
  }
  grand /= nk * double(N);
  double mbar = 0;
  for (double v : ybar) mbar += v;
  mbar /= nk;
  double mse_bar = 0, var_bar = 0, noise = 0, total = 0, mse_trials = 0;
  for (size_t i = 0; i < keep.size(); ++i) {
    const int64_t t = keep[i];
    mse_bar += (ybar[i] - p[t]) * (ybar[i] - p[t]);
    var_bar += (ybar[i] - mbar) * (ybar[i] - mbar);
    double s2 = 0;
    for (int64_t n = 0; n < N; ++n) {
      const double v = y[size_t(n * T + t)];
      s2 += (v - ybar[i]) * (v - ybar[i]);
      total += (v - grand) * (v - grand);
      mse_trials += (v - p[t]) * (v - p[t]);
    }
    noise += s2 / double(N - 1);
  }
  r.fev = var_bar > 0 ? 1 - mse_bar / var_bar : kNaN;
  r.noise_var = noise / nk;
  r.total_var = total / (nk * double(N) - 1);
  r.mse_trials = mse_trials / (nk * double(N));
  const double signal = r.total_var - r.noise_var;
  r.feve = signal > 0 ? 1 - (r.mse_trials - r.noise_var) / signal : kNaN;
  r.explainable = r.total_var > 0 ? signal / r.total_var : kNaN;
  return r;
}

double bits_per_spike(const Tensor& spikes, const Tensor& pred, double dt, double floor) {
  const char* op = "bits_per_spike";
  if (spikes.rank() != 1 && spikes.rank() != 2)
    throw DataError(concat(op, ": spikes ", spikes.str(), " must be [T] or [n_trials, T]"));
  const int64_t N = spikes.rank() == 2 ? spikes.dim(0) : 1, T = spikes.dim(-1);
  if (pred.numel() != T)
    throw DataError(concat(op, ": pred ", pred.str(), " does not match spikes ", spikes.str()));
  if (!(dt > 0) || !(floor > 0)) throw DataError(concat(op, ": dt and floor must be > 0"));
  const auto y = host_values(spikes, op, "spikes"), p = host_values(pred, op, "pred");
  std::vector<double> frame_ok(size_t(T), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t)
      if (std::isnan(y[size_t(n * T + t)])) frame_ok[size_t(t)] = kNaN;
  const auto keep = kept_frames(op, {&p, &frame_ok}, 1);
  double n_spk = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t : keep) n_spk += y[size_t(n * T + t)];
  if (!(n_spk > 0)) return kNaN;
  const double lam0 = n_spk / (double(keep.size()) * double(N));
  double ll = 0;
  for (int64_t t : keep) {
    const double lam = std::max(p[t] * dt, floor);
    double ys = 0;
    for (int64_t n = 0; n < N; ++n) ys += y[size_t(n * T + t)];
    ll += ys * std::log(lam) - double(N) * lam;
  }
  const double ll0 = n_spk * std::log(lam0) - double(keep.size()) * double(N) * lam0;
  return (ll - ll0) / (n_spk * std::log(2.0));
}

}  // namespace dynsim::retina
