// Retina analysis (retina-notes §2.4, §3): response metrics (Pearson CC and the authors' epsilon
// variant, FEV/FEVE from repeats, bits/spike, RMSE), rank-1 space/time decomposition of conv
// filters, Hungarian-matched scoring of recovered subunits against the ground-truth masks, and
// conv-unit STAs from white-noise probing. Plain host tensors in (any dtype), doubles out.
// Time-as-channel convention: window channel c holds frame i + c, the target is frame i + C, so
// channel c sees lag C - c (lags 1..C); true filters are indexed by lag 0..L-1.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/core/tensor.h"

namespace dynsim::retina {

// ---- Response metrics -------------------------------------------------------------------------
// Frames where any operand is NaN are dropped from every sum (a prediction of NaN marks "no
// prediction", e.g. the first C frames); unequal lengths, non-CPU tensors or fewer than 2 kept
// frames are DataErrors. A metric that is undefined on the kept frames (zero variance) is NaN.

// Standard Pearson r, or with epsilon_compat the authors' metrics.cc quirk:
//   r = sum(x~ y~) / sqrt(sum (x~ + eps)^2 * sum (y~ + eps)^2), x~ = x - mean(x), clipped to
//   [-1, 1]; since sum x~ = 0 the denominator is sqrt((Sxx + N eps^2)(Syy + N eps^2)).
double pearson_cc(const Tensor& x, const Tensor& y, bool epsilon_compat = false, double eps = 0.01);
// sqrt(mean (pred - target)^2).
double rmse(const Tensor& pred, const Tensor& target);
// deep-retina's FEV on one trace: 1 - mean (pred - target)^2 / var(target) (population var).
double fev(const Tensor& target, const Tensor& pred);

// Repeats: trials [n_trials, T] (counts per bin), pred [T] in the same units. With
// ybar_t = trial mean, N = n_trials, and all means over kept frames t:
//   fev         = 1 - mean_t (ybar_t - pred_t)^2 / var_t(ybar_t)              (as fev() above)
//   noise_var   = mean_t s_t^2,  s_t^2 = sum_n (y_nt - ybar_t)^2 / (N - 1)   (trial-to-trial)
//   total_var   = variance of all y_nt over (n, t), ddof 1
//   mse_trials  = mean_{n,t} (y_nt - pred_t)^2
//   feve        = 1 - (mse_trials - noise_var) / (total_var - noise_var)       (Cadena et al.
//                 2019, as openretina/neuralpredictors define it)
//   explainable = (total_var - noise_var) / total_var    (the oracle fraction of variance)
// A prediction equal to the true rate gives E[mse_trials] = noise_var, i.e. feve -> 1.
// Needs N >= 2; a frame is dropped if pred or any trial is NaN there. feve is NaN when
// total_var <= noise_var (nothing explainable), fev when var_t(ybar_t) = 0.
struct RepeatMetrics {
  double fev = 0, feve = 0, explainable = 0;
  double noise_var = 0, total_var = 0, mse_trials = 0;
  int64_t n_frames = 0;  // kept frames
};
RepeatMetrics repeat_metrics(const Tensor& trials, const Tensor& pred);

// Log-likelihood gain of a Poisson prediction over a homogeneous Poisson model with the mean
// count, in bits per spike:
//   ( sum_t [y_t log(lam_t) - lam_t] - sum_t [y_t log(lam0) - lam0] ) / (n_spikes ln 2),
//   lam_t = max(pred_t * dt, floor), lam0 = mean_t y_t (kept frames; log y! cancels).
// spikes [T] or [n_trials, T] (each trial against the same pred [T]); dt converts pred to
// counts per bin (1 if pred is already counts per bin, 1/30 for spikes/s at 30 Hz). The floor
// keeps a prediction of exactly 0 where a spike occurred finite (but very costly). NaN if
// there are no spikes on the kept frames.
double bits_per_spike(const Tensor& spikes, const Tensor& pred, double dt = 1.0,
                      double floor = 1e-8);

// ---- Rank-1 space/time decomposition ------------------------------------------------------------
// filter [L, kh, kw] ~= sigma * temporal (x) spatial, both unit L2, from the leading singular pair
// (Jacobi eigen-decomposition of the smaller Gram matrix, exact to rounding). Sign: if
// reference_temporal [L] is given, temporal . reference >= 0; otherwise the spatial entry of
// largest magnitude is positive. explained = sigma^2 / ||filter||_F^2.
struct Rank1 {
  Tensor spatial;   // f64 [kh, kw]
  Tensor temporal;  // f64 [L]
  double sigma = 0, explained = 0;
};
Rank1 rank1_decompose(const Tensor& filter, const Tensor& reference_temporal = Tensor());

// Eigen-decomposition of a symmetric n x n matrix (row-major) by cyclic Jacobi rotations:
// values descending, vectors[i * n + j] = component j of eigenvector i. O(n^3) per sweep, for
// the small Gram matrices used here (n up to a few hundred).
struct SymmetricEigen {
  std::vector<double> values, vectors;
};
SymmetricEigen symmetric_eigen(std::vector<double> a, int n);

// True temporal filter k [L] (lag order, k[lag] on frame t - lag) in window-channel order for
// C channels: out[c] = k[C - c] where 0 <= C - c < L, else 0 (lag 0 is not in the window).
Tensor lag_to_channel_order(const Tensor& k, int64_t n_channels);

// ---- Hungarian assignment -----------------------------------------------------------------------
// Optimal assignment on a rows x cols matrix (row-major), O(n^2 m) shortest augmenting paths with
// potentials. Every row is assigned if rows <= cols, every column otherwise. row_to_col[i] = -1 for
// an unassigned row. Ties resolve to one optimal assignment.
struct Assignment {
  std::vector<int> row_to_col;
  double total = 0;  // sum of the chosen entries (in the input's sense, not negated)
};
Assignment hungarian_minimize(const std::vector<double>& cost, int rows, int cols);
Assignment hungarian_maximize(const std::vector<double>& score, int rows, int cols);

// ---- Subunit recovery ---------------------------------------------------------------------------
// Candidates: spatial maps in input coordinates, the filter (or module) each came from, that
// filter's temporal vector in channel order (optional) and its strength (significance).
struct Candidates {
  Tensor spatial;                // f64 [N, H, W]
  Tensor temporal;               // f64 [N, C] or undefined (e.g. STNMF modules)
  std::vector<int> filter;       // [N] source filter / module index
  std::vector<double> strength;  // per source filter: [n_filters]
};

// Where a conv filter's spatial map goes in input coordinates. BestPosition: the output
// position with the largest |dense weight| of that filter (one candidate per filter; for a 7x7
// valid conv on 8x8 the four positions are 1-pixel shifts of one another). AllAbove: one
// candidate per position with |dense| > placement_frac * max |dense| (for weight sharing,
// e.g. a lattice of identical subunits). Alternatives not implemented: the dense-weighted sum
// of shifted maps (the channel's linearised receptive field), or conv-unit STAs (use
// conv_unit_stas() and pass them as conv_weight).
enum class Placement { BestPosition, AllAbove };

struct RecoveryOptions {
  double cosine_threshold = 0.8;  // recovered: matched cosine >= this
  double placement_frac = 0.05;   // output positions with |dense| above this * max |dense|
  double spurious_frac = 0.10;    // significant: strength above this * max strength
  double mask_frac = 0.5;         // IoU / centroid masks: >= this * max of each map
  Placement placement = Placement::BestPosition;
  int cell = 0;  // dense row (output unit) to read
};

// conv_weight [K, C, kh, kw] (stride 1, valid), dense [n_out, K*oh*ow] flattened as
// k*oh*ow + y*ow + x; the input is H x W (oh = H - kh + 1). Each filter gets its rank-1
// decomposition (sign fixed against true_temporal [L] in lag order if given, mean over
// subunits if [J, L]); strength = ||W_k||_F * max_p |dense_kp|. A filter with no position
// above placement_frac has no candidate (and is not significant).
Candidates candidates_from_cnn(const Tensor& conv_weight, const Tensor& dense, int64_t H, int64_t W,
                               const Tensor& true_temporal = Tensor(),
                               const RecoveryOptions& opt = RecoveryOptions());
// Spatial maps [N, H, W] used as they are (e.g. STNMF modules); strength[i] given or all 1.
Candidates candidates_from_maps(const Tensor& maps, std::vector<double> strength = {});

struct SubunitMatch {
  int candidate = -1;  // index into Candidates, -1 if none (more subunits than candidates)
  int filter = -1;
  double cosine = 0;          // of the unit-L2 maps (candidate sign-fixed as below)
  double iou = 0;             // of the >= mask_frac * max masks
  double centroid_error = 0;  // px, between value-weighted centroids of those masks
  double temporal_cc = 0;     // Pearson(candidate temporal, true k in channel order); NaN if n/a
  bool recovered = false;
};
struct RecoveryScore {
  std::vector<SubunitMatch> per_subunit;  // [J]
  int recovered = 0;
  int significant = 0;                     // filters with strength > spurious_frac * max
  std::vector<int> spurious_filters;       // significant filters with no recovered subunit
  double mean_cosine = 0, min_cosine = 0;  // over the J subunits (unmatched count as 0)
  Tensor similarity;                       // f64 [N, J], the matrix the assignment maximised
};
// masks [J, H, W] (>= 0), true_temporal [J, L] (lag order) or undefined. Only candidates of
// significant filters are matched. Sign: a candidate with a temporal vector v is compared as
// sign(v . k_j) * map with subunit j (so an OFF filter learned with flipped sign still
// matches); without one, as it is.
RecoveryScore score_recovery(const Candidates& cand, const Tensor& masks,
                             const Tensor& true_temporal = Tensor(),
                             const RecoveryOptions& opt = RecoveryOptions());

// ---- Conv-unit STAs -----------------------------------------------------------------------------
// activations maps windows f32 [B, C, H, W] to conv-channel outputs [B, K, oh, ow] (stride 1,
// valid, so kh = H - oh + 1). Probes with n_samples fresh white-noise windows (binary +-contrast,
// or Gaussian with sd contrast; Philox stream `seed`, element g of the probe sequence), in batches.
// Each channel's STA at output position p is sum_b a_bkp X_b[:, crop at p] / sum_b |a_bkp| (= the
// activation-weighted mean for ReLU outputs; |a| keeps signed activations bounded); the result
// averages these over the positions where the channel was ever active: sta [K, C, kh, kw] in filter
// coordinates (zeros for a channel never active).
struct ConvStaOptions {
  int64_t n_samples = 20000;
  int64_t batch = 1000;
  double contrast = 0.5;
  bool gaussian = false;
  uint64_t seed = 1;
};
struct ConvStas {
  Tensor sta;                           // f64 [K, C, kh, kw]
  std::vector<double> mean_activation;  // [K], over samples and positions
};
ConvStas conv_unit_stas(const std::function<Tensor(const Tensor&)>& activations, int64_t C,
                        int64_t H, int64_t W, const ConvStaOptions& opt = ConvStaOptions());

}  // namespace dynsim::retina
