// Transfer figures (figures.h): F6, models of several synthetic cells (shifted layouts, ON vs OFF,
// smaller subunits) applied to each other's responses, zero-shot and after refitting the readout;
// F7, models trained on white noise tested on natural images and the reverse, against
// within-class tests, for the same cell.
#include <algorithm>
#include <cmath>
#include <random>

#include "engine/core/errors.h"
#include "models/retina/figures_detail.h"

namespace dynsim::retina {

using nlohmann::json;
using namespace figdetail;

namespace {

struct TransferCell {
  const char* name;
  const char* polarity;
  int shift_x, shift_y, box;
};
// The first figures.transfer_cells of these (the reference block is 2 x box pixels on a side).
constexpr TransferCell kCells[] = {{"off", "off", 0, 0, 2},     {"off_dx2", "off", 2, 0, 2},
                                   {"on", "on", 0, 0, 2},       {"off_dy-2", "off", 0, -2, 2},
                                   {"on_dx-2", "on", -2, 0, 2}, {"off_box1", "off", 0, 0, 1}};

// Mean of the diagonal and of the off-diagonal entries.
json diag_summary(const std::vector<std::vector<double>>& m) {
  std::vector<double> d, o;
  for (size_t i = 0; i < m.size(); ++i)
    for (size_t j = 0; j < m.size(); ++j) (i == j ? d : o).push_back(m[i][j]);
  return {{"diagonal_mean", mean_sd(d).first}, {"off_diagonal_mean", mean_sd(o).first}};
}

json matrix_json(const std::vector<std::vector<double>>& m) {
  json a = json::array();
  for (const auto& r : m) {
    json row = json::array();
    for (double v : r) row.push_back(finite(v));
    a.push_back(row);
  }
  return a;
}

// "Dead leaves" pictures (occluding discs, radii with density ~ r^-3, uniform grey): natural-image
// statistics (a 1/f-like spectrum, edges, flat regions) without any image files.
std::vector<Tensor> dead_leaves(int n, int size, uint64_t seed) {
  std::vector<Tensor> out;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const double rmin = 1.5, rmax = size / 4.0;
  for (int i = 0; i < n; ++i) {
    Tensor img = Tensor::empty(Shape{size, size});
    img.fill(0.5);
    for (int d = 0; d < 4000; ++d) {
      const double r = 1.0 / std::sqrt(1.0 / (rmin * rmin) -
                                       u(rng) * (1.0 / (rmin * rmin) - 1.0 / (rmax * rmax)));
      const double cy = u(rng) * size, cx = u(rng) * size, grey = u(rng);
      for (int y = std::max(0, int(cy - r)); y < std::min(size, int(cy + r) + 1); ++y)
        for (int x = std::max(0, int(cx - r)); x < std::min(size, int(cx + r) + 1); ++x)
          if ((y - cy) * (y - cy) + (x - cx) * (x - cx) <= r * r)
            img.set(int64_t(y) * size + x, grey);
    }
    out.push_back(img);
  }
  return out;
}

}  // namespace

json figure_f6(const Config& cfg, std::ostream* log) {
  const int n = int(cfg.get_int("figures.transfer_cells"));
  GeneratorSpec spec = generator_spec(cfg);
  spec.cells.clear();
  json names = json::array(), cells = json::array();
  for (int i = 0; i < n; ++i) {
    const TransferCell& c = kCells[i];
    const Config ci =
        derive(cfg, {concat("cell[0].name=", c.name), "cell[0].layout=reference",
                     concat("cell[0].polarity=", c.polarity), concat("cell[0].shift_x=", c.shift_x),
                     concat("cell[0].shift_y=", c.shift_y), concat("cell[0].box=", c.box)});
    spec.cells.push_back(generator_spec(ci).cells.at(0));
    names.push_back(c.name);
    cells.push_back({{"name", c.name},
                     {"polarity", c.polarity},
                     {"shift_x", c.shift_x},
                     {"shift_y", c.shift_y},
                     {"box", c.box}});
  }
  const Recording rec = generate(spec);
  json spikes = json::array();
  for (int i = 0; i < n; ++i) spikes.push_back(spike_count(rec, i));
  log_line(log, concat("F6: recording of ", n, " cells, ", rec.stimulus.dim(0), " frames"));

  std::vector<RetinaModel> models;
  json fit_cc = json::array();  // each model on its own cell, before any refit
  for (int i = 0; i < n; ++i) {
    models.push_back(fit(cfg, rec, {"model.kind=yan", concat("model.cell=", i)}, log,
                         concat("F6 ", kCells[i].name)));
    fit_cc.push_back(finite(num(eval_cell(models.back(), rec), "cc_rate")));
  }
  CnnFitOptions o = fit_options(cfg);
  o.max_iterations = cfg.get_int("figures.readout_iterations");
  std::vector<std::vector<double>> zero(n, std::vector<double>(n)), readout = zero;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      zero[i][j] = num(eval_cell(models[i], rec, j), "cc_rate");
      // Readout refit: dense + softplus retrained on cell j, the core of cell i frozen, starting
      // from cell i's readout (a fresh one needs many more steps to reach the same CC).
      // A deep copy: RetinaModel copies share their parameter tensors.
      RetinaModel m = models[i];
      m.cnn = cast_model(models[i].cnn, models[i].cnn.params.get("dense.weight").dtype());
      refit_readout(m.cnn, CnnData{rec.stimulus, cell_counts(rec, j)}, o);
      m.cells = {j};
      readout[i][j] = num(eval_cell(m, rec, j), "cc_rate");
    }
  log_line(log, concat("F6: ", n * n, " readout refits done"));
  return {{"cells", names},
          {"cell_specs", cells},
          {"frames", rec.stimulus.dim(0)},
          {"spikes", spikes},
          {"metric", "cc_rate"},
          {"fit_cc", fit_cc},
          {"readout_iterations", o.max_iterations},
          {"zero_shot", matrix_json(zero)},
          {"readout", matrix_json(readout)},
          {"zero_shot_summary", diag_summary(zero)},
          {"readout_summary", diag_summary(readout)}};
}

json figure_f7(const Config& cfg, std::ostream* log) {
  // White noise: the config's stimulus (a checkerboard if it asks for natural images).
  const Config wn_cfg = cfg.get_string("stimulus.kind") == "natural_images"
                            ? derive(cfg, {"stimulus.kind=checkerboard"})
                            : cfg;
  const Recording wn = generate_first_cell(wn_cfg, log, "F7 white noise");

  // Natural images through the same cell: its gain and threshold as calibrated on white noise.
  GeneratorSpec spec = generator_spec(wn_cfg);
  spec.cells.resize(1);
  spec.cells[0].output.calibration = Calibration::None;
  spec.cells[0].output.gain = wn.truth.at(0).gain;
  spec.cells[0].output.theta = wn.truth.at(0).theta;
  StimulusSpec& st = spec.stimulus;
  st.kind = StimulusKind::NaturalImages;
  st.flash_frames = int(cfg.get_int("stimulus.flash_frames"));
  st.gap_frames = int(cfg.get_int("stimulus.gap_frames"));
  st.crop_scale = int(cfg.get_int("stimulus.crop_scale"));
  std::vector<std::string> paths;
  for (const std::string& s : cfg.get_strings("stimulus.images")) {
    const std::vector<std::string> p =
        s == "skimage" ? skimage_image_paths() : std::vector<std::string>{s};
    paths.insert(paths.end(), p.begin(), p.end());
  }
  std::string source = "files";
  if (paths.empty()) {
    if (cfg.has("stimulus.images"))
      cfg.fail("stimulus.images", "no images (python3-skimage's are not installed)");
    source = "synthetic dead leaves (python3-skimage is not installed)";
    st.images = dead_leaves(4, 256, uint64_t(cfg.get_int("generate.seed")));
    for (int i = 0; i < 4; ++i) st.image_sources.push_back(concat("dead_leaves_", i));
  } else {
    if (!cfg.has("stimulus.images")) source = "skimage";
    for (const std::string& p : paths) {
      st.images.push_back(load_grey_image(p));
      st.image_sources.push_back(p);
    }
  }
  const Recording ni = generate(spec);
  log_line(log, concat("F7 natural images (", source, "): recording of ", ni.stimulus.dim(0),
                       " frames, ", spike_count(ni, 0), " spikes"));

  const std::vector<const Recording*> recs = {&wn, &ni};
  json out = {{"classes", {"white_noise", "natural_images"}},
              {"labels", {"WN", "NI"}},
              {"image_source", source},
              {"images", st.image_sources},
              {"frames", wn.stimulus.dim(0)},
              {"spikes", {spike_count(wn, 0), spike_count(ni, 0)}},
              {"gain", wn.truth.at(0).gain},
              {"theta", wn.truth.at(0).theta},
              {"metric", "cc_rate"}};
  for (const char* kind : {"yan", "ln"}) {
    std::vector<std::vector<double>> m(2, std::vector<double>(2));
    for (int i = 0; i < 2; ++i) {
      const RetinaModel model = fit(cfg, *recs[i], {concat("model.kind=", kind)}, log,
                                    concat("F7 ", i == 0 ? "WN" : "NI"));
      for (int j = 0; j < 2; ++j) m[i][j] = num(eval_cell(model, *recs[j]), "cc_rate");
    }
    const std::string key = std::string(kind) == "yan" ? "cnn" : "ln";
    out[key] = matrix_json(m);
    out[key + "_within"] = {finite(m[0][0]), finite(m[1][1])};
    out[key + "_cross"] = {finite(m[0][1]), finite(m[1][0])};
  }
  return out;
}

}  // namespace dynsim::retina
