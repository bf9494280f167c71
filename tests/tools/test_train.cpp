// End-to-end runs of `dynsim train` and `dynsim eval` (the built DYNSIM_CLI) on a tiny synthetic
// task: a run stopped by max_steps, SIGTERM, SIGUSR1 or kill -9 and continued with --resume ends
// with weights byte-identical to an uninterrupted run; damaged checkpoints are refused by name and
// skipped; bad inputs give their exit code and write nothing; metrics.csv, events.jsonl,
// summary.json and the per-step eval CSV hold what they should.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "engine/core/device.h"
#include "engine/io/checkpoint.h"
#include "tests/harness.h"

using namespace dynsim;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kCorpus = fs::path(DYNSIM_TEST_DATA) / "train";

// The task: 4 grating classes at 16x16, DyRCNNx2, 4 steps, one thread (bit-for-bit repeatable,
// and no spin-waiting for a core that another process holds). 240 samples in batches of 16 are
// 15 micro-batches an epoch; with accumulate = 2 the 15th is dropped, so an epoch is 7 optimiser
// steps and the run 21. Augmentation and the shuffled pattern make the data order matter.
const std::string kTask =
    "--preset DyRCNNx2 --set data.dataset=synthetic --set model.input_height=16 "
    "--set model.input_width=16 --set model.n_classes=4 --set data.synthetic_size=240 "
    "--set train.batch=16 --set train.steps=4 --set optimizer.lr=0.003 --set train.threads=1 "
    "--epochs 3 --set train.accumulate=2 --set data.random_flip=true --set train.pattern=1011 "
    "--set train.shuffle_pattern=true --set train.log_every=2 --set checkpoint.every_steps=2 -q";
constexpr int kStepsPerEpoch = 7, kSteps = 21, kSamplesPerStep = 32, kTestSamples = 60;

using dynsim::test::TempDir;

using dynsim::test::read_text;
const auto& quote = dynsim::test::shell_quote;

json read_json(const fs::path& p) {
  return json::parse(read_text(p));
}

std::vector<json> read_events(const fs::path& out) {
  std::vector<json> v;
  std::istringstream in(read_text(out / "events.jsonl"));
  for (std::string line; std::getline(in, line);) v.push_back(json::parse(line));
  return v;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string f; std::getline(ss, f, sep);) v.push_back(f);
  if (!s.empty() && s.back() == sep) v.push_back("");
  return v;
}

// A CSV as rows of fields, the header first.
std::vector<std::vector<std::string>> read_csv(const fs::path& p) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(read_text(p));
  for (std::string line; std::getline(in, line);) rows.push_back(split(line, ','));
  return rows;
}

bool same_bytes(const fs::path& a, const fs::path& b) {
  const std::string x = read_text(a);
  return !x.empty() && x == read_text(b);
}

// Every path under dir, relative, with file sizes.
std::set<std::string> listing(const fs::path& dir) {
  std::set<std::string> s;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string item = fs::relative(e.path(), dir).string();
    if (e.is_regular_file()) item += " " + std::to_string(e.file_size());
    s.insert(item);
  }
  return s;
}

std::string checkpoint_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return name;
}

struct Result {
  int code = -1;    // exit status, or -1 when killed
  int signal = 0;   // the signal that ended it
  std::string err;  // stderr
};

// Where the runs' stdout and stderr go (outside their working folders).
const fs::path& log_dir() {
  static const TempDir logs;
  return logs.path();
}

// Starts `dynsim ARGS` in cwd; returns its pid (exec: the shell becomes dynsim).
pid_t spawn(const fs::path& cwd, const std::string& args) {
  const std::string cmd = "exec " + quote(DYNSIM_CLI) + " " + args + " >" +
                          quote((log_dir() / "stdout").string()) + " 2>" +
                          quote((log_dir() / "stderr").string());
  const std::string dir = cwd.string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::chdir(dir.c_str()) == 0) ::execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    ::_exit(127);
  }
  REQUIRE(pid > 0);
  return pid;
}

Result finish(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  Result r;
  if (WIFEXITED(status)) r.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.err = read_text(log_dir() / "stderr");
  return r;
}

Result run_cli(const fs::path& cwd, const std::string& args) {
  return finish(spawn(cwd, args));
}

// Waits until out/events.jsonl holds n events of this kind; false if the process ended first.
bool wait_for_events(pid_t pid, const fs::path& out, const std::string& kind, int n) {
  for (;;) {
    int seen = 0;
    std::istringstream in(read_text(out / "events.jsonl"));
    for (std::string line; std::getline(in, line);) {
      const json e = json::parse(line, nullptr, false);  // a line being written: discarded
      seen += !e.is_discarded() && e.value("event", "") == kind;
    }
    if (seen >= n) return true;
    siginfo_t info{};
    if (::waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid)
      return false;
    ::usleep(2000);
  }
}

// The uninterrupted run that every interrupted one must reproduce; made once.
const fs::path& reference() {
  static const TempDir dir;
  static const fs::path out = dir.path() / "ref";
  static const Result r = run_cli(dir.path(), "train " + kTask + " -o ref");
  REQUIRE_MESSAGE(r.code == 0, "the reference run failed: ", r.err);
  return out;
}

// metrics.csv reduced to what an interrupted run must reproduce: which rows (split, epoch, step),
// the samples seen, and the test rows' loss and accuracy (train rows' running means restart
// at a resume).
std::vector<std::string> metric_rows(const fs::path& out) {
  std::vector<std::string> v;
  const auto rows = read_csv(out / "metrics.csv");
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& r = rows[i];
    if (r.size() != 11) return {"row with " + std::to_string(r.size()) + " fields"};
    std::string s = r[0] + "," + r[1] + "," + r[2] + "," + r[9];
    if (r[0] == "test") s += "," + r[3] + "," + r[6];
    v.push_back(s);
  }
  return v;
}

// The resumed output `out` ended where the reference did.
void check_like_reference(const fs::path& out) {
  const fs::path ref = reference();
  CHECK_MESSAGE(same_bytes(out / "weights.safetensors", ref / "weights.safetensors"),
                "final weights differ from the uninterrupted run's");
  CHECK(metric_rows(out) == metric_rows(ref));
  const json summary = read_json(out / "summary.json");
  CHECK(summary["steps"] == kSteps);
  CHECK(summary["epochs"] == 3);
  CHECK(summary["best_test_accuracy"] == read_json(ref / "summary.json")["best_test_accuracy"]);
}

}  // namespace

TEST_CASE(
    "train: stopping at max_steps and resuming gives the uninterrupted weights, bit for bit") {
  const fs::path ref = reference();
  TempDir cwd;
  const std::string train = "train " + kTask + " -o out";
  const fs::path out = cwd.path() / "out";
  // Mid-epoch: step 11 is 4 steps (8 micro-batches) into the second epoch.
  Result r = run_cli(cwd.path(), train + " --set train.max_steps=11");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(read_json(out / "summary.json")["steps"] == 11);
  const json t11 = read_json(out / "checkpoints" / checkpoint_name(11) / "trainer.json");
  CHECK(t11["epoch"] == 1);
  CHECK(t11["batch_in_epoch"] == 8);
  CHECK_FALSE(same_bytes(out / "weights.safetensors", ref / "weights.safetensors"));
  r = run_cli(cwd.path(), train + " --resume");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("resuming from out/checkpoints/" + checkpoint_name(11)) != std::string::npos);
  check_like_reference(out);

  // At an epoch boundary (its last micro-batch was dropped), then mid-epoch again, then the rest.
  fs::remove_all(out);
  r = run_cli(cwd.path(), train + " --set train.max_steps=" + std::to_string(kStepsPerEpoch));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const json t7 = read_json(out / "checkpoints" / checkpoint_name(kStepsPerEpoch) / "trainer.json");
  CHECK(t7["epoch"] == 1);
  CHECK(t7["batch_in_epoch"] == 0);
  r = run_cli(cwd.path(), train + " --resume --set train.max_steps=16");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(read_json(out / "summary.json")["steps"] == 16);
  r = run_cli(cwd.path(), train + " --resume");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  check_like_reference(out);

  // Resuming a finished run changes nothing.
  fs::copy(ref, cwd.path() / "done", fs::copy_options::recursive);
  r = run_cli(cwd.path(), "train " + kTask + " -o done --resume");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(same_bytes(cwd.path() / "done/weights.safetensors", ref / "weights.safetensors"));
  CHECK(same_bytes(cwd.path() / "done/metrics.csv", ref / "metrics.csv"));
}

namespace {

// Starts the run, signals it once a checkpoint exists, expects exit 75 with a checkpoint at the
// step it stopped, then resumes to the end.
void stop_and_resume(int sig) {
  CAPTURE(sig);
  reference();
  TempDir cwd;
  const std::string train = "train " + kTask + " -o out";
  const fs::path out = cwd.path() / "out";
  const pid_t pid = spawn(cwd.path(), train);
  const bool running = wait_for_events(pid, out, "checkpoint", 1);
  if (running) ::kill(pid, sig);
  const Result r = finish(pid);
  REQUIRE_MESSAGE(running, "the run ended before its first checkpoint: ", r.err);
  REQUIRE_MESSAGE(r.code == 75, r.err);
  const json last = read_events(out).back();
  CHECK(last["event"] == "stopped");
  CHECK(last["signal"] == sig);
  const int64_t step = last["step"].get<int64_t>();
  CHECK(step >= 2);
  CHECK(step < kSteps);
  CHECK(r.err.find("after step " + std::to_string(step)) != std::string::npos);
  const fs::path ck = out / "checkpoints" / checkpoint_name(step);
  REQUIRE(fs::exists(ck));
  CHECK(read_json(ck / "trainer.json")["step"] == step);
  CHECK_NOTHROW(read_checkpoint(ck.string()));
  CHECK_FALSE(fs::exists(out / "weights.safetensors"));  // not finished: nothing exported

  const Result again = run_cli(cwd.path(), train + " --resume");
  REQUIRE_MESSAGE(again.code == 0, again.err);
  CHECK(again.err.find("resuming from out/checkpoints/" + checkpoint_name(step)) !=
        std::string::npos);
  check_like_reference(out);
}

}  // namespace

TEST_CASE("train: SIGTERM checkpoints and exits 75; --resume ends bit for bit as uninterrupted") {
  stop_and_resume(SIGTERM);
}

TEST_CASE("train: SIGUSR1 checkpoints and exits 75; --resume ends bit for bit as uninterrupted") {
  stop_and_resume(SIGUSR1);
}

TEST_CASE("train: after kill -9, --resume ends bit for bit as uninterrupted and cleans up") {
  reference();
  TempDir cwd;
  const std::string train = "train " + kTask + " -o out";
  const fs::path out = cwd.path() / "out", ckdir = out / "checkpoints";
  const pid_t pid = spawn(cwd.path(), train);
  const bool running = wait_for_events(pid, out, "checkpoint", 2);
  if (running) ::kill(pid, SIGKILL);
  const Result r = finish(pid);
  REQUIRE_MESSAGE(running, "the run ended before its second checkpoint: ", r.err);
  REQUIRE(r.signal == SIGKILL);
  CHECK_FALSE(fs::exists(out / "weights.safetensors"));
  // What a kill in the middle of writing a checkpoint leaves: a temporary directory named with
  // the dead writer's pid, holding part of a file.
  const fs::path leftover =
      ckdir / (".tmp-" + checkpoint_name(99) + "-" + std::to_string(pid) + "-0");
  fs::create_directories(leftover);
  std::ofstream(leftover / "weights.safetensors") << "partial";

  const Result again = run_cli(cwd.path(), train + " --resume");
  REQUIRE_MESSAGE(again.code == 0, again.err);
  CHECK(again.err.find("resuming from out/checkpoints/step-") != std::string::npos);
  check_like_reference(out);
  for (const auto& e : fs::directory_iterator(ckdir))
    CHECK_MESSAGE(e.path().filename().string().rfind(".tmp-", 0) != 0, e.path().string());
  const auto cks = list_checkpoints(ckdir.string());
  REQUIRE_FALSE(cks.empty());
  CHECK(cks.back().step == kSteps);
}

TEST_CASE("train: a damaged newest checkpoint is refused by name and the one before is used") {
  const fs::path ref = reference();
  const std::string newest = checkpoint_name(kSteps);
  for (const bool truncate : {true, false}) {
    CAPTURE(truncate);
    TempDir cwd;
    const fs::path out = cwd.path() / "out";
    fs::copy(ref, out, fs::copy_options::recursive);
    fs::remove(out / "weights.safetensors");
    fs::remove(out / "summary.json");
    const fs::path bad = out / "checkpoints" / newest / "weights.safetensors";
    if (truncate) {
      fs::resize_file(bad, fs::file_size(bad) / 2);
    } else {
      std::string bytes = read_text(bad);
      bytes[bytes.size() / 2] ^= 0x10;  // one bit in the tensor data
      std::ofstream(bad, std::ios::binary | std::ios::trunc) << bytes;
    }
    // eval refuses it outright.
    Result r =
        run_cli(cwd.path(), "eval -q out/config.toml --checkpoint out/checkpoints/" + newest);
    CHECK(r.code == 65);
    CHECK(r.err.find("out/checkpoints/" + newest) != std::string::npos);
    CHECK(r.err.find("weights.safetensors") != std::string::npos);
    CHECK(r.err.find(truncate ? "size" : "sha256") != std::string::npos);
    CHECK_FALSE(fs::exists(out / "eval_test.csv"));
    // --resume warns, naming the checkpoint and the file, and takes the previous one.
    r = run_cli(cwd.path(), "train " + kTask + " -o out --resume");
    REQUIRE_MESSAGE(r.code == 0, r.err);
    const size_t warn = r.err.find("warning: checkpoint refused: out/checkpoints/" + newest);
    CHECK_MESSAGE(warn != std::string::npos, r.err);
    CHECK(r.err.find("weights.safetensors", warn) != std::string::npos);
    CHECK(r.err.find("resuming from out/checkpoints/" + checkpoint_name(kSteps - 1)) !=
          std::string::npos);
    check_like_reference(out);
    CHECK_NOTHROW(read_checkpoint((out / "checkpoints" / newest).string()));  // rewritten
  }
}

TEST_CASE("train: bad inputs give their exit code and message and write nothing") {
  const fs::path ref = reference();
  struct Case {
    std::string args;
    int code;
    std::vector<std::string> message;  // substrings of stderr
  };
  const std::string train = "train " + kTask + " -o out";
  const std::string idx =
      " --set data.dataset=idx --set data.train_labels=labels.idx "
      "--set data.test_images=images.idx --set data.test_labels=labels.idx";
  std::vector<Case> cases = {
      {train + " --set train.epoch=3", 78, {"train.epoch", "unknown key"}},
      {"train -q " + quote((kCorpus / "unknown_key.toml").string()) + " -o out",
       78,
       {"unknown_key.toml:4:1", "train.batchsize", "unknown key"}},
      {"train -q " + quote((kCorpus / "bad_pattern.toml").string()) +
           " --set data.dataset=synthetic -o out",
       78,
       {"bad_pattern.toml:3:11", "train.pattern", "'x'"}},
      {"train " + kTask + " -o existing", 64, {"'existing' exists", "--resume", "--overwrite"}},
      {"train " + kTask + " -o existing --overwrite", 64, {"not a dynsim training output"}},
      {train + " --resume", 66, {"no valid checkpoint", "out/checkpoints"}},
      {"train " + kTask + " -o early --resume", 66, {"no valid checkpoint", "early/checkpoints"}},
      {train + " --resume-from no_such_checkpoint", 66, {"no_such_checkpoint"}},
      {"train " + kTask + " -o ref --resume --set model.supralinearity=2",
       78,
       {"model.supralinearity", "ref/checkpoints/" + checkpoint_name(kSteps),
        "resuming must not change the run"}},
      {train + " --set data.dataset=idx --set data.train_images=no_such_images.idx "
               "--set data.train_labels=no_such_labels.idx --set data.test_images=x.idx "
               "--set data.test_labels=y.idx",
       66,
       {"no_such_images.idx"}},
      {train + idx + " --set data.train_images=truncated.idx",
       65,
       {"truncated.idx", "expected 7840 pixel bytes at offset 16", "has 100"}},
      {train + " --set train.batch=4096", 78, {"train.batch", "240 training samples"}},
      {train + " --set train.accumulate=16", 78, {"train.batch", "fewer than train.accumulate"}},
      {"eval -q --set data.dataset=synthetic --checkpoint no_such_checkpoint",
       66,
       {"no_such_checkpoint"}},
  };
  cases.push_back({train + " --set train.device=cpu --set train.precision=tf32", 78,
                   {"train.precision", "tf32 needs a CUDA device"}});
  if (cuda_device_count() == 0)  // where there is a device, this trains on it instead
    cases.push_back({train + " --set train.device=cuda", 78, {"train.device", "'cuda' cannot be used"}});
  // IDX files: 10 images of 28x28 (one cut short after 100 pixel bytes), 10 labels.
  auto idx_file = [](const fs::path& p, std::vector<uint32_t> header, size_t bytes) {
    std::string s;
    for (uint32_t v : header)  // magic, then the dimensions; big-endian
      for (int k = 3; k >= 0; --k) s += char((v >> (8 * k)) & 0xff);
    s += std::string(bytes, '\1');
    std::ofstream(p, std::ios::binary) << s;
  };
  for (const Case& c : cases) {
    CAPTURE(c.args);
    TempDir cwd;
    std::ofstream(cwd.path() / "unrelated.txt") << "a file the run must not touch\n";
    fs::create_directories(cwd.path() / "existing");
    std::ofstream(cwd.path() / "existing" / "notes.txt") << "the user's own notes\n";
    fs::create_directories(cwd.path() / "early");  // a run killed before its first checkpoint
    std::ofstream(cwd.path() / "early" / "events.jsonl") << "{\"event\":\"start\"}\n";
    fs::copy(ref, cwd.path() / "ref", fs::copy_options::recursive);
    idx_file(cwd.path() / "images.idx", {0x803, 10, 28, 28}, 10 * 28 * 28);
    idx_file(cwd.path() / "truncated.idx", {0x803, 10, 28, 28}, 100);
    idx_file(cwd.path() / "labels.idx", {0x801, 10}, 10);
    const auto before = listing(cwd.path());
    const Result r = run_cli(cwd.path(), c.args);
    CHECK_MESSAGE(r.code == c.code, r.err);
    for (const std::string& m : c.message) CHECK_MESSAGE(r.err.find(m) != std::string::npos, m);
    if (c.code == 65 || c.code == 78) CHECK(r.err.rfind("dynsim: error: ", 0) == 0);
    CHECK(listing(cwd.path()) == before);
  }
}

TEST_CASE("train: metrics.csv, events.jsonl and summary.json of a run") {
  const fs::path ref = reference();
  const auto rows = read_csv(ref / "metrics.csv");
  REQUIRE(!rows.empty());
  std::string header;
  for (const auto& f : rows[0]) header += (header.empty() ? "" : ",") + f;
  CHECK(header == "split,epoch,step,loss,ce,activity,accuracy,lr,grad_norm,samples,wall_s");
  // Train rows every log_every = 2 steps and at each epoch's last step; a test row per epoch.
  std::vector<int64_t> train_steps, test_steps, want_train, want_test;
  for (int s = 1; s <= kSteps; ++s) {
    if (s % 2 == 0 || s % kStepsPerEpoch == 0) want_train.push_back(s);
    if (s % kStepsPerEpoch == 0) want_test.push_back(s);
  }
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& r = rows[i];
    CAPTURE(i);
    REQUIRE(r.size() == 11);
    const int64_t epoch = std::stoll(r[1]), step = std::stoll(r[2]), samples = std::stoll(r[9]);
    CHECK(epoch == (step - 1) / kStepsPerEpoch);
    for (int f : {3, 6, 7, 10}) CHECK_MESSAGE(std::isfinite(std::stod(r[size_t(f)])), f);
    if (r[0] == "train") {
      train_steps.push_back(step);
      CHECK(samples == step * kSamplesPerStep);  // the dropped 15th micro-batch is not counted
      CHECK(std::stod(r[8]) > 0);                // grad_norm
    } else {
      REQUIRE(r[0] == "test");
      test_steps.push_back(step);
      CHECK(samples == kTestSamples);
    }
  }
  CHECK(train_steps == want_train);
  CHECK(test_steps == want_test);

  const std::vector<json> events = read_events(ref);
  REQUIRE(events.size() >= 3);
  CHECK(events.front()["event"] == "start");
  CHECK(events.front()["train_samples"] == 240);
  CHECK(events.front()["test_samples"] == kTestSamples);
  // Where it ran (train.device = auto): the CUDA device when there is one, else the CPU and why.
  const std::string device = events.front()["device"].get<std::string>();
  if (cuda_device_count() == 0)
    CHECK(device == "cpu (auto: no CUDA device)");
  else
    CHECK(device.rfind("cuda:0", 0) == 0);
  CHECK(events.back()["event"] == "done");
  CHECK(events.back()["step"] == kSteps);
  std::map<std::string, int> count;
  double best = 0;
  for (const json& e : events) {
    ++count[e["event"].get<std::string>()];
    CHECK(e.contains("time"));
    if (e["event"] == "eval") best = std::max(best, e["accuracy"].get<double>());
  }
  CHECK(count["eval"] == 3);
  CHECK(count["checkpoint"] == 12);  // every 2 steps (2..20) and at each epoch end (7, 14, 21)
  const json summary = read_json(ref / "summary.json");
  CHECK(summary["steps"] == kSteps);
  CHECK(summary["epochs"] == 3);
  CHECK(summary["best_test_accuracy"].get<double>() == best);
  CHECK(best >= 0.5);  // it learns (chance: 0.25)
}

TEST_CASE("eval: per-step accuracy CSV agrees with the training's own evaluation") {
  const fs::path ref = reference();
  TempDir cwd;
  fs::copy(ref, cwd.path() / "ref", fs::copy_options::recursive);
  const std::string ck = "ref/checkpoints/" + checkpoint_name(kSteps);
  Result r = run_cli(cwd.path(), "eval -q ref/config.toml --checkpoint " + ck);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto rows = read_csv(cwd.path() / "ref/eval_test.csv");
  REQUIRE(rows.size() == 5);  // header + train.steps rows
  CHECK(rows[0] == std::vector<std::string>{"step", "time_ms", "valid", "correct", "accuracy"});
  const double dt = read_json(cwd.path() / "ref/config.json")["dynamics"]["dt"].get<double>();
  int64_t valid = 0, correct = 0;
  double last_step = std::nan("");
  for (size_t t = 0; t + 1 < rows.size(); ++t) {
    const auto& row = rows[t + 1];
    CAPTURE(t);
    REQUIRE(row.size() == 5);
    CHECK(std::stoll(row[0]) == int64_t(t));
    CHECK(std::stod(row[1]) == doctest::Approx(double(t) * dt));
    const int64_t v = std::stoll(row[2]), c = std::stoll(row[3]);
    CHECK((v == 0 || v == kTestSamples));
    CHECK(c <= v);
    if (v) {
      CHECK(std::stod(row[4]) == doctest::Approx(double(c) / double(v)).epsilon(1e-6));
      last_step = double(c) / double(v);
    } else {
      CHECK(row[4].empty());
    }
    valid += v, correct += c;
  }
  json final_eval;
  for (const json& e : read_events(ref))
    if (e["event"] == "eval") final_eval = e;
  REQUIRE(valid > 0);
  CHECK(std::abs(double(correct) / double(valid) - final_eval["accuracy"].get<double>()) < 1e-9);
  CHECK(std::abs(last_step - final_eval["last_step_accuracy"].get<double>()) < 1e-9);

  // The exported weights give the same CSV as the final checkpoint.
  r = run_cli(cwd.path(), "eval -q ref/config.toml --weights ref/weights.safetensors -o w.csv");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(read_text(cwd.path() / "w.csv") == read_text(cwd.path() / "ref/eval_test.csv"));
  // Both at once is a usage error.
  r = run_cli(cwd.path(),
              "eval -q ref/config.toml --weights ref/weights.safetensors --checkpoint " + ck +
                  " -o both.csv");
  CHECK(r.code == 64);
  CHECK_FALSE(fs::exists(cwd.path() / "both.csv"));
}

// train.precision = bf16 (bf16 storage, f32 parameters and math; emulated on the CPU): the
// task's run learns like the fp32 reference (best test accuracy >= 0.5, chance 0.25) with a final
// test loss within 5% of the reference's, says where it ran, and its model folder evaluates.
TEST_CASE("train: train.precision = bf16 learns the task like fp32 and evaluates") {
  TempDir cwd;
  const Result r = run_cli(cwd.path(), "train " + kTask + " --set train.precision=bf16 -o b");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const std::vector<json> events = read_events(cwd.path() / "b");
  REQUIRE(!events.empty());
  const std::string device = events.front()["device"].get<std::string>();
  CHECK_MESSAGE(device.find("bf16 storage") != std::string::npos, device);
  double best = 0;
  json last;
  for (const json& e : events)
    if (e["event"] == "eval") best = std::max(best, e["accuracy"].get<double>()), last = e;
  CHECK(best >= 0.5);
  json ref_last;
  for (const json& e : read_events(reference()))
    if (e["event"] == "eval") ref_last = e;
  REQUIRE(last.contains("loss"));
  const double l = last["loss"].get<double>(), lr = ref_last["loss"].get<double>();
  CHECK_MESSAGE(std::abs(l - lr) <= 0.05 * std::abs(lr), "bf16 ", l, " vs fp32 ", lr);
  const Result e = run_cli(cwd.path(), "eval -q b/config.toml");
  REQUIRE_MESSAGE(e.code == 0, e.err);
  CHECK(fs::exists(cwd.path() / "b/eval_test.csv"));
}

TEST_CASE("train: every config in models/configs/train validates and trains a step") {
  const fs::path dir = fs::path(DYNSIM_SOURCE_DIR) / "models" / "configs" / "train";
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".toml") continue;
    ++n;
    CAPTURE(e.path().string());
    TempDir cwd;
    const std::string cfg = quote(e.path().string());
    const Result v = run_cli(cwd.path(), "validate --train " + cfg);
    CHECK_MESSAGE(v.code == 0, v.err);
    CHECK(read_text(log_dir() / "stdout").find(": valid") != std::string::npos);
    // The simulate schema rejects it, naming a train-only section.
    const Result s = run_cli(cwd.path(), "validate " + cfg);
    CHECK(s.code == 78);
    // One optimiser step on a tiny subset (the configs' data must exist: Fashion-MNIST is
    // installed by the test command).
    const Result t = run_cli(cwd.path(), "train -q " + cfg +
                                             " -o out --set train.max_steps=1 --set "
                                             "train.eval_every=0 --set data.train_subset=64 "
                                             "--set data.test_subset=16 --set train.threads=1");
    CHECK_MESSAGE(t.code == 0, t.err);
    CHECK(fs::exists(cwd.path() / "out" / "weights.safetensors"));
  }
  CHECK(n >= 1);
}
