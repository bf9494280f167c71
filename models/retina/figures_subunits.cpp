// Figures of recovered subunits (figures.h): F1, one cell's true subunits against the CNN's conv
// filters, the STA and the STNMF modules; F2, significant filters, recovery and held-out CC
// against the number of filters K and the conv L1 weight.
#include <algorithm>
#include <cmath>

#include "engine/core/errors.h"
#include "models/retina/figures_detail.h"

namespace dynsim::retina {

using nlohmann::json;
using namespace figdetail;

namespace {

// The cell's mean true temporal filter in window-channel order [C] (the sign reference).
Tensor channel_reference(const CellTruth& truth, int64_t C) {
  const int64_t J = truth.filters.dim(0), L = truth.filters.dim(1);
  Tensor k = Tensor::zeros(Shape{L}, DType::F64);
  for (int64_t j = 0; j < J; ++j)
    for (int64_t l = 0; l < L; ++l) k.set(l, k.item(l) + truth.filters.item(j * L + l) / double(J));
  return lag_to_channel_order(k, C);
}

double dot(const Tensor& a, const Tensor& b, int64_t a0 = 0, int64_t n = -1) {
  if (n < 0) n = b.numel();
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a.item(a0 + i) * b.item(i);
  return s;
}

double cosine(const Tensor& a, const Tensor& b) {
  const double ab = dot(a, b), aa = dot(a, a), bb = dot(b, b);
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : std::nan("");
}

json per_subunit(const RecoveryScore& s, const char* index_key) {
  json idx = json::array(), cos = json::array();
  for (const SubunitMatch& u : s.per_subunit) {
    idx.push_back(u.filter);
    cos.push_back(finite(u.cosine));
  }
  return {{index_key, idx},
          {"matched_cosine", cos},
          {"recovered", s.recovered},
          {"mean_cosine", finite(s.mean_cosine)},
          {"min_cosine", finite(s.min_cosine)}};
}

// The CNN panel: every filter's spatial map placed in input coordinates (sign-fixed against the
// true temporal filter), its strength and significance, and the Hungarian match to the truth.
json cnn_panel(const RetinaModel& m, const Recording& rec, const RecoveryOptions& o) {
  const CellTruth& truth = rec.truth.at(0);
  const int64_t H = rec.stimulus.dim(1), W = rec.stimulus.dim(2);
  const Tensor& conv = m.cnn.params.get("conv0.weight");
  const int64_t K = conv.dim(0), C = conv.dim(1);
  const Candidates cand =
      candidates_from_cnn(conv, m.cnn.params.get("dense.weight"), H, W, truth.filters, o);
  const RecoveryScore s = score_recovery(cand, truth.masks, truth.filters, o);
  const Tensor ref = channel_reference(truth, C);
  const double smax = *std::max_element(cand.strength.begin(), cand.strength.end());
  json maps = json::array(), temporal = json::array(), placed = json::array(),
       significant = json::array();
  for (int64_t k = 0; k < K; ++k) {
    Tensor map = Tensor::zeros(Shape{H, W}, DType::F64);
    Tensor tv = Tensor::zeros(Shape{C}, DType::F64);
    bool found = false;
    for (size_t i = 0; i < cand.filter.size() && !found; ++i) {
      if (cand.filter[i] != int(k)) continue;
      found = true;
      const double sign =
          cand.temporal.defined() && dot(cand.temporal, ref, int64_t(i) * C, C) < 0 ? -1 : 1;
      for (int64_t p = 0; p < H * W; ++p)
        map.set(p, sign * cand.spatial.item(int64_t(i) * H * W + p));
      if (cand.temporal.defined())
        for (int64_t c = 0; c < C; ++c) tv.set(c, sign * cand.temporal.item(int64_t(i) * C + c));
    }
    maps.push_back(to_json(map));
    temporal.push_back(to_json(tv));
    placed.push_back(found);
    significant.push_back(smax > 0 && cand.strength[size_t(k)] > o.spurious_frac * smax);
  }
  json strength = json::array();
  for (double v : cand.strength) strength.push_back(finite(smax > 0 ? v / smax : 0.0));
  json j = per_subunit(s, "matched_filter");
  j.update({{"filters", K},
            {"maps", maps},
            {"temporal", temporal},
            {"placed", placed},
            {"strength", strength},
            {"significant", significant},
            {"significant_count", s.significant},
            {"spurious", int(s.spurious_filters.size())},
            {"cc_rate", finite(num(eval_cell(m, rec), "cc_rate"))}});
  return j;
}

}  // namespace

json figure_f1(const Config& cfg, std::ostream* log) {
  const Recording rec = generate_first_cell(cfg, log, "F1");
  const CellTruth& truth = rec.truth.at(0);
  const int64_t H = rec.stimulus.dim(1), W = rec.stimulus.dim(2), J = truth.masks.dim(0);
  RecoveryOptions o;
  o.cosine_threshold = cfg.get_double("score.cosine_threshold");
  const RetinaModel cnn = fit(cfg, rec, {"model.kind=yan"}, log, "F1");
  const RetinaModel ln = fit(cfg, rec, {"model.kind=ln"}, log, "F1");
  const RetinaModel st = fit(cfg, rec, {"model.kind=stnmf"}, log, "F1");

  // STA: the LN filter's rank-1 spatial map (sign: its temporal part along the true filter)
  // against the whole block sum_j w_j m_j.
  const Tensor& sta = ln.ln.at(0).filter;
  const Tensor ref = channel_reference(truth, sta.dim(0));
  const Rank1 r = rank1_decompose(sta, ref);
  Tensor block = Tensor::zeros(Shape{H, W}, DType::F64);
  for (int64_t j = 0; j < J; ++j)
    for (int64_t p = 0; p < H * W; ++p)
      block.set(p, block.item(p) + truth.weights[size_t(j)] * truth.masks.item(j * H * W + p));
  const json sta_j = {{"map", to_json(r.spatial)},
                      {"temporal", to_json(r.temporal)},
                      {"explained", finite(r.explained)},
                      {"cosine_block", finite(cosine(r.spatial, block))},
                      {"cc_rate", finite(num(eval_cell(ln, rec), "cc_rate"))}};

  const StnmfResult& nmf = st.stnmf.at(0);
  const RecoveryScore ss =
      score_recovery(candidates_from_maps(nmf.modules, nmf.module_power), truth.masks, Tensor(), o);
  json stnmf_j = per_subunit(ss, "matched_module");
  json power = json::array();
  const double pmax = *std::max_element(nmf.module_power.begin(), nmf.module_power.end());
  for (double p : nmf.module_power) power.push_back(finite(pmax > 0 ? p / pmax : 0.0));
  stnmf_j.update({{"modules", to_json(nmf.modules)}, {"power", power}});

  json weights = json::array();
  for (double w : truth.weights) weights.push_back(w);
  return {{"height", H},
          {"width", W},
          {"frames", rec.stimulus.dim(0)},
          {"spikes", spike_count(rec, 0)},
          {"cosine_threshold", o.cosine_threshold},
          {"masks", to_json(truth.masks)},
          {"weights", weights},
          {"true_temporal", to_json(ref)},
          {"cnn", cnn_panel(cnn, rec, o)},
          {"sta", sta_j},
          {"stnmf", stnmf_j}};
}

json figure_f2(const Config& cfg, std::ostream* log) {
  const Recording rec = generate_first_cell(cfg, log, "F2");
  const int seeds = int(cfg.get_int("figures.seeds"));
  const RetinaModel ln = fit(cfg, rec, {"model.kind=ln"}, log, "F2");
  // One curve point: every seed's fit scored and evaluated, then mean and sd.
  const std::vector<std::string> keys = {"significant", "recovered", "mean_cosine", "cc_rate"};
  auto sweep = [&](const std::vector<double>& values, auto fit_one) {
    json out = json::object();
    for (const std::string& k : keys) out[k] = out[k + "_sd"] = json::array();
    for (double v : values) {
      std::vector<std::vector<double>> got(keys.size());
      for (int i = 0; i < seeds; ++i) {
        const Config c = derive(cfg, seed_overrides(cfg, i));
        const RetinaModel m = fit_one(c, v);
        const json sc = score_cell(m, rec, c), ev = eval_cell(m, rec);
        got[0].push_back(num(sc, "significant_filters"));
        got[1].push_back(num(sc, "recovered"));
        got[2].push_back(num(sc, "mean_cosine"));
        got[3].push_back(num(ev, "cc_rate"));
      }
      for (size_t k = 0; k < keys.size(); ++k) {
        const auto [mean, sd] = mean_sd(got[k]);
        out[keys[k]].push_back(mean);
        out[keys[k] + "_sd"].push_back(sd);
      }
    }
    return out;
  };
  const std::vector<double> ks = cfg.get_doubles("figures.k_values"),
                            l1s = cfg.get_doubles("figures.l1_values");
  for (double k : ks)
    if (k != std::floor(k)) cfg.fail("figures.k_values", concat(k, " is not a whole number"));
  const json by_k = sweep(ks, [&](const Config& c, double k) {
    return fit(c, rec, {"model.kind=yan", concat("model.filters=", int(k))}, log,
               concat("F2 K=", int(k)));
  });
  const int K = int(cfg.get_int("model.filters"));
  const json by_l1 = sweep(l1s, [&](const Config& c, double l1) {
    return fit(c, rec, {"model.kind=yan", concat("model.conv_l1=", l1)}, log, concat("F2 L1=", l1));
  });
  return {{"frames", rec.stimulus.dim(0)},
          {"spikes", spike_count(rec, 0)},
          {"seeds", seeds},
          {"subunits", rec.truth.at(0).masks.dim(0)},
          {"k_values", ks},
          {"by_k", by_k},
          {"l1_filters", K},
          {"l1_values", l1s},
          {"by_l1", by_l1},
          {"paper_l1", 5.5e-4},
          {"default_l1", cfg.get_double("model.conv_l1")},
          {"ln_cc_rate", finite(num(eval_cell(ln, rec), "cc_rate"))}};
}

}  // namespace dynsim::retina
