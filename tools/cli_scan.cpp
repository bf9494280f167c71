// `dynsim scan` (tools/cli_scan.h): thin mains over engine/scan (grids, manifests, the runner,
// status, collect, sbatch scripts) and models/scan (what each kind validates and runs).
#include "tools/cli_scan.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "engine/scan/runner.h"
#include "engine/scan/scan.h"
#include "models/scan/scan_kinds.h"

namespace dynsim::cli {
namespace fs = std::filesystem;

struct ScanArgs {
  CLI::App *scan = nullptr, *expand = nullptr, *shard = nullptr, *run = nullptr,
           *status = nullptr, *collect = nullptr, *submit = nullptr;
  std::string grid, dir, shard_spec, pack = "auto";
  int64_t index = -1;
  int threads = 0;
  double max_hours = 0, stale_after = 120;
  bool quiet = false, retry_failed = false, json = false, partial = false, no_verify = false;
  bool print_sbatch = false;
  std::string responses;
  scan::SubmitOptions submit_opts;
};

namespace {

std::atomic<int> g_stop{0};
extern "C" void on_scan_stop(int sig) { g_stop.store(sig); }

std::string self_exe() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("dynsim") : p.string();
}

int do_run(const ScanArgs& a) {
  scan::ShardOptions o;
  if (a.index >= 0 && !a.shard_spec.empty())
    throw UsageError("scan run: give --shard or --index, not both");
  if (a.index < 0) {
    std::pair<int64_t, int64_t> s =
        a.shard_spec.empty() ? scan::slurm_shard() : scan::parse_shard(a.shard_spec);
    if (s.second == 0) s = {0, 1};
    o.shard = s.first, o.shards = s.second;
  }
  o.index = a.index;
  if (a.pack == "auto") {
    o.pack = 0;
  } else {
    try {
      size_t used = 0;
      o.pack = std::stoll(a.pack, &used);
      if (used != a.pack.size() || o.pack < 1) throw std::invalid_argument(a.pack);
    } catch (const std::exception&) {
      throw UsageError(concat("--pack '", a.pack, "': expected auto or a number of runs >= 1"));
    }
  }
  if (a.max_hours < 0) throw UsageError("--max-hours must be >= 0");
  o.max_hours = a.max_hours;
  o.stale_after_s = a.stale_after;
  o.heartbeat_s = std::max(0.05, std::min(10.0, a.stale_after / 4));
  o.retry_failed = a.retry_failed;
  o.stop = &g_stop;
  o.progress = a.quiet ? nullptr : &std::cerr;
  o.tty = ::isatty(STDERR_FILENO) != 0;
  struct sigaction sa {};
  sa.sa_handler = on_scan_stop;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) sigaction(sig, &sa, nullptr);
  const scan::ShardReport r = scan::run_shard(a.dir, models::scan_executors(), o);
  if (!a.quiet) {
    std::cerr << "dynsim scan run: " << (a.index >= 0 ? concat("run ", a.index)
                                                       : concat("shard ", o.shard, "/", o.shards))
              << ": " << r.total << " run(s): " << r.done << " done now, " << r.skipped
              << " done before, " << r.failed << " failed, " << r.busy
              << " held by another process, " << r.groups << " group(s)";
    if (r.stopped) std::cerr << "; stopped (" << r.stop_reason << ")";
    std::cerr << "\n";
  }
  if (r.stopped) return int(ExitCode::Preempted);
  if (r.failed) {
    if (!a.quiet) std::cerr << "dynsim scan run: see `dynsim scan status " << a.dir << "`\n";
    return r.first_failure_code ? r.first_failure_code : int(ExitCode::DataErr);
  }
  return 0;
}

int do_status(const ScanArgs& a) {
  const nlohmann::json s = scan::status(a.dir, a.stale_after);
  if (a.json) {
    std::cout << s.dump(2) << "\n";
    return 0;
  }
  std::cout << a.dir << ": " << s["total"] << " run(s): " << s["done"] << " done, "
            << s["running"] << " running, " << s["pending"] << " pending, " << s["torn"]
            << " torn (redone by the next scan run), " << s["failed"] << " failed\n";
  for (const auto& r : s["running_runs"])
    std::cout << "  running: run " << r["index"] << " " << r["run_id"].get<std::string>() << " on "
              << r["host"].dump() << " pid " << r["pid"].dump() << ", heartbeat "
              << r["age_s"].get<double>() << " s ago\n";
  for (const auto& f : s["failures"])
    std::cout << "  failed: run " << f["index"] << " " << f["run_id"].get<std::string>() << ": "
              << f["reason"].get<std::string>() << "\n";
  return 0;
}

int do_collect(const ScanArgs& a) {
  scan::CollectOptions o;
  o.partial = a.partial;
  o.verify = !a.no_verify;
  const nlohmann::json c = scan::collect(a.dir, o);
  if (!a.quiet)
    std::cout << "dynsim scan collect: " << c["collected"] << " of " << c["runs"] << " run(s)"
              << (c["missing"].get<int64_t>() ? concat(", ", c["missing"].get<int64_t>(), " missing") : "")
              << "; shard logs: " << c["duplicates"] << " duplicate row(s), " << c["dropped"]
              << " row(s) without a valid DONE dropped, " << c["unlogged"]
              << " run(s) taken from DONE alone\n  wrote " << a.dir
              << "/results.csv, results.jsonl, results.config.json\n";
  if (!a.responses.empty()) {
    const nlohmann::json s = models::stack_responses(a.dir, a.responses);
    if (!a.quiet) {
      std::cout << "  wrote " << a.responses << " (" << s["variables"] << " variable(s) of "
                << s["runs"] << " run(s), stacked along 'run')\n";
      for (const auto& n : s["skipped"])
        std::cout << "  left out " << n.get<std::string>() << " (not in every run)\n";
    }
  }
  return 0;
}

int do_submit(const ScanArgs& a) {
  scan::SubmitOptions o = a.submit_opts;
  if (o.dynsim.empty()) o.dynsim = self_exe();
  const std::vector<std::string> scripts = scan::sbatch_scripts(a.dir, o);
  if (a.print_sbatch) {
    for (size_t i = 0; i < scripts.size(); ++i) std::cout << (i ? "\n" : "") << scripts[i];
    return 0;
  }
  fs::create_directories(fs::path(a.dir) / "logs");
  for (size_t i = 0; i < scripts.size(); ++i) {
    const std::string path = (fs::path(a.dir) / concat("submit-", i, ".sbatch")).string();
    write_file_atomic(path, scripts[i]);
    std::string quoted = "'";  // the path in single quotes, each ' as '\''
    for (char c : path) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    const std::string cmd = concat("sbatch --parsable ", quoted, "'");
    if (!a.quiet) std::cout << "$ " << cmd << "\n" << std::flush;
    const int rc = std::system(cmd.c_str());
    if (rc != 0)
      throw IoError(concat("sbatch failed (status ", rc, ") for ", path,
                           scripts.size() > 1 ? concat("; ", i, " of ", scripts.size(),
                                                       " job(s) were submitted")
                                              : std::string()));
  }
  return 0;
}

}  // namespace

ScanArgs* add_scan(CLI::App& app) {
  static ScanArgs a;
  a.scan = app.add_subcommand("scan", "parameter scans: expand a grid into runs, run shards "
                                      "(Slurm arrays), status, collect, submit");
  a.scan->require_subcommand(1);
  a.expand = a.scan->add_subcommand(
      "expand", "validate every run of a grid file and write DIR/manifest.jsonl, runs.txt, "
                "scan.json (exit 78 naming the run, the key and the grid's line:col)");
  a.expand->add_option("grid", a.grid, "grid file (TOML: [scan], [scan.set], [[axis]])")
      ->required()
      ->check(CLI::ExistingFile);
  a.expand->add_option("-o,--output", a.dir, "scan folder")->required();
  a.expand->add_flag("--quiet,-q", a.quiet, "no summary");
  a.expand->add_option("--threads", a.threads,
                       "validate the runs on N threads (0: every core; the files do not change)")
      ->check(CLI::NonNegativeNumber);

  a.shard = a.scan->add_subcommand(
      "shard", "print the runs (index run_id) of one shard: index mod n == i; i/n default to "
               "the Slurm array task");
  a.shard->add_option("dir", a.dir, "scan folder (from scan expand)")->required();
  a.shard->add_option("--shard", a.shard_spec, "i/n");

  a.run = a.scan->add_subcommand(
      "run", "run the runs of one shard that are not done yet (SIGTERM/SIGUSR1: finish or "
             "checkpoint the current run, exit 75)");
  a.run->add_option("dir", a.dir, "scan folder (from scan expand)")->required();
  a.run->add_option("--shard", a.shard_spec,
                    "i/n (default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN / "
                    "SLURM_ARRAY_TASK_COUNT, else 0/1)");
  a.run->add_option("--index", a.index, "run this run alone")->check(CLI::NonNegativeNumber);
  a.run->add_option("--pack", a.pack, "runs per batch: auto (fit the free memory) or M")->capture_default_str();
  a.run->add_option("--max-hours", a.max_hours, "start no run that would end after H hours");
  a.run->add_option("--stale-after", a.stale_after,
                    "seconds without a heartbeat after which another process's lease is "
                    "reclaimed")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  a.run->add_flag("--retry-failed", a.retry_failed, "run failed runs again");
  a.run->add_flag("--quiet,-q", a.quiet, "no progress");

  a.status = a.scan->add_subcommand("status", "pending / running / done / failed runs, with "
                                              "each failure's reason");
  a.status->add_option("dir", a.dir, "scan folder")->required();
  a.status->add_flag("--json", a.json, "as JSON");
  a.status->add_option("--stale-after", a.stale_after, "seconds (as for scan run)")->capture_default_str();

  a.collect = a.scan->add_subcommand(
      "collect", "merge the shards' results: results.csv, results.jsonl, results.config.json "
                 "(one row per run; DONE files are the truth)");
  a.collect->add_option("dir", a.dir, "scan folder")->required();
  a.collect->add_flag("--partial", a.partial, "write what is done when runs are missing");
  a.collect->add_flag("--no-verify", a.no_verify, "skip the outputs' checksums");
  a.collect->add_option("--responses", a.responses,
                        "also stack every simulate run's arrays along a run dimension into this "
                        "HDF5 file (named dimensions: xarray's h5netcdf engine reads it)");
  a.collect->add_flag("--quiet,-q", a.quiet, "no summary");

  a.submit = a.scan->add_subcommand(
      "submit", "sbatch the scan as Slurm job arrays (--print-sbatch: print the scripts)");
  a.submit->add_option("dir", a.dir, "scan folder")->required();
  a.submit->add_flag("--print-sbatch", a.print_sbatch, "print the script(s), submit nothing");
  a.submit->add_option("--runs-per-task", a.submit_opts.runs_per_task, "runs per array task")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  a.submit->add_option("--throttle", a.submit_opts.throttle, "at most K tasks at once (%K)")
      ->check(CLI::NonNegativeNumber);
  a.submit->add_option("--max-array-size", a.submit_opts.max_array_size,
                       "the cluster's MaxArraySize (longer arrays are split)")->capture_default_str();
  a.submit->add_option("--gpus-per-task", a.submit_opts.gpus_per_task, "GPUs per task");
  a.submit->add_option("--cpus-per-task", a.submit_opts.cpus_per_task, "CPUs per task");
  a.submit->add_option("--time", a.submit_opts.time,
                       "time limit per task (Slurm's form; --max-hours is set a little below)");
  a.submit->add_option("--partition", a.submit_opts.partition, "partition");
  a.submit->add_option("--account", a.submit_opts.account, "account");
  a.submit->add_option("--dynsim", a.submit_opts.dynsim, "the dynsim the tasks run (default: this one)");
  a.submit->add_option("--run-args", a.submit_opts.extra_run_args,
                       "more `scan run` arguments (e.g. \"--pack 16\")");
  a.submit_opts.dynsim.clear();
  return &a;
}

bool scan_parsed(const ScanArgs* a) { return a && a->scan && a->scan->parsed(); }

int run_scan(const ScanArgs& a) {
  if (a.expand->parsed()) {
    const scan::Grid g = scan::read_grid(a.grid);
    const std::vector<scan::Run> runs = scan::expand(g, models::scan_validators(), a.threads);
    scan::write_manifest(a.dir, g, runs);
    if (!a.quiet) {
      std::cout << "dynsim scan expand: " << g.name << " (" << g.kind << "), " << runs.size()
                << " run(s)";
      for (const scan::Grid::Axis& ax : g.axes) std::cout << (&ax == &g.axes[0] ? " = " : " x ")
                                                          << ax.points.size() << " " << ax.name;
      std::cout << "\n  wrote " << a.dir << "/manifest.jsonl, runs.txt, scan.json\n";
    }
    return 0;
  }
  if (a.run->parsed()) return do_run(a);
  if (a.status->parsed()) return do_status(a);
  if (a.collect->parsed()) return do_collect(a);
  if (a.submit->parsed()) return do_submit(a);
  std::pair<int64_t, int64_t> s =
      a.shard_spec.empty() ? scan::slurm_shard() : scan::parse_shard(a.shard_spec);
  if (s.second == 0) s = {0, 1};
  const std::vector<nlohmann::json> m = scan::read_manifest(a.dir);
  for (int64_t k : scan::shard_indices(int64_t(m.size()), s.first, s.second))
    std::cout << k << " " << m[size_t(k)].at("run_id").get<std::string>() << "\n";
  return 0;
}

}  // namespace dynsim::cli
