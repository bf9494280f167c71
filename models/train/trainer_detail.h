// Internals shared by the trainer's source files (models/train/trainer.h; not part of its API):
// trainer.cpp (setup, the training loop, evaluation), trainer_schema.cpp (the train schema,
// datasets and transforms), trainer_resume.cpp (checkpoints, --resume, stopping on a signal)
// and trainer_report.cpp (metrics.csv, events.jsonl, progress lines, summary.json, eval CSV).
#pragma once
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "engine/core/context.h"
#include "engine/core/params.h"
#include "engine/optim/optimizer.h"
#include "models/train/trainer.h"

namespace dynsim::models::train_detail {
namespace fs = std::filesystem;
using nlohmann::json;

// Where a run stands: what a checkpoint records besides the weights, the optimiser's state and
// the config (the loop in trainer.cpp advances it; the checkpoints and the report read it).
struct Progress {
  int64_t epoch = 0, step = 0, batch_in_epoch = 0;
  double best = std::nan("");
  int64_t samples = 0;  // samples seen since the run began (metrics.csv)
};

// ---- Reporting (trainer_report.cpp) ----

// Appends lines to a file, flushing each (metrics survive a kill).
class LineFile {
 public:
  LineFile() = default;
  void open(const fs::path& p);
  void line(const std::string& s);

 private:
  fs::path path_;
  std::ofstream f_;
};

// Running sums over the current log interval.
struct Interval {
  double loss = 0, ce = 0, act = 0;
  int64_t valid = 0, correct = 0, n = 0;
};

// A training run's records under its output folder: metrics.csv (a train row per log interval,
// a test row per evaluation), events.jsonl (each event with time, step and epoch), the progress
// lines on `log` (a bar when log is a terminal's stderr) and summary.json.
class Report {
 public:
  // Opens metrics.csv (writing its header when new) and events.jsonl for appending.
  Report(const fs::path& out, const TrainRun& run, std::ostream& log, const Progress& p);
  void event(json j);  // adds time, step and epoch
  void start_clock();  // wall_s counts from here
  double wall() const;
  // The interval's train row and progress line (lr and grad_norm as after the step).
  void train_row(const Interval& sum, double lr, double last_norm, int64_t epochs,
                 int64_t used_batches);
  void end_bar();  // ends the epoch's progress bar line
  // The test row, eval event and line of an epoch end's evaluation (p.epoch already counts it).
  void test_row(const StepAccuracy& ea, double metric, double lr, int64_t test_samples);
  // summary.json, the done event and the closing line.
  void finish();

 private:
  fs::path out_;
  const TrainRun& run_;
  std::ostream& log_;
  const Progress& p_;
  bool bar_ = false;
  LineFile metrics_, events_;
  std::chrono::steady_clock::time_point t0_;
};

// On resume: drop metric rows written after the checkpoint's step (they will be redone).
void truncate_metrics(const fs::path& p, int64_t step);

// `dynsim eval`'s output: accuracy per step as CSV (run.output, else
// <train.output>/eval_<split>.csv) and, unless quiet, a line on log.
void write_eval(const Config& cfg, int T, const StepAccuracy& acc, const EvalRun& run, double secs,
                const std::string& device_note, std::ostream& log);

// ---- Checkpoints, resume, signals (trainer_resume.cpp) ----

// Writes the run's checkpoints under ckdir and records each in events.jsonl.
struct CheckpointWriter {
  const Config& cfg;
  fs::path ckdir;
  int keep_last;
  ParamStore& params;
  Context& ctx;
  const Optimizer& opt;
  const Progress& p;
  Report& rep;
  void save(double metric) const;  // metric: an epoch end's test accuracy, else NaN
};

// --resume: loads the checkpoint (run.resume_from, else the newest valid one under ckdir) into
// params and opt after checking that it comes from the same run, and drops the metrics rows it
// will redo. Returns where it stood.
Progress resume_run(const Config& cfg, const TrainRun& run, const fs::path& out,
                    const fs::path& ckdir, ParamStore& params, Context& ctx, Optimizer& opt,
                    std::ostream& log);

// Stopped by *run.stop (SIGTERM / SIGUSR1): checkpoints unless the epoch end just did, records
// the stop, tells how to continue; returns the exit code (75).
int stopped_by_signal(const TrainRun& run, bool epoch_done, const CheckpointWriter& ckpt,
                      std::ostream& log);

}  // namespace dynsim::models::train_detail
