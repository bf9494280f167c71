// `dynsim retina figures --quick` through the built CLI: every figure's PNG (magic bytes), JSON
// (keys, shapes, finite numbers, a few values that only a working experiment gives) and sidecar
// config; and bad inputs: an unknown figure (64), an output folder that cannot be made (74), no
// Python or no plotting script (74, the JSON kept), a bad figures.* key (78).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/io/config.h"
#include "models/retina/figures.h"
#include "tests/harness.h"

using namespace dynsim;
namespace fs = std::filesystem;
using nlohmann::json;
using test::read_text;
using test::shell_quote;
using test::TempDir;

namespace {

int run(const std::string& args, std::string* out, const std::string& env = "") {
  const std::string log = (fs::temp_directory_path() / "dynsim-retina-figures.log").string();
  const std::string cmd =
      env + " " + shell_quote(DYNSIM_CLI) + " " + args + " >" + shell_quote(log) + " 2>&1";
  const int rc = std::system(cmd.c_str());
  *out = read_text(log);
  return WEXITSTATUS(rc);
}

bool has_matplotlib() {
  return std::system("/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1") == 0;
}

bool is_png(const fs::path& p) {
  return read_text(p).rfind(std::string("\x89PNG\r\n\x1a\n", 8), 0) == 0;
}

json load(const fs::path& p) {
  const std::string text = read_text(p);
  REQUIRE_MESSAGE(!text.empty(), p.string(), " is missing or empty");
  return json::parse(text);
}

// A JSON array of `n` finite numbers (or of arrays, checked by `inner`).
void check_numbers(const json& a, size_t n, const std::string& what) {
  INFO(what);
  REQUIRE(a.is_array());
  CHECK(a.size() == n);
  for (const json& v : a) {
    REQUIRE(v.is_number());
    CHECK(std::isfinite(v.get<double>()));
  }
}
void check_matrix(const json& a, size_t rows, size_t cols, const std::string& what) {
  INFO(what);
  REQUIRE(a.is_array());
  REQUIRE(a.size() == rows);
  for (size_t i = 0; i < rows; ++i) check_numbers(a[i], cols, what + " row " + std::to_string(i));
}

const std::string kQuick = " --quick -q --set fit.threads=1";
// Tiny settings for the error paths (one figure in about a second).
const std::string kTiny = kQuick +
                          " --set generate.frames=2000 --set generate.calibration_frames=2000"
                          " --set fit.iterations=10 --set generate.test_frames=100";

}  // namespace

TEST_CASE("dynsim retina figures --quick: every figure as PNG + JSON + config") {
  TempDir tmp("dynsim_figures_test");
  const fs::path out = tmp.path() / "figs";
  std::string log;
  const bool plots = has_matplotlib();
  const int rc = run("retina figures --figure all -o " + shell_quote(out.string()) + kQuick, &log);
  INFO(log);
  if (plots) {
    REQUIRE(rc == 0);
  } else {
    MESSAGE("SKIPPED: PNG checks (no matplotlib for /usr/bin/python3); JSON checked, exit 74");
    REQUIRE(rc == 74);
    CHECK(log.find("matplotlib") != std::string::npos);
  }
  for (const std::string& name : retina::figure_names()) {
    CAPTURE(name);
    if (plots) CHECK(is_png(out / (name + ".png")));
    const json j = load(out / (name + ".json"));
    CHECK(j["figure"] == name);
    CHECK(j["config"]["fit"]["threads"] == 1);
    MESSAGE(name, ": ", j["wall_s"].get<double>(), " s");
    // The sidecar reloads as a figures config and holds the quick settings and the --set.
    const Config c =
        Config::load((out / (name + ".config.toml")).string(), retina::figures_schema());
    CHECK(c.get_int("fit.iterations") == 150);
    CHECK(c.get_int("fit.threads") == 1);
  }

  const json f1 = load(out / "F1.json");
  check_matrix(f1["masks"][0], 8, 8, "F1 mask");
  CHECK(f1["masks"].size() == 4);
  const json& cnn = f1["cnn"];
  CHECK(cnn["filters"] == 8);
  CHECK(cnn["maps"].size() == 8);
  check_matrix(cnn["maps"][0], 8, 8, "F1 CNN map");
  check_numbers(cnn["matched_cosine"], 4, "F1 CNN cosines");
  check_numbers(cnn["strength"], 8, "F1 strengths");
  CHECK(cnn["spurious"].get<int>() <= cnn["significant_count"].get<int>());
  check_matrix(f1["sta"]["map"], 8, 8, "F1 STA");
  CHECK(f1["sta"]["cosine_block"].get<double>() > 0.8);  // the STA is the 4x4 block
  CHECK(f1["stnmf"]["modules"].size() == 4);
  check_numbers(f1["stnmf"]["matched_cosine"], 4, "F1 STNMF cosines");

  const json f2 = load(out / "F2.json");
  REQUIRE(f2["k_values"].size() == 3);
  for (const char* k : {"significant", "recovered", "mean_cosine", "cc_rate", "cc_rate_sd"}) {
    check_numbers(f2["by_k"][k], 3, std::string("F2 by_k ") + k);
    check_numbers(f2["by_l1"][k], f2["l1_values"].size(), std::string("F2 by_l1 ") + k);
  }
  for (size_t i = 0; i < 3; ++i)  // at most K significant filters
    CHECK(f2["by_k"]["significant"][i].get<double>() <= f2["k_values"][i].get<double>());

  const json f3 = load(out / "F3.json");
  const size_t n3 = f3["time_s"].size();
  CHECK(n3 == 280);  // test segment minus the 20-frame history
  for (const char* k : {"psth", "rate_true", "cnn", "ln"}) check_numbers(f3[k], n3, k);
  CHECK(f3["raster"]["trial"].size() == f3["raster"]["frame"].size());
  CHECK(f3["raster"]["trial"].size() > 10);
  for (const char* m : {"cnn", "ln"})
    for (const char* k : {"cc_psth", "cc_rate", "fev", "feve"})
      CHECK(std::isfinite(f3["metrics"][m][k].get<double>()));
  CHECK(f3["metrics"]["ln"]["cc_rate"].get<double>() > 0.3);

  const json f4 = load(out / "F4.json");
  const size_t nf = f4["fractions"].size(), nb = f4["batch_sizes"].size();
  CHECK(nf == 2);
  CHECK(nb == 2);
  check_numbers(f4["frames"], nf, "F4 frames");
  CHECK(f4["frames"][0].get<int>() < f4["frames"][1].get<int>());
  for (const char* k : {"cc_rate", "mean_cosine", "recovered"}) {
    check_numbers(f4["by_fraction"][k], nf, std::string("F4 by_fraction ") + k);
    check_numbers(f4["by_batch"][k], nb, std::string("F4 by_batch ") + k);
  }

  const json f6 = load(out / "F6.json");
  const size_t n6 = f6["cells"].size();
  CHECK(n6 == 3);
  check_matrix(f6["zero_shot"], n6, n6, "F6 zero-shot");
  check_matrix(f6["readout"], n6, n6, "F6 readout");
  check_numbers(f6["fit_cc"], n6, "F6 fit CC");
  for (size_t i = 0; i < n6; ++i)  // zero-shot on its own cell = the fitted model, untouched
    CHECK(f6["zero_shot"][i][i].get<double>() ==
          doctest::Approx(f6["fit_cc"][i].get<double>()).epsilon(1e-9));

  const json f7 = load(out / "F7.json");
  check_matrix(f7["cnn"], 2, 2, "F7 CNN");
  check_matrix(f7["ln"], 2, 2, "F7 LN");
  CHECK(f7["spikes"][1].get<int>() > 100);  // the natural-image recording drives the cell
}

TEST_CASE("dynsim retina figures: bad inputs") {
  TempDir tmp("dynsim_figures_test");
  std::string log;
  const fs::path out = tmp.path() / "out";
  CHECK(run("retina figures --figure F9 -o " + shell_quote(out.string()) + kQuick, &log) == 64);
  CHECK(log.find("unknown figure 'F9'") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
  CHECK(run("retina figures -o " + shell_quote(out.string()), &log) == 64);  // no --figure

  // A bad figures.* value is a config error (78) before any work.
  CHECK(run("retina figures --figure F2 -o " + shell_quote(out.string()) + kQuick +
                " --set figures.k_values=[0]",
            &log) == 78);
  CHECK(log.find("figures.k_values") != std::string::npos);

  // The output folder cannot be made: its parent is a file.
  { std::ofstream(tmp.path() / "file") << "x"; }
  CHECK(run("retina figures --figure F3 -o " + shell_quote((tmp.path() / "file" / "sub").string()) +
                kTiny,
            &log) == 74);
  CHECK(log.find("cannot create the output folder") != std::string::npos);

  // No interpreter / no script: a clear message, exit 74, the numbers kept, no picture.
  CHECK(run("retina figures --figure F3 -o " + shell_quote(out.string()) + kTiny, &log,
            "DYNSIM_PYTHON=/nonexistent/python3") == 74);
  CHECK(log.find("no Python interpreter at /nonexistent/python3") != std::string::npos);
  CHECK(load(out / "F3.json")["figure"] == "F3");
  CHECK(fs::exists(out / "F3.config.toml"));
  CHECK_FALSE(fs::exists(out / "F3.png"));
  CHECK(run("retina figures --figure f3 -o " + shell_quote(out.string()) + kTiny, &log,
            "DYNSIM_PYTHON_DIR=/nonexistent") == 74);
  CHECK(log.find("/nonexistent/retina_figures.py does not exist") != std::string::npos);
}
