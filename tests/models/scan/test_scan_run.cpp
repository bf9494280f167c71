// engine/scan's runner, status, collect and sbatch scripts with the models layer's executors
// (models/scan/scan_kinds.h): packing is bitwise, reruns skip, redo and reclaim, stops stop.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "engine/core/errors.h"
#include "engine/scan/runner.h"
#include "engine/scan/scan.h"
#include "engine/scan/store.h"
#include "models/config/sim_config.h"
#include "models/scan/scan_kinds.h"
#include "tests/harness.h"

namespace fs = std::filesystem;
using namespace dynsim;
using dynsim::test::read_text;
using dynsim::test::TempDir;

namespace {

// 3 tau x 2 contrasts x 3 stimulus variants (one with two samples) x 2 record modes x 2 seeds =
// 72 runs of DyRCNNx2 at 16x16; the record mode and the seed split them into 4 packable groups
// of 18 (tau, contrast and stimulus are what packing varies per sample).
const char* kGrid = R"([scan]
kind = "simulate"
seeds = [0, 1]
[scan.set]
"model.preset" = "DyRCNNx2"
"model.input_height" = 16
"model.input_width" = 16
"simulation.steps" = 6
[[axis]]
key = "dynamics.tau"
values = [3.0, 5.5, 9.0]
[[axis]]
key = "stimulus.contrast"
values = [0.5, 1.0]
[[axis]]
name = "stimulus"
tables = [{"stimulus.onset" = 1}, {"stimulus.onset" = 3, "stimulus.duration" = 2},
          {"stimulus.contrasts" = [0.3, 0.7], "stimulus.kind" = "noise", "stimulus.seed" = 4}]
[[axis]]
key = "simulation.record"
values = ["layer", "full"]
)";

fs::path write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p;
}

fs::path expand_into(const fs::path& dir, const std::string& grid_text, const std::string& name) {
  const fs::path grid = write(dir / (name + ".toml"), grid_text);
  const scan::Grid g = scan::read_grid(grid.string());
  scan::write_manifest((dir / name).string(), g, scan::expand(g, models::scan_validators()));
  return dir / name;
}

scan::ShardReport run(const fs::path& dir, int64_t pack, scan::ShardOptions o = {}) {
  o.pack = pack;
  return scan::run_shard(dir.string(), models::scan_executors(), o);
}

// Every output file of every done run: run id -> file -> bytes.
std::map<std::string, std::map<std::string, std::string>> outputs(const fs::path& dir) {
  std::map<std::string, std::map<std::string, std::string>> out;
  for (const auto& e : fs::directory_iterator(dir / "runs")) {
    if (!e.is_directory() || e.path().extension() != "") continue;
    for (const auto& f : fs::directory_iterator(e.path()))
      if (f.path().filename() != "DONE")
        out[e.path().filename().string()][f.path().filename().string()] = read_text(f.path());
  }
  return out;
}

nlohmann::json done_doc(const fs::path& dir, const std::string& id) {
  return nlohmann::json::parse(read_text(dir / "runs" / id / "DONE"));
}

std::vector<std::string> ids(const fs::path& dir) {
  std::vector<std::string> v;
  for (const nlohmann::json& l : scan::read_manifest(dir.string())) v.push_back(l["run_id"]);
  return v;
}

}  // namespace

TEST_CASE("scan run: packed runs give the bits of the runs alone") {
  TempDir t;
  const fs::path alone = expand_into(t.path(), kGrid, "alone");
  const fs::path packed = expand_into(t.path(), kGrid, "packed");
  const fs::path five = expand_into(t.path(), kGrid, "five");
  const scan::ShardReport a = run(alone, 1);
  CHECK(a.done == 72);
  CHECK(a.groups == 72);
  scan::ShardOptions whole;
  whole.group_seconds = 0;  // auto without the time cap: every group whole
  const scan::ShardReport p = run(packed, 0, whole);
  CHECK(p.done == 72);
  CHECK(p.groups == 4);
  const scan::ShardReport f = run(five, 5);
  CHECK(f.done == 72);
  CHECK(f.groups == 4 * 4);  // 18 runs per key in groups of at most 5
  const auto oa = outputs(alone), op = outputs(packed), of = outputs(five);
  REQUIRE(oa.size() == 72);
  CHECK(op.size() == 72);
  CHECK(of.size() == 72);
  int64_t files = 0, rates = 0;
  for (const auto& [id, files_a] : oa) {
    REQUIRE(op.count(id));
    for (const auto& [name, bytes] : files_a) {
      INFO(id << "/" << name);
      CHECK(op.at(id).at(name) == bytes);
      CHECK(of.at(id).at(name) == bytes);
      ++files;
      rates += name.rfind("rates_", 0) == 0;
    }
    // Same result rows; the packed DONE says how many ran together.
    CHECK(done_doc(alone, id)["result"] == done_doc(packed, id)["result"]);
    CHECK(done_doc(alone, id)["timing"]["packed"] == 1);
    CHECK(done_doc(packed, id)["timing"]["packed"] == 18);
  }
  CHECK(files > 72 * 6);
  CHECK(rates == 36 * 2);  // the full-record runs' rates, one file per area
  // A two-sample run keeps its two samples.
  const nlohmann::json m = scan::read_manifest(alone.string())[8];
  CHECK(m["axes"]["stimulus"]["stimulus.contrasts"].size() == 2);
  CHECK(done_doc(packed, m["run_id"])["result"]["batch"] == 2);
}

TEST_CASE("scan run: packing DyRCNNx4, whose tau is a parameter (raw and through softplus)") {
  TempDir t;
  const std::string grid = R"([scan]
kind = "simulate"
[scan.set]
"model.preset" = "DyRCNNx4"
"model.input_height" = 32
"model.input_width" = 32
"simulation.steps" = 4
[[axis]]
key = "dynamics.tau_parametrization"
values = ["raw", "softplus"]
[[axis]]
key = "dynamics.tau"
values = [3.0, 7.5]
[[axis]]
key = "stimulus.contrast"
values = [0.5, 1.0]
)";
  const fs::path alone = expand_into(t.path(), grid, "alone");
  const fs::path packed = expand_into(t.path(), grid, "packed");
  CHECK(run(alone, 1).groups == 8);
  // auto: a probe group of 4 runs (one key's runs), then groups of about 60 s of work.
  CHECK(run(packed, 0).groups == 2);
  const auto oa = outputs(alone), op = outputs(packed);
  REQUIRE(oa.size() == 8);
  CHECK(oa == op);
}

TEST_CASE("scan run: adaptive solvers are not packed (one step schedule per batch)") {
  TempDir t;
  const std::string grid = R"([scan]
kind = "simulate"
[scan.set]
"model.preset" = "DyRCNNx2"
"model.input_height" = 16
"model.input_width" = 16
"simulation.steps" = 3
"dynamics.solver" = "bs32"
[[axis]]
key = "dynamics.tau"
values = [3.0, 7.5]
[[axis]]
key = "stimulus.contrast"
values = [0.5, 1.0]
)";
  const fs::path alone = expand_into(t.path(), grid, "alone");
  const fs::path packed = expand_into(t.path(), grid, "packed");
  CHECK(run(alone, 1).groups == 4);
  CHECK(run(packed, 8).groups == 4);  // --pack 8 asked, each run still alone
  const auto oa = outputs(alone), op = outputs(packed);
  REQUIRE(oa.size() == 4);
  CHECK(oa == op);
}

TEST_CASE("scan run: reruns skip done runs, redo torn ones, reclaim stale leases") {
  TempDir t;
  const std::string small = std::string(kGrid).substr(0, std::string(kGrid).find("[[axis]]\nkey = \"stimulus.contrast\""));
  const fs::path dir = expand_into(t.path(), small, "s");  // 3 tau x 2 seeds
  const std::vector<std::string> id = ids(dir);
  REQUIRE(id.size() == 6);
  CHECK(run(dir, 0).done == 6);
  const auto before = outputs(dir);
  scan::ShardReport r = run(dir, 0);
  CHECK(r.done == 0);
  CHECK(r.skipped == 6);

  // Torn: an output cut short, a DONE lost, a finished folder not yet renamed.
  fs::resize_file(dir / "runs" / id[0] / "present.npy", 10);
  fs::remove(dir / "runs" / id[1] / "DONE");
  fs::rename(dir / "runs" / id[2], dir / "runs" / (id[2] + ".tmp"));
  scan::RunStore store(dir.string());
  CHECK(store.state(id[0], false, 120) == scan::RunState::Torn);
  CHECK(store.state(id[1], false, 120) == scan::RunState::Torn);
  CHECK(store.state(id[2], false, 120) == scan::RunState::Torn);
  // A lease of a process that is gone (a pid that cannot exist here), and one whose heartbeat
  // is fresh from another host (live: left alone), then old (stale: reclaimed).
  fs::remove_all(dir / "runs" / id[3]);
  fs::create_directories(dir / "runs" / (id[3] + ".tmp"));
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  write(dir / "runs" / (id[3] + ".tmp") / "RUNNING",
        nlohmann::json{{"host", host}, {"pid", 99999999}, {"start", "1"}}.dump());
  fs::remove_all(dir / "runs" / id[4]);
  fs::create_directories(dir / "runs" / (id[4] + ".tmp"));
  const fs::path other = dir / "runs" / (id[4] + ".tmp") / "RUNNING";
  write(other, nlohmann::json{{"host", "elsewhere"}, {"pid", 1}, {"start", "1"}}.dump());
  CHECK(store.state(id[3], false, 120) == scan::RunState::Torn);
  CHECK(store.state(id[4], false, 120) == scan::RunState::Running);
  CHECK(scan::status(dir.string())["running"] == 1);
  r = run(dir, 0);
  CHECK(r.done == 4);
  CHECK(r.busy == 1);
  CHECK(r.skipped == 1);
  fs::last_write_time(other, fs::file_time_type::clock::now() - std::chrono::hours(1));
  CHECK(store.state(id[4], false, 120) == scan::RunState::Torn);
  r = run(dir, 0);
  CHECK(r.done == 1);
  CHECK(outputs(dir) == before);
  const nlohmann::json s = scan::status(dir.string());
  CHECK(s["done"] == 6);
  CHECK(s["pending"] == 0);
  // Every finished attempt left a row; collect keeps one per run.
  const nlohmann::json c = scan::collect(dir.string(), {});
  CHECK(c["collected"] == 6);
  CHECK(c["duplicates"] == 5);  // runs 0..4 were done twice (their first rows still logged)
}

TEST_CASE("scan run: failures are recorded with their reason; collect needs every run") {
  TempDir t;
  const std::string grid = std::string(kGrid).substr(0, std::string(kGrid).find("[[axis]]")) +
                           "[[axis]]\nname = \"input\"\ntables = [{\"stimulus.kind\" = "
                           "\"grating\"}, {\"stimulus.kind\" = \"npy\", \"stimulus.path\" = "
                           "\"no/such/file.npy\"}]\n";
  const fs::path dir = expand_into(t.path(), grid, "f");  // 2 inputs x 2 seeds; 2 runs fail
  const scan::ShardReport r = run(dir, 0);
  CHECK(r.done == 2);
  CHECK(r.failed == 2);
  CHECK(r.first_failure_code == int(ExitCode::NoInput));
  const nlohmann::json s = scan::status(dir.string());
  CHECK(s["failed"] == 2);
  REQUIRE(s["failures"].size() == 2);
  CHECK(s["failures"][0]["reason"].get<std::string>().find("no/such/file.npy") !=
        std::string::npos);
  CHECK(run(dir, 0).failed == 2);  // skipped as failed, not rerun
  scan::ShardOptions o;
  o.retry_failed = true;
  CHECK(run(dir, 0, o).failed == 2);
  CHECK_THROWS_AS(scan::collect(dir.string(), {}), DataError);
  CHECK(!fs::exists(dir / "results.csv"));
  scan::CollectOptions partial;
  partial.partial = true;
  const nlohmann::json c = scan::collect(dir.string(), partial);
  CHECK(c["collected"] == 2);
  CHECK(c["missing"] == 2);
  const std::string csv = read_text(dir / "results.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 3);
  CHECK(csv.rfind("index,run_id,input,model.seed,areas.", 0) == 0);
}

TEST_CASE("scan run: a stop signal and --max-hours stop between groups") {
  TempDir t;
  const fs::path dir = expand_into(t.path(), kGrid, "stop");
  std::atomic<int> stop{15};
  scan::ShardOptions o;
  o.stop = &stop;
  scan::ShardReport r = run(dir, 0, o);
  CHECK(r.stopped);
  CHECK(r.done == 0);
  CHECK(r.stop_reason == "signal 15");
  scan::ShardOptions h;
  h.max_hours = 1e-9;  // the first group runs (no estimate yet), the second would end too late
  r = run(dir, 0, h);
  CHECK(r.stopped);
  CHECK(r.done == 4);  // pack auto's probe group
  CHECK(r.stop_reason.find("--max-hours") == 0);
  CHECK(scan::status(dir.string())["pending"] == 68);
  // Shards: each writes its own log; together every run once.
  for (int64_t i = 0; i < 3; ++i) {
    scan::ShardOptions s;
    s.shard = i, s.shards = 3;
    run(dir, 0, s);
  }
  for (int64_t i = 0; i < 3; ++i) CHECK(fs::exists(dir / "results" / concat("shard-", i, ".jsonl")));
  // A torn last line (a writer killed mid-row) is dropped by collect and cut by the next writer.
  std::ofstream(dir / "results" / "shard-1.jsonl", std::ios::app) << "{\"run_id\": \"torn-row";
  const nlohmann::json c = scan::collect(dir.string(), {});
  CHECK(c["collected"] == 72);
  CHECK(c["duplicates"] == 0);
  CHECK(c["dropped"] == 1);
  { scan::ResultsLog cut(dir.string(), "shard-1"); }
  const std::string log = read_text(dir / "results" / "shard-1.jsonl");
  CHECK(log.back() == '\n');
  CHECK(log.find("torn-row") == std::string::npos);
  CHECK_THROWS_AS(run(dir, 0, [] { scan::ShardOptions x; x.index = 72; return x; }()), UsageError);
}

TEST_CASE("scan submit: sbatch scripts split at MaxArraySize, with the signal and throttle") {
  TempDir t;
  const fs::path dir = expand_into(t.path(), kGrid, "sub");  // 72 runs
  scan::SubmitOptions o;
  o.dynsim = "/opt/dynsim";
  o.runs_per_task = 4;  // 18 tasks
  o.max_array_size = 7;  // indices 0..6: 7 tasks per job, 7 + 7 + 4
  o.throttle = 3;
  o.time = "1:00:00";
  o.gpus_per_task = 1;
  const std::vector<std::string> s = scan::sbatch_scripts(dir.string(), o);
  REQUIRE(s.size() == 3);
  CHECK(s[0].find("#SBATCH --array=0-6%3\n") != std::string::npos);
  CHECK(s[2].find("#SBATCH --array=0-3%3\n") != std::string::npos);
  CHECK(s[1].find("shard=$((7 + SLURM_ARRAY_TASK_ID))") != std::string::npos);
  for (const std::string& x : s) {
    CHECK(x.find("#SBATCH --signal=B:USR1@120\n") != std::string::npos);
    CHECK(x.find("#SBATCH --gpus-per-task=1\n") != std::string::npos);
    CHECK(x.find("\"/opt/dynsim\" scan run") != std::string::npos);
    CHECK(x.find("--shard \"$shard/18\" --max-hours 0.916667") != std::string::npos);
  }
  o.time = "soon";
  CHECK_THROWS_AS(scan::sbatch_scripts(dir.string(), o), UsageError);
}

TEST_CASE("scan run: a train run stopped by a signal checkpoints, then resumes bit for bit") {
  TempDir t;
  const std::string grid = R"([scan]
kind = "train"
[scan.set]
"model.preset" = "DyRCNNx2"
"model.input_height" = 16
"model.input_width" = 16
"model.n_classes" = 4
"data.dataset" = "synthetic"
"data.synthetic_size" = 64
"train.batch" = 16
"train.steps" = 4
"train.threads" = 1
"train.epochs" = 3
"checkpoint.every_steps" = 1
[[axis]]
key = "optimizer.lr"
values = [0.003, 0.01]
)";
  const fs::path ref = expand_into(t.path(), grid, "ref");
  const fs::path cut = expand_into(t.path(), grid, "cut");
  CHECK(run(ref, 0).done == 2);
  // Stop the first run once it has written its first checkpoint.
  const std::string id0 = ids(cut)[0];
  std::atomic<int> stop{0};
  std::thread watcher([&] {
    const fs::path ck = cut / "runs" / (id0 + ".tmp") / "train" / "checkpoints";
    for (int i = 0; i < 20000 && stop.load() == 0; ++i) {
      std::error_code ec;
      if (fs::is_directory(ck, ec) && !fs::is_empty(ck, ec)) stop.store(10);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  scan::ShardOptions o;
  o.stop = &stop;
  const scan::ShardReport r = run(cut, 0, o);
  watcher.join();
  CHECK(r.stopped);
  CHECK(r.done == 0);
  CHECK(r.stop_reason == "signal 10");
  CHECK(fs::is_directory(cut / "runs" / (id0 + ".tmp") / "train" / "checkpoints"));
  CHECK(scan::status(cut.string())["torn"] == 1);  // kept for the resume, no live lease
  CHECK(run(cut, 0).done == 2);
  for (const std::string& id : ids(ref)) {
    nlohmann::json a = done_doc(ref, id)["result"], b = done_doc(cut, id)["result"];
    a.erase("wall_s"), b.erase("wall_s");
    CHECK(a == b);
    REQUIRE(fs::exists(ref / "runs" / id / "train" / "weights.safetensors"));
    REQUIRE(fs::exists(cut / "runs" / id / "train" / "weights.safetensors"));
    CHECK(read_text(ref / "runs" / id / "train" / "weights.safetensors") ==
          read_text(cut / "runs" / id / "train" / "weights.safetensors"));
  }
  const std::string events = read_text(cut / "runs" / id0 / "train" / "events.jsonl");
  CHECK(events.find("\"resume\"") != std::string::npos);
}

TEST_CASE("scan run: retina identification runs (generate, fit, evaluate, score)") {
  TempDir t;
  const std::string grid = R"([scan]
kind = "retina"
seeds = [0, 1]
seed_key = "generate.seed"
[scan.set]
"generate.frames" = 3000
"generate.test_frames" = 100
"generate.test_trials" = 2
"generate.calibration_frames" = 3000
"fit.iterations" = 20
"fit.batch" = 200
"fit.threads" = 1
[[axis]]
key = "model.kind"
values = ["ln", "yan"]
)";
  const fs::path a = expand_into(t.path(), grid, "a");
  const fs::path b = expand_into(t.path(), grid, "b");
  CHECK(run(a, 0).done == 4);
  CHECK(run(b, 0).done == 4);
  for (const std::string& id : ids(a)) {
    const nlohmann::json r = done_doc(a, id)["result"];
    CHECK(r["evaluate"]["cells"].size() == 1);
    CHECK(r["score"].contains("cells"));
    CHECK(r == done_doc(b, id)["result"]);  // seeded: the same run gives the same numbers
    CHECK(fs::exists(a / "runs" / id / "model"));
  }
  scan::collect(a.string(), {});
  const std::string header = read_text(a / "results.csv").substr(0, 200);
  CHECK(header.find("index,run_id,model.kind,generate.seed,evaluate.cells.0.") == 0);
  // A bad retina value is refused at expand time, naming the run and the key.
  const fs::path bad = write(t.path() / "bad.toml", std::string(grid) + "[[axis]]\nkey = \"fit.lr\"\nvalues = [-1.0]\n");
  try {
    scan::expand(scan::read_grid(bad.string()), models::scan_validators());
    FAIL("expanded");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()).find("run 0: key 'fit.lr' = -1.0") != std::string::npos);
  }
}

TEST_CASE("apply_taus gives a copied graph the taus build_graph would give it") {
  struct Case {
    std::vector<std::string> base, other;
  };
  const std::vector<std::string> x4 = {"model.preset=DyRCNNx4", "model.input_height=32",
                                       "model.input_width=32"};
  auto with = [](std::vector<std::string> v, std::vector<std::string> more) {
    v.insert(v.end(), more.begin(), more.end());
    return v;
  };
  const std::vector<Case> cases = {
      {with(x4, {"dynamics.tau=5.0"}), with(x4, {"dynamics.tau=7.5"})},
      {with(x4, {"dynamics.tau_parametrization=softplus"}),
       with(x4, {"dynamics.tau_parametrization=softplus", "dynamics.tau={V1 = 3.0, IT = 9.0}"})},
      {{"model.preset=DyRCNNx2", "model.input_height=16", "model.input_width=16"},
       {"model.preset=DyRCNNx2", "model.input_height=16", "model.input_width=16",
        "dynamics.tau_per_sample=[3.0, 4.0]", "dynamics.tau=2.0"}},
  };
  // The custom two-area graph: area A takes dynamics.tau, area B its table's tau = 8.
  const std::string custom = std::string(DYNSIM_SOURCE_DIR) + "/models/configs/custom_two_areas.toml";
  std::vector<Case> all = cases;
  all.push_back({{"@" + custom}, {"@" + custom, "dynamics.tau=6.0"}});
  auto load = [](const std::vector<std::string>& v) {
    if (!v.empty() && v[0][0] == '@')
      return Config::load(v[0].substr(1), models::simulate_schema(),
                          std::vector<std::string>(v.begin() + 1, v.end()));
    return Config::parse("", "cfg", models::simulate_schema(), v);
  };
  for (const Case& c : all) {
    const Config a = load(c.base);
    const Config b = load(c.other);
    const Graph want = models::build_graph(b);
    Graph got = models::build_graph(a);
    const Graph original = got;
    const std::vector<uint8_t> before = [&] {
      std::vector<uint8_t> v;
      for (const auto& e : original.params.entries()) {
        const auto* p = static_cast<const uint8_t*>(e.value.raw());
        v.insert(v.end(), p, p + e.value.nbytes());
      }
      return v;
    }();
    models::apply_taus(got, b);
    REQUIRE(got.areas.size() == want.areas.size());
    for (size_t i = 0; i < got.areas.size(); ++i) {
      CHECK(got.areas[i].tau == want.areas[i].tau);
      CHECK(got.areas[i].tau_per_sample == want.areas[i].tau_per_sample);
    }
    const auto& ge = got.params.entries();
    const auto& we = want.params.entries();
    REQUIRE(ge.size() == we.size());
    for (size_t i = 0; i < ge.size(); ++i) {
      INFO(ge[i].name);
      CHECK(ge[i].value.nbytes() == we[i].value.nbytes());
      CHECK(std::memcmp(ge[i].value.raw(), we[i].value.raw(), ge[i].value.nbytes()) == 0);
    }
    // The graph it was copied from keeps its own tau parameters.
    std::vector<uint8_t> after;
    for (const auto& e : original.params.entries()) {
      const auto* p = static_cast<const uint8_t*>(e.value.raw());
      after.insert(after.end(), p, p + e.value.nbytes());
    }
    CHECK(after == before);
  }
}
