// Helpers shared by the retina generator's source files (not part of its API).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "engine/core/tensor.h"
#include "models/retina/generator.h"
#include "models/retina/generator_math.h"

namespace dynsim::retina::detail {

// Loops with less work than this (in cheap steps) stay on one thread: a parallel region costs
// more than it saves there, and far more when the machine is oversubscribed.
constexpr int64_t kParallelWork = int64_t(1) << 20;

void check_stimulus(const StimulusSpec& s);                   // ConfigError
void check_bernoulli(const SpikeSpec& s);                     // ConfigError
void check_run(const GeneratorSpec& g);                       // ConfigError
std::string read_file(const std::string& path);               // NoInputError; DataError if empty
void check_finite(const Tensor& t, const std::string& what);  // DataError naming `what`
void expect(bool ok, const std::string& file, const std::string& msg);  // DataError "file: msg"
// Fills a fresh hidden sibling of `dir`, then renames it into place (replacing an old folder
// only with overwrite, else IoError). On any failure the temporary folder is removed.
void write_folder_atomic(const std::string& dir, bool overwrite,
                         const std::function<void(const std::filesystem::path&)>& fill);

// A cell as generator_math.h's loops read it: sparse masks (nonzero entries in pixel order),
// f64 filter taps, weights and the nonlinearity.
math::NlParams nl_params(const Nonlinearity& f);
math::FlatCell flat_cell(const CellTruth& c);
// Solves A (and theta) of cell `cell` from its generator signal g over the calibration stretch
// (the first `skip` frames dropped), then the LIF gain (generate's calibration, either device).
void calibrate(CellTruth& c, const std::vector<double>& g, int64_t skip, const GeneratorSpec& spec,
               uint32_t cell);

// LIF sub-steps: n equal steps of h ms per frame, h <= max_substep_ms. ConfigError for bad
// constants.
struct LifSteps {
  int n = 1;
  double h = 1;
};
LifSteps lif_steps(const LifSpec& l, double dt);

// Euler LIF over rates r[T] (Hz) with input I = gain r (held over each frame); noise(m) is the
// standard normal of sub-step m = t n + s. Counts per frame into `counts` (may be null); returns
// the total.
template <class Noise>
int64_t run_lif(const float* r, int64_t T, const LifSpec& l, const LifSteps& st, double gain,
                Noise noise, int32_t* counts) {
  double v = l.v_rest_mv, refractory_left = 0;
  int64_t total = 0;
  const double a = st.h / l.tau_m_ms;
  for (int64_t t = 0; t < T; ++t) {
    const double drive = l.r_m * gain * double(r[t]);
    int32_t c = 0;
    for (int sub = 0; sub < st.n; ++sub) {
      if (refractory_left > 1e-12) {
        refractory_left -= st.h;
        v = l.v_reset_mv;
        continue;
      }
      const double xi = l.noise_mv > 0 ? noise(uint64_t(t) * uint64_t(st.n) + uint64_t(sub)) : 0.0;
      v += a * (-(v - l.v_rest_mv) + drive + l.noise_mv * xi);
      if (v >= l.v_th_mv) {
        ++c;
        v = l.v_reset_mv;
        refractory_left = l.refractory_ms;
      }
    }
    if (counts) counts[t] = c;
    total += c;
  }
  return total;
}

}  // namespace dynsim::retina::detail
