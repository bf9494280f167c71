// The retina workflow (models/retina/pipeline.h) end to end on a small reference cell: config ->
// recording -> CNN / LN / STNMF fits -> save / load -> evaluation on the repeated test segment
// and subunit scoring; and the `dynsim retina` command line on good and bad inputs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "engine/core/errors.h"
#include "engine/io/npy.h"
#include "models/retina/pipeline.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::retina;
namespace fs = std::filesystem;

namespace {

using test::TempDir;

Config cfg(const std::vector<std::string>& overrides) {
  std::vector<std::string> o = {"generate.frames=20000", "generate.test_frames=300",
                                "generate.test_trials=10", "generate.calibration_frames=20000",
                                "fit.batch=500", "fit.iterations=800", "fit.threads=1"};
  o.insert(o.end(), overrides.begin(), overrides.end());
  return Config::parse("", "test", retina_schema(), o);
}

int run(const std::string& args, std::string* out = nullptr) {
  const std::string log = (fs::temp_directory_path() / "dynsim-retina-cli.log").string();
  const int rc = std::system((std::string(DYNSIM_CLI) + " " + args + " >" + log + " 2>&1").c_str());
  if (out) {
    std::ifstream f(log);
    out->assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  return WEXITSTATUS(rc);
}

}  // namespace

TEST_CASE("retina pipeline: generate, fit (yan, ln, stnmf), save/load, evaluate, score") {
  const Config c = cfg({});
  const GeneratorSpec spec = generator_spec(c);
  REQUIRE(spec.cells.size() == 1);
  CHECK(spec.cells[0].subunits.size() == 4);
  const Recording rec = generate(spec);
  CHECK(rec.stimulus.dim(0) == 20000);
  CHECK(rec.test_spikes.shape() == Shape{10, 1, 300});

  TempDir tmp("dynsim_retina_test");
  for (const std::string kind : {"yan", "ln", "stnmf"}) {
    CAPTURE(kind);
    const Config ck = cfg({"model.kind=" + kind});
    const RetinaModel m = fit_model(ck, rec);
    CHECK(m.kind == kind);
    CHECK(m.fit["spikes"].get<int64_t>() > 1000);
    const std::string dir = (tmp.path() / kind).string();
    save_model(dir, m, ck, false);
    CHECK_THROWS_AS(save_model(dir, m, ck, false), IoError);  // no silent replacement
    const RetinaModel back = load_model(dir);
    CHECK(back.kind == kind);
    CHECK(back.cells == m.cells);
    const nlohmann::json s = score_model(back, rec);
    const auto& cell = s["cells"][0];
    CHECK(cell["subunits"] == 4);
    CHECK(cell["per_subunit"].size() == 4);
    if (kind == "stnmf") {
      CHECK_THROWS_AS(predict_counts(back, rec.test_stimulus), DataError);
      continue;
    }
    // The loaded model predicts what the fitted one does.
    const Tensor a = predict_counts(m, rec.test_stimulus, 1), b = predict_counts(back, rec.test_stimulus, 1);
    for (int64_t t = kHistory; t < a.numel(); ++t) REQUIRE(a.item(t) == doctest::Approx(b.item(t)).epsilon(1e-6));
    const nlohmann::json e = evaluate_model(back, rec);
    const auto& ev = e["cells"][0];
    MESSAGE(kind, ": CC(rate) ", ev["cc_rate"], ", CC(PSTH) ", ev["cc_psth"], ", FEVE ", ev["feve"],
            ", bits/spike ", ev["bits_per_spike"], "; mean matched cosine ", cell["mean_cosine"]);
    CHECK(ev["cc_rate"].get<double>() > 0.5);  // a short fit, but clearly a model of the cell
    CHECK(ev["bits_per_spike"].get<double>() > 0);
  }
}

TEST_CASE("retina pipeline: config errors name the key") {
  CHECK_THROWS_WITH_AS(generator_spec(cfg({"stimulus.size=4", "cell[0].name=a", "cell[0].shift_x=3"})),
                       doctest::Contains("does not fit in 4 x 4"), ConfigError);
  const Recording rec = generate(generator_spec(cfg({"generate.frames=2000"})));
  CHECK_THROWS_WITH_AS(fit_model(cfg({"model.cell=3"}), rec), doctest::Contains("model.cell"),
                       ConfigError);
}

TEST_CASE("dynsim retina: the command line, good and bad inputs") {
  TempDir tmp("dynsim_retina_test");
  const std::string d = (tmp.path() / "rec").string(), m = (tmp.path() / "model").string();
  const std::string small = " --set generate.frames=6000 --set generate.calibration_frames=6000"
                            " --set generate.test_frames=200 --set generate.test_trials=5";
  std::string out;
  REQUIRE(run("retina generate -q -o " + d + small, &out) == 0);
  CHECK(fs::exists(fs::path(d) / "ground_truth.json"));
  CHECK(fs::exists(fs::path(d) / "retina.toml"));
  CHECK(run("retina generate -q -o " + d + small, &out) == 64);  // exists, no --overwrite
  REQUIRE(run("retina fit " + d + " -q -o " + m + " --set model.kind=ln", &out) == 0);
  CHECK(run("retina evaluate " + m + " " + d + " -o " + (tmp.path() / "e.json").string(), &out) == 0);
  CHECK(fs::exists(tmp.path() / "e.json"));
  CHECK(run("retina score " + m + " " + d, &out) == 0);
  CHECK(out.find("\"recovered\"") != std::string::npos);
  // Transfer: the LN model of a cell shifted by one pixel, cross-evaluated zero-shot; each
  // model predicts its own cell better than the other one.
  const std::string d2 = (tmp.path() / "rec2").string(), m2 = (tmp.path() / "model2").string();
  REQUIRE(run("retina generate -q -o " + d2 + small + " --set cell[0].name=s --set cell[0].shift_x=1", &out) == 0);
  REQUIRE(run("retina fit " + d2 + " -q -o " + m2 + " --set model.kind=ln", &out) == 0);
  const std::string tj = (tmp.path() / "t.json").string();
  REQUIRE(run("retina transfer --models " + m + " " + m2 + " --data " + d + " " + d2 + " -o " + tj, &out) == 0);
  std::ifstream tf(tj);
  const nlohmann::json t = nlohmann::json::parse(tf);
  const auto& mx = t["matrix"];
  MESSAGE("LN transfer matrix (CC with the rate): ", mx.dump());
  CHECK(mx[0][0].get<double>() > mx[0][1].get<double>());
  CHECK(mx[1][1].get<double>() > mx[1][0].get<double>());
  CHECK(fs::exists(tmp.path() / "t.csv"));
  CHECK(run("retina keys", &out) == 0);
  CHECK(out.find("stimulus.kind") != std::string::npos);
  CHECK(out.find("cell[N].layout") != std::string::npos);
  // Bad inputs: an unknown key (78), a corrupt spikes file (65); nothing is written for them.
  CHECK(run("retina generate -q -o " + (tmp.path() / "x").string() + " --set generate.nope=1", &out) == 78);
  CHECK(out.find("generate.nope") != std::string::npos);
  CHECK_FALSE(fs::exists(tmp.path() / "x"));
  {
    std::ofstream f(fs::path(d) / "spikes.npy", std::ios::trunc);  // empty file
  }
  CHECK(run("retina fit " + d + " -q -o " + (tmp.path() / "m2").string(), &out) == 65);
  CHECK(out.find("spikes.npy") != std::string::npos);
  CHECK_FALSE(fs::exists(tmp.path() / "m2"));
}

TEST_CASE("dynsim retina: bad recordings and fit.init are refused with exit codes, nothing written") {
  TempDir tmp("dynsim_retina_bad");
  const std::string good = (tmp.path() / "rec").string();
  const std::string small = " --set generate.frames=3000 --set generate.calibration_frames=3000"
                            " --set generate.test_frames=100 --set generate.test_trials=3";
  std::string out;
  REQUIRE(run("retina generate -q -o " + good + small, &out) == 0);
  // Each case: a copy of the recording with one file replaced, then `fit` must fail with 65,
  // name the problem and leave no model folder.
  auto bad_copy = [&](const std::string& name, const std::string& file, const Tensor& t) {
    const fs::path d = tmp.path() / name;
    fs::copy(good, d, fs::copy_options::recursive);
    save_npy((d / file).string(), t);
    return d.string();
  };
  const Recording rec = read_recording(good);
  const Tensor stim = rec.stimulus, spikes = rec.spikes;  // f32 [T, H, W], i32 [1, T]
  struct Case {
    std::string name, dir, expect;
  };
  std::vector<Case> cases;
  {  // stimulus and spikes of different lengths
    Tensor s = Tensor::zeros({spikes.dim(0), spikes.dim(1) - 7}, spikes.dtype());
    cases.push_back({"length", bad_copy("length", "spikes.npy", s), "frames"});
  }
  {  // a NaN pixel in the stimulus
    Tensor x = stim.clone();
    x.data<float>()[12345] = std::nanf("");
    cases.push_back({"nan", bad_copy("nan", "stimulus.npy", x), "stimulus"});
  }
  {  // a recording shorter than one window (20 frames of history + the target frame)
    const fs::path d = tmp.path() / "short";
    fs::copy(good, d, fs::copy_options::recursive);
    REQUIRE(spikes.dim(0) == 1);
    save_npy((d / "stimulus.npy").string(), stim.slice(0, 15).clone());
    save_npy((d / "spikes.npy").string(), spikes.view(Shape{spikes.dim(1), 1}).slice(0, 15)
                                              .clone().view(Shape{1, 15}));
    fs::remove(d / "rate.npy");
    cases.push_back({"short", d.string(), "frames"});
  }
  {  // an empty stimulus file
    const fs::path d = tmp.path() / "empty";
    fs::copy(good, d, fs::copy_options::recursive);
    std::ofstream f(d / "stimulus.npy", std::ios::trunc);
    cases.push_back({"empty", d.string(), "stimulus.npy"});
  }
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::string m = (tmp.path() / ("model_" + c.name)).string();
    CHECK(run("retina fit " + c.dir + " -q -o " + m + " --set fit.iterations=5", &out) == 65);
    CHECK_MESSAGE(out.find(c.expect) != std::string::npos, out);
    CHECK_FALSE(fs::exists(m));
  }
  // fit.init: warm start from a model of the same shape works; another K, a missing folder or
  // another kind are config errors (78) naming fit.init.
  const std::string m8 = (tmp.path() / "m8").string(), m4 = (tmp.path() / "m4").string();
  const std::string ln = (tmp.path() / "ln").string();
  const std::string quick = " -q --set fit.iterations=20 --set fit.batch=200 --set fit.threads=1";
  REQUIRE(run("retina fit " + good + " -o " + m8 + quick, &out) == 0);
  REQUIRE(run("retina fit " + good + " -o " + ln + " -q --set model.kind=ln", &out) == 0);
  CHECK(run("retina fit " + good + " -o " + (tmp.path() / "warm").string() + quick +
                " --set fit.init=" + test::shell_quote("\"" + m8 + "\""),
            &out) == 0);
  // Transfer with a refit of the readout and a full fine-tune of the yan model (fit.* keys of
  // the model's config, overridable): a 1 x 1 matrix of a finite CC each.
  for (const std::string mode : {"readout", "finetune"}) {
    CAPTURE(mode);
    const std::string tj = (tmp.path() / ("t_" + mode + ".json")).string();
    REQUIRE(run("retina transfer --models " + m8 + " --data " + good + " --mode " + mode +
                    " --set fit.iterations=10 --set fit.batch=200 --set fit.threads=1 -o " + tj,
                &out) == 0);
    std::ifstream tf(tj);
    const nlohmann::json t = nlohmann::json::parse(tf);
    REQUIRE(t["matrix"].size() == 1);
    CHECK(std::isfinite(t["matrix"][0][0].get<double>()));
    CHECK(t["mode"] == mode);
  }
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"k4", " --set model.filters=4 --set fit.init=" + test::shell_quote("\"" + m8 + "\"")},
      {"missing", " --set fit.init=" + test::shell_quote("\"" + m4 + "\"")},
      {"kind", " --set fit.init=" + test::shell_quote("\"" + ln + "\"")}};
  for (const auto& [name, args] : refused) {
    CAPTURE(name);
    const std::string m = (tmp.path() / ("init_" + name)).string();
    const int rc = run("retina fit " + good + " -o " + m + quick + args, &out);
    CHECK_MESSAGE(rc == 78, out);
    CHECK_MESSAGE(out.find("fit.init") != std::string::npos, out);
    CHECK_FALSE(fs::exists(m));
  }
}

TEST_CASE("retina pipeline: fit.restarts keeps the restart with the best validation CC") {
  const Recording rec = generate(generator_spec(cfg({"generate.frames=4000"})));
  const Config c = cfg({"fit.iterations=30", "fit.batch=200", "fit.restarts=3"});
  const RetinaModel m = fit_model(c, rec);
  const auto& runs = m.fit["restarts"];
  REQUIRE(runs.size() == 3);
  double best = -1;
  int arg = -1;
  for (const auto& r : runs)
    if (r["best_val_cc"].get<double>() > best) best = r["best_val_cc"].get<double>(), arg = r["restart"].get<int>();
  CHECK(m.fit["restart"].get<int>() == arg);
  CHECK(m.fit["best_val_cc"].get<double>() == best);
  // The restarts differ (seeds model.seed + r, fit.seed + r), and restart r alone reproduces
  // the kept model's weights.
  CHECK(runs[0]["best_val_cc"].get<double>() != runs[1]["best_val_cc"].get<double>());
  const RetinaModel alone =
      fit_model(cfg({"fit.iterations=30", "fit.batch=200", "model.seed=" + std::to_string(arg),
                     "fit.seed=" + std::to_string(arg)}),
                rec);
  const Tensor a = m.cnn.params.get("conv0.weight"), b = alone.cnn.params.get("conv0.weight");
  REQUIRE(a.numel() == b.numel());
  for (int64_t i = 0; i < a.numel(); ++i) REQUIRE(a.item(i) == b.item(i));
  CHECK_THROWS_WITH_AS(fit_model(cfg({"fit.restarts=2", "fit.init=\"x\""}), rec),
                       doctest::Contains("fit.restarts"), ConfigError);
}
