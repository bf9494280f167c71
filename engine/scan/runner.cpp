// Running a shard, the scan's status, collecting results (engine/scan/runner.h).
#include "engine/scan/runner.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <mutex>
#include <ostream>
#include <set>
#include <sstream>
#include <thread>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "engine/scan/scan.h"
#include "engine/scan/store.h"

namespace dynsim::scan {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string host_name() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string duration_text(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(std::llround(s));
  std::ostringstream o;
  if (t >= 3600) o << t / 3600 << "h" << std::setw(2) << std::setfill('0') << (t % 3600) / 60 << "m";
  else if (t >= 60) o << t / 60 << "m" << std::setw(2) << std::setfill('0') << t % 60 << "s";
  else o << t << "s";
  return o.str();
}

// Touches the held leases every `every` seconds until destroyed.
class Heartbeat {
 public:
  Heartbeat(RunStore& store, double every) : store_(store) {
    thread_ = std::thread([this, every] {
      std::unique_lock<std::mutex> l(mu_);
      while (!done_) {
        cv_.wait_for(l, std::chrono::duration<double>(every));
        if (!done_) store_.heartbeat();
      }
    });
  }
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> g(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  RunStore& store_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// Done/total, runs/s and the ETA: a bar redrawn on a terminal, else one line per `every` s.
class Progress {
 public:
  Progress(const ShardOptions& o, int64_t total, int64_t already)
      : os_(o.progress), tty_(o.tty), every_(o.progress_every_s), total_(total), already_(already) {}
  void update(int64_t done, int64_t failed, bool final) {
    if (!os_) return;
    const double el = seconds_since(t0_);
    if (!final && !tty_ && el - last_ < every_) return;
    last_ = el;
    const int64_t finished = already_ + done + failed;
    const double rate = el > 0 ? double(done) / el : 0;
    const double eta = rate > 0 ? double(total_ - finished) / rate : NAN;
    std::ostringstream line;
    line << finished << "/" << total_ << " finished";
    if (failed) line << " (" << failed << " failed)";
    line << ", " << std::setprecision(3) << rate << " runs/s";
    if (!final) line << ", ETA " << duration_text(eta);
    else line << ", " << duration_text(el);
    if (tty_) {
      const int width = 30;
      const int fill = total_ ? int(width * finished / total_) : width;
      *os_ << "\r[" << std::string(size_t(fill), '#') << std::string(size_t(width - fill), '.')
           << "] " << line.str() << "   " << (final ? "\n" : "") << std::flush;
    } else {
      *os_ << "dynsim scan: " << line.str() << "\n" << std::flush;
    }
  }

 private:
  std::ostream* os_;
  bool tty_;
  double every_;
  int64_t total_, already_;
  Clock::time_point t0_ = Clock::now();
  double last_ = -1e30;
};

// Empties runs/<id>.tmp/ except its lease (a killed run's partial outputs).
void clear_tmp(const fs::path& tmp) {
  for (const auto& e : fs::directory_iterator(tmp))
    if (e.path().filename() != "RUNNING") fs::remove_all(e.path());
}

std::string csv_cell(const nlohmann::json& v) {
  if (v.is_null()) return "";
  std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  if (s.find_first_of(",\"\n") != std::string::npos) {
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  }
  return s;
}

// {"a": {"b": 1}, "c": [{"d": 2}]} -> {"a.b": 1, "c.0.d": 2}; arrays of plain values stay values.
void flatten(const nlohmann::json& j, const std::string& prefix, nlohmann::json& out) {
  auto key = [&](const std::string& k) { return prefix.empty() ? k : prefix + "." + k; };
  bool objects = j.is_array() && !j.empty();
  for (const auto& v : j.is_array() ? j : nlohmann::json::array()) objects = objects && v.is_object();
  if (j.is_object() && !j.empty()) {
    for (const auto& [k, v] : j.items()) flatten(v, key(k), out);
  } else if (objects) {
    for (size_t i = 0; i < j.size(); ++i) flatten(j[i], key(std::to_string(i)), out);
  } else {
    out[prefix] = j;
  }
}

}  // namespace

ShardReport run_shard(const std::string& dir, const Executors& executors,
                      const ShardOptions& opts) {
  const std::vector<nlohmann::json> m = read_manifest(dir);
  std::vector<int64_t> indices;
  if (opts.index >= 0) {
    if (opts.index >= int64_t(m.size()))
      throw UsageError(concat("--index ", opts.index, ": the scan in ", dir, " has ", m.size(),
                              " runs (0..", int64_t(m.size()) - 1, ")"));
    indices = {opts.index};
  } else {
    indices = shard_indices(int64_t(m.size()), opts.shard, opts.shards);
  }
  for (int64_t k : indices) {
    const std::string kind = m[size_t(k)].at("kind").get<std::string>();
    if (!executors.count(kind))
      throw ConfigError(concat(dir, "/manifest.jsonl: run ", k, ": kind '", kind,
                               "' cannot be run by this build"));
  }
  RunStore store(dir);
  ShardReport rep;
  rep.total = int64_t(indices.size());
  std::vector<int64_t> pending;
  for (int64_t k : indices) {
    const std::string id = m[size_t(k)].at("run_id").get<std::string>();
    switch (store.state(id, false, opts.stale_after_s)) {
      case RunState::Done: ++rep.skipped; break;
      case RunState::Running: ++rep.busy; break;
      case RunState::Failed:
        if (!opts.retry_failed) {
          ++rep.failed;
          break;
        }
        [[fallthrough]];
      default: pending.push_back(k);
    }
  }
  const std::string log_name = opts.index >= 0 ? concat("index-", opts.index)
                                               : concat("shard-", opts.shard);
  ResultsLog log(dir, log_name);
  Heartbeat beat(store, opts.heartbeat_s);
  Progress progress(opts, rep.total, rep.skipped + rep.failed + rep.busy);
  const std::string owner = concat(host_name(), ":", ::getpid(), " ", log_name);
  const auto t0 = Clock::now();
  double run_seconds = 0;  // wall time of the runs done so far (for --max-hours)
  int64_t runs_timed = 0;
  int64_t failed_now = 0;

  auto job_of = [&](int64_t k) {
    const nlohmann::json& l = m[size_t(k)];
    Job j;
    j.index = k;
    j.run_id = l.at("run_id").get<std::string>();
    j.kind = l.at("kind").get<std::string>();
    j.config = l.at("config");
    j.axes = l.value("axes", nlohmann::json::object());
    j.dir = store.tmp_dir(j.run_id).string();
    return j;
  };
  // Runs a group whose leases are held; a group that fails is retried one run at a time.
  std::function<void(const Executor&, const std::vector<Job>&)> run_group =
      [&](const Executor& ex, const std::vector<Job>& jobs) {
        const auto g0 = Clock::now();
        std::vector<JobResult> results;
        try {
          results = ex.run(jobs, opts.stop);
          if (results.size() != jobs.size())
            throw Error(concat("scan: the ", jobs.front().kind, " executor returned ",
                               results.size(), " results for ", jobs.size(), " runs"));
        } catch (const std::exception& e) {
          if (jobs.size() > 1) {
            for (const Job& j : jobs) {
              if (opts.stop && opts.stop->load()) {
                store.release(j.run_id);
                continue;
              }
              clear_tmp(j.dir);
              run_group(ex, {j});
            }
            return;
          }
          const auto* de = dynamic_cast<const Error*>(&e);
          const int code = de ? int(de->code()) : int(ExitCode::Software);
          store.fail(jobs[0].run_id, {{"run_id", jobs[0].run_id},
                                      {"index", jobs[0].index},
                                      {"reason", e.what()},
                                      {"exit_code", code},
                                      {"host", host_name()}});
          ++rep.failed, ++failed_now;
          if (!rep.first_failure_code) rep.first_failure_code = code;
          return;
        }
        const double wall = seconds_since(g0);
        ++rep.groups;
        for (size_t i = 0; i < jobs.size(); ++i) {
          const Job& j = jobs[i];
          if (results[i].stopped) {
            store.release(j.run_id);
            rep.stopped = true;
            continue;
          }
          nlohmann::json doc = {{"index", j.index},
                                {"run_id", j.run_id},
                                {"kind", j.kind},
                                {"axes", j.axes},
                                {"result", results[i].row},
                                {"timing",
                                 {{"group_wall_s", wall},
                                  {"packed", jobs.size()},
                                  {"wall_s", wall / double(jobs.size())},
                                  {"host", host_name()}}}};
          log.append(store.finish(j.run_id, doc));
          ++rep.done;
          run_seconds += wall / double(jobs.size());
          ++runs_timed;
        }
      };

  // The pending runs by pack key (kind + the executor's key; "" = alone), each list in index
  // order: a group is the first pending run and the next runs of its list.
  std::map<std::string, std::deque<int64_t>> by_key;
  std::vector<std::string> key_of(m.size());
  for (int64_t k : pending) {
    const nlohmann::json& l = m[size_t(k)];
    const std::string kind = l.at("kind").get<std::string>();
    const Executor& ex = executors.at(kind);
    const std::string key = ex.pack_key ? ex.pack_key(l.at("config")) : std::string();
    if (!key.empty()) {
      key_of[size_t(k)] = kind + "\n" + key;
      by_key[key_of[size_t(k)]].push_back(k);
    }
  }
  std::map<std::string, int64_t> auto_limit;  // --pack auto: the executor's limit per key
  std::vector<char> taken(m.size(), 0);
  size_t next = 0;  // pending[next] is the first run not yet taken
  while (true) {
    while (next < pending.size() && taken[size_t(pending[next])]) ++next;
    if (next == pending.size()) break;
    if (opts.stop && opts.stop->load()) {
      rep.stopped = true;
      break;
    }
    const int64_t head = pending[next];
    const Job first = job_of(head);
    const Executor& ex = executors.at(first.kind);
    const std::string& key = key_of[size_t(head)];
    int64_t limit = opts.pack > 0 ? opts.pack : 1;
    if (opts.pack <= 0 && ex.auto_pack && !key.empty()) {
      // Once per pack key: the executor's estimate builds the run's graph.
      auto it = auto_limit.find(key);
      if (it == auto_limit.end()) {
        int64_t l = 1;
        try {
          l = ex.auto_pack(first.config);
        } catch (const std::exception&) {
          l = 1;  // the run itself will fail, alone, with the reason
        }
        it = auto_limit.emplace(key, l).first;
      }
      limit = it->second;
    }
    // auto: also keep a group short enough to stop in time (a simulate group cannot stop
    // half-way): a first probe of kProbe runs, then groups of about group_seconds of work.
    if (opts.pack <= 0 && opts.group_seconds > 0) {
      constexpr int64_t kProbe = 4;
      limit = std::min(limit, runs_timed == 0 ? kProbe
                                              : std::max<int64_t>(1, int64_t(opts.group_seconds /
                                                  (run_seconds / double(runs_timed)))));
    }
    limit = std::max<int64_t>(limit, 1);
    std::vector<int64_t> group = {head};
    if (!key.empty()) {
      std::deque<int64_t>& same = by_key.at(key);
      group.clear();
      while (!same.empty() && int64_t(group.size()) < limit) {
        group.push_back(same.front());
        same.pop_front();
      }
    }
    if (opts.max_hours > 0 && runs_timed > 0) {
      const double expected = run_seconds / double(runs_timed) * double(group.size());
      if (seconds_since(t0) + expected > opts.max_hours * 3600) {
        rep.stopped = true;
        rep.stop_reason = concat("--max-hours ", opts.max_hours);
        break;
      }
    }
    for (int64_t k : group) taken[size_t(k)] = 1;
    std::vector<Job> jobs;
    for (int64_t k : group) {
      Job j = job_of(k);
      if (!store.acquire(j.run_id, owner, opts.stale_after_s)) {
        ++rep.busy;
        continue;
      }
      if (!ex.resumable) clear_tmp(j.dir);
      jobs.push_back(std::move(j));
    }
    if (!jobs.empty()) run_group(ex, jobs);
    progress.update(rep.done, failed_now, false);
    if (rep.stopped) break;
  }
  if (rep.stopped && rep.stop_reason.empty() && opts.stop && opts.stop->load())
    rep.stop_reason = concat("signal ", opts.stop->load());
  progress.update(rep.done, failed_now, true);
  return rep;
}

nlohmann::json status(const std::string& dir, double stale_after_s) {
  const std::vector<nlohmann::json> m = read_manifest(dir);
  RunStore store(dir);
  nlohmann::json s = {{"total", m.size()}, {"pending", 0}, {"running", 0}, {"done", 0},
                      {"failed", 0},       {"torn", 0},    {"failures", nlohmann::json::array()},
                      {"running_runs", nlohmann::json::array()}};
  for (const nlohmann::json& l : m) {
    const std::string id = l.at("run_id").get<std::string>();
    const RunState st = store.state(id, false, stale_after_s);
    s[state_name(st)] = s[state_name(st)].get<int64_t>() + 1;
    if (st == RunState::Failed) {
      const nlohmann::json f = store.failure(id);
      s["failures"].push_back({{"index", l.at("index")},
                               {"run_id", id},
                               {"reason", f.is_object() ? f.value("reason", "?") : "?"}});
    } else if (st == RunState::Running) {
      nlohmann::json r = store.lease(id);
      r["index"] = l.at("index");
      r["run_id"] = id;
      s["running_runs"].push_back(r);
    }
  }
  return s;
}

std::vector<nlohmann::json> done_runs(const std::string& dir) {
  const std::vector<nlohmann::json> m = read_manifest(dir);
  RunStore store(dir);
  std::vector<nlohmann::json> out;
  for (const nlohmann::json& l : m) {
    const std::string id = l.at("run_id").get<std::string>();
    if (store.state(id, false, 1e30) == RunState::Done) {
      nlohmann::json d = store.done_row(id);
      d["dir"] = store.done_dir(id).string();
      out.push_back(std::move(d));
    }
  }
  return out;
}

nlohmann::json collect(const std::string& dir, const CollectOptions& opts) {
  const std::vector<nlohmann::json> m = read_manifest(dir);
  RunStore store(dir);
  // The shard logs: rows by run id (a torn or malformed line is counted and left out).
  std::map<std::string, int64_t> logged;
  int64_t malformed = 0;
  const fs::path results = fs::path(dir) / "results";
  std::vector<fs::path> logs;
  if (fs::is_directory(results))
    for (const auto& e : fs::directory_iterator(results))
      if (e.path().extension() == ".jsonl") logs.push_back(e.path());
  std::sort(logs.begin(), logs.end());
  for (const fs::path& p : logs) {
    std::ifstream f(p);
    std::string line;
    while (std::getline(f, line)) {
      try {
        ++logged[nlohmann::json::parse(line).at("run_id").get<std::string>()];
      } catch (const std::exception&) {
        ++malformed;
      }
    }
  }
  std::vector<nlohmann::json> rows;
  std::vector<int64_t> missing;
  int64_t duplicates = 0, unlogged = 0;
  std::set<std::string> ids;
  for (const nlohmann::json& l : m) {
    const std::string id = l.at("run_id").get<std::string>();
    ids.insert(id);
    const auto it = logged.find(id);
    if (store.state(id, opts.verify, 1e30) != RunState::Done) {
      missing.push_back(l.at("index").get<int64_t>());
      continue;
    }
    if (it == logged.end()) ++unlogged;
    else duplicates += it->second - 1;
    const nlohmann::json d = store.done_row(id);
    rows.push_back({{"index", l.at("index")},
                    {"run_id", id},
                    {"axes", l.value("axes", nlohmann::json::object())},
                    {"result", d.value("result", nlohmann::json::object())},
                    {"timing", d.value("timing", nlohmann::json::object())}});
  }
  int64_t dropped = malformed;  // logged rows without a valid DONE
  for (const auto& [id, n] : logged)
    if (!ids.count(id)) dropped += n;
  for (int64_t k : missing) {
    const auto it = logged.find(m[size_t(k)].at("run_id").get<std::string>());
    if (it != logged.end()) dropped += it->second;
  }
  if (!missing.empty() && !opts.partial) {
    std::string first;
    for (size_t i = 0; i < std::min<size_t>(missing.size(), 5); ++i)
      first += concat(i ? ", " : "", missing[i]);
    throw DataError(concat(dir, ": ", missing.size(), " of ", m.size(),
                           " runs are not done (indices ", first,
                           missing.size() > 5 ? ", ..." : "",
                           "); run them (dynsim scan status shows why), or pass --partial"));
  }
  // The columns: index, run_id, the axes in the grid's order, the result fields sorted.
  std::vector<std::string> axis_cols, result_cols;
  std::set<std::string> seen_results;
  nlohmann::json scan_json;
  {
    std::ifstream f(fs::path(dir) / "scan.json");
    if (f) scan_json = nlohmann::json::parse(f, nullptr, false);
  }
  if (!m.empty()) {
    const nlohmann::json axes = m[0].value("axes", nlohmann::json::object());
    for (const auto& [k, v] : axes.items()) axis_cols.push_back(k);
  }
  if (scan_json.is_object() && scan_json.contains("axes")) {
    std::vector<std::string> ordered;
    for (const auto& a : scan_json["axes"]) {
      const std::string n = a.value("name", "");
      if (std::find(axis_cols.begin(), axis_cols.end(), n) != axis_cols.end()) ordered.push_back(n);
    }
    for (const std::string& c : axis_cols)
      if (std::find(ordered.begin(), ordered.end(), c) == ordered.end()) ordered.push_back(c);
    axis_cols = ordered;
  }
  std::vector<nlohmann::json> flat;
  for (const nlohmann::json& r : rows) {
    nlohmann::json f = nlohmann::json::object();
    flatten(r["result"], "", f);
    for (const auto& [k, v] : f.items())
      if (seen_results.insert(k).second) result_cols.push_back(k);
    flat.push_back(std::move(f));
  }
  std::sort(result_cols.begin(), result_cols.end());
  std::string csv = "index,run_id";
  for (const std::string& c : axis_cols) csv += "," + csv_cell(c);
  for (const std::string& c : result_cols) csv += "," + csv_cell(c);
  csv += "\n";
  std::string jsonl;
  for (size_t i = 0; i < rows.size(); ++i) {
    csv += concat(rows[i]["index"].get<int64_t>(), ",", rows[i]["run_id"].get<std::string>());
    for (const std::string& c : axis_cols)
      csv += "," + csv_cell(rows[i]["axes"].value(c, nlohmann::json()));
    for (const std::string& c : result_cols) csv += "," + csv_cell(flat[i].value(c, nlohmann::json()));
    csv += "\n";
    jsonl += rows[i].dump() + "\n";
  }
  const nlohmann::json counts = {{"runs", m.size()},           {"collected", rows.size()},
                                 {"missing", missing.size()},  {"duplicates", duplicates},
                                 {"dropped", dropped},         {"unlogged", unlogged}};
  nlohmann::json cfg = {{"scan", scan_json.is_object() ? scan_json : nlohmann::json()},
                        {"columns", {{"axes", axis_cols}, {"results", result_cols}}},
                        {"counts", counts},
                        {"missing_indices", missing}};
  write_file_atomic((fs::path(dir) / "results.jsonl").string(), jsonl);
  write_file_atomic((fs::path(dir) / "results.csv").string(), csv);
  write_file_atomic((fs::path(dir) / "results.config.json").string(), cfg.dump(2) + "\n");
  return counts;
}

std::vector<std::string> sbatch_scripts(const std::string& dir, const SubmitOptions& o) {
  const int64_t runs = int64_t(read_manifest(dir).size());
  if (o.runs_per_task < 1) throw UsageError("--runs-per-task must be at least 1");
  if (o.max_array_size < 1) throw UsageError("--max-array-size must be at least 1");
  const int64_t tasks = std::max<int64_t>(1, (runs + o.runs_per_task - 1) / o.runs_per_task);
  const int64_t per_job = o.max_array_size;  // array indices 0..MaxArraySize-1
  const std::string abs_dir = fs::absolute(dir).lexically_normal().string();
  // --max-hours a little below --time (10% or 5 minutes, whichever is less).
  double max_hours = 0;
  if (!o.time.empty()) {
    // Slurm's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
    int64_t d = 0, h = 0, mi = 0, s = 0;
    std::string t = o.time;
    const size_t dash = t.find('-');
    std::vector<int64_t> parts;
    try {
      if (dash != std::string::npos) d = std::stoll(t.substr(0, dash)), t = t.substr(dash + 1);
      std::stringstream ss(t);
      for (std::string p; std::getline(ss, p, ':');) {
        size_t used = 0;
        parts.push_back(std::stoll(p, &used));
        if (used != p.size()) throw std::invalid_argument(p);
      }
    } catch (const std::exception&) {
      throw UsageError(concat("--time '", o.time, "': not a Slurm time (M, M:S, H:M:S, D-H:M:S)"));
    }
    if (parts.empty() || parts.size() > 3)
      throw UsageError(concat("--time '", o.time, "': not a Slurm time (M, M:S, H:M:S, D-H:M:S)"));
    if (dash != std::string::npos) {
      h = parts[0];
      if (parts.size() > 1) mi = parts[1];
      if (parts.size() > 2) s = parts[2];
    } else if (parts.size() == 1) {
      mi = parts[0];
    } else if (parts.size() == 2) {
      mi = parts[0], s = parts[1];
    } else {
      h = parts[0], mi = parts[1], s = parts[2];
    }
    const double total_s = double(((d * 24 + h) * 60 + mi) * 60 + s);
    max_hours = std::max(0.0, total_s - std::min(300.0, 0.1 * total_s)) / 3600.0;
  }
  std::vector<std::string> out;
  for (int64_t first = 0, job = 0; first < tasks; first += per_job, ++job) {
    const int64_t n = std::min(per_job, tasks - first);
    std::ostringstream s;
    s << "#!/bin/bash\n";
    s << "# dynsim scan submit: " << runs << " run(s) of " << abs_dir << " in " << tasks
      << " array task(s)";
    if (tasks > per_job) s << "; job " << job + 1 << " of " << (tasks + per_job - 1) / per_job
                           << " (tasks " << first << ".." << first + n - 1 << ")";
    s << "\n#SBATCH --job-name=dynsim-scan\n";
    s << "#SBATCH --array=0-" << n - 1;
    if (o.throttle > 0) s << "%" << o.throttle;
    s << "\n#SBATCH --signal=B:USR1@120\n#SBATCH --requeue\n";
    s << "#SBATCH --output=" << abs_dir << "/logs/%A_%a.out\n";
    if (!o.time.empty()) s << "#SBATCH --time=" << o.time << "\n";
    if (o.gpus_per_task > 0) s << "#SBATCH --gpus-per-task=" << o.gpus_per_task << "\n";
    if (o.cpus_per_task > 0) s << "#SBATCH --cpus-per-task=" << o.cpus_per_task << "\n";
    if (!o.partition.empty()) s << "#SBATCH --partition=" << o.partition << "\n";
    if (!o.account.empty()) s << "#SBATCH --account=" << o.account << "\n";
    s << "set -u\n";
    s << "shard=$((" << first << " + SLURM_ARRAY_TASK_ID))\n";
    s << "# USR1 (120 s before the time limit) and TERM (scancel) reach dynsim, which finishes\n"
         "# or checkpoints its run and exits 75; after USR1 the task requeues itself.\n";
    s << "\"" << o.dynsim << "\" scan run \"" << abs_dir << "\" --shard \"$shard/" << tasks << "\"";
    if (max_hours > 0) s << " --max-hours " << std::setprecision(6) << max_hours;
    if (!o.extra_run_args.empty()) s << " " << o.extra_run_args;
    s << " &\npid=$!\n";
    s << "usr1=\ntrap 'usr1=1; kill -USR1 $pid' USR1\ntrap 'kill -TERM $pid' TERM\n";
    s << "wait $pid; rc=$?\n";
    s << "while kill -0 $pid 2>/dev/null; do wait $pid; rc=$?; done\n";
    s << "if [ $rc -eq 75 ] && [ -n \"$usr1\" ]; then\n"
         "  scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\nfi\n";
    s << "exit $rc\n";
    out.push_back(s.str());
  }
  return out;
}

}  // namespace dynsim::scan
