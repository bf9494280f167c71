// The retina generator's spec and ground truth as JSON (generator.h): the config a recording
// folder or HDF5 file carries, read back strictly (unknown keys, wrong types and missing keys are
// ConfigErrors naming the key), so a stored run can be regenerated bit for bit.
#include <algorithm>
#include <filesystem>
#include <functional>

#include "engine/core/errors.h"
#include "models/retina/generator.h"

namespace dynsim::retina {
namespace fs = std::filesystem;
using nlohmann::json;

// ---- JSON ------------------------------------------------------------------------------------
namespace {

// Strict reading of one JSON object: known keys only, typed, errors name where and the key.
class Obj {
 public:
  Obj(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j.is_object()) throw ConfigError(concat(where_, ": expected a JSON object"));
  }
  void only(std::initializer_list<const char*> keys) const {
    for (const auto& [k, v] : j_.items())
      if (std::none_of(keys.begin(), keys.end(), [&](const char* x) { return k == x; }))
        throw ConfigError(concat(where_, ": unknown key '", k, "'"));
  }
  template <class T>
  T get(const char* key, const T& def) const {
    if (!j_.contains(key)) return def;
    const json& v = j_.at(key);
    const bool ok = std::is_same_v<T, bool>          ? v.is_boolean()
                    : std::is_same_v<T, std::string> ? v.is_string()
                    : std::is_floating_point_v<T>    ? v.is_number()
                    : std::is_unsigned_v<T>          ? v.is_number_unsigned()
                                                     : v.is_number_integer();
    if (!ok)
      throw ConfigError(concat(where_, ": key '", key, "' has the wrong type (", v.dump(), ")"));
    return v.get<T>();
  }
  const json& need(const char* key) const {
    if (!j_.contains(key)) throw ConfigError(concat(where_, ": missing key '", key, "'"));
    return j_.at(key);
  }
  std::string at(const char* key) const { return concat(where_, ".", key); }

 private:
  const json& j_;
  std::string where_;
};

json tensor_json(const Tensor& t) {
  std::function<json(int, int64_t)> rec = [&](int d, int64_t off) {
    json a = json::array();
    int64_t stride = 1;
    for (int k = d + 1; k < t.rank(); ++k) stride *= t.dim(k);
    for (int64_t i = 0; i < t.dim(d); ++i)
      a.push_back(d + 1 == t.rank() ? json(t.item(off + i)) : rec(d + 1, off + i * stride));
    return a;
  };
  return rec(0, 0);
}

// A rectangular nested array of numbers of the given rank as f32.
Tensor tensor_from_json(const json& j, int rank, const std::string& where) {
  std::vector<int64_t> dims;
  const json* p = &j;
  for (int d = 0; d < rank; ++d) {
    if (!p->is_array()) throw ConfigError(concat(where, ": expected a ", rank, "-d array"));
    dims.push_back(int64_t(p->size()));
    if (p->empty()) break;
    p = &(*p)[0];
  }
  while (int(dims.size()) < rank) dims.push_back(0);
  std::vector<double> vals;
  std::function<void(const json&, int)> walk = [&](const json& a, int d) {
    if (!a.is_array() || int64_t(a.size()) != dims[size_t(d)])
      throw ConfigError(concat(where, ": ragged or non-array entry at depth ", d));
    for (const json& e : a) {
      if (d + 1 < rank) {
        walk(e, d + 1);
      } else {
        if (!e.is_number()) throw ConfigError(concat(where, ": non-number ", e.dump()));
        vals.push_back(e.get<double>());
      }
    }
  };
  walk(j, 0);
  return Tensor::from(Shape(dims), vals);
}

json temporal_json(const TemporalSpec& t) {
  return {{"a1", t.a1},
          {"a2", t.a2},
          {"n1", t.n1},
          {"n2", t.n2},
          {"theta1", t.theta1},
          {"theta2", t.theta2},
          {"delay_frames", t.delay_frames},
          {"taps", t.taps}};
}
TemporalSpec temporal_from(const json& j, const std::string& where) {
  Obj o(j, where);
  o.only({"a1", "a2", "n1", "n2", "theta1", "theta2", "delay_frames", "taps"});
  TemporalSpec t;
  t.a1 = o.get("a1", t.a1), t.a2 = o.get("a2", t.a2), t.n1 = o.get("n1", t.n1),
  t.n2 = o.get("n2", t.n2);
  t.theta1 = o.get("theta1", t.theta1), t.theta2 = o.get("theta2", t.theta2);
  t.delay_frames = o.get("delay_frames", t.delay_frames), t.taps = o.get("taps", t.taps);
  return t;
}

json nl_json(const Nonlinearity& f) {
  return {{"name", nl_name(f.kind)},
          {"threshold", f.threshold},
          {"scale", f.scale},
          {"power", f.power},
          {"beta", f.beta}};
}
Nonlinearity nl_from(const json& j, const std::string& where) {
  Obj o(j, where);
  o.only({"name", "threshold", "scale", "power", "beta"});
  Nonlinearity f;
  f.kind = nl_kind(o.get<std::string>("name", "relu"));
  f.threshold = o.get("threshold", f.threshold), f.scale = o.get("scale", f.scale);
  f.power = o.get("power", f.power), f.beta = o.get("beta", f.beta);
  return f;
}

const char* const kCalibration[] = {"none", "gain", "threshold_and_gain"};
Calibration calibration_from(const std::string& s, const std::string& where) {
  for (int i = 0; i < 3; ++i)
    if (s == kCalibration[i]) return Calibration(i);
  throw ConfigError(concat(where, ": calibration '", s, "' (none, gain, threshold_and_gain)"));
}
const char* const kStimulus[] = {"checkerboard", "white_noise", "natural_images"};
const char* const kSpikes[] = {"poisson", "bernoulli", "lif"};
template <class E, size_t N>
E enum_from(const char* const (&names)[N], const std::string& s, const std::string& where) {
  for (size_t i = 0; i < N; ++i)
    if (s == names[i]) return E(i);
  std::string all;
  for (size_t i = 0; i < N; ++i) all += (i ? ", " : "") + std::string(names[i]);
  throw ConfigError(concat(where, ": '", s, "' is not one of ", all));
}

}  // namespace

json spec_to_json(const GeneratorSpec& s) {
  json st = {{"kind", kStimulus[int(s.stimulus.kind)]},
             {"height", s.stimulus.height},
             {"width", s.stimulus.width},
             {"contrast", s.stimulus.contrast}};
  if (s.stimulus.kind == StimulusKind::NaturalImages) {
    json src = json::array(), shapes = json::array();
    for (size_t i = 0; i < s.stimulus.images.size(); ++i) {
      src.push_back(i < s.stimulus.image_sources.size() ? s.stimulus.image_sources[i] : "");
      shapes.push_back(s.stimulus.images[i].shape().vec());
    }
    st["image_sources"] = src;
    st["image_shapes"] = shapes;
    st["flash_frames"] = s.stimulus.flash_frames;
    st["gap_frames"] = s.stimulus.gap_frames;
    st["crop_scale"] = s.stimulus.crop_scale;
    st["match_per_crop"] = s.stimulus.match_per_crop;
  }
  const LifSpec& l = s.spikes.lif;
  json spikes = {{"model", kSpikes[int(s.spikes.model)]},
                 {"bernoulli_draws", s.spikes.bernoulli_draws},
                 {"lif",
                  {{"tau_m_ms", l.tau_m_ms},
                   {"r_m", l.r_m},
                   {"v_rest_mv", l.v_rest_mv},
                   {"v_reset_mv", l.v_reset_mv},
                   {"v_th_mv", l.v_th_mv},
                   {"noise_mv", l.noise_mv},
                   {"refractory_ms", l.refractory_ms},
                   {"max_substep_ms", l.max_substep_ms}}}};
  json cells = json::array();
  for (const CellSpec& c : s.cells) {
    json subs = json::array();
    for (const Subunit& u : c.subunits)
      subs.push_back({{"mask", u.mask.defined() ? tensor_json(u.mask) : json::array()},
                      {"weight", u.weight},
                      {"polarity", u.polarity},
                      {"temporal", temporal_json(u.temporal)}});
    cells.push_back({{"name", c.name},
                     {"nonlinearity", nl_json(c.nonlinearity)},
                     {"output",
                      {{"calibration", kCalibration[int(c.output.calibration)]},
                       {"gain", c.output.gain},
                       {"theta", c.output.theta},
                       {"theta_quantile", c.output.theta_quantile},
                       {"target_rate_hz", c.output.target_rate_hz}}},
                     {"subunits", subs}});
  }
  return {{"seed", s.seed},
          {"dt", s.dt},
          {"frames", s.frames},
          {"test_frames", s.test_frames},
          {"test_trials", s.test_trials},
          {"calibration_frames", s.calibration_frames},
          {"stimulus", st},
          {"spikes", spikes},
          {"cells", cells}};
}

GeneratorSpec spec_from_json(const json& j, const std::string& where) {
  try {
    Obj o(j, where);
    o.only({"seed", "dt", "frames", "test_frames", "test_trials", "calibration_frames", "stimulus",
            "spikes", "cells"});
    GeneratorSpec s;
    s.seed = o.get("seed", s.seed), s.dt = o.get("dt", s.dt), s.frames = o.get("frames", s.frames);
    s.test_frames = o.get("test_frames", s.test_frames),
    s.test_trials = o.get("test_trials", s.test_trials);
    s.calibration_frames = o.get("calibration_frames", s.calibration_frames);
    if (j.contains("stimulus")) {
      Obj st(j.at("stimulus"), o.at("stimulus"));
      st.only({"kind", "height", "width", "contrast", "image_sources", "image_shapes",
               "flash_frames", "gap_frames", "crop_scale", "match_per_crop"});
      StimulusSpec& m = s.stimulus;
      m.kind = enum_from<StimulusKind>(kStimulus, st.get<std::string>("kind", "checkerboard"),
                                       st.at("kind"));
      m.height = st.get("height", m.height), m.width = st.get("width", m.width);
      m.contrast = st.get("contrast", m.contrast);
      m.flash_frames = st.get("flash_frames", m.flash_frames),
      m.gap_frames = st.get("gap_frames", m.gap_frames);
      m.crop_scale = st.get("crop_scale", m.crop_scale);
      m.match_per_crop = st.get("match_per_crop", m.match_per_crop);
      if (j.at("stimulus").contains("image_sources")) {
        const json& src = j.at("stimulus").at("image_sources");
        if (!src.is_array())
          throw ConfigError(concat(st.at("image_sources"), ": expected an array"));
        bool all = true;
        for (const json& e : src) {
          if (!e.is_string())
            throw ConfigError(concat(st.at("image_sources"), ": expected strings"));
          m.image_sources.push_back(e.get<std::string>());
          all = all && fs::is_regular_file(m.image_sources.back());
        }
        // Images come back only when every source is still there (indices must line up).
        if (all)
          for (const std::string& p : m.image_sources) m.images.push_back(load_grey_image(p));
      }
    }
    if (j.contains("spikes")) {
      Obj sp(j.at("spikes"), o.at("spikes"));
      sp.only({"model", "bernoulli_draws", "lif"});
      s.spikes.model =
          enum_from<SpikeModel>(kSpikes, sp.get<std::string>("model", "poisson"), sp.at("model"));
      s.spikes.bernoulli_draws = sp.get("bernoulli_draws", s.spikes.bernoulli_draws);
      if (j.at("spikes").contains("lif")) {
        Obj lo(j.at("spikes").at("lif"), sp.at("lif"));
        lo.only({"tau_m_ms", "r_m", "v_rest_mv", "v_reset_mv", "v_th_mv", "noise_mv",
                 "refractory_ms", "max_substep_ms"});
        LifSpec& l = s.spikes.lif;
        l.tau_m_ms = lo.get("tau_m_ms", l.tau_m_ms), l.r_m = lo.get("r_m", l.r_m);
        l.v_rest_mv = lo.get("v_rest_mv", l.v_rest_mv),
        l.v_reset_mv = lo.get("v_reset_mv", l.v_reset_mv);
        l.v_th_mv = lo.get("v_th_mv", l.v_th_mv), l.noise_mv = lo.get("noise_mv", l.noise_mv);
        l.refractory_ms = lo.get("refractory_ms", l.refractory_ms);
        l.max_substep_ms = lo.get("max_substep_ms", l.max_substep_ms);
      }
    }
    const json& cells = o.need("cells");
    if (!cells.is_array()) throw ConfigError(concat(o.at("cells"), ": expected an array"));
    for (size_t i = 0; i < cells.size(); ++i) {
      const std::string w = concat(o.at("cells"), "[", i, "]");
      Obj co(cells[i], w);
      co.only({"name", "nonlinearity", "output", "subunits"});
      CellSpec c;
      c.name = co.get<std::string>("name", c.name);
      if (cells[i].contains("nonlinearity"))
        c.nonlinearity = nl_from(cells[i].at("nonlinearity"), co.at("nonlinearity"));
      if (cells[i].contains("output")) {
        Obj oo(cells[i].at("output"), co.at("output"));
        oo.only({"calibration", "gain", "theta", "theta_quantile", "target_rate_hz"});
        OutputSpec& out = c.output;
        out.calibration = calibration_from(oo.get<std::string>("calibration", "threshold_and_gain"),
                                           oo.at("calibration"));
        out.gain = oo.get("gain", out.gain), out.theta = oo.get("theta", out.theta);
        out.theta_quantile = oo.get("theta_quantile", out.theta_quantile);
        out.target_rate_hz = oo.get("target_rate_hz", out.target_rate_hz);
      }
      const json& subs = co.need("subunits");
      if (!subs.is_array()) throw ConfigError(concat(co.at("subunits"), ": expected an array"));
      for (size_t k = 0; k < subs.size(); ++k) {
        const std::string ws = concat(co.at("subunits"), "[", k, "]");
        Obj so(subs[k], ws);
        so.only({"mask", "weight", "polarity", "temporal"});
        Subunit u;
        u.mask = tensor_from_json(so.need("mask"), 2, so.at("mask"));
        u.weight = so.get("weight", u.weight), u.polarity = so.get("polarity", u.polarity);
        if (subs[k].contains("temporal"))
          u.temporal = temporal_from(subs[k].at("temporal"), so.at("temporal"));
        c.subunits.push_back(u);
      }
      s.cells.push_back(c);
    }
    return s;
  } catch (const json::exception& e) {
    throw ConfigError(concat(where, ": ", e.what()));
  }
}

json truth_to_json(const std::vector<CellTruth>& truth, uint64_t seed, double dt) {
  json cells = json::array();
  for (const CellTruth& c : truth) {
    json temporal = json::array(), centroids = json::array();
    for (const TemporalSpec& t : c.temporal) temporal.push_back(temporal_json(t));
    const int64_t J = c.masks.dim(0), H = c.masks.dim(1), W = c.masks.dim(2);
    for (int64_t j = 0; j < J; ++j) {  // mask-weighted centre (y, x): for scoring and plots
      double m = 0, y = 0, x = 0;
      for (int64_t p = 0; p < H * W; ++p) {
        const double v = c.masks.item(j * H * W + p);
        m += v, y += v * double(p / W), x += v * double(p % W);
      }
      centroids.push_back({y / m, x / m});
    }
    cells.push_back({{"name", c.name},
                     {"masks", tensor_json(c.masks)},
                     {"filters", tensor_json(c.filters)},
                     {"weights", c.weights},
                     {"polarity", c.polarity},
                     {"temporal", temporal},
                     {"centroids", centroids},
                     {"nonlinearity", nl_json(c.nonlinearity)},
                     {"gain", c.gain},
                     {"theta", c.theta},
                     {"lif_gain", c.lif_gain},
                     {"target_rate_hz", c.target_rate_hz},
                     {"calibration", kCalibration[int(c.calibration)]},
                     {"theta_quantile", c.theta_quantile},
                     {"calibration_rate_hz", c.calibration_rate_hz},
                     {"active_fraction", c.active_fraction}});
  }
  return {{"seed", seed},
          {"dt", dt},
          {"model", "r = gain * max(0, sum_j w_j f(k_j * s_j) - theta)"},
          {"cells", cells}};
}

std::vector<CellTruth> truth_from_json(const json& j, const std::string& where) {
  try {
    Obj o(j, where);
    o.only({"seed", "dt", "model", "cells"});
    const json& cells = o.need("cells");
    if (!cells.is_array()) throw ConfigError(concat(o.at("cells"), ": expected an array"));
    std::vector<CellTruth> out;
    for (size_t i = 0; i < cells.size(); ++i) {
      Obj co(cells[i], concat(o.at("cells"), "[", i, "]"));
      co.only({"name", "masks", "filters", "weights", "polarity", "temporal", "centroids",
               "nonlinearity", "gain", "theta", "lif_gain", "target_rate_hz", "calibration",
               "theta_quantile", "calibration_rate_hz", "active_fraction"});
      CellTruth c;
      c.name = co.get<std::string>("name", "");
      c.masks = tensor_from_json(co.need("masks"), 3, co.at("masks"));
      c.filters = tensor_from_json(co.need("filters"), 2, co.at("filters"));
      c.weights = co.need("weights").get<std::vector<double>>();
      c.polarity = co.need("polarity").get<std::vector<int>>();
      for (const json& t : co.need("temporal"))
        c.temporal.push_back(temporal_from(t, co.at("temporal")));
      const size_t J = size_t(c.masks.dim(0));
      if (c.filters.dim(0) != int64_t(J) || c.weights.size() != J || c.polarity.size() != J ||
          c.temporal.size() != J)
        throw ConfigError(concat(co.at("masks"), ": ", J, " masks but ", c.filters.dim(0),
                                 " filters, ", c.weights.size(), " weights, ", c.polarity.size(),
                                 " polarities"));
      c.nonlinearity = nl_from(co.need("nonlinearity"), co.at("nonlinearity"));
      c.gain = co.get("gain", 0.0), c.theta = co.get("theta", 0.0),
      c.lif_gain = co.get("lif_gain", 0.0);
      c.target_rate_hz = co.get("target_rate_hz", 0.0);
      c.calibration =
          calibration_from(co.get<std::string>("calibration", "none"), co.at("calibration"));
      c.theta_quantile = co.get("theta_quantile", 0.0);
      c.calibration_rate_hz = co.get("calibration_rate_hz", 0.0);
      c.active_fraction = co.get("active_fraction", 0.0);
      out.push_back(c);
    }
    return out;
  } catch (const json::exception& e) {
    throw ConfigError(concat(where, ": ", e.what()));
  }
}

}  // namespace dynsim::retina
