// Training checkpoints (engine/io/checkpoint.h). Layout of <dir>/<name>/: weights.safetensors
// (metadata "params": [[name, trainable], ...] in ParamStore order), optimizer.safetensors
// (metadata "order": the state names in order), trainer.json (counters and metric),
// trainer_state.json and config.toml (the caller's text, byte for byte) and manifest.json (size
// and SHA-256 of each). The manifest is written last, so a directory with one is complete.
#include "engine/io/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"

namespace dynsim {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kFormat = "dynsim-checkpoint/1";
constexpr const char* kTmpPrefix = ".tmp-";
constexpr const char* kManifest = "manifest.json";
const char* const kFiles[] = {"weights.safetensors", "optimizer.safetensors", "trainer.json",
                              "trainer_state.json", "config.toml"};

// SHA-256 (FIPS 180-4), streaming.
class Sha256 {
 public:
  void update(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    total_ += n;
    while (n > 0) {
      const size_t k = std::min(n, size_t(64) - fill_);
      std::memcpy(buf_ + fill_, p, k);
      fill_ += k, p += k, n -= k;
      if (fill_ == 64) block(buf_), fill_ = 0;
    }
  }
  std::string hex() {
    const uint64_t bits = total_ * 8;
    const uint8_t pad = 0x80, zero = 0;
    update(&pad, 1);
    while (fill_ != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(bits >> (56 - 8 * i));
    update(len, 8);
    std::string s;
    char b[9];
    for (uint32_t v : h_) std::snprintf(b, sizeof b, "%08x", v), s += b;
    return s;
  }

 private:
  static uint32_t rotr(uint32_t x, int r) { return (x >> r) | (x << (32 - r)); }
  void block(const uint8_t* p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 |
             uint32_t(p[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 =
          h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    const uint32_t v[8] = {a, b, c, d, e, f, g, h};
    for (int i = 0; i < 8; ++i) h_[i] += v[i];
  }
  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t buf_[64];
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

// Size and SHA-256 of a file as read now; false when it cannot be opened or read.
bool hash_file(const std::string& path, uint64_t* bytes, std::string* hex) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  Sha256 h;
  std::vector<char> buf(size_t(1) << 20);
  *bytes = 0;
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    h.update(buf.data(), size_t(f.gcount()));
    *bytes += uint64_t(f.gcount());
  }
  if (f.bad()) return false;
  *hex = h.hex();
  return true;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) ::fsync(fd), ::close(fd);
}

json metric_to_json(double m) {
  if (std::isnan(m)) return nullptr;
  if (std::isinf(m)) return m > 0 ? "inf" : "-inf";  // JSON has no infinities
  return m;
}

double metric_from_json(const json& j) {
  if (j.is_null()) return std::numeric_limits<double>::quiet_NaN();
  if (j.is_number()) return j.get<double>();
  if (j == "inf") return std::numeric_limits<double>::infinity();
  if (j == "-inf") return -std::numeric_limits<double>::infinity();
  throw DataError(concat("metric ", j.dump(), " is not a number, null, \"inf\" or \"-inf\""));
}

// trainer.json -> (step, metric); throws on anything malformed.
CheckpointInfo parse_trainer(const std::string& path, CheckpointData* d) {
  const json j = json::parse(read_text(path));
  if (!j.is_object() || j.value("format", "") != kFormat)
    throw DataError(concat("not a ", kFormat, " trainer file"));
  for (const char* key : {"epoch", "step", "batch_in_epoch"})
    if (!j.contains(key) || !j[key].is_number_integer())
      throw DataError(concat("\"", key, "\" missing or not an integer"));
  CheckpointInfo info;
  info.step = j["step"].get<int64_t>();
  info.metric = metric_from_json(j.value("metric", json()));
  if (d) {
    d->epoch = j["epoch"].get<int64_t>(), d->step = info.step;
    d->batch_in_epoch = j["batch_in_epoch"].get<int64_t>(), d->metric = info.metric;
  }
  return info;
}

bool is_temp_name(const std::string& name) {
  return name.rfind(kTmpPrefix, 0) == 0;
}

// Temporary directories this process is writing now: prune must not take them from a writer on
// another thread, while one left by a crashed process that had our pid (containers reuse pids)
// is fair game.
std::mutex active_mutex;
std::set<std::string> active_temps;
struct ActiveTemp {  // unmarks the temporary directory that temp_name() created
  std::string path;
  ~ActiveTemp() {
    std::lock_guard<std::mutex> g(active_mutex);
    active_temps.erase(path);
  }
};

// A free name `<dir>/.tmp-<name>-<pid>-<counter>`; with mkdir, created and marked active.
std::string temp_name(const std::string& dir, const std::string& name, bool mkdir) {
  static std::atomic<unsigned> counter{0};
  std::error_code ec;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::string p = concat(dir, "/", kTmpPrefix, name, "-", ::getpid(), "-", counter++);
    if (!mkdir) {
      if (!fs::exists(fs::symlink_status(p, ec))) return p;
      continue;
    }
    std::lock_guard<std::mutex> g(active_mutex);
    if (::mkdir(p.c_str(), 0777) == 0) return *active_temps.insert(p).first;
    if (errno != EEXIST)
      throw IoError(
          concat("checkpoint ", dir, "/", name, ": cannot create ", p, ": ", std::strerror(errno)));
  }
  throw IoError(concat("checkpoint ", dir, "/", name, ": no free temporary name in ", dir));
}

// A temporary directory is a crash leftover unless the process named in it is still alive
// (a concurrent writer); names we cannot parse count as leftovers.
bool writer_alive(const std::string& tmp_path) {
  {
    std::lock_guard<std::mutex> g(active_mutex);
    if (active_temps.count(tmp_path)) return true;
  }
  const std::string tmp_name = fs::path(tmp_path).filename().string();
  const size_t b = tmp_name.rfind('-');
  const size_t a = b == std::string::npos || b == 0 ? b : tmp_name.rfind('-', b - 1);
  if (a == std::string::npos) return false;
  const std::string pid = tmp_name.substr(a + 1, b - a - 1);
  if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos)
    return false;
  const pid_t p = pid_t(std::stol(pid));
  return p != ::getpid() && (::kill(p, 0) == 0 || errno == EPERM);
}

struct Scan {
  std::vector<CheckpointInfo> good;   // manifest and a readable trainer.json; oldest first
  std::vector<std::string> unparsed;  // a manifest but no readable trainer.json
  std::vector<std::string> temps;     // .tmp-* entries
};

// The entries of a directory; IoError (prefixed with `what`) when it cannot be listed.
std::vector<fs::path> list_dir(const std::string& dir, const std::string& what) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    out.push_back(it->path());
  if (ec) throw IoError(concat(what, ": cannot list ", dir, ": ", ec.message()));
  return out;
}

Scan scan(const std::string& dir) {
  Scan s;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return s;
  for (const fs::path& e : list_dir(dir, "checkpoints " + dir)) {
    if (is_temp_name(e.filename().string())) {
      s.temps.push_back(e.string());
    } else if (fs::is_directory(e, ec) && fs::is_regular_file(e / kManifest, ec)) {
      try {
        CheckpointInfo info = parse_trainer((e / "trainer.json").string(), nullptr);
        info.path = e.string();
        s.good.push_back(info);
      } catch (const std::exception&) {
        s.unparsed.push_back(e.string());
      }
    }
  }
  std::sort(s.good.begin(), s.good.end(), [](const CheckpointInfo& a, const CheckpointInfo& b) {
    return a.step != b.step ? a.step < b.step : a.path < b.path;
  });
  return s;
}

}  // namespace

std::string sha256_hex(const void* data, size_t n) {
  Sha256 h;
  h.update(data, n);
  return h.hex();
}

void write_checkpoint(const std::string& dir, const std::string& name, const CheckpointData& d) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      is_temp_name(name))
    throw Error(concat("write_checkpoint: invalid checkpoint name \"", name, "\""));
  const std::string target = concat(dir, "/", name);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw IoError(concat("checkpoint ", target, ": cannot create the directory ", dir, ": ",
                         ec ? ec.message() : "not a directory"));
  const auto existing = fs::symlink_status(target, ec);
  if (fs::exists(existing) && !fs::is_directory(existing))
    throw IoError(concat("checkpoint ", target, ": exists and is not a directory"));
  const std::string tmp = temp_name(dir, name, true);
  const ActiveTemp active{tmp};
  try {
    std::map<std::string, Tensor> weights;
    json params = json::array();
    for (const auto& e : d.weights.entries()) {
      weights[e.name] = e.value;
      params.push_back({e.name, e.trainable});
    }
    save_safetensors(tmp + "/weights.safetensors", weights,
                     {{"format", kFormat}, {"params", params.dump()}});
    std::map<std::string, Tensor> state;
    json order = json::array();
    for (const auto& [key, t] : d.optimizer_state) {
      if (!state.emplace(key, t).second)
        throw Error(concat("checkpoint ", target, ": optimizer state \"", key, "\" given twice"));
      order.push_back(key);
    }
    save_safetensors(tmp + "/optimizer.safetensors", state,
                     {{"format", kFormat}, {"order", order.dump()}});
    const json trainer = {{"format", kFormat},
                          {"epoch", d.epoch},
                          {"step", d.step},
                          {"batch_in_epoch", d.batch_in_epoch},
                          {"metric", metric_to_json(d.metric)}};
    write_file_atomic(tmp + "/trainer.json", trainer.dump(2) + "\n");
    write_file_atomic(tmp + "/trainer_state.json", d.trainer_json);
    write_file_atomic(tmp + "/config.toml", d.config_toml);
    // The manifest describes the bytes as they are on disk, read back after writing.
    json files = json::array();
    for (const char* f : kFiles) {
      uint64_t bytes = 0;
      std::string hex;
      if (!hash_file(tmp + "/" + f, &bytes, &hex))
        throw IoError(concat("checkpoint ", target, ": cannot read back ", tmp, "/", f));
      files.push_back({{"name", f}, {"bytes", bytes}, {"sha256", hex}});
    }
    write_file_atomic(tmp + "/" + kManifest,
                      json({{"format", kFormat}, {"files", files}}).dump(2) + "\n");
    fsync_dir(tmp);
    // Into place. An existing checkpoint is swapped atomically with the new one (so <name> is
    // always complete); where the filesystem cannot swap, the old one is first renamed to a name
    // that list_checkpoints still sees, so a crash between the renames loses nothing.
    if (!fs::exists(existing)) {
      if (::rename(tmp.c_str(), target.c_str()) != 0)
        throw IoError(concat("checkpoint ", target, ": rename from ", tmp,
                             " failed: ", std::strerror(errno)));
      fsync_dir(dir);
      return;
    }
    std::string old = tmp;
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        throw IoError(concat("checkpoint ", target, ": exchange with ", tmp,
                             " failed: ", std::strerror(errno)));
      old = concat(target, ".replaced-", ::getpid());
      fs::remove_all(old, ec);
      if (::rename(target.c_str(), old.c_str()) != 0)
        throw IoError(
            concat("checkpoint ", target, ": rename to ", old, " failed: ", std::strerror(errno)));
      if (::rename(tmp.c_str(), target.c_str()) != 0) {
        const int err = errno;
        ::rename(old.c_str(), target.c_str());  // put the old one back
        throw IoError(
            concat("checkpoint ", target, ": rename from ", tmp, " failed: ", std::strerror(err)));
      }
    }
    fsync_dir(dir);
    fs::remove_all(old, ec);  // a leftover is removed by prune_checkpoints
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

CheckpointData read_checkpoint(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (!fs::exists(st)) throw NoInputError(concat("checkpoint ", path, ": no such directory"));
  auto fail = [&](const std::string& file, const std::string& why) {
    return DataError(concat("checkpoint ", path, ": ", file, ": ", why));
  };
  if (!fs::is_directory(st)) throw fail(".", "not a directory");
  const std::string mpath = path + "/" + kManifest;
  if (!fs::is_regular_file(mpath, ec))
    throw fail(kManifest, "missing (an incomplete checkpoint, or not a checkpoint)");
  // Manifest: every listed file present with its size and checksum, nothing else beside it.
  std::map<std::string, std::pair<uint64_t, std::string>> listed;
  try {
    const json m = json::parse(read_text(mpath));
    if (!m.is_object() || m.value("format", "") != kFormat || !m.contains("files") ||
        !m["files"].is_array())
      throw DataError(concat("not a ", kFormat, " manifest"));
    for (const json& f : m["files"]) {
      const std::string name = f.at("name").get<std::string>();
      const std::string hex = f.at("sha256").get<std::string>();
      if (name.empty() || name == "." || name == ".." || name == kManifest ||
          name.find('/') != std::string::npos || hex.size() != 64 ||
          !listed.emplace(name, std::make_pair(f.at("bytes").get<uint64_t>(), hex)).second)
        throw DataError(concat("bad or repeated entry ", f.dump()));
    }
  } catch (const std::exception& e) {
    throw fail(kManifest, e.what());
  }
  for (const char* f : kFiles)
    if (!listed.count(f)) throw fail(f, "not listed in the manifest");
  for (const fs::path& e : list_dir(path, "checkpoint " + path)) {
    const std::string name = e.filename().string();
    if (name != kManifest && !listed.count(name)) throw fail(name, "not listed in the manifest");
  }
  for (const auto& [name, want] : listed) {
    const std::string p = path + "/" + name;
    if (!fs::is_regular_file(p, ec)) throw fail(name, "missing (listed in the manifest)");
    uint64_t bytes = 0;
    std::string hex;
    if (!hash_file(p, &bytes, &hex)) throw fail(name, "cannot be read");
    if (bytes != want.first)
      throw fail(name, concat("size ", bytes, " != ", want.first, " in the manifest"));
    if (hex != want.second)
      throw fail(name, concat("sha256 ", hex, " != ", want.second, " in the manifest"));
  }
  // Contents. The checksums passed, so errors below mean the writer itself was wrong.
  CheckpointData d;
  try {
    parse_trainer(path + "/trainer.json", &d);
  } catch (const std::exception& e) {
    throw fail("trainer.json", e.what());
  }
  d.trainer_json = read_text(path + "/trainer_state.json");
  d.config_toml = read_text(path + "/config.toml");
  TensorFile w = load_safetensors(path + "/weights.safetensors");
  try {
    const json params = json::parse(w.metadata.at("params"));
    for (const json& p : params) {
      const std::string name = p.at(0).get<std::string>();
      if (!w.tensors.count(name) || d.weights.has(name))
        throw DataError(concat("parameter \"", name, "\" missing or repeated"));
      d.weights.add(name, w.tensors.at(name), p.at(1).get<bool>());
    }
    if (params.size() != w.tensors.size())
      throw DataError("tensors not listed in the \"params\" metadata");
  } catch (const std::exception& e) {
    throw fail("weights.safetensors", e.what());
  }
  TensorFile o = load_safetensors(path + "/optimizer.safetensors");
  try {
    const json order = json::parse(o.metadata.at("order"));
    std::set<std::string> seen;
    for (const json& k : order) {
      const std::string key = k.get<std::string>();
      if (!o.tensors.count(key) || !seen.insert(key).second)
        throw DataError(concat("state \"", key, "\" missing or repeated"));
      d.optimizer_state.emplace_back(key, o.tensors.at(key));
    }
    if (order.size() != o.tensors.size())
      throw DataError("tensors not listed in the \"order\" metadata");
  } catch (const std::exception& e) {
    throw fail("optimizer.safetensors", e.what());
  }
  return d;
}

std::vector<CheckpointInfo> list_checkpoints(const std::string& dir) {
  return scan(dir).good;
}

std::string latest_valid_checkpoint(const std::string& dir, std::vector<std::string>* refused) {
  const Scan s = scan(dir);
  auto refuse = [&](const std::string& p, const std::string& why) {
    if (refused) refused->push_back(concat(p, ": ", why));
  };
  for (const auto& p : s.unparsed) {
    try {
      read_checkpoint(p);
      refuse(p, "trainer.json unreadable");
    } catch (const std::exception& e) {
      refuse(p, e.what());
    }
  }
  for (auto it = s.good.rbegin(); it != s.good.rend(); ++it) {
    try {
      read_checkpoint(it->path);
      return it->path;
    } catch (const std::exception& e) {
      refuse(it->path, e.what());
    }
  }
  return "";
}

void prune_checkpoints(const std::string& dir, int keep_last) {
  if (keep_last < 0) throw Error(concat("prune_checkpoints: keep_last ", keep_last, " < 0"));
  const Scan s = scan(dir);
  std::set<std::string> keep;
  for (size_t i = s.good.size() > size_t(keep_last) ? s.good.size() - keep_last : 0;
       i < s.good.size(); ++i)
    keep.insert(s.good[i].path);
  const CheckpointInfo* best = nullptr;  // strict > keeps the older one on ties
  for (const auto& c : s.good)
    if (!std::isnan(c.metric) && (!best || c.metric > best->metric)) best = &c;
  if (best) keep.insert(best->path);
  std::error_code ec;
  for (const auto& t : s.temps) {
    if (writer_alive(t)) continue;
    if (fs::remove_all(t, ec), ec)
      throw IoError(concat("checkpoints ", dir, ": cannot remove ", t, ": ", ec.message()));
  }
  // Each one is renamed to a temporary name first, so a crash mid-delete leaves a leftover that
  // the next prune removes rather than a half-deleted checkpoint that looks complete.
  for (const auto& c : s.good) {
    if (keep.count(c.path)) continue;
    const std::string doomed = temp_name(dir, fs::path(c.path).filename().string(), false);
    if (::rename(c.path.c_str(), doomed.c_str()) != 0 || (fs::remove_all(doomed, ec), ec))
      throw IoError(concat("checkpoints ", dir, ": cannot remove ", c.path, ": ",
                           ec ? ec.message() : std::strerror(errno)));
  }
  fsync_dir(dir);
}

}  // namespace dynsim
