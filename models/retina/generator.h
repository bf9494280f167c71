// Synthetic retinal ganglion cells with known bipolar subunits (LNLN), after Yan et al.'s
// simulator (reference/retina-notes.md §2.1, §3): stimulus X [T,H,W] -> subunit drive
// s_j(t) = sum_xy m_j(x,y) X(t,x,y) -> causal temporal filter x_j(t) = sum_lag k_j[lag] s_j(t-lag)
// -> subunit nonlinearity b_j = f(x_j) -> rate r(t) = A max(0, sum_j w_j b_j(t) - theta) (Hz)
// -> spikes per frame (Poisson, Bernoulli or LIF). Every random quantity is a function of
// (seed, stream, index) through Philox, never of the order in which things are generated.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/core/tensor.h"

namespace dynsim {
class Context;
}

namespace dynsim::retina {

constexpr double kFrameDt = 1.0 / 30.0;  // s (30 Hz)

// ---- stimulus --------------------------------------------------------------------------------
enum class StimulusKind { Checkerboard, WhiteNoise, NaturalImages };

struct StimulusSpec {
  StimulusKind kind = StimulusKind::Checkerboard;
  int height = 8, width = 8;
  double contrast = 0.5;  // c: checkerboard pixels are +-c; white noise and images have std c
  // Natural images: grey [H_img, W_img] tensors (any scale: each is z-scored to mean 0, std c
  // over its pixels, so grey frames (0) are the mean luminance). image_sources names them in the
  // config (paths are reloaded by spec_from_json). A crop of height*crop_scale x
  // width*crop_scale image pixels (box-averaged to height x width) is flashed for flash_frames
  // frames, then gap_frames grey frames follow.
  std::vector<Tensor> images;
  std::vector<std::string> image_sources;
  int flash_frames = 10, gap_frames = 10, crop_scale = 1;
  bool match_per_crop = false;  // z-score each crop instead (mean 0, std c per flash)
};

// Frames [begin, end) of the stream `stream_seed`: [end-begin, H, W] f32. Frame t depends only on
// (stream_seed, t), so any two ranges agree where they overlap. ConfigError for a bad spec.
Tensor make_stimulus(const StimulusSpec& spec, uint64_t stream_seed, int64_t begin, int64_t end);

// Independent sub-streams of a run's seed (the stimulus of train/test/calibration, the spikes
// of cell c in trial n, layout jitter ...).
enum class Stream : uint32_t {
  TrainStimulus = 1,
  TestStimulus = 2,
  CalibrationStimulus = 3,
  TrainSpikes = 4,
  TestSpikes = 5,
  CalibrationSpikes = 6,
};
uint64_t stream_seed(uint64_t seed, Stream s, uint32_t a = 0, uint32_t b = 0);

// Grey image in [0, 1] as [H, W] f32: PNG/JPEG/BMP/PNM through stb_image (colour -> Rec. 601
// luma, alpha dropped) or .npy ([H,W], or [H,W,3|4]). NoInputError / DataError (NaN, empty).
Tensor load_grey_image(const std::string& path);
// Debian python3-skimage's CC0 / public-domain pictures (camera, astronaut, coffee, chelsea,
// grass, gravel, brick, moon) that exist under `dir`; empty when the package is not installed
// (apt-get install python3-skimage).
std::vector<std::string> skimage_image_paths(
    const std::string& dir = "/usr/lib/python3/dist-packages/skimage/data");

// ---- cells -----------------------------------------------------------------------------------
// g(t) = a1 Gamma(t; n1, theta1) - a2 Gamma(t; n2, theta2), t_lag = lag dt - delay_frames dt,
// g = 0 for t <= 0; the filter is polarity * g / ||g|| (OFF = -1: the notes' k = -g/||g||).
struct TemporalSpec {
  double a1 = 0.05, a2 = 0.05, n1 = 4, n2 = 5, theta1 = 0.05, theta2 = 0.05;  // theta in s
  double delay_frames = 2;
  int taps = 20;
};
std::vector<double> temporal_filter(const TemporalSpec& t, int polarity, double dt = kFrameDt);

// ON/OFF is the sign of the temporal filter (the ground-truth filters are signed), not of the
// weight: a rectified OFF subunit with a negative weight is an inhibitory OFF input, not an ON
// one. The linear receptive field is still sum_j w_j m_j (x) k_j.
struct Subunit {
  Tensor mask;        // [H, W] f32, >= 0
  double weight = 1;  // w_j (negative: an inhibitory subunit)
  int polarity = -1;  // -1 OFF, +1 ON: the sign of the temporal filter
  TemporalSpec temporal;
};

// The paper's box (h x w ones at row0, col0) and a Gaussian exp(-d^2 / 2 sigma^2) (peak 1,
// zero beyond cutoff sigmas) as [H, W] masks.
Tensor box_mask(int H, int W, int row0, int col0, int h, int w);
Tensor gaussian_mask(int H, int W, double cy, double cx, double sigma, double cutoff = 3.0);
// The reference layout (notes §2.1): four 2x2 boxes tiling rows/cols {2..5} of 8x8, OFF, w = 1,
// the shared filter above.
std::vector<Subunit> reference_subunits();

// Gaussian subunits on a square or hexagonal lattice: centre (r, c) at offset_y + r*dy,
// offset_x + c*spacing (+spacing/2 on odd rows when hexagonal, dy = spacing*sqrt(3)/2), moved
// by a uniform +-jitter_px and with sigma scaled by a uniform 1 +- sigma_jitter, both drawn
// from `seed`. Concatenate lattices for mixed sizes or ON + OFF sets.
struct LatticeSpec {
  int height = 16, width = 16, rows = 3, cols = 3;
  double spacing = 4, offset_y = 4, offset_x = 4, sigma = 1.5, cutoff = 3.0;
  bool hexagonal = false;
  double jitter_px = 0, sigma_jitter = 0;
  uint64_t seed = 0;
  int polarity = -1;
  double weight = 1;
  TemporalSpec temporal;
};
std::vector<Subunit> lattice_subunits(const LatticeSpec& l);

// Subunit nonlinearity f(x); x > 0 is the subunit's preferred contrast.
//   relu             max(0, x)
//   threshold_quadratic  max(0, x - threshold)^2
//   sublinear        scale (max(0,x)/scale)^power, 0 < power < 1 (default 0.5)
//   superlinear      scale (max(0,x)/scale)^power, power > 1 (default 2)
//   softplus         log(1 + exp(beta x)) / beta
//   nl2, nl3         the STNMF-SNN script's circle arcs, u = min(max(0,x)/scale, 1):
//                    nl2 = scale (1 - sqrt(1 - u^2)) (the script calls it sublinear; the arc
//                    is convex), nl3 = scale sqrt(1 - (1 - u)^2) (called superlinear; concave);
//                    both saturate at scale.
enum class NlKind { Relu, ThresholdQuadratic, Sublinear, Superlinear, Softplus, Nl2, Nl3 };
struct Nonlinearity {
  NlKind kind = NlKind::Relu;
  double threshold = 0, scale = 1, power = 0, beta = 1;  // power 0: the kind's default
  double operator()(double x) const;
};
const char* nl_name(NlKind k);
NlKind nl_kind(const std::string& name);  // ConfigError naming the valid ones

// Output r = A max(0, G - theta). Calibration on a separate stimulus stretch (calibration_frames
// of the CalibrationStimulus stream; the first taps-1 frames are skipped):
//   None:             A = gain, theta = theta as given (the paper: 2 and 2.5 -> about 0.36 Hz)
//   Gain:             theta as given, A = target / mean(max(0, G - theta)) (closed form)
//   ThresholdAndGain: theta = the theta_quantile quantile of G, then A as above.
// In LIF mode the LIF's input gain (mV per Hz of r) is then bisected, with frozen noise, until
// the LIF fires at the target rate (None: at the mean of r) over the same stretch.
enum class Calibration { None, Gain, ThresholdAndGain };
struct OutputSpec {
  Calibration calibration = Calibration::ThresholdAndGain;
  double gain = 2.0, theta = 2.5, theta_quantile = 0.8, target_rate_hz = 10.0;
};

struct CellSpec {
  std::string name = "cell";
  std::vector<Subunit> subunits;
  Nonlinearity nonlinearity;
  OutputSpec output;
};
CellSpec reference_cell();  // reference subunits, relu, theta 2.5, A calibrated to 10 Hz
CellSpec paper_cell();      // the same with the paper's A = 2, theta = 2.5 (no calibration)

// ---- spikes ----------------------------------------------------------------------------------
enum class SpikeModel { Poisson, Bernoulli, Lif };
// LIF (notes §2.1 constants, mV and ms): tau dV/dt = -(V - v_rest) + r_m I + noise xi, Euler
// with n = ceil(frame / max_substep_ms) equal sub-steps per frame, I = lif_gain r(t) held over
// the frame; V >= v_th: a spike, V = v_reset, held there for refractory_ms.
struct LifSpec {
  double tau_m_ms = 10, r_m = 1, v_rest_mv = -70, v_reset_mv = -75, v_th_mv = -40;
  double noise_mv = 0.01, refractory_ms = 0, max_substep_ms = 1;
};
struct SpikeSpec {
  SpikeModel model = SpikeModel::Poisson;
  int bernoulli_draws = 1;  // np: the count is #{i < np : u_i < r dt} (the authors' code: np=1)
  LifSpec lif;
};

// Spike counts per frame for one rate trace [T] (Hz): i32 [T]. Draw t uses counter t of
// `stream` (one Philox call per frame; LIF noise: sub-step t*n + s).
Tensor sample_spikes(const Tensor& rate, const SpikeSpec& s, uint64_t stream, double dt = kFrameDt,
                     double lif_gain = 0);

// ---- the model of one cell, as generated (the ground truth) ----------------------------------
struct CellTruth {
  std::string name;
  Tensor masks;    // [J, H, W] f32
  Tensor filters;  // [J, L] f32, signed (lag 0 first; applied to frame t - lag)
  std::vector<double> weights;
  std::vector<int> polarity;
  std::vector<TemporalSpec> temporal;
  Nonlinearity nonlinearity;
  double gain = 0, theta = 0, lif_gain = 0, target_rate_hz = 0;
  Calibration calibration = Calibration::None;
  double theta_quantile = 0;
  // Over the calibration stretch: mean rate (Hz) and the fraction of frames with r > 0.
  double calibration_rate_hz = 0, active_fraction = 0;
};
// The cell's model with gain/theta as given in spec (no calibration). ConfigError for masks
// that are not [H,W], negative or non-finite, or bad filter / NL parameters.
CellTruth build_cell(const CellSpec& spec, int H, int W, double dt = kFrameDt);

// Intermediate traces of a cell for a stimulus [T,H,W] (frames before 0 are grey): f64
// s, x, b [J, T], g [T] (= sum_j w_j b_j), r [T] (Hz).
struct CellTrace {
  Tensor s, x, b, g, r;
};
CellTrace trace_cell(const CellTruth& c, const Tensor& stimulus);
Tensor noise_free_rate(const CellTruth& c, const Tensor& stimulus);  // [T] f32 Hz

// ---- a whole run -----------------------------------------------------------------------------
struct GeneratorSpec {
  uint64_t seed = 1;
  double dt = kFrameDt;
  StimulusSpec stimulus;
  std::vector<CellSpec> cells;  // a population shares the stimulus
  int64_t frames = 100000;      // training stretch
  int64_t test_frames = 600;    // repeated test segment (0: none) ...
  int test_trials = 20;         // ... with this many independent spike draws
  int64_t calibration_frames = 100000;
  SpikeSpec spikes;
};

struct Recording {
  GeneratorSpec spec;            // as requested (cells before calibration)
  std::vector<CellTruth> truth;  // as generated (calibrated)
  nlohmann::json ground_truth;   // truth_to_json(truth, seed, dt)
  Tensor stimulus;               // [T, H, W] f32
  Tensor spikes;                 // [n_cells, T] i32
  Tensor rate;                   // [n_cells, T] f32 Hz, noise-free (undefined if unknown)
  Tensor test_stimulus;          // [Tr, H, W] f32 (undefined without a test segment)
  Tensor test_spikes;            // [n_trials, n_cells, Tr] i32
  Tensor test_rate;              // [n_cells, Tr] f32
};

// Calibrates every cell, then generates the training stretch and the test segment.
Recording generate(const GeneratorSpec& spec);
// Calibration alone: the calibrated model of cell i of spec.
CellTruth calibrate_cell(const GeneratorSpec& spec, size_t i);

// ---- the device choice (generator_device.cpp; CUDA twins in generator_cuda.cu) ---------------
// The functions above on ctx's device. On a CPU context they are those functions. On a CUDA
// context tensors live on the device, and every value is bit-identical to the CPU's for the same
// arguments (one operation order, correctly rounded operations: generator_math.h):
// checkerboard and white-noise frames, Poisson and Bernoulli counts, the noise-free rate. Natural-
// image frames and LIF spikes (sequential in time) are made on the CPU and copied. A build
// without CUDA cannot make a CUDA context (Context throws naming the missing backend).
Tensor make_stimulus(Context& ctx, const StimulusSpec& spec, uint64_t stream_seed, int64_t begin,
                     int64_t end);
Tensor sample_spikes(Context& ctx, const Tensor& rate, const SpikeSpec& s, uint64_t stream,
                     double dt = kFrameDt, double lif_gain = 0);
Tensor noise_free_rate(Context& ctx, const CellTruth& c, const Tensor& stimulus);
// A whole run with the stimulus, the calibration signals, the rates and the spikes computed on
// ctx's device; the Recording holds host tensors, bit for bit those of generate(spec).
Recording generate(const GeneratorSpec& spec, Context& ctx);

// ---- JSON (generator_json.cpp), folders (generator_io.cpp), HDF5 (generator_hdf5.cpp) ----
nlohmann::json spec_to_json(const GeneratorSpec& s);
GeneratorSpec spec_from_json(const nlohmann::json& j, const std::string& where);  // ConfigError
nlohmann::json truth_to_json(const std::vector<CellTruth>& truth, uint64_t seed, double dt);
std::vector<CellTruth> truth_from_json(const nlohmann::json& j, const std::string& where);

// DataError naming the tensor when shapes disagree (frames, cells, trials), a tensor holds NaN
// or Inf, or a count is negative.
void check_recording(const Recording& r);

// A folder with stimulus.npy (int8 signs for a checkerboard, times contrast; f32 otherwise),
// spikes.npy (u8 when every count fits, else i32), rate.npy, test_stimulus.npy,
// test_spikes.npy, test_rate.npy, ground_truth.json and config.json (spec_to_json). Written
// into a temporary sibling folder that is renamed into place; an existing folder is replaced
// only with overwrite (else IoError). Nothing is left behind on failure.
void write_recording(const std::string& dir, const Recording& r, bool overwrite = false);
// NoInputError for a missing folder/file; DataError naming the file for an empty or corrupt
// file, NaN/Inf, or lengths that disagree.
Recording read_recording(const std::string& dir);

// Yan et al.'s layout (notes §2.2) for one cell, in folder `dir` (written atomically):
// train.hdf5 {X [T,H,W] f32, y [T] i32 counts, r [T] f32 (= y, the training target),
// r_true [T] f32 (Hz)}, test.hdf5 {X [Tr,H,W], y [Tr, n_trials], r [Tr] (trial mean count),
// r_true [Tr]}, config.hdf5 {shape [2] i32 = (H, W)}; config and ground truth as root
// attributes of train.hdf5. Reading gives a one-cell Recording. Needs HDF5 (hdf5_available()).
void write_yan_hdf5(const std::string& dir, const Recording& r, int cell = 0,
                    bool overwrite = false);
Recording read_yan_hdf5(const std::string& dir);
// deep-retina's layout (notes §3.6), one file: {train,test}/stimulus [T,H,W] f32, /time [T] f64
// (s), /response/binned [n_cells,T] i32, /response/firing_rate_10ms [n_cells,T] f32 (counts/dt;
// test: trial mean), /response/rate_true (Hz, noise-free), test/repeats/cellNN [n_trials,Tr] i32,
// train/stas/cellNN [L,H,W] f32 (spike-triggered average, lag 0 first). 01-based cell numbers.
void write_deep_retina_hdf5(const std::string& path, const Recording& r, bool overwrite = false);
Recording read_deep_retina_hdf5(const std::string& path);
// Spike-triggered average [L, H, W] f32 of one cell (sta[lag] = sum_t y[t] X[t-lag] / sum_t y).
Tensor spike_triggered_average(const Tensor& stimulus, const Tensor& spikes_1d, int taps);

}  // namespace dynsim::retina
