// Running a scan's shard, its status, and collecting its results (engine/scan/README.md,
// "Running"). The runner knows nothing about models: each kind's Executor (the models layer
// supplies simulate and train, models/scan/scan_kinds.h) runs a group of runs and writes each
// one's outputs into its folder; the runner owns the folders (engine/scan/store.h), the leases,
// the order, packing into groups, the stop and time limits, and the progress lines.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dynsim::scan {

// One run as the runner hands it to an executor.
struct Job {
  int64_t index = 0;
  std::string run_id, kind;
  nlohmann::json config, axes;  // the manifest's canonical config and the run's coordinates
  std::string dir;              // runs/<id>.tmp/: write the outputs here
};

// What an executor returns per job: the result row (metrics; what results.csv shows), and
// whether it was stopped (a train run that checkpointed on a stop signal: the folder is kept
// and the next `scan run` resumes it).
struct JobResult {
  nlohmann::json row = nlohmann::json::object();
  bool stopped = false;
};

struct Executor {
  // Runs whose configs give the same non-empty key may run together in one group ("" = alone).
  std::function<std::string(const nlohmann::json& config)> pack_key;
  // The most runs like this one that fit one group in the memory free now (--pack auto).
  std::function<int64_t(const nlohmann::json& config)> auto_pack;
  // Runs a group (same pack key); one result per job, in order. Throws dynsim::Error for a
  // failed run (a group that throws is retried one run at a time, so the failure is its own).
  std::function<std::vector<JobResult>(const std::vector<Job>& jobs,
                                       const std::atomic<int>* stop)>
      run;
  bool resumable = false;  // keep runs/<id>.tmp/ of a stopped or killed run (train checkpoints)
};
using Executors = std::map<std::string, Executor>;

struct ShardOptions {
  int64_t shard = 0, shards = 1;  // index mod shards == shard
  int64_t index = -1;             // >= 0: this run alone
  int64_t pack = 0;               // runs per group: 0 = auto (the executor's auto_pack), M
  double max_hours = 0;           // > 0: start no group that would end after this
  double group_seconds = 60;      // pack auto: groups of about this much work (after a probe of 4
                                  // runs), so a stop signal is answered in time; 0: no limit
  double stale_after_s = 120;     // a lease without a heartbeat for this long is reclaimed
  double heartbeat_s = 10;
  bool retry_failed = false;      // run failed runs again (default: skipped, status lists them)
  const std::atomic<int>* stop = nullptr;  // set to a signal number: finish or checkpoint, stop
  std::ostream* progress = nullptr;        // nullptr: quiet
  bool tty = false;                        // progress as a bar (else a line per 30 s at most)
  double progress_every_s = 30;
};

struct ShardReport {
  int64_t total = 0;    // runs in the shard
  int64_t skipped = 0;  // already done
  int64_t done = 0;     // done by this call
  int64_t failed = 0;   // failed in this call, or skipped as failed earlier
  int64_t busy = 0;     // held by another live process
  int64_t groups = 0;   // groups run (a packed group counts once)
  bool stopped = false;
  std::string stop_reason;  // "signal 15", "--max-hours 1.5"
  int first_failure_code = 0;
};

// Runs shard `shard` of `shards` (or one run) of the scan in dir: skips runs with a valid DONE,
// redoes torn ones, reclaims stale leases, appends each finished run's row to
// results/shard-<i>.jsonl. UsageError for an --index outside the manifest, ConfigError for a
// kind without an executor.
ShardReport run_shard(const std::string& dir, const Executors& executors,
                      const ShardOptions& opts);

// Per state, the runs of the scan: {"total", "pending", "running", "done", "failed", "torn",
// "failures": [{index, run_id, reason}], "running_runs": [{index, run_id, host, pid, age_s}]}.
nlohmann::json status(const std::string& dir, double stale_after_s = 120);

struct CollectOptions {
  bool partial = false;  // write what is done when runs are missing (else DataError, nothing written)
  bool verify = true;    // check every output's checksum against its DONE
};
// Merges results/*.jsonl with the DONE files (the truth: a row without a valid DONE is dropped,
// a DONE without a row is taken as is), one row per run in index order, and writes
// results.jsonl, results.csv (index, run_id, the axis columns, the result's fields flattened
// with '.') and results.config.json (the grid's axes and the counts). Returns the counts
// {"runs", "collected", "missing", "duplicates", "dropped"}.
nlohmann::json collect(const std::string& dir, const CollectOptions& opts);
// The DONE documents of the done runs, in index order (for stacking their outputs).
std::vector<nlohmann::json> done_runs(const std::string& dir);

struct SubmitOptions {
  std::string dynsim = "dynsim";  // the command the job runs
  int64_t runs_per_task = 1;      // array tasks = ceil(runs / runs_per_task)
  int64_t throttle = 0;           // %K (0: none)
  int64_t max_array_size = 1001;  // Slurm's MaxArraySize (indices 0..N-1): longer arrays split
  int64_t gpus_per_task = 0;
  int64_t cpus_per_task = 0;
  std::string time;               // --time (also sets --max-hours a little below it)
  std::string partition, account, extra_run_args;
};
// The sbatch script(s) for the scan: one per job of at most max_array_size tasks, each
// `--array=0-(n-1)%K` with `--signal=B:USR1@120`, running `dynsim scan run DIR --shard
// (offset + SLURM_ARRAY_TASK_ID)/tasks`.
std::vector<std::string> sbatch_scripts(const std::string& dir, const SubmitOptions& opts);

}  // namespace dynsim::scan
