// Time-as-channel CNNs of retinal ganglion cells (Yan et al. 2020, notes §2.2-2.3; deep-retina's
// two-layer net, notes §5). Window i of a stimulus [T, H, W] is frames [i, i + history) as
// channels, oldest first (channel c = frame i + c, i.e. lag = history - c); its target is the
// response at frame i + history. Model: conv layers ('valid', stride 1) -> Gaussian noise
// (training only) -> ReLU, flatten, dense to n_out cells (a shared core, one readout row per
// cell), parametric softplus alpha log(1 + exp(beta u)) per cell. Loss (Keras semantics, no 1/2):
// mean Poisson NLL (pred - y log(pred + eps)) + per conv layer l1 sum|W| + l2 sum W^2
// + dense_l2 sum W_dense^2 + activity_l1 * sum_cells mean_batch |u|, u = the dense output
// before the softplus (the Keras Dense layer's own output; the softplus is a separate layer).
// Biases are never penalised. Responses [n_out, T] are counts (or rates) per frame.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/core/context.h"
#include "engine/core/params.h"
#include "engine/core/tensor.h"

namespace dynsim::retina {

constexpr int kHistory = 20;  // frames per window (667 ms at 30 Hz)

// ---- windows and targets ------------------------------------------------------------------
// Windows of a recording of `frames` frames: i in [0, frames - history); none if shorter.
int64_t window_count(int64_t frames, int history = kHistory);
// The frame whose response window i predicts (the bin right after the window).
inline int64_t target_frame(int64_t window, int history = kHistory) {
  return window + history;
}
// x [n, history, H, W] (f32 or f64) <- windows[0..n) of stimulus [T, H, W] (f32, f64 or i32).
void gather_windows(const Tensor& stimulus, const int64_t* windows, int64_t n, const Tensor& x);
// y [n_out, n] <- responses[:, target_frame(windows[b])]; responses [n_out, T] or [T].
void gather_targets(const Tensor& responses, const int64_t* windows, int64_t n, int history,
                    const Tensor& y);

// ---- architecture -------------------------------------------------------------------------
struct ConvLayerSpec {
  int channels = 8;
  int kernel = 7;             // square, 'valid', stride 1
  double l1 = 0.0, l2 = 0.0;  // weight penalties l1 sum|W| + l2 sum W^2
  double noise_sigma = 0.1;   // Gaussian noise added to the conv output, training only
};

struct CnnSpec {
  std::string name = "custom";  // "yan" | "deep_retina" | "custom" (informational)
  int history = kHistory;
  int height = 8, width = 8;
  std::vector<ConvLayerSpec> conv;
  int n_out = 1;
  double dense_l2 = 1e-3;
  double activity_l1 = 1e-3;                         // on the dense output u (before the softplus)
  double softplus_alpha = 0.2, softplus_beta = 5.0;  // initial values, one pair per cell
  bool train_softplus = true;
  double conv_init_std = 0.05;  // conv W ~ N(0, std) (Keras 0.3 'normal'); dense W glorot
                                // uniform; biases 0
  double poisson_eps = 1e-7;    // Keras epsilon

  // [C, h, w] after conv layer l (l = conv.size() - 1: the flattened feature map).
  std::vector<int64_t> conv_output(size_t l) const;
  int64_t feature_count() const;  // C * h * w of the last conv layer
  void validate() const;          // ConfigError naming the offending field
};

// The paper's net: `filters` filters of 7x7 (clipped to the input), L1 5.5e-4 + L2 1e-3 on the
// conv weights, noise 0.1, dense L2 1e-3, activity L1 1e-3, softplus alpha 0.2, beta 5.
CnnSpec yan_spec(int height, int width, int filters = 32, int n_out = 1);
// deep-retina's nips_cnn: 16@15x15 -> 8@9x9 -> dense -> softplus, L2 1e-3 on every weight,
// noise 0.1 after each conv, activity L1 1e-3, plain softplus (alpha = beta = 1, not trained).
// Inputs smaller than 24 pixels on a side shrink both kernels in the ratio 15:9 so that the
// receptive field is min(H, W) - 1 (a 2x2 output map): 8x8 -> 5 and 3, 16x16 -> 10 and 6.
CnnSpec deep_retina_spec(int height, int width, int n_out = 1);

// Parameters (ParamStore, in this order): conv<l>.weight [C_l, C_{l-1}, k, k] (C_{-1} =
// history), conv<l>.bias [C_l], dense.weight [n_out, feature_count], dense.bias [n_out],
// softplus.alpha [n_out], softplus.beta [n_out]. The core is the conv layers; the readout is
// dense + softplus. Frozen parameters (trainable = false) get no gradient and no update.
struct CnnModel {
  CnnSpec spec;
  ParamStore params;
};

// Initialised from Philox streams keyed by seed (deterministic); f32.
CnnModel make_cnn(const CnnSpec& spec, uint64_t seed);
// Sets the trainable flags of the core and the readout (softplus stays frozen when
// spec.train_softplus is false).
void set_trainable(CnnModel& m, bool core, bool readout);
// A copy of m's core (values and flags) with a fresh readout for n_out cells (seeded).
CnnModel with_new_readout(const CnnModel& m, int n_out, uint64_t seed);
// A deep copy in another float dtype (f64 for gradient checks).
CnnModel cast_model(const CnnModel& m, DType t);

// ---- evaluation ---------------------------------------------------------------------------
struct CnnLossTerms {
  double nll = 0, conv_penalty = 0, dense_penalty = 0, activity_penalty = 0;
  double total() const { return nll + conv_penalty + dense_penalty + activity_penalty; }
};

// Runs a model on batches, keeping its buffers between calls (they grow to the largest batch
// and then never reallocate). Works in the parameters' dtype (f32 or f64).
class CnnRunner {
 public:
  CnnRunner();
  ~CnnRunner();
  CnnRunner(CnnRunner&&) noexcept;
  CnnRunner& operator=(CnnRunner&&) noexcept;

  // Loss of a batch x [B, history, H, W] with targets y [n_out, B]. training: noise drawn from
  // ctx.rng() (reserving its indices). grads non-null: the gradient of total() w.r.t. every
  // trainable parameter is written (overwritten) into the entry of the same name, created on
  // first use; frozen parameters get none and the core's backward is skipped when all of it is
  // frozen.
  CnnLossTerms loss(Context& ctx, const CnnModel& m, const Tensor& x, const Tensor& y,
                    bool training, ParamStore* grads);
  // Predicted rates [n_out, B] for x without noise: a view of the runner's buffer, valid until
  // the next call.
  Tensor forward(Context& ctx, const CnnModel& m, const Tensor& x);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Rates [n_out, T] (f32) for stimulus [T, H, W]: column t is the prediction for frame t from
// frames [t - history, t). Columns t < history have no full window and are NaN (never a
// plausible rate, so they cannot pass silently into a metric). threads 0 = all cores.
Tensor predict(const CnnModel& m, const Tensor& stimulus, int threads = 0, int batch = 1024);

// ---- training -----------------------------------------------------------------------------
struct CnnFitOptions {
  int batch_size = 2000;
  int64_t max_iterations = 50000;  // optimiser steps; training stops at whichever limit
  int max_epochs = 3000;           // comes first
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam (torch semantics)
  double validation_fraction = 0.1;  // fit(data): the last windows held out (contiguous)
  int validate_every = 20;           // iterations (also once before training, and at the end)
  double min_delta = 0.0;            // a snapshot needs val CC > best + min_delta ...
  int64_t snapshot_after = 0;        // ... at iteration >= snapshot_after
  int patience = 0;   // stop after this many validations without a snapshot; 0 = never
  uint64_t seed = 0;  // batch order and training noise
  int threads = 0;    // 0 = all cores; results are reproducible for a fixed thread count
  // Called after every validation (logging); may be empty.
  std::function<void(int64_t iteration, double train_loss, double val_cc)> on_validation;
};
// The paper's schedule (notes §2.3): batch 2000, <= 50,000 iterations / 3,000 epochs, validate
// every 20, snapshot when CC improves by > 0.01 after iteration 500, no patience.
CnnFitOptions yan_fit_options();

struct CnnValidation {
  int64_t iteration = 0;
  double train_loss = 0;  // mean total loss of the batches since the previous validation
  double val_cc = 0;      // mean over cells of Pearson(prediction, response) on held-out windows
};
struct CnnFitResult {
  std::vector<CnnValidation> history;  // history[0] is before the first step
  double best_val_cc = 0;
  int64_t best_iteration = -1;  // -1: no snapshot qualified, the final weights were kept
  int64_t iterations = 0;
  int epochs = 0;  // epochs started
  bool stopped_early = false;
};

// A recording: stimulus [T, H, W] and responses [n_out, T] (or [T] for one cell).
struct CnnData {
  Tensor stimulus;
  Tensor responses;
};

// Trains m in place (its trainable parameters, with Adam) on the windows of `train`, validating
// on the windows of `val`; m ends with the best snapshot's weights. Deterministic given
// options.seed and options.threads.
CnnFitResult fit_cnn(CnnModel& m, const CnnData& train, const CnnData& val,
                     const CnnFitOptions& options);
// The same with the last validation_fraction of the windows of `data` held out: training
// targets are frames before the first validation target, so no target is seen twice.
CnnFitResult fit_cnn(CnnModel& m, const CnnData& data, const CnnFitOptions& options);
// Transfer building blocks. refit_readout trains only dense + softplus (the core frozen, flags
// restored afterwards); fine_tune trains every parameter starting from m's current weights.
CnnFitResult refit_readout(CnnModel& m, const CnnData& data, const CnnFitOptions& options);
CnnFitResult fine_tune(CnnModel& m, const CnnData& data, const CnnFitOptions& options);

// ---- files --------------------------------------------------------------------------------
// <path> (safetensors: the parameters, plus the architecture JSON in __metadata__
// "architecture") and its sidecar (path with .safetensors replaced by .json, else path + ".json").
void save_cnn(const CnnModel& m, const std::string& path);
// Reads the sidecar (or, when it is missing, the metadata copy); checks every tensor's name and
// shape against the architecture (DataError naming file and tensor). All parameters trainable
// except a frozen softplus.
CnnModel load_cnn(const std::string& path);
std::string cnn_sidecar_path(const std::string& path);
std::string cnn_spec_json(const CnnSpec& spec);  // the sidecar's text
CnnSpec cnn_spec_from_json(const std::string& text, const std::string& where);  // ConfigError

}  // namespace dynsim::retina
