// Run folders, leases, DONE files and result logs (engine/scan/store.h).
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "engine/scan/scan.h"
#include "engine/scan/store.h"

namespace dynsim::scan {
namespace fs = std::filesystem;

namespace {

constexpr const char* kLease = "RUNNING";
constexpr const char* kDone = "DONE";
constexpr const char* kFailed = "FAILED";

std::string hostname() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

// Field 22 of /proc/<pid>/stat (start time in clock ticks): tells a reused pid apart.
std::string process_start(long pid) {
  std::ifstream f(concat("/proc/", pid, "/stat"));
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');
  if (close == std::string::npos) return "";
  std::istringstream rest(s.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
  }
  return field;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  if (!f) return nullptr;
  try {
    return nlohmann::json::parse(f);
  } catch (const std::exception&) {
    return nullptr;
  }
}

double age_seconds(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 1e30;
  const double m = double(st.st_mtim.tv_sec) + 1e-9 * double(st.st_mtim.tv_nsec);
  const double now = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  return now - m;
}

// A lease is live while its heartbeat is fresh and, on this host, its process still runs.
bool lease_live(const fs::path& lease, double stale_after_s) {
  const nlohmann::json j = read_json(lease);
  if (j.is_object() && j.value("host", "") == hostname()) {
    const long pid = j.value("pid", 0L);
    if (pid <= 0 || (::kill(pid_t(pid), 0) != 0 && errno == ESRCH)) return false;
    if (process_start(pid) != j.value("start", "")) return false;
  }
  return age_seconds(lease) < stale_after_s;
}

}  // namespace

const char* state_name(RunState s) {
  switch (s) {
    case RunState::Pending: return "pending";
    case RunState::Running: return "running";
    case RunState::Done: return "done";
    case RunState::Failed: return "failed";
    case RunState::Torn: return "torn";
  }
  return "?";
}

std::string file_checksum(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw IoError(concat(p.string(), ": cannot read"));
  XXH3_state_t* st = XXH3_createState();
  XXH3_128bits_reset(st);
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    XXH3_128bits_update(st, buf.data(), size_t(f.gcount()));
  }
  const XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  char out[33];
  std::snprintf(out, sizeof out, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return out;
}

RunStore::RunStore(const std::string& scan_dir) : runs_(fs::path(scan_dir) / "runs") {
  std::error_code ec;
  fs::create_directories(runs_, ec);
  if (ec) throw IoError(concat(runs_.string(), ": ", ec.message()));
}

fs::path RunStore::done_dir(const std::string& id) const { return runs_ / id; }
fs::path RunStore::tmp_dir(const std::string& id) const { return runs_ / (id + ".tmp"); }
fs::path RunStore::failed_dir(const std::string& id) const { return runs_ / (id + ".failed"); }

nlohmann::json RunStore::done_row(const std::string& id) const {
  return read_json(done_dir(id) / kDone);
}

nlohmann::json RunStore::failure(const std::string& id) const {
  return read_json(failed_dir(id) / kFailed);
}

nlohmann::json RunStore::lease(const std::string& id) const {
  const fs::path p = tmp_dir(id) / kLease;
  const nlohmann::json j = read_json(p);
  nlohmann::json out = {{"host", nullptr}, {"pid", nullptr}, {"owner", nullptr}};
  if (j.is_object())
    for (const char* k : {"host", "pid", "owner"})
      if (j.contains(k)) out[k] = j[k];
  out["age_s"] = age_seconds(p);
  return out;
}

RunState RunStore::state(const std::string& id, bool verify, double stale_after_s) const {
  std::error_code ec;
  if (fs::is_directory(done_dir(id), ec)) {
    const nlohmann::json d = done_row(id);
    if (!d.is_object() || d.value("run_id", "") != id) return RunState::Torn;
    for (const auto& o : d.value("outputs", nlohmann::json::array())) {
      const fs::path f = done_dir(id) / o.at("file").get<std::string>();
      if (!fs::is_regular_file(f, ec) || fs::file_size(f, ec) != o.at("bytes").get<uint64_t>())
        return RunState::Torn;
      if (verify && file_checksum(f) != o.at("xxh3").get<std::string>()) return RunState::Torn;
    }
    return RunState::Done;
  }
  if (fs::exists(failed_dir(id) / kFailed, ec)) return RunState::Failed;
  if (fs::is_directory(tmp_dir(id), ec)) {
    if (fs::exists(tmp_dir(id) / kDone, ec)) return RunState::Torn;  // finished, not renamed
    return lease_live(tmp_dir(id) / kLease, stale_after_s) ? RunState::Running : RunState::Torn;
  }
  return RunState::Pending;
}

bool RunStore::acquire(const std::string& id, const std::string& owner, double stale_after_s) {
  const fs::path tmp = tmp_dir(id), lease = tmp / kLease;
  std::error_code ec;
  fs::create_directories(tmp, ec);
  if (ec) throw IoError(concat(tmp.string(), ": ", ec.message()));
  const nlohmann::json mine = {{"host", hostname()},
                               {"pid", long(::getpid())},
                               {"start", process_start(long(::getpid()))},
                               {"owner", owner}};
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int fd = ::open(lease.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      const std::string text = mine.dump() + "\n";
      const bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
      ::fsync(fd);
      ::close(fd);
      if (!ok) throw IoError(concat(lease.string(), ": write failed"));
      std::lock_guard<std::mutex> g(mu_);
      held_.push_back(id);
      return true;
    }
    if (errno != EEXIST) throw IoError(concat(lease.string(), ": ", std::strerror(errno)));
    if (lease_live(lease, stale_after_s)) return false;
    // Reclaim: move the stale lease aside (only one reclaimer's rename succeeds), then retry.
    const fs::path aside = tmp / concat(kLease, ".stale.", ::getpid(), ".", attempt);
    if (::rename(lease.c_str(), aside.c_str()) == 0) fs::remove(aside, ec);
  }
  return false;
}

void RunStore::release(const std::string& id) {
  std::error_code ec;
  fs::remove(tmp_dir(id) / kLease, ec);
  std::lock_guard<std::mutex> g(mu_);
  held_.erase(std::remove(held_.begin(), held_.end(), id), held_.end());
}

nlohmann::json RunStore::finish(const std::string& id, nlohmann::json row) {
  const fs::path tmp = tmp_dir(id);
  nlohmann::json outputs = nlohmann::json::array();
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(tmp))
    if (e.is_regular_file()) {
      const std::string name = e.path().filename().string();
      if (name == kLease || name == kDone || name.rfind(concat(kLease, "."), 0) == 0) continue;
      files.push_back(e.path());
    }
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files)
    outputs.push_back({{"file", fs::relative(f, tmp).string()},
                       {"bytes", fs::file_size(f)},
                       {"xxh3", file_checksum(f)}});
  row["run_id"] = id;
  row["outputs"] = outputs;
  write_file_atomic((tmp / kDone).string(), row.dump(2) + "\n");
  release(id);
  std::error_code ec;
  fs::remove_all(done_dir(id), ec);  // a torn earlier copy
  fs::rename(tmp, done_dir(id));
  return row;
}

void RunStore::fail(const std::string& id, const nlohmann::json& reason) {
  const fs::path tmp = tmp_dir(id);
  write_file_atomic((tmp / kFailed).string(), reason.dump(2) + "\n");
  release(id);
  std::error_code ec;
  fs::remove_all(failed_dir(id), ec);
  fs::rename(tmp, failed_dir(id));
}

void RunStore::heartbeat() {
  std::lock_guard<std::mutex> g(mu_);
  for (const std::string& id : held_) {
    const fs::path lease = tmp_dir(id) / kLease;
    ::utimensat(AT_FDCWD, lease.c_str(), nullptr, 0);
  }
}

ResultsLog::ResultsLog(const std::string& scan_dir, const std::string& name) {
  const fs::path dir = fs::path(scan_dir) / "results";
  std::error_code ec;
  fs::create_directories(dir, ec);
  path_ = (dir / (name + ".jsonl")).string();
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd_ < 0) throw IoError(concat(path_, ": ", std::strerror(errno)));
  // Cut a torn last row (no newline at the end).
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  if (size > 0) {
    std::string text(size_t(size), '\0');
    if (::pread(fd_, text.data(), text.size(), 0) == ssize_t(size) && text.back() != '\n') {
      const size_t keep = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
      if (::ftruncate(fd_, off_t(keep)) != 0)
        throw IoError(concat(path_, ": cannot cut its torn last line: ", std::strerror(errno)));
    }
  }
}

ResultsLog::~ResultsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void ResultsLog::append(const nlohmann::json& row) {
  const std::string text = row.dump() + "\n";
  if (::write(fd_, text.data(), text.size()) != ssize_t(text.size()) || ::fsync(fd_) != 0)
    throw IoError(concat(path_, ": append failed: ", std::strerror(errno)));
}

}  // namespace dynsim::scan
