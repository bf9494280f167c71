// Figures of predicted responses (figures.h): F3, the CNN and LN predictions against the trial
// rasters and PSTH of the repeated test segment; F4, held-out CC and subunit recovery against the
// fraction of the training data used and against the batch size.
#include <cmath>

#include "engine/core/errors.h"
#include "models/retina/figures_detail.h"

namespace dynsim::retina {

using nlohmann::json;
using namespace figdetail;

namespace {

json metrics(const json& e) {
  json m = json::object();
  for (const char* k :
       {"cc_rate", "cc_psth", "cc_psth_eps", "fev", "feve", "explainable", "bits_per_spike"})
    m[k] = finite(num(e, k));
  return m;
}

}  // namespace

json figure_f3(const Config& cfg, std::ostream* log) {
  const Recording rec = generate_first_cell(cfg, log, "F3");
  if (!rec.test_stimulus.defined() || rec.test_stimulus.dim(0) <= kHistory + 1 ||
      rec.test_spikes.dim(0) < 2)
    cfg.fail("generate.test_frames", concat("F3 needs a repeated test segment of more than ",
                                            kHistory + 1, " frames and >= 2 trials"));
  const RetinaModel cnn = fit(cfg, rec, {"model.kind=yan"}, log, "F3");
  const RetinaModel ln = fit(cfg, rec, {"model.kind=ln"}, log, "F3");
  const Tensor pc = predict_counts(cnn, rec.test_stimulus),
               pl = predict_counts(ln, rec.test_stimulus);
  const int64_t Tr = rec.test_stimulus.dim(0), n = rec.test_spikes.dim(0),
                cells = rec.test_spikes.dim(1);
  const double dt = rec.spec.dt;
  // Frames from kHistory on: every model has a full window there.
  json time = json::array(), psth = json::array(), rate = json::array(), cnn_p = json::array(),
       ln_p = json::array(), trial = json::array(), frame = json::array(), count = json::array();
  for (int64_t t = kHistory; t < Tr; ++t) {
    double mean = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double y = rec.test_spikes.item(k * cells * Tr + t);  // cell 0 of trial k
      mean += y / double(n);
      if (y > 0) {
        trial.push_back(k);
        frame.push_back(t - kHistory);
        count.push_back(int64_t(y));
      }
    }
    time.push_back((t - kHistory) * dt);
    psth.push_back(mean);
    rate.push_back(finite(rec.test_rate.item(t) * dt));
    cnn_p.push_back(finite(pc.item(t)));
    ln_p.push_back(finite(pl.item(t)));
  }
  return {
      {"dt", dt},
      {"frames", rec.stimulus.dim(0)},
      {"spikes", spike_count(rec, 0)},
      {"trials", n},
      {"test_frames", Tr - kHistory},
      {"time_s", time},
      {"units", "spikes per frame"},
      {"psth", psth},
      {"rate_true", rate},
      {"cnn", cnn_p},
      {"ln", ln_p},
      {"raster", {{"trial", trial}, {"frame", frame}, {"count", count}}},
      {"metrics", {{"cnn", metrics(eval_cell(cnn, rec))}, {"ln", metrics(eval_cell(ln, rec))}}}};
}

json figure_f4(const Config& cfg, std::ostream* log) {
  const Recording rec = generate_first_cell(cfg, log, "F4");
  const int64_t T = rec.stimulus.dim(0);
  const int seeds = int(cfg.get_int("figures.seeds"));
  const std::vector<std::string> keys = {"cc_rate", "mean_cosine", "recovered"};
  auto point = [&](const Recording& r, const std::vector<std::string>& extra,
                   const std::string& tag, json& out) {
    std::vector<std::vector<double>> got(keys.size());
    for (int i = 0; i < seeds; ++i) {
      std::vector<std::string> o = seed_overrides(cfg, i);
      o.push_back("model.kind=yan");
      o.insert(o.end(), extra.begin(), extra.end());
      const Config c = derive(cfg, o);
      const RetinaModel m = fit(c, r, {}, log, tag);
      const json sc = score_cell(m, r, c);
      got[0].push_back(num(eval_cell(m, r), "cc_rate"));
      got[1].push_back(num(sc, "mean_cosine"));
      got[2].push_back(num(sc, "recovered"));
    }
    for (size_t k = 0; k < keys.size(); ++k) {
      const auto [mean, sd] = mean_sd(got[k]);
      out[keys[k]].push_back(mean);
      out[keys[k] + "_sd"].push_back(sd);
    }
  };
  auto empty = [&] {
    json j = json::object();
    for (const std::string& k : keys) j[k] = j[k + "_sd"] = json::array();
    return j;
  };

  const std::vector<double> fractions = cfg.get_doubles("figures.fractions");
  json by_fraction = empty(), frames = json::array(), spikes = json::array();
  by_fraction["ln_cc_rate"] = json::array();
  for (double f : fractions) {
    const int64_t n = std::min<int64_t>(T, int64_t(std::llround(f * double(T))));
    if (n < 4 * kHistory)
      cfg.fail("figures.fractions", concat("fraction ", f, " of ", T, " frames leaves ", n,
                                           " frames (need >= ", 4 * kHistory, ")"));
    const Recording sub = n == T ? rec : prefix(rec, n);
    frames.push_back(n);
    spikes.push_back(spike_count(sub, 0));
    point(sub, {}, concat("F4 fraction ", f), by_fraction);
    const RetinaModel ln = fit(cfg, sub, {"model.kind=ln"}, log, concat("F4 fraction ", f));
    by_fraction["ln_cc_rate"].push_back(finite(num(eval_cell(ln, sub), "cc_rate")));
  }
  const std::vector<double> batches = cfg.get_doubles("figures.batch_sizes");
  json by_batch = empty();
  for (double b : batches) {
    if (b != std::floor(b)) cfg.fail("figures.batch_sizes", concat(b, " is not a whole number"));
    point(rec, {concat("fit.batch=", int64_t(b))}, concat("F4 batch ", int64_t(b)), by_batch);
  }
  return {{"frames_total", T},
          {"seeds", seeds},
          {"iterations", cfg.get_int("fit.iterations")},
          {"batch", cfg.get_int("fit.batch")},
          {"filters", cfg.get_int("model.filters")},
          {"subunits", rec.truth.at(0).masks.dim(0)},
          {"fractions", fractions},
          {"frames", frames},
          {"spikes", spikes},
          {"by_fraction", by_fraction},
          {"batch_sizes", batches},
          {"by_batch", by_batch}};
}

}  // namespace dynsim::retina
