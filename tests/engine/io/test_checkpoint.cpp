// Checkpoints: SHA-256 test vectors, a bitwise round trip of every field (f32/f64/i32, rank 0
// and empty tensors, NaN payloads, trainable flags, optimiser order, NaN/inf metrics, text byte
// for byte), atomic replacement, a corpus of damaged checkpoints each refused with a DataError
// naming the file, the fallback to an older good checkpoint, listing and retention with crash
// leftovers, and failed writes that leave nothing behind.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "engine/io/checkpoint.h"

using namespace dynsim;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test, removed afterwards.
struct TmpDir {
  std::string path;
  TmpDir() {
    char tmpl[] = "/tmp/dynsim_test_checkpoint_XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TmpDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

Tensor with_bits_f32(Tensor t, int64_t i, uint32_t bits) {
  std::memcpy(t.data<float>() + i, &bits, 4);
  return t;
}

CheckpointData sample(int64_t step, double metric) {
  CheckpointData d;
  d.epoch = 3, d.step = step, d.batch_in_epoch = 7, d.metric = metric;
  // Insertion order deliberately not alphabetical: the store's order must survive.
  Tensor w = Tensor::from({2, 3}, {-0.0, 1e-45, 3.4e38, -1.5, 0.1, double(step)}, DType::F32);
  d.weights.add("z.weight", with_bits_f32(w, 1, 0x7fc01234u), true);  // a NaN with a payload
  d.weights.add("a.tau", Tensor::from({4}, {3.141592653589793, -0.0, 1e-310, INFINITY}, DType::F64),
                false);
  d.weights.add("m.index", Tensor::from({3}, {double(INT_MIN), -1, double(INT_MAX)}, DType::I32),
                false);
  d.weights.add("s", Tensor::from(Shape{}, {2.5}, DType::F32), true);
  d.weights.add("empty", Tensor::zeros({0, 4}, DType::F32), true);
  d.optimizer_state.emplace_back("step", Tensor::from({1}, {double(step)}, DType::I32));
  d.optimizer_state.emplace_back("z.weight.exp_avg", Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6}));
  d.optimizer_state.emplace_back("a.tau.exp_avg_sq",
                                 Tensor::from({4}, {1e-300, 2, 3, 0.1}, DType::F64));
  d.optimizer_state.emplace_back("b", Tensor::from({2}, {-7, 8}));
  d.trainer_json = "{\"lr\": 0.1,  \"seeds\": [7, 8]}\n";  // odd spacing: kept byte for byte
  d.config_toml = "[train]\nepochs = 10\n# comment \xc3\xa9\n";
  return d;
}

void require_same_tensor(const Tensor& got, const Tensor& want, const std::string& what) {
  REQUIRE_MESSAGE(got.dtype() == want.dtype(), what);
  REQUIRE_MESSAGE(got.shape() == want.shape(), what, ": ", got.shape().str());
  CHECK_MESSAGE(std::memcmp(got.raw(), want.raw(), want.nbytes()) == 0, what, ": bits differ");
}

void require_same(const CheckpointData& got, const CheckpointData& want) {
  CHECK(got.epoch == want.epoch);
  CHECK(got.step == want.step);
  CHECK(got.batch_in_epoch == want.batch_in_epoch);
  CHECK(std::memcmp(&got.metric, &want.metric, sizeof(double)) == 0);
  REQUIRE(got.weights.entries().size() == want.weights.entries().size());
  for (size_t i = 0; i < want.weights.entries().size(); ++i) {
    const auto &g = got.weights.entries()[i], &w = want.weights.entries()[i];
    CHECK(g.name == w.name);
    CHECK_MESSAGE(g.trainable == w.trainable, w.name);
    require_same_tensor(g.value, w.value, w.name);
  }
  REQUIRE(got.optimizer_state.size() == want.optimizer_state.size());
  for (size_t i = 0; i < want.optimizer_state.size(); ++i) {
    CHECK(got.optimizer_state[i].first == want.optimizer_state[i].first);
    require_same_tensor(got.optimizer_state[i].second, want.optimizer_state[i].second,
                        want.optimizer_state[i].first);
  }
  CHECK(got.trainer_json == want.trainer_json);
  CHECK(got.config_toml == want.config_toml);
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void flip_bit(const std::string& path, int64_t from_end, int bit) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(-from_end, std::ios::end);
  char c;
  f.get(c);
  f.seekp(-from_end, std::ios::end);
  f.put(char(c ^ (1 << bit)));
}

// read_checkpoint's DataError message; fails the test when it does not throw one.
std::string data_error(const std::string& path) {
  try {
    read_checkpoint(path);
  } catch (const DataError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected a DataError, got: ", e.what());
  }
  FAIL("expected a DataError for ", path);
  return "";
}

}  // namespace

TEST_CASE("checkpoint: sha256 test vectors") {
  auto h = [](const std::string& s) { return sha256_hex(s.data(), s.size()); };
  CHECK(h("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(h("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(h("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(h(std::string(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("checkpoint: round trip of every field, bit for bit") {
  TmpDir t;
  const std::string dir = t / "ckpts";  // created by the writer
  for (double metric : {std::numeric_limits<double>::quiet_NaN(), 0.8125, -0.0,
                        std::numeric_limits<double>::infinity(), -1e300}) {
    CAPTURE(metric);
    const CheckpointData d = sample(120, metric);
    write_checkpoint(dir, "step-000120", d);
    require_same(read_checkpoint(dir + "/step-000120"), d);
  }
  // Nothing but the checkpoint: no temporary directory left behind.
  CHECK(entries(dir) == std::vector<std::string>{"step-000120"});
  CHECK(entries(dir + "/step-000120") ==
        std::vector<std::string>{"config.toml", "manifest.json", "optimizer.safetensors",
                                 "trainer.json", "trainer_state.json", "weights.safetensors"});
  // Empty weights, state and texts are fine too.
  CheckpointData empty;
  write_checkpoint(dir, "empty", empty);
  require_same(read_checkpoint(dir + "/empty"), empty);
  CHECK(std::isnan(read_checkpoint(dir + "/empty").metric));
}

TEST_CASE("checkpoint: replacing an existing checkpoint") {
  TmpDir t;
  write_checkpoint(t.path, "latest", sample(10, 0.5));
  const CheckpointData newer = sample(20, 0.75);
  write_checkpoint(t.path, "latest", newer);
  require_same(read_checkpoint(t / "latest"), newer);
  CHECK(entries(t.path) == std::vector<std::string>{"latest"});
}

TEST_CASE("checkpoint: damaged checkpoints are refused naming the file") {
  TmpDir t;
  struct Damage {
    const char* what;
    std::function<void(const std::string&)> apply;
    const char* expect;  // in the message, after "checkpoint <path>: "
  };
  const std::vector<Damage> corpus = {
      {"truncated weights",
       [](const std::string& p) {
         fs::resize_file(p + "/weights.safetensors", fs::file_size(p + "/weights.safetensors") - 5);
       },
       "weights.safetensors: size "},
      {"bit flip in weights",
       [](const std::string& p) { flip_bit(p + "/weights.safetensors", 3, 0); },
       "weights.safetensors: sha256 "},
      {"bit flip in optimizer state",
       [](const std::string& p) { flip_bit(p + "/optimizer.safetensors", 1, 7); },
       "optimizer.safetensors: sha256 "},
      {"bit flip in trainer.json",
       [](const std::string& p) { flip_bit(p + "/trainer.json", 4, 0); }, "trainer.json: sha256 "},
      {"deleted config", [](const std::string& p) { fs::remove(p + "/config.toml"); },
       "config.toml: missing"},
      {"extra file", [](const std::string& p) { std::ofstream(p + "/notes.txt") << "hi"; },
       "notes.txt: not listed in the manifest"},
      {"broken manifest", [](const std::string& p) { fs::resize_file(p + "/manifest.json", 40); },
       "manifest.json: "},
      {"deleted manifest", [](const std::string& p) { fs::remove(p + "/manifest.json"); },
       "manifest.json: missing"},
  };
  for (const auto& dmg : corpus) {
    CAPTURE(dmg.what);
    write_checkpoint(t.path, "c", sample(5, 1.0));
    REQUIRE_NOTHROW(read_checkpoint(t / "c"));
    dmg.apply(t / "c");
    const std::string msg = data_error(t / "c");
    CHECK_MESSAGE(msg.find("checkpoint " + (t / "c") + ": " + dmg.expect) == 0, msg);
  }
  // The size message gives both sizes.
  write_checkpoint(t.path, "c", sample(5, 1.0));
  const auto size = fs::file_size(t / "c/weights.safetensors");
  fs::resize_file(t / "c/weights.safetensors", size - 5);
  CHECK(data_error(t / "c").find(concat("size ", size - 5, " != ", size, " in the manifest")) !=
        std::string::npos);
  CHECK_THROWS_AS(read_checkpoint(t / "nowhere"), NoInputError);
}

TEST_CASE("checkpoint: latest_valid_checkpoint falls back past a damaged one") {
  TmpDir t;
  write_checkpoint(t.path, "step-000010", sample(10, 0.1));
  write_checkpoint(t.path, "step-000020", sample(20, 0.2));
  std::vector<std::string> refused;
  CHECK(latest_valid_checkpoint(t.path, &refused) == t / "step-000020");
  CHECK(refused.empty());

  flip_bit(t / "step-000020/weights.safetensors", 2, 3);
  CHECK(latest_valid_checkpoint(t.path, &refused) == t / "step-000010");
  REQUIRE(refused.size() == 1);
  CHECK(refused[0].find(t / "step-000020") == 0);
  CHECK(refused[0].find("weights.safetensors: sha256") != std::string::npos);

  // A newest one whose trainer.json cannot even be parsed is reported too.
  write_checkpoint(t.path, "step-000030", sample(30, 0.3));
  std::ofstream(t / "step-000030/trainer.json", std::ios::trunc) << "{";
  refused.clear();
  CHECK(latest_valid_checkpoint(t.path, &refused) == t / "step-000010");
  REQUIRE(refused.size() == 2);
  CHECK(refused[0].find("step-000030") != std::string::npos);
  CHECK(refused[0].find("trainer.json") != std::string::npos);

  fs::remove(t / "step-000010/config.toml");
  refused.clear();
  CHECK(latest_valid_checkpoint(t.path, &refused) == "");
  CHECK(refused.size() == 3);
  CHECK(latest_valid_checkpoint(t / "nowhere", nullptr) == "");
}

TEST_CASE("checkpoint: list orders by step and ignores temporaries and non-checkpoints") {
  TmpDir t;
  write_checkpoint(t.path, "b", sample(5, 0.5));
  write_checkpoint(t.path, "a", sample(10, std::numeric_limits<double>::quiet_NaN()));
  // A crashed write that had got as far as its manifest, and a directory without one.
  write_checkpoint(t.path, "x", sample(99, 0.9));
  fs::rename(t / "x", t / ".tmp-x-999999999-0");
  fs::create_directory(t / "notes");
  const auto list = list_checkpoints(t.path);
  REQUIRE(list.size() == 2);
  CHECK(list[0].path == t / "b");
  CHECK(list[0].step == 5);
  CHECK(list[0].metric == 0.5);
  CHECK(list[1].path == t / "a");
  CHECK(list[1].step == 10);
  CHECK(std::isnan(list[1].metric));
  CHECK(latest_valid_checkpoint(t.path, nullptr) == t / "a");
  CHECK(list_checkpoints(t / "nowhere").empty());
}

TEST_CASE("checkpoint: prune keeps the newest keep_last plus the best") {
  TmpDir t;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double metrics[] = {0.5, 0.9, 0.6, 0.9, 0.7, nan};  // best: step 20 (tie with 40: older)
  for (int i = 0; i < 6; ++i)
    write_checkpoint(t.path, concat("step-0000", (i + 1) * 10), sample((i + 1) * 10, metrics[i]));
  fs::create_directory(t / ".tmp-step-000070-999999999-3");  // a crashed writer's (dead pid)
  std::ofstream(t / ".tmp-step-000070-999999999-3/weights.safetensors") << "half";
  fs::create_directory(t / ".tmp-step-000070-1-0");  // pid 1 is alive: a concurrent writer
  fs::create_directory(t / "notes");
  prune_checkpoints(t.path, 2);
  CHECK(entries(t.path) == std::vector<std::string>{".tmp-step-000070-1-0", "notes", "step-000020",
                                                    "step-000050", "step-000060"});
  REQUIRE(list_checkpoints(t.path).size() == 3);
  for (const auto& c : list_checkpoints(t.path)) CHECK_NOTHROW(read_checkpoint(c.path));
  // When the best is among the newest, exactly keep_last remain; keep_last 0 keeps the best.
  prune_checkpoints(t.path, 1);
  CHECK(list_checkpoints(t.path).size() == 2);
  prune_checkpoints(t.path, 0);
  REQUIRE(list_checkpoints(t.path).size() == 1);
  CHECK(list_checkpoints(t.path)[0].path == t / "step-000020");
  CHECK_THROWS(prune_checkpoints(t.path, -1));
  CHECK_NOTHROW(prune_checkpoints(t / "nowhere", 2));
}

TEST_CASE("checkpoint: failed writes throw and leave nothing behind") {
  TmpDir t;
  std::ofstream(t / "file") << "not a directory";
  CHECK_THROWS_AS(write_checkpoint(t / "file", "c", sample(1, 0.0)), IoError);
  CHECK_THROWS_AS(write_checkpoint(t / "file/sub", "c", sample(1, 0.0)), IoError);
  CHECK(entries(t.path) == std::vector<std::string>{"file"});
  CHECK(fs::file_size(t / "file") == 15);

  // A failure half way (an undefined tensor) keeps the existing checkpoint and no temporaries.
  const CheckpointData good = sample(2, 0.2);
  write_checkpoint(t / "d", "c", good);
  CheckpointData bad = sample(3, 0.3);
  bad.optimizer_state.emplace_back("undefined", Tensor());
  CHECK_THROWS(write_checkpoint(t / "d", "c", bad));
  bad = sample(3, 0.3);
  bad.optimizer_state.push_back(bad.optimizer_state[0]);
  CHECK_THROWS_WITH(write_checkpoint(t / "d", "c", bad),
                    doctest::Contains("optimizer state \"step\" given twice"));
  CHECK(entries(t / "d") == std::vector<std::string>{"c"});
  require_same(read_checkpoint(t / "d/c"), good);
  for (const char* name : {"", ".", "..", "a/b", ".tmp-x"})
    CHECK_THROWS(write_checkpoint(t / "d", name, good));
  CHECK(entries(t / "d") == std::vector<std::string>{"c"});
}
