// The run folders of a scan (engine/scan/README.md, "Running"): DIR/runs/<id>.tmp/ while a run
// is in progress (holding the RUNNING lease), DIR/runs/<id>/ once done (DONE written last, then
// the folder renamed), DIR/runs/<id>.failed/ with FAILED; DIR/results/shard-<i>.jsonl, one
// writer per file, one JSON row per finished run.
#pragma once
#include <cstdint>
#include <mutex>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dynsim::scan {

enum class RunState { Pending, Running, Done, Failed, Torn };
const char* state_name(RunState s);

// XXH3-128 of a file's bytes (32 hex digits); IoError when it cannot be read.
std::string file_checksum(const std::filesystem::path& p);

class RunStore {
 public:
  explicit RunStore(const std::string& scan_dir);
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;
  std::filesystem::path done_dir(const std::string& id) const;
  std::filesystem::path tmp_dir(const std::string& id) const;
  std::filesystem::path failed_dir(const std::string& id) const;

  // Done: runs/<id>/DONE parses, names this id, and every output it lists exists with its size
  // (and, with verify, its checksum). Running: a live lease. Torn: a folder without a valid
  // DONE, or a stale lease. Failed: runs/<id>.failed/FAILED.
  RunState state(const std::string& id, bool verify, double stale_after_s) const;
  // The DONE row of a done run (empty when none).
  nlohmann::json done_row(const std::string& id) const;
  nlohmann::json failure(const std::string& id) const;
  // The lease of a running run: {host, pid, owner, age_s} (age of its heartbeat; null fields
  // when unreadable).
  nlohmann::json lease(const std::string& id) const;

  // Takes the RUNNING lease of runs/<id>.tmp (created when missing; kept contents stay, e.g. a
  // train run's checkpoints). False when another live process holds it. A stale lease (its
  // heartbeat older than stale_after_s, or its process gone from this host) is reclaimed.
  bool acquire(const std::string& id, const std::string& owner, double stale_after_s);
  // Writes DONE (row + checksums of every file under the tmp folder except the lease) into the
  // tmp folder, drops the lease and renames the folder to runs/<id>. Returns the DONE row.
  nlohmann::json finish(const std::string& id, nlohmann::json row);
  // Records a failure (FAILED with the reason) and moves the tmp folder to runs/<id>.failed.
  void fail(const std::string& id, const nlohmann::json& reason);
  // Drops the lease and leaves the tmp folder (a stopped train run resumes from it).
  void release(const std::string& id);
  // Touches every held lease (the heartbeat thread calls it).
  void heartbeat();

 private:
  std::filesystem::path runs_;
  std::vector<std::string> held_;  // ids whose lease this process holds
  mutable std::mutex mu_;
};

// results/<name>.jsonl: a torn last line (a writer killed mid-row) is cut off when the log is
// opened; rows are appended whole (one write, then fsync).
class ResultsLog {
 public:
  ResultsLog(const std::string& scan_dir, const std::string& name);
  ~ResultsLog();
  void append(const nlohmann::json& row);

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace dynsim::scan
