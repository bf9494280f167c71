// End-to-end runs of the built `dynsim` binary (DYNSIM_CLI) in fresh temporary working folders:
// every shipped config simulates and validates; the bad-input corpus in tests/data/cli/ gives
// the right exit code (64 usage, 65 bad data, 66 missing input, 78 config) and a message naming
// the file:line:col or key, and leaves the working folder exactly as it was (no output folder,
// no temporary folder); npy and hdf5 outputs hold the same arrays.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "engine/io/hdf5_io.h"
#include "engine/io/npy.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;
namespace fs = std::filesystem;

namespace {

const fs::path kCorpus = fs::path(DYNSIM_TEST_DATA) / "cli";
const fs::path kConfigs = fs::path(DYNSIM_SOURCE_DIR) / "models" / "configs";

using dynsim::test::TempDir;

using dynsim::test::read_text;
const auto& quote = dynsim::test::shell_quote;

struct Result {
  int code = -1;
  std::string out, err;
};

// Runs `dynsim ARGS` with working folder cwd; stdout and stderr are captured outside cwd.
Result run_cli(const fs::path& cwd, const std::string& args) {
  static const TempDir logs;
  const std::string out = (logs.path() / "stdout").string(),
                    err = (logs.path() / "stderr").string();
  const std::string cmd = "cd " + quote(cwd.string()) + " && " + quote(DYNSIM_CLI) + " " + args +
                          " >" + quote(out) + " 2>" + quote(err);
  const int status = std::system(cmd.c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

// Every path under dir, relative, with file sizes: equal listings mean nothing was added,
// removed or rewritten with another size.
std::set<std::string> listing(const fs::path& dir) {
  std::set<std::string> s;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string item = fs::relative(e.path(), dir).string();
    if (e.is_regular_file()) item += " " + std::to_string(e.file_size());
    s.insert(item);
  }
  return s;
}

std::string corpus(const std::string& name) {
  return quote((kCorpus / name).string());
}

}  // namespace

TEST_CASE("cli: every config in models/configs simulates and validates") {
  int n = 0;
  for (const auto& e : fs::directory_iterator(kConfigs)) {
    if (e.path().extension() != ".toml") continue;
    ++n;
    const std::string cfg = quote(e.path().string());
    CAPTURE(e.path().string());
    TempDir cwd;
    const Result v = run_cli(cwd.path(), "validate " + cfg);
    CHECK_MESSAGE(v.code == 0, v.err);
    CHECK(v.out.find(": valid") != std::string::npos);
    const Result r = run_cli(cwd.path(), "simulate -q " + cfg + " -o out");
    REQUIRE_MESSAGE(r.code == 0, r.err);
    CHECK(r.out.empty());  // --quiet
    for (const char* f : {"summary.json", "config.json", "config.toml", "present.npy"})
      CHECK_MESSAGE(fs::exists(cwd.path() / "out" / f), f);
    // Only the output folder was created: no temporary folder is left beside it.
    for (const auto& top : fs::directory_iterator(cwd.path()))
      CHECK(top.path().filename() == "out");
    // The effective config written next to the outputs is itself a valid config.
    const Result again = run_cli(cwd.path(), "validate out/config.toml");
    CHECK_MESSAGE(again.code == 0, again.err);
    const nlohmann::json summary =
        nlohmann::json::parse(read_text(cwd.path() / "out/summary.json"));
    const nlohmann::json config = nlohmann::json::parse(read_text(cwd.path() / "out/config.json"));
    CHECK(summary["model"] == config["model"]["preset"]);
    CHECK(summary["steps"] == config["simulation"]["steps"]);
    CHECK(summary["precision"] == (summary["device"].get<std::string>().rfind("cuda", 0) == 0
                                       ? config["simulation"]["precision"]
                                       : nlohmann::json("fp32")));
    for (const auto& area : summary["areas"]) {
      const std::string name = area["name"];
      const std::string rec = config["simulation"]["record"];
      if (rec == "layer") {
        const Tensor avg =
            load_npy((cwd.path() / "out" / ("response_avg_" + name + ".npy")).string());
        CHECK(avg.shape() ==
              Shape{summary["batch"].get<int64_t>(), summary["steps"].get<int64_t>()});
      } else if (rec == "full") {
        const Tensor rates = load_npy((cwd.path() / "out" / ("rates_" + name + ".npy")).string());
        CHECK(rates.dim(0) == summary["batch"].get<int64_t>());
        CHECK(rates.dim(2) == area["shape"][0].get<int64_t>());
      }
    }
  }
  CHECK(n >= 3);
}

TEST_CASE("cli: bad inputs give their exit code and message and write nothing") {
  struct Case {
    std::string args;
    int code;
    std::vector<std::string> message;  // substrings of stderr
  };
  const std::string bad_npy = (kCorpus / "wrong_shape.npy").string();
  std::vector<Case> cases = {
      {corpus("unknown_key.toml"),
       78,
       {"unknown_key.toml:4:1", "model.recurence_type", "did you mean 'model.recurrence_type'"}},
      {corpus("wrong_type.toml"), 78, {"wrong_type.toml:3:9", "simulation.steps", "integer"}},
      {corpus("bad_enum.toml"), 78, {"bad_enum.toml:3:10", "dynamics.solver", "'rk5'"}},
      {corpus("negative_dt.toml"), 78, {"negative_dt.toml:3:6", "dynamics.dt", "> 0"}},
      {corpus("missing_image.toml"), 66, {"no_such_stimulus_image.png", "no such image file"}},
      {corpus("npy_wrong_shape.toml") + " --stimulus-path " + quote(bad_npy),
       65,
       {"wrong_shape.npy", "[2,5]", "3x16x16"}},
      {corpus("unknown_area.toml"), 78, {"unknown_area.toml:23:10", "no area named 'V9'"}},
      {corpus("per_sample_lengths.toml"),
       78,
       {"per_sample_lengths.toml:9:13", "stimulus.contrasts", "stimulus.onsets gives 2 samples"}},
      {corpus("bad_area_name.toml"), 78, {"bad_area_name.toml:10:8", "area[0].name", "'A/B'"}},
      {corpus("unfed_area.toml"), 78, {"area B never receives input"}},
      {corpus("small.toml") + " --set dynamics.solver=tableau --set 'dynamics.tableau_a=[0,0,1,0]'"
                              " --set 'dynamics.tableau_b=[0.5,0.4]' --set 'dynamics.tableau_c=[0,1]'",
       78, {"dynamics.solver", "the weights b sum to 0.9"}},
      {corpus("small.toml") + " --set dynamics.solver=dopri5 --set dynamics.rtol=0",
       78, {"dynamics.rtol", "> 0"}},
      {corpus("small.toml") + " --set dynamics.solver=bs32 --set dynamics.atol=-1",
       78, {"dynamics.atol"}},
      {corpus("small.toml") + " --set dynamics.solver=bs32 --set dynamics.dt_max=-1",
       78, {"dynamics.dt_max"}},
      {corpus("small.toml") + " --set dynamics.rtol=1e-4",
       78, {"dynamics.rtol", "used only with the embedded pairs"}},
      {corpus("small.toml") + " --set dynamics.solver=dopri5 --set simulation.device=cuda",
       78, {"dynamics.solver", "runs on the CPU"}},
      {corpus("small.toml") + " --set dynamics.solver=dopri5 --set simulation.precision=bf16",
       78, {"dynamics.solver", "not bf16"}},
      {corpus("tau_zero.toml"), 78, {"tau_zero.toml:3:7", "dynamics.tau", "> 0"}},
      {corpus("negative_delay.toml"), 78, {"negative_delay.toml:3:16", "dynamics.t_recurrence"}},
      {corpus("small.toml") + " --set dynamics.dt=-1", 78, {"--set dynamics.dt=-1", "dynamics.dt"}},
      {corpus("small.toml") + " --steps 0", 78, {"simulation.steps"}},
      {corpus("small.toml") + " --set model.nclasses=3", 78, {"model.nclasses", "unknown key"}},
      {corpus("small.toml") + " --weights no_such_weights.safetensors",
       66,
       {"no_such_weights.safetensors"}},
      {corpus("small.toml") + " --set simulation.device=cpu --set simulation.precision=tf32",
       78,
       {"simulation.precision", "tf32 needs a CUDA device"}},
      {corpus("small.toml") + " --set simulation.precision=fp16",
       78,
       {"simulation.precision", "'fp16'"}},
      {corpus("small.toml") + " -o . --overwrite", 78, {"simulation.output", "'.'"}},
      {corpus("small.toml") + " -o '' --overwrite", 78, {"simulation.output"}},
      {corpus("no_such_config.toml"), 66, {"no_such_config.toml"}},
      {corpus("small.toml") + " --frobnicate", 64, {"--frobnicate"}},
      {"", 64, {}},  // `dynsim` without a subcommand: the usage text
  };
  if (!hdf5_available())
    cases.push_back({corpus("small.toml") + " --set simulation.format=hdf5",
                     78,
                     {"simulation.format", "no HDF5 support"}});
  for (const Case& c : cases) {
    const std::string args = c.args.empty() ? "" : "simulate " + c.args + " -q";
    CAPTURE(args);
    TempDir cwd;
    std::ofstream(cwd.path() / "unrelated.txt") << "a file the run must not touch\n";
    const auto before = listing(cwd.path());
    const Result r = run_cli(cwd.path(), args);
    CHECK_MESSAGE(r.code == c.code, r.err);
    for (const std::string& m : c.message) CHECK_MESSAGE(r.err.find(m) != std::string::npos, m);
    if (c.code == 65 || c.code == 78)  // one clear line from dynsim itself (not CLI11's usage)
      CHECK(r.err.rfind("dynsim: error: ", 0) == 0);
    CHECK(listing(cwd.path()) == before);
  }
}

TEST_CASE("cli: an adaptive solver runs on the CPU and reports its steps in summary.json") {
  TempDir cwd;
  const Result r = run_cli(cwd.path(), "simulate -q " + corpus("small.toml") +
                                           " --set dynamics.solver=dopri5 --set dynamics.rtol=1e-4"
                                           " --set simulation.device=auto -o out");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const nlohmann::json s = nlohmann::json::parse(read_text(cwd.path() / "out/summary.json"));
  REQUIRE(s.contains("adaptive"));
  const nlohmann::json& a = s["adaptive"];
  CHECK(a["accepted_steps"].get<int64_t>() >= s["steps"].get<int64_t>());
  CHECK(a["drive_evaluations"].get<int64_t>() >= 6 * a["accepted_steps"].get<int64_t>());
  CHECK(a["h_max_ms"].get<double>() <= s["dt_ms"].get<double>() + 1e-12);
  CHECK(a["rtol"].get<double>() == 1e-4);
  CHECK(s["device"].get<std::string>().rfind("cpu", 0) == 0);
  // Fixed-step dopri5 takes one step per dt and reports no adaptive block.
  const Result f = run_cli(cwd.path(), "simulate -q " + corpus("small.toml") +
                                           " --set dynamics.solver=dopri5"
                                           " --set dynamics.adaptive=false -o fixed");
  REQUIRE_MESSAGE(f.code == 0, f.err);
  CHECK_FALSE(nlohmann::json::parse(read_text(cwd.path() / "fixed/summary.json"))
                  .contains("adaptive"));
}

TEST_CASE("cli: dynsim solvers writes CSV, JSON and PNG with orders near theory") {
  TempDir cwd;
  const std::string base = "solvers -q --solvers heun,rk4-classic,bs32,dopri5 --dt 0.5,0.25,0.125 "
                           "--rtol 1e-4,1e-6 ";
  for (std::string c : {"leak", "linear-chain", "delayed-leak"}) {
    CAPTURE(c);
    const Result r = run_cli(cwd.path(), base + "--case " + c + " -o " + c);
    REQUIRE_MESSAGE(r.code == 0, r.err);
    const fs::path d = cwd.path() / c;
    CHECK(fs::file_size(d / "solvers.png") > 1000);
    const std::string csv = read_text(d / "solvers.csv");
    CHECK(csv.rfind("solver,mode,dt_ms,rtol,max_abs_error", 0) == 0);
    CHECK(std::count(csv.begin(), csv.end(), '\n') == 1 + 4 * 3 + 2 * 2);
    const nlohmann::json j = nlohmann::json::parse(read_text(d / "solvers.json"));
    CHECK(j["case"] == c);
    CHECK(j["precision"] == "f64");
    CHECK_FALSE(j["machine"]["cpu"].get<std::string>().empty());
    REQUIRE(j["orders"].size() == 4);
    for (const auto& o : j["orders"]) {
      CAPTURE(o.dump());
      CHECK(std::abs(o["observed"].get<double>() - o["expected"].get<double>()) < 0.6);
    }
    // Every operator of these scalar graphs is a 1x1 conv without bias on one element: 2 FLOPs
    // per call (Scheduler::operator_flops summed over the run's operators).
    for (const auto& row : j["rows"]) {
      CHECK(row["operator_calls"].get<int64_t>() > 0);
      CHECK(row["flops"].get<double>() == 2.0 * row["operator_calls"].get<double>());
    }
    for (const auto& row : j["rows"])
      if (row["mode"] == "adaptive")  // within 10x of the asked tolerance
        CHECK(row["max_abs_error"].get<double>() < 10 * row["rtol"].get<double>() * 1.5);
  }
  // Bad input: exit code, message, nothing written.
  struct Bad {
    std::string args;
    int code;
    std::string message;
  };
  for (const Bad& b : std::vector<Bad>{
           {"--case spiral", 78, "unknown case 'spiral'"},
           {"--case leak --dt 0.3,0.2", 78, "does not divide"},
           {"--case delayed-leak --dt 0.5,0.3", 78, "--dt"},
           {"--case leak --solvers rk5", 78, "--solvers"},
           {"--case leak --rtol 0", 78, "--rtol"},
           {"--case leak --dt 0.5,x", 64, "'x' is not a number"},
           {"--case leak -o leak", 64, "exists"}}) {
    CAPTURE(b.args);
    const auto before = listing(cwd.path());
    const Result r = run_cli(cwd.path(), "solvers -q " + b.args + (b.args.find("-o") == std::string::npos ? " -o new" : ""));
    CHECK_MESSAGE(r.code == b.code, r.err);
    CHECK_MESSAGE(r.err.find(b.message) != std::string::npos, r.err);
    CHECK(listing(cwd.path()) == before);
  }
}

TEST_CASE(
    "cli: an existing output folder is replaced only with --overwrite, and only if dynsim's") {
  TempDir cwd;
  const std::string cfg = corpus("small.toml");
  fs::create_directories(cwd.path() / "out");
  std::ofstream(cwd.path() / "out" / "notes.txt") << "the user's own notes\n";
  const auto mine = listing(cwd.path());
  Result r = run_cli(cwd.path(), "simulate -q " + cfg + " -o out");
  CHECK(r.code == 64);
  CHECK(r.err.find("'out' exists") != std::string::npos);
  CHECK(r.err.find("--overwrite") != std::string::npos);
  CHECK(listing(cwd.path()) == mine);
  // --overwrite leaves a folder alone that is not a dynsim output, and a file too.
  r = run_cli(cwd.path(), "simulate -q " + cfg + " -o out --overwrite");
  CHECK(r.code == 64);
  CHECK(r.err.find("holds no summary.json") != std::string::npos);
  CHECK(listing(cwd.path()) == mine);
  r = run_cli(cwd.path(), "simulate -q " + cfg + " -o out/notes.txt --overwrite");
  CHECK(r.code == 64);
  CHECK(r.err.find("is not a folder") != std::string::npos);
  CHECK(listing(cwd.path()) == mine);

  // A dynsim output is replaced with --overwrite; no .tmp/.old folder stays behind.
  r = run_cli(cwd.path(), "simulate -q " + cfg + " -o run1");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto first = listing(cwd.path());
  r = run_cli(cwd.path(), "simulate -q " + cfg + " -o run1 --steps 7");
  CHECK(r.code == 64);
  CHECK(listing(cwd.path()) == first);
  r = run_cli(cwd.path(), "simulate -q " + cfg + " -o run1 --steps 7 --overwrite");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  std::set<std::string> tops;
  for (const auto& e : fs::directory_iterator(cwd.path())) tops.insert(e.path().filename());
  CHECK(tops == std::set<std::string>{"out", "run1"});
  CHECK(load_npy((cwd.path() / "run1/present.npy").string()).shape() == Shape{2, 7});
}

TEST_CASE("cli: simulation.precision applies where the run is on a CUDA device") {
  TempDir cwd;
  const Result r = run_cli(cwd.path(), "simulate -q " + corpus("small.toml") +
                                           " --set simulation.precision=tf32 -o out");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const nlohmann::json summary = nlohmann::json::parse(read_text(cwd.path() / "out/summary.json"));
  const bool cuda = summary["device"].get<std::string>().rfind("cuda", 0) == 0;
  CHECK(summary["precision"] == (cuda ? "tf32" : "fp32"));  // auto on the CPU: ignored
}

// bf16 storage on either device (the CPU emulates it): the summary says bf16, the responses are
// f32 files within bf16's precision of the fp32 run's, and differ from them (rounding happened).
TEST_CASE("cli: simulation.precision = bf16 runs in bf16 storage and writes f32 responses") {
  TempDir cwd;
  const Result f = run_cli(cwd.path(), "simulate -q " + corpus("small.toml") + " -o f32");
  REQUIRE_MESSAGE(f.code == 0, f.err);
  const Result b = run_cli(cwd.path(), "simulate -q " + corpus("small.toml") +
                                           " --set simulation.precision=bf16 -o bf16");
  REQUIRE_MESSAGE(b.code == 0, b.err);
  const nlohmann::json summary = nlohmann::json::parse(read_text(cwd.path() / "bf16/summary.json"));
  CHECK(summary["precision"] == "bf16");
  int compared = 0;
  bool differs = false;
  for (const auto& e : fs::directory_iterator(cwd.path() / "f32")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("response_avg_", 0) != 0) continue;
    const dynsim::Tensor want = dynsim::load_npy(e.path().string());
    const dynsim::Tensor got = dynsim::load_npy((cwd.path() / "bf16" / name).string());
    REQUIRE(got.dtype() == dynsim::DType::F32);
    REQUIRE(got.shape() == want.shape());
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      const double w = want.item(i), g = got.item(i);
      if (std::isnan(w) || std::isnan(g)) {
        CHECK(std::isnan(w) == std::isnan(g));
        continue;
      }
      worst = std::max(worst, std::abs(g - w));
      scale = std::max(scale, std::abs(w));
    }
    CHECK_MESSAGE(worst <= 0.05 * scale, name, ": ", worst, " of ", scale);
    differs = differs || worst > 0;
    ++compared;
  }
  CHECK(compared >= 2);
  CHECK(differs);
}

TEST_CASE("cli: output paths with a trailing slash or missing parents") {
  TempDir cwd;
  const std::string cfg = corpus("small.toml");
  Result r = run_cli(cwd.path(), "simulate -q " + cfg + " -o trailing/");
  CHECK_MESSAGE(r.code == 0, r.err);
  CHECK(fs::exists(cwd.path() / "trailing/summary.json"));
  r = run_cli(cwd.path(), "simulate -q " + cfg + " -o a/b/c");
  CHECK_MESSAGE(r.code == 0, r.err);
  CHECK(fs::exists(cwd.path() / "a/b/c/summary.json"));
  // Under a file: an I/O error, and nothing is left.
  std::ofstream(cwd.path() / "plain") << "x";
  const auto before = listing(cwd.path());
  r = run_cli(cwd.path(), "simulate -q " + cfg + " -o plain/sub/out");
  CHECK(r.code == 74);
  CHECK(r.err.find("plain/sub/out") != std::string::npos);
  CHECK(listing(cwd.path()) == before);
}

TEST_CASE("cli: validate accepts good configs, rejects bad ones, lists keys") {
  TempDir cwd;
  Result r = run_cli(cwd.path(), "validate " + corpus("small.toml"));
  CHECK_MESSAGE(r.code == 0, r.err);
  CHECK(r.out.find("layer1") != std::string::npos);  // the graph summary
  r = run_cli(cwd.path(), "validate");
  CHECK_MESSAGE(r.code == 0, r.err);
  CHECK(r.out.find("(built-in defaults): valid") != std::string::npos);
  for (const char* bad : {"unknown_key.toml", "wrong_type.toml", "bad_enum.toml",
                          "negative_dt.toml", "unknown_area.toml", "bad_area_name.toml"}) {
    CAPTURE(bad);
    r = run_cli(cwd.path(), "validate " + corpus(bad));
    CHECK(r.code == 78);
    CHECK(r.err.find(std::string(bad) + ":") != std::string::npos);  // file:line:col
  }
  r = run_cli(cwd.path(), "validate " + corpus("small.toml") + " --set dynamics.solver=rk5");
  CHECK(r.code == 78);
  CHECK(r.err.find("--set dynamics.solver=rk5") != std::string::npos);
  r = run_cli(cwd.path(), "validate " + corpus("no_such.toml"));
  CHECK(r.code == 66);
  r = run_cli(cwd.path(), "validate --keys");
  CHECK(r.code == 0);
  for (const char* key : {"model.preset", "dynamics.dt", "simulation.format", "stimulus.path",
                          "area[N].name", "connection[N].target"})
    CHECK_MESSAGE(r.out.find(key) != std::string::npos, key);
  CHECK(r.out.find("hdf5") != std::string::npos);
  CHECK(fs::is_empty(cwd.path()));
}

TEST_CASE("cli: hdf5 output holds the arrays of the npy output") {
  TempDir cwd;
  const std::string cfg = corpus("small.toml");
  Result r = run_cli(cwd.path(), "simulate -q " + cfg + " -o npy");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  r = run_cli(cwd.path(), "simulate -q " + cfg + " -o h5 --set simulation.format=hdf5");
  if (!hdf5_available()) {
    CHECK(r.code == 78);
    CHECK(r.err.find("no HDF5 support") != std::string::npos);
    CHECK(!fs::exists(cwd.path() / "h5"));
    return;
  }
  REQUIRE_MESSAGE(r.code == 0, r.err);
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(cwd.path() / "h5")) files.insert(e.path().filename());
  CHECK(files ==
        std::set<std::string>{"config.json", "config.toml", "responses.h5", "summary.json"});
  const auto h5 = read_hdf5((cwd.path() / "h5/responses.h5").string());
  int npy_files = 0;
  for (const auto& e : fs::directory_iterator(cwd.path() / "npy")) {
    if (e.path().extension() != ".npy") continue;
    ++npy_files;
    std::string name = e.path().stem().string();  // response_avg_layer1 -> response_avg/layer1
    for (const char* group : {"response_avg_", "response_std_", "rates_"})
      if (name.rfind(group, 0) == 0)
        name = std::string(group, std::strlen(group) - 1) + "/" + name.substr(std::strlen(group));
    CAPTURE(name);
    REQUIRE(h5.count(name) == 1);
    require_equal(h5.at(name), load_npy(e.path().string()), name);
    CHECK(h5.at(name).dtype() == load_npy(e.path().string()).dtype());
  }
  CHECK(npy_files == 6);  // 2 areas x avg/std, present, logits
  CHECK(size_t(npy_files) == h5.size());
  const auto attrs = read_hdf5_attributes((cwd.path() / "h5/responses.h5").string());
  const nlohmann::json config = nlohmann::json::parse(attrs.at("config"));
  CHECK(config == nlohmann::json::parse(read_text(cwd.path() / "h5/config.json")));
  CHECK(config["simulation"]["format"] == "hdf5");
  const nlohmann::json summary = nlohmann::json::parse(read_text(cwd.path() / "h5/summary.json"));
  CHECK(attrs.at("model") == summary["model"].get<std::string>());
  CHECK(attrs.at("steps") == "6");
  CHECK(nlohmann::json::parse(attrs.at("areas")) == summary["areas"]);
}
