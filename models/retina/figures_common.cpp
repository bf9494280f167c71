// Helpers of the figure experiments (models/retina/figures_detail.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "engine/core/errors.h"
#include "models/retina/figures.h"
#include "models/retina/figures_detail.h"

namespace dynsim::retina::figdetail {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string fmt(double v, int digits = 3) {
  std::ostringstream s;
  s << std::setprecision(digits) << v;
  return s.str();
}

}  // namespace

Config derive(const Config& base, const std::vector<std::string>& overrides) {
  return Config::parse(base.to_toml(), base.source_name(), figures_schema(), overrides);
}

Recording generate_first_cell(const Config& cfg, std::ostream* log, const std::string& tag) {
  const auto t0 = std::chrono::steady_clock::now();
  GeneratorSpec spec = generator_spec(cfg);
  spec.cells.resize(1);
  Recording rec = generate(spec);
  log_line(log, concat(tag, ": recording of ", rec.stimulus.dim(0), " frames, ",
                       spike_count(rec, 0), " spikes (", fmt(seconds_since(t0)), " s)"));
  return rec;
}

RetinaModel fit(const Config& cfg, const Recording& rec, const std::vector<std::string>& overrides,
                std::ostream* log, const std::string& tag) {
  std::vector<std::string> o = {"model.cell=0"};
  o.insert(o.end(), overrides.begin(), overrides.end());
  const Config c = derive(cfg, o);
  const auto t0 = std::chrono::steady_clock::now();
  RetinaModel m = fit_model(c, rec, nullptr);
  std::string cc;
  if (m.predicts()) cc = ", CC(rate) " + fmt(num(eval_cell(m, rec), "cc_rate"));
  log_line(log, concat(tag, ": ", m.kind, " fitted in ", fmt(seconds_since(t0)), " s", cc));
  return m;
}

std::vector<std::string> seed_overrides(const Config& cfg, int i) {
  return {concat("model.seed=", cfg.get_int("model.seed") + i),
          concat("fit.seed=", cfg.get_int("fit.seed") + i)};
}

Recording prefix(const Recording& rec, int64_t frames) {
  const int64_t T = rec.stimulus.dim(0);
  if (frames <= kHistory + 1 || frames > T)
    throw ConfigError(concat("a prefix of ", frames, " frames of a ", T, "-frame recording"));
  Recording r = rec;
  r.spec.frames = frames;
  r.stimulus = rec.stimulus.slice(0, frames);
  const int64_t n = rec.spikes.dim(0);
  r.spikes = Tensor::empty(Shape{n, frames}, rec.spikes.dtype());
  if (rec.rate.defined()) r.rate = Tensor::empty(Shape{n, frames}, rec.rate.dtype());
  for (int64_t c = 0; c < n; ++c)
    for (int64_t t = 0; t < frames; ++t) {
      r.spikes.set(c * frames + t, rec.spikes.item(c * T + t));
      if (rec.rate.defined()) r.rate.set(c * frames + t, rec.rate.item(c * T + t));
    }
  return r;
}

int64_t spike_count(const Recording& rec, int cell) {
  const int64_t T = rec.spikes.dim(1);
  int64_t n = 0;
  for (int64_t t = 0; t < T; ++t) n += int64_t(rec.spikes.item(cell * T + t));
  return n;
}

Tensor cell_counts(const Recording& rec, int cell) {
  const int64_t T = rec.spikes.dim(1);
  Tensor y = Tensor::empty(Shape{1, T});
  for (int64_t t = 0; t < T; ++t) y.set(t, rec.spikes.item(cell * T + t));
  return y;
}

json eval_cell(const RetinaModel& m, const Recording& rec, int target) {
  const json e = target >= 0 ? evaluate_model(m, rec, {target}) : evaluate_model(m, rec);
  return e.at("cells").at(0);
}

json score_cell(const RetinaModel& m, const Recording& rec, const Config& cfg) {
  RecoveryOptions o;
  o.cosine_threshold = cfg.get_double("score.cosine_threshold");
  return score_model(m, rec, o).at("cells").at(0);
}

double num(const json& j, const std::string& key) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nan("");
  return it->get<double>();
}

json finite(double v) {
  return std::isfinite(v) ? json(v) : json(nullptr);
}

json to_json(const Tensor& t) {
  json a = json::array();
  if (t.rank() <= 1) {
    for (int64_t i = 0; i < t.numel(); ++i) a.push_back(finite(t.item(i)));
    return a;
  }
  std::vector<int64_t> rest = t.shape().vec();
  rest.erase(rest.begin());
  for (int64_t i = 0; i < t.dim(0); ++i) a.push_back(to_json(t.slice(i, i + 1).view(Shape(rest))));
  return a;
}

std::pair<json, json> mean_sd(const std::vector<double>& v) {
  double s = 0, ss = 0;
  int n = 0;
  for (double x : v)
    if (std::isfinite(x)) {
      s += x;
      ++n;
    }
  if (n == 0) return {json(nullptr), json(nullptr)};
  const double m = s / n;
  for (double x : v)
    if (std::isfinite(x)) ss += (x - m) * (x - m);
  return {finite(m), finite(n > 1 ? std::sqrt(ss / (n - 1)) : 0.0)};
}

void log_line(std::ostream* log, const std::string& text) {
  if (log) *log << text << "\n" << std::flush;
}

}  // namespace dynsim::retina::figdetail
