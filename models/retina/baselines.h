// Classical baselines for the retina CNN (retina-notes §3, §5): an LN model (STA + binned static
// nonlinearity) and STNMF (Liu et al., Nat Commun 8:149, 2017): semi-NMF of the spike-triggered
// stimulus ensemble into non-negative spatial modules with signed weights (HALS updates for the
// modules as in the AF-HALS scheme of Zapp et al. 2024, ridge least squares for the weights).
// stimulus [T, H, W], spikes [T] (counts per frame). Windows follow the time-as-channel rule:
// channel c of window t holds frame t - C + c and the response is the count at frame t.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/core/tensor.h"

namespace dynsim::retina {

// ---- LN model -----------------------------------------------------------------------------------
// filter = STA - mean window: sum_t y_t X_t / sum_t y_t - mean_t X_t over t >= C. Generator g_t =
// <filter, X_t> (a constant offset would be absorbed by the nonlinearity). Nonlinearity: g on the
// training frames cut into n_bins equal-count bins; knot (mean g, mean count) per bin (bins with
// equal mean g merged); prediction interpolates linearly between knots and is held flat beyond the
// outer knots. Chosen over a parametric fit (exponential, softplus) because it assumes only that
// the nonlinearity is smooth: it fits threshold-linear, rectified-quadratic and saturating cells
// alike, is non-negative by construction and needs no optimiser.
struct LnOptions {
  int64_t history = 20;  // C
  int n_bins = 25;
};
struct LnModel {
  Tensor filter;                          // f64 [C, H, W]
  std::vector<double> knot_g, knot_rate;  // rate in counts per frame
  // [T] f64: g_t, NaN for t < C (no full window).
  Tensor generator(const Tensor& stimulus) const;
  // [T] f64 expected counts per frame (x 30 for spikes/s at 30 Hz); NaN for t < C.
  Tensor predict(const Tensor& stimulus) const;
  double nonlinearity(double g) const;
};
// DataError for shape mismatches, non-finite values, T <= C or no spikes on frames >= C.
LnModel fit_ln(const Tensor& stimulus, const Tensor& spikes, const LnOptions& opt = LnOptions());

// ---- STNMF --------------------------------------------------------------------------------------
// Ensemble: one row per frame t >= C with y_t > 0, scaled by sqrt(y_t) (the same objective as y_t
// copies of the row), holding the effective stimulus of that bin, either
//   TemporalFilter (default): sum_c v_c frame(t - C + c), v = the STA's rank-1 temporal vector,
//     signed so that the STA's spatial map is positive at its largest entry (the ensemble mean is
//     then positive over the receptive field, for ON and OFF cells alike), or
//   PeakLag (Liu et al. 2017's wording): the frame at the STA's peak lag (the channel with the
//     largest spatial energy sum_xy STA^2; lag = C - channel), signed the same way.
// With the reference cell's biphasic, delayed filter one frame holds only part of the subunit
// drive: on ~14k spikes (3 seeds) PeakLag recovered 1-3 of the 4 subunits at cosine >= 0.8,
// TemporalFilter all 4 at >= 0.97.
// roi_frac > 0 crops the ensemble to the receptive field (pixels with |STA spatial map| >=
// roi_frac * max, grown by roi_margin pixels), as STNMF practice recommends for large frames;
// modules are returned on the full frame (zero outside).
// Factorisation X [S, P] ~= W [S, K] M [K, P] with M >= 0 (modules, unit L2) and W signed,
// minimising (||X - W M||^2 + ridge ||W||^2) / S + lambda sum|M|, lambda = sparsity * mean(X^2):
//   W = X M^T (M M^T + ridge I)^-1       (the ridge keeps two nearly equal modules from taking
//                                          huge opposite weights to fit noise)
//   m_k <- max(0, m_k + ((W^T X)_k - (W^T W M)_k - lambda S) / (W^T W)_kk),  k = 1..K  (HALS)
//   then every module back to unit L2 (a module that died is reseeded).
// W^T X and W^T W follow from the Gram G = X^T X, so an iteration costs O(K P^2), not O(S K P).
// Init Svd (default, deterministic, NNDSVD-like): module k = the larger of the positive and the
// negative part of G's k-th eigenvector; Random: uniform [0, 1) from the Philox stream `seed`.
// Restarts after the first are Random; the lowest objective wins. Modules are returned sorted by
// weight power (mean W_k^2), descending.
enum class EffectiveStimulus { TemporalFilter, PeakLag };
enum class StnmfInit { Svd, Random };
struct StnmfOptions {
  int n_modules = 4;
  int64_t history = 20;
  int iterations = 300;
  double sparsity = 0.03;
  double ridge = 0.1;
  EffectiveStimulus effective = EffectiveStimulus::TemporalFilter;
  StnmfInit init = StnmfInit::Svd;
  int restarts = 1;
  uint64_t seed = 1;
  double roi_frac = 0.0;  // 0: whole frame
  int roi_margin = 1;
};
struct StnmfResult {
  Tensor modules;                    // f64 [K, H, W], >= 0, unit L2
  Tensor weights;                    // f64 [S, K] (rows scaled by sqrt(count), like X)
  std::vector<double> module_power;  // [K] mean squared weight (a strength for scoring)
  Tensor temporal;                   // f64 [C] the channel weights of the effective stimulus
  int64_t peak_channel = 0;
  double residual = 0;                             // ||X - W M||^2 / ||X||^2
  double objective = 0;                            // the minimised value above
  int64_t n_rows = 0, n_spikes = 0, n_pixels = 0;  // ensemble rows, spikes in them, ROI pixels
};
StnmfResult fit_stnmf(const Tensor& stimulus, const Tensor& spikes,
                      const StnmfOptions& opt = StnmfOptions());

// Shared by both: the STA minus the mean window, f64 [C, H, W] (DataError if no spikes).
Tensor sta_minus_mean_window(const Tensor& stimulus, const Tensor& spikes, int64_t history);

}  // namespace dynsim::retina
