// The retina workflow (models/retina/pipeline.h).
#include "models/retina/pipeline.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "engine/io/npy.h"
#include "models/retina/generator_detail.h"

namespace dynsim::retina {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

ConfigSchema make_cell_schema() {
  ConfigSchema c;
  c.add_string("name", "cell", "cell name");
  c.add_enum("layout", {"reference", "lattice"}, "reference",
             "reference: the paper's four 2x2 boxes (a 4x4 block at the centre, moved by "
             "shift_x/shift_y); lattice: Gaussian subunits on a lattice");
  c.add_enum("polarity", {"off", "on"}, "off", "sign of the subunits' temporal filters");
  c.add_int("shift_x", 0, "reference: move the block right by this many pixels");
  c.add_int("shift_y", 0, "reference: move the block down by this many pixels");
  c.add_int("box", 2, "reference: side of each box subunit (the block is 2 x box)").at_least(1);
  c.add_int("rows", 3, "lattice rows").at_least(1);
  c.add_int("cols", 3, "lattice columns").at_least(1);
  c.add_double("spacing", 4, "lattice spacing in pixels").greater_than(0);
  c.add_double("sigma", 1.5, "lattice Gaussian sigma in pixels").greater_than(0);
  c.add_double("offset_y", 4, "lattice first centre row").at_least(0);
  c.add_double("offset_x", 4, "lattice first centre column").at_least(0);
  c.add_bool("hexagonal", false, "hexagonal lattice");
  c.add_double("jitter_px", 0, "uniform +- jitter of the lattice centres").at_least(0);
  c.add_double("sigma_jitter", 0, "relative +- jitter of sigma").range(0, 0.9);
  c.add_int("layout_seed", 0, "seed of the jitter").at_least(0);
  c.add_double("weight", 1.0, "weight of every subunit");
  c.add_enum("nonlinearity",
             {"relu", "threshold_quadratic", "sublinear", "superlinear", "softplus", "nl2", "nl3"},
             "relu", "subunit nonlinearity");
  c.add_double("nl_threshold", 0, "threshold_quadratic: threshold");
  c.add_double("nl_power", 0, "sublinear / superlinear power (0: 0.5 / 2)").at_least(0);
  c.add_double("nl_scale", 1, "sublinear / superlinear / nl2 / nl3 scale").greater_than(0);
  c.add_double("nl_beta", 1, "softplus beta").greater_than(0);
  c.add_enum("calibration", {"threshold_and_gain", "gain", "none"}, "threshold_and_gain",
             "output calibration to target_rate_hz");
  c.add_double("target_rate_hz", 10, "mean rate the output is calibrated to").greater_than(0);
  c.add_double("gain", 2.0, "output gain A (calibration none)").at_least(0);
  c.add_double("theta", 2.5, "output threshold (calibration none or gain)");
  c.add_double("theta_quantile", 0.8, "threshold_and_gain: quantile of the generator signal")
      .range(0, 0.999);
  return c;
}

ConfigSchema make_schema() {
  ConfigSchema s;
  s.add_int("generate.seed", 1, "seed of every stream of the recording").at_least(0);
  s.add_int("generate.frames", 60000, "training frames (30 Hz)").at_least(21);
  s.add_int("generate.test_frames", 600, "repeated test segment (0: none)").at_least(0);
  s.add_int("generate.test_trials", 20, "repeats of the test segment").at_least(1);
  s.add_int("generate.calibration_frames", 100000, "frames used to calibrate each cell")
      .at_least(100);
  s.add_enum("generate.spikes", {"poisson", "bernoulli", "lif"}, "poisson",
             "spike model: Poisson counts, Bernoulli per frame (the authors' code), LIF");
  s.add_int("generate.bernoulli_draws", 1, "bernoulli: draws per frame (np)").at_least(1);
  s.add_enum("stimulus.kind", {"checkerboard", "white_noise", "natural_images"}, "checkerboard",
             "binary +-c checkerboard, Gaussian white noise, or flashed natural-image crops");
  s.add_int("stimulus.size", 8, "N: the stimulus is N x N").at_least(4);
  s.add_double("stimulus.contrast", 0.5, "c: +-c pixels; std c for noise and images").greater_than(0);
  s.add_strings("stimulus.images", {"skimage"},
                "natural_images: image files (PNG/JPEG/.npy) or 'skimage' (python3-skimage's CC0 "
                "pictures)");
  s.add_int("stimulus.flash_frames", 10, "natural_images: frames each crop is shown").at_least(1);
  s.add_int("stimulus.gap_frames", 10, "natural_images: grey frames after each crop").at_least(0);
  s.add_int("stimulus.crop_scale", 1, "natural_images: image pixels per stimulus pixel").at_least(1);
  s.add_table_array("cell", make_cell_schema(), "cells (none: the reference cell)");

  s.add_enum("model.kind", {"yan", "deep_retina", "ln", "stnmf"}, "yan",
             "the paper's CNN, deep-retina's two-layer net, an LN model (STA + nonlinearity) or "
             "STNMF subunits");
  s.add_int("model.filters", 8, "yan: conv filters K").at_least(1);
  // Defaults tuned on the reference cell (models/README.md): the paper's L1 (5.5e-4), lr (1e-3)
  // and 3,000 iterations left filters mixing two subunits; these recover all four.
  s.add_double("model.conv_l1", 1e-3, "yan: L1 weight penalty of the conv filters (paper: 5.5e-4)")
      .at_least(0);
  s.add_double("model.conv_l2", 1e-3, "yan: L2 weight penalty of the conv filters").at_least(0);
  s.add_double("model.noise_sigma", 0.1, "yan: Gaussian noise on the conv output (training)")
      .at_least(0);
  s.add_int("model.cell", -1, "fit this cell only (-1: every cell, one shared core)").at_least(-1);
  s.add_int("model.seed", 0, "initialisation seed").at_least(0);
  s.add_int("fit.batch", 2000, "windows per batch").at_least(1);
  s.add_int("fit.iterations", 2000, "optimiser steps at most").at_least(1);
  s.add_int("fit.epochs", 3000, "epochs at most").at_least(1);
  s.add_double("fit.lr", 3e-3, "Adam learning rate (paper: 1e-3)").greater_than(0);
  s.add_double("fit.validation_fraction", 0.1, "last windows held out for model selection")
      .range(0.01, 0.5);
  s.add_int("fit.validate_every", 20, "iterations between validations").at_least(1);
  s.add_double("fit.min_delta", 0.0, "snapshot only when val CC improves by more").at_least(0);
  s.add_int("fit.snapshot_after", 0, "no snapshot before this iteration").at_least(0);
  s.add_int("fit.patience", 0, "stop after this many validations without improvement (0: never)")
      .at_least(0);
  s.add_int("fit.seed", 0, "batch order and training noise").at_least(0);
  s.add_int("fit.threads", 0, "CPU threads (0: all cores)").at_least(0);
  s.add_int("fit.restarts", 1, "fits from different seeds; the best validation CC is kept")
      .at_least(1);
  s.add_string("fit.init", "",
               "start from this model folder's weights (same kind, size and cells; '': random)");
  s.add_int("ln.bins", 25, "LN: bins of the static nonlinearity").at_least(2);
  s.add_int("stnmf.modules", 4, "STNMF: modules").at_least(1);
  s.add_int("stnmf.iterations", 300, "STNMF: iterations").at_least(1);
  s.add_double("stnmf.sparsity", 0.0, "STNMF: L1 on the modules").at_least(0);
  s.add_int("stnmf.restarts", 1, "STNMF: random restarts").at_least(1);
  s.add_double("score.cosine_threshold", 0.8, "a subunit counts as recovered at this cosine")
      .range(0, 1);
  return s;
}

Tensor row(const Tensor& t, int i) {  // row i of [n, T] as [T]
  return t.slice(i, i + 1).view(Shape{t.dim(1)});
}

Tensor counts_f32(const Recording& rec, const std::vector<int>& cells) {
  const int64_t T = rec.spikes.dim(1);
  Tensor y = Tensor::empty(Shape{int64_t(cells.size()), T});
  for (size_t i = 0; i < cells.size(); ++i)
    for (int64_t t = 0; t < T; ++t) y.set(int64_t(i) * T + t, rec.spikes.item(cells[i] * T + t));
  return y;
}

std::vector<int> model_cells(const Config& cfg, const Recording& rec) {
  const int n = int(rec.spikes.dim(0)), c = int(cfg.get_int("model.cell"));
  if (c >= n)
    cfg.fail("model.cell", concat("cell ", c, " but the recording has ", n, " cell(s)"));
  std::vector<int> cells;
  if (c >= 0)
    cells.push_back(c);
  else
    for (int i = 0; i < n; ++i) cells.push_back(i);
  return cells;
}

}  // namespace

const ConfigSchema& retina_schema() {
  static const ConfigSchema s = make_schema();
  return s;
}

GeneratorSpec generator_spec(const Config& cfg) {
  GeneratorSpec g;
  g.seed = uint64_t(cfg.get_int("generate.seed"));
  g.frames = cfg.get_int("generate.frames");
  g.test_frames = cfg.get_int("generate.test_frames");
  g.test_trials = int(cfg.get_int("generate.test_trials"));
  g.calibration_frames = cfg.get_int("generate.calibration_frames");
  const std::string sp = cfg.get_string("generate.spikes");
  g.spikes.model = sp == "bernoulli" ? SpikeModel::Bernoulli : sp == "lif" ? SpikeModel::Lif : SpikeModel::Poisson;
  g.spikes.bernoulli_draws = int(cfg.get_int("generate.bernoulli_draws"));
  const int N = int(cfg.get_int("stimulus.size"));
  StimulusSpec& st = g.stimulus;
  st.height = st.width = N;
  st.contrast = cfg.get_double("stimulus.contrast");
  const std::string kind = cfg.get_string("stimulus.kind");
  st.kind = kind == "white_noise" ? StimulusKind::WhiteNoise
            : kind == "natural_images" ? StimulusKind::NaturalImages : StimulusKind::Checkerboard;
  if (st.kind == StimulusKind::NaturalImages) {
    for (const std::string& src : cfg.get_strings("stimulus.images")) {
      const std::vector<std::string> paths = src == "skimage" ? skimage_image_paths()
                                                              : std::vector<std::string>{src};
      if (paths.empty())
        cfg.fail("stimulus.images", "'skimage', but python3-skimage's images are not installed "
                                    "(apt-get install python3-skimage) ");
      for (const std::string& p : paths) {
        st.images.push_back(load_grey_image(p));
        st.image_sources.push_back(p);
      }
    }
    if (st.images.empty()) cfg.fail("stimulus.images", "natural_images needs at least one image");
    st.flash_frames = int(cfg.get_int("stimulus.flash_frames"));
    st.gap_frames = int(cfg.get_int("stimulus.gap_frames"));
    st.crop_scale = int(cfg.get_int("stimulus.crop_scale"));
  }
  const auto& cells = cfg.tables("cell");
  if (cells.empty()) {
    g.cells.push_back(reference_cell());
    if (N != 8) {  // the same block at the centre of a larger stimulus
      for (size_t j = 0; j < g.cells[0].subunits.size(); ++j) {
        const int r0 = N / 2 - 2 + int(j / 2) * 2, c0 = N / 2 - 2 + int(j % 2) * 2;
        g.cells[0].subunits[j].mask = box_mask(N, N, r0, c0, 2, 2);
      }
    }
  }
  for (const Config& c : cells) {
    CellSpec cs = reference_cell();
    cs.name = c.get_string("name");
    const int polarity = c.get_string("polarity") == "on" ? 1 : -1;
    const double w = c.get_double("weight");
    if (c.get_string("layout") == "reference") {
      const int box = int(c.get_int("box"));
      const int r0 = N / 2 - box + int(c.get_int("shift_y")),
                c0 = N / 2 - box + int(c.get_int("shift_x"));
      if (r0 < 0 || c0 < 0 || r0 + 2 * box > N || c0 + 2 * box > N)
        c.fail("shift_x", concat("the block of 2 x ", box, " pixels at row ", r0, ", column ", c0,
                                 " does not fit in ", N, " x ", N));
      const Subunit base = cs.subunits.at(0);
      cs.subunits.clear();
      for (int j = 0; j < 4; ++j) {
        Subunit u = base;
        u.mask = box_mask(N, N, r0 + (j / 2) * box, c0 + (j % 2) * box, box, box);
        u.polarity = polarity;
        u.weight = w;
        cs.subunits.push_back(u);
      }
    } else {
      LatticeSpec l;
      l.height = l.width = N;
      l.rows = int(c.get_int("rows"));
      l.cols = int(c.get_int("cols"));
      l.spacing = c.get_double("spacing");
      l.sigma = c.get_double("sigma");
      l.offset_y = c.get_double("offset_y");
      l.offset_x = c.get_double("offset_x");
      l.hexagonal = c.get_bool("hexagonal");
      l.jitter_px = c.get_double("jitter_px");
      l.sigma_jitter = c.get_double("sigma_jitter");
      l.seed = uint64_t(c.get_int("layout_seed"));
      l.polarity = polarity;
      l.weight = w;
      cs.subunits = lattice_subunits(l);
    }
    cs.nonlinearity.kind = nl_kind(c.get_string("nonlinearity"));
    cs.nonlinearity.threshold = c.get_double("nl_threshold");
    cs.nonlinearity.power = c.get_double("nl_power");
    cs.nonlinearity.scale = c.get_double("nl_scale");
    cs.nonlinearity.beta = c.get_double("nl_beta");
    const std::string cal = c.get_string("calibration");
    cs.output.calibration = cal == "none" ? Calibration::None
                            : cal == "gain" ? Calibration::Gain : Calibration::ThresholdAndGain;
    cs.output.target_rate_hz = c.get_double("target_rate_hz");
    cs.output.gain = c.get_double("gain");
    cs.output.theta = c.get_double("theta");
    cs.output.theta_quantile = c.get_double("theta_quantile");
    g.cells.push_back(cs);
  }
  return g;
}

CnnFitOptions fit_options(const Config& cfg) {
  CnnFitOptions o;
  o.batch_size = int(cfg.get_int("fit.batch"));
  o.max_iterations = cfg.get_int("fit.iterations");
  o.max_epochs = int(cfg.get_int("fit.epochs"));
  o.lr = cfg.get_double("fit.lr");
  o.validation_fraction = cfg.get_double("fit.validation_fraction");
  o.validate_every = int(cfg.get_int("fit.validate_every"));
  o.min_delta = cfg.get_double("fit.min_delta");
  o.snapshot_after = cfg.get_int("fit.snapshot_after");
  o.patience = int(cfg.get_int("fit.patience"));
  o.seed = uint64_t(cfg.get_int("fit.seed"));
  o.threads = int(cfg.get_int("fit.threads"));
  return o;
}

namespace {
// fit.init: the CNN of a saved model, refused unless it has this fit's kind, cells and shapes.
CnnModel initial_cnn(const Config& cfg, const std::string& dir, const RetinaModel& m,
                     const CnnSpec& spec) {
  auto refuse = [&](const std::string& why) { cfg.fail("fit.init", concat(dir, ": ", why)); };
  if (!fs::exists(fs::path(dir) / "model.json")) refuse("no model folder (model.json) there");
  const RetinaModel from = load_model(dir);
  if (from.kind != m.kind) refuse(concat("a ", from.kind, " model, but model.kind is ", m.kind));
  if (from.cells != m.cells) refuse("fitted to other cells than model.cell selects");
  const CnnSpec& f = from.cnn.spec;
  if (f.height != spec.height || f.width != spec.width || f.history != spec.history ||
      f.n_out != spec.n_out || f.conv.size() != spec.conv.size())
    refuse(concat("its input ", f.height, "x", f.width, " (history ", f.history, ", ", f.n_out,
                  " outputs) differs from this fit's ", spec.height, "x", spec.width, " (history ",
                  spec.history, ", ", spec.n_out, ")"));
  for (size_t l = 0; l < f.conv.size(); ++l)
    if (f.conv[l].channels != spec.conv[l].channels || f.conv[l].kernel != spec.conv[l].kernel)
      refuse(concat("conv layer ", l, " has ", f.conv[l].channels, " filters of ",
                    f.conv[l].kernel, "x", f.conv[l].kernel, ", this fit ", spec.conv[l].channels,
                    " of ", spec.conv[l].kernel, "x", spec.conv[l].kernel));
  CnnModel out = from.cnn;
  out.spec = spec;  // this fit's penalties and noise, the saved weights
  return out;
}
}  // namespace

RetinaModel fit_model(const Config& cfg, const Recording& rec, std::ostream* log) {
  check_recording(rec);
  RetinaModel m;
  m.kind = cfg.get_string("model.kind");
  m.cells = model_cells(cfg, rec);
  const int H = int(rec.stimulus.dim(1)), W = int(rec.stimulus.dim(2));
  const auto t0 = std::chrono::steady_clock::now();
  if (m.kind == "yan" || m.kind == "deep_retina") {
    const int n = int(m.cells.size());
    CnnSpec spec = m.kind == "yan" ? yan_spec(H, W, int(cfg.get_int("model.filters")), n)
                                   : deep_retina_spec(H, W, n);
    if (m.kind == "yan") {
      spec.conv[0].l1 = cfg.get_double("model.conv_l1");
      spec.conv[0].l2 = cfg.get_double("model.conv_l2");
      spec.conv[0].noise_sigma = cfg.get_double("model.noise_sigma");
    }
    const std::string init = cfg.get_string("fit.init");
    const int restarts = int(cfg.get_int("fit.restarts"));
    if (!init.empty() && restarts > 1)
      cfg.fail("fit.restarts", "restarts draw new initial weights; with fit.init set use 1");
    CnnFitOptions o = fit_options(cfg);
    const CnnData data{rec.stimulus, counts_f32(rec, m.cells)};
    // Restart r: initial weights from model.seed + r, batches and noise from fit.seed + r; the
    // restart with the best validation CC is kept (ties: the earliest).
    json runs = json::array();
    double best_cc = -std::numeric_limits<double>::infinity();
    for (int r = 0; r < restarts; ++r) {
      CnnModel cnn = init.empty() ? make_cnn(spec, uint64_t(cfg.get_int("model.seed") + r))
                                  : initial_cnn(cfg, init, m, spec);
      o.seed = uint64_t(cfg.get_int("fit.seed") + r);
      if (log)
        o.on_validation = [log, r, restarts](int64_t it, double loss, double cc) {
          if (restarts > 1) *log << "restart " << r << ", ";
          *log << "iteration " << it << ": train loss " << loss << ", validation CC " << cc
               << "\n";
        };
      const CnnFitResult res = fit_cnn(cnn, data, o);
      json hist = json::array();
      for (const CnnValidation& v : res.history)
        hist.push_back({v.iteration, v.train_loss, v.val_cc});
      const json run = {{"best_val_cc", res.best_val_cc}, {"best_iteration", res.best_iteration},
                        {"iterations", res.iterations}, {"epochs", res.epochs},
                        {"stopped_early", res.stopped_early}, {"history", hist}};
      runs.push_back({{"restart", r}, {"best_val_cc", res.best_val_cc}});
      if (res.best_val_cc > best_cc) {
        best_cc = res.best_val_cc;
        m.cnn = std::move(cnn);
        m.fit = run;
        m.fit["restart"] = r;
      }
    }
    m.fit["restarts"] = runs;
  } else if (m.kind == "ln") {
    LnOptions o;
    o.n_bins = int(cfg.get_int("ln.bins"));
    for (int c : m.cells) m.ln.push_back(fit_ln(rec.stimulus, row(rec.spikes, c), o));
  } else {
    StnmfOptions o;
    o.n_modules = int(cfg.get_int("stnmf.modules"));
    o.iterations = int(cfg.get_int("stnmf.iterations"));
    o.sparsity = cfg.get_double("stnmf.sparsity");
    o.restarts = int(cfg.get_int("stnmf.restarts"));
    o.seed = uint64_t(cfg.get_int("model.seed")) + 1;
    for (int c : m.cells) m.stnmf.push_back(fit_stnmf(rec.stimulus, row(rec.spikes, c), o));
  }
  m.fit["wall_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t spikes = 0;
  for (int c : m.cells)
    for (int64_t t = 0; t < rec.spikes.dim(1); ++t) spikes += int64_t(rec.spikes.item(c * rec.spikes.dim(1) + t));
  m.fit["spikes"] = spikes;
  m.fit["frames"] = rec.stimulus.dim(0);
  return m;
}

void save_model(const std::string& dir, const RetinaModel& m, const Config& cfg, bool overwrite) {
  detail::write_folder_atomic(dir, overwrite, [&](const fs::path& tmp) {
    json j = {{"kind", m.kind}, {"cells", m.cells}, {"fit", m.fit}, {"format", 1}};
    if (m.kind == "yan" || m.kind == "deep_retina") save_cnn(m.cnn, (tmp / "cnn.safetensors").string());
    json ln = json::array(), st = json::array();
    for (size_t i = 0; i < m.ln.size(); ++i) {
      save_npy((tmp / concat("ln_filter_", i, ".npy")).string(), m.ln[i].filter);
      ln.push_back({{"knot_g", m.ln[i].knot_g}, {"knot_rate", m.ln[i].knot_rate}});
    }
    for (size_t i = 0; i < m.stnmf.size(); ++i) {
      save_npy((tmp / concat("stnmf_modules_", i, ".npy")).string(), m.stnmf[i].modules);
      st.push_back({{"module_power", m.stnmf[i].module_power},
                    {"peak_channel", m.stnmf[i].peak_channel},
                    {"residual", m.stnmf[i].residual},
                    {"rows", m.stnmf[i].n_rows},
                    {"spikes", m.stnmf[i].n_spikes}});
    }
    if (!ln.empty()) j["ln"] = ln;
    if (!st.empty()) j["stnmf"] = st;
    write_file_atomic((tmp / "model.json").string(), j.dump(2) + "\n");
    write_file_atomic((tmp / "config.toml").string(), cfg.to_toml());
  });
}

RetinaModel load_model(const std::string& dir) {
  const std::string path = (fs::path(dir) / "model.json").string();
  json j;
  try {
    j = json::parse(detail::read_file(path));
  } catch (const json::exception& e) {
    throw DataError(concat(path, ": not valid JSON (", e.what(), ")"));
  }
  RetinaModel m;
  try {
    m.kind = j.at("kind").get<std::string>();
    m.cells = j.at("cells").get<std::vector<int>>();
    m.fit = j.value("fit", json::object());
    if (m.kind == "yan" || m.kind == "deep_retina") {
      m.cnn = load_cnn((fs::path(dir) / "cnn.safetensors").string());
    } else if (m.kind == "ln") {
      const json& ln = j.at("ln");
      for (size_t i = 0; i < ln.size(); ++i) {
        LnModel l;
        l.filter = load_npy((fs::path(dir) / concat("ln_filter_", i, ".npy")).string()).to_dtype(DType::F64);
        l.knot_g = ln[i].at("knot_g").get<std::vector<double>>();
        l.knot_rate = ln[i].at("knot_rate").get<std::vector<double>>();
        if (l.knot_g.size() != l.knot_rate.size() || l.knot_g.empty())
          throw DataError(concat(path, ": LN knots of cell ", i, " are empty or unequal"));
        m.ln.push_back(l);
      }
    } else if (m.kind == "stnmf") {
      const json& st = j.at("stnmf");
      for (size_t i = 0; i < st.size(); ++i) {
        StnmfResult r;
        r.modules = load_npy((fs::path(dir) / concat("stnmf_modules_", i, ".npy")).string()).to_dtype(DType::F64);
        r.module_power = st[i].at("module_power").get<std::vector<double>>();
        m.stnmf.push_back(r);
      }
    } else {
      throw DataError(concat(path, ": unknown model kind '", m.kind, "'"));
    }
  } catch (const json::exception& e) {
    throw DataError(concat(path, ": ", e.what()));
  }
  return m;
}

Tensor predict_counts(const RetinaModel& m, const Tensor& stimulus, int threads) {
  if (!m.predicts())
    throw DataError("an STNMF model gives subunits, not predictions (fit yan, deep_retina or ln)");
  if (m.kind == "ln") {
    const int64_t T = stimulus.dim(0);
    Tensor out = Tensor::empty(Shape{int64_t(m.ln.size()), T});
    for (size_t i = 0; i < m.ln.size(); ++i) {
      if (m.ln[i].filter.dim(1) != stimulus.dim(1) || m.ln[i].filter.dim(2) != stimulus.dim(2))
        throw DataError(concat("stimulus ", stimulus.shape().str(), " does not fit the LN filter ",
                               m.ln[i].filter.shape().str()));
      const Tensor p = m.ln[i].predict(stimulus);
      for (int64_t t = 0; t < T; ++t) out.set(int64_t(i) * T + t, p.item(t));
    }
    return out;
  }
  if (stimulus.dim(1) != m.cnn.spec.height || stimulus.dim(2) != m.cnn.spec.width)
    throw DataError(concat("stimulus ", stimulus.shape().str(), " does not fit the model (",
                           m.cnn.spec.height, " x ", m.cnn.spec.width, ")"));
  return predict(m.cnn, stimulus, threads);
}

json evaluate_model(const RetinaModel& m, const Recording& rec, std::vector<int> target_cells) {
  if (target_cells.empty()) target_cells = m.cells;
  if (target_cells.size() != m.cells.size())
    throw DataError(concat("evaluation needs one target cell per model cell (", m.cells.size(), ")"));
  const bool has_test = rec.test_stimulus.defined() && rec.test_stimulus.dim(0) > kHistory;
  const Tensor stim = has_test ? rec.test_stimulus
                               : rec.stimulus.slice(rec.stimulus.dim(0) * 9 / 10, rec.stimulus.dim(0));
  const Tensor pred = predict_counts(m, stim);
  const int64_t T = stim.dim(0), begin = has_test ? 0 : rec.stimulus.dim(0) * 9 / 10;
  json out = json::array();
  for (size_t i = 0; i < m.cells.size(); ++i) {
    const int c = target_cells[i];
    if (c < 0 || c >= rec.spikes.dim(0))
      throw DataError(concat("target cell ", c, " but the recording has ", rec.spikes.dim(0)));
    const Tensor p = row(pred, int(i)).to_dtype(DType::F64);
    json e = {{"model_cell", m.cells[i]}, {"target_cell", c}};
    const Tensor rate = has_test ? rec.test_rate : rec.rate;
    if (rate.defined()) {
      Tensor r = Tensor::empty(Shape{T}, DType::F64);
      for (int64_t t = 0; t < T; ++t) r.set(t, rate.item(c * rate.dim(1) + begin + t));
      e["cc_rate"] = pearson_cc(p, r);
    }
    if (has_test) {
      const int64_t n = rec.test_spikes.dim(0), C = rec.test_spikes.dim(1);
      Tensor trials = Tensor::empty(Shape{n, T}, DType::F64), psth = Tensor::zeros(Shape{T}, DType::F64);
      for (int64_t k = 0; k < n; ++k)
        for (int64_t t = 0; t < T; ++t) {
          const double y = rec.test_spikes.item((k * C + c) * T + t);
          trials.set(k * T + t, y);
          psth.set(t, psth.item(t) + y / double(n));
        }
      e["cc_psth"] = pearson_cc(p, psth);
      e["cc_psth_eps"] = pearson_cc(p, psth, true);
      const RepeatMetrics rm = repeat_metrics(trials, p);
      e["fev"] = rm.fev;
      e["feve"] = rm.feve;
      e["explainable"] = rm.explainable;
      e["bits_per_spike"] = bits_per_spike(trials, p);
    } else {
      Tensor y = Tensor::empty(Shape{T}, DType::F64);
      for (int64_t t = 0; t < T; ++t) y.set(t, rec.spikes.item(c * rec.spikes.dim(1) + begin + t));
      e["cc_spikes"] = pearson_cc(p, y);
      e["bits_per_spike"] = bits_per_spike(y, p);
    }
    for (auto it = e.begin(); it != e.end(); ++it)
      if (it->is_number_float() && !std::isfinite(it->get<double>())) *it = nullptr;
    out.push_back(e);
  }
  return {{"kind", m.kind}, {"segment", has_test ? "test" : "last 10% of training"},
          {"cells", out}};
}

json score_model(const RetinaModel& m, const Recording& rec, const RecoveryOptions& opt) {
  if (rec.truth.empty()) throw DataError("the recording has no ground truth to score against");
  json out = json::array();
  for (size_t i = 0; i < m.cells.size(); ++i) {
    const int c = m.cells[i];
    const CellTruth& truth = rec.truth.at(size_t(c));
    Candidates cand;
    RecoveryOptions o = opt;
    if (m.kind == "yan" || m.kind == "deep_retina") {
      if (m.cnn.spec.conv.size() != 1)
        throw DataError("subunit scoring reads single-conv-layer models (kind yan)");
      o.cell = int(i);
      cand = candidates_from_cnn(m.cnn.params.get("conv0.weight"), m.cnn.params.get("dense.weight"),
                                 rec.stimulus.dim(1), rec.stimulus.dim(2), truth.filters, o);
    } else if (m.kind == "stnmf") {
      cand = candidates_from_maps(m.stnmf[i].modules, m.stnmf[i].module_power);
    } else {
      // LN: the STA's rank-1 spatial map is one candidate (it cannot split subunits).
      const Rank1 r = rank1_decompose(m.ln[i].filter);
      cand = candidates_from_maps(r.spatial.view(Shape{1, r.spatial.dim(0), r.spatial.dim(1)}));
    }
    const RecoveryScore s = score_recovery(cand, truth.masks, truth.filters, o);
    json per = json::array();
    for (const SubunitMatch& u : s.per_subunit)
      per.push_back({{"filter", u.filter}, {"cosine", u.cosine}, {"iou", u.iou},
                     {"centroid_error_px", u.centroid_error},
                     {"temporal_cc", std::isfinite(u.temporal_cc) ? json(u.temporal_cc) : json(nullptr)},
                     {"recovered", u.recovered}});
    out.push_back({{"cell", c}, {"subunits", truth.masks.dim(0)}, {"recovered", s.recovered},
                   {"significant_filters", s.significant}, {"spurious_filters", s.spurious_filters},
                   {"mean_cosine", s.mean_cosine}, {"min_cosine", s.min_cosine},
                   {"per_subunit", per}});
  }
  return {{"kind", m.kind}, {"cosine_threshold", opt.cosine_threshold}, {"cells", out}};
}

}  // namespace dynsim::retina
