// `dynsim train` / `dynsim eval` (models/train/trainer.h): what a run reports. metrics.csv rows,
// events.jsonl, the progress lines (a bar on a terminal), summary.json and eval's per-step CSV.
// Declared in trainer_detail.h; siblings: trainer.cpp (setup, loop, evaluation),
// trainer_schema.cpp, trainer_resume.cpp.
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "engine/io/atomic_file.h"
#include "models/train/trainer_detail.h"

namespace dynsim::models::train_detail {

namespace {

std::string iso_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

const char* kMetricsHeader =
    "split,epoch,step,loss,ce,activity,accuracy,lr,grad_norm,samples,wall_s";

std::string fmt(double v, int prec = 6) {
  if (!std::isfinite(v)) return "";
  std::ostringstream o;
  o << std::setprecision(prec) << v;
  return o.str();
}

// Accuracy at the last step that has labels (what a sequence ends with); NaN when none has.
double last_step_accuracy(const StepAccuracy& a) {
  for (size_t t = a.valid.size(); t-- > 0;)
    if (a.valid[t]) return double(a.correct[t]) / double(a.valid[t]);
  return std::nan("");
}

}  // namespace

void LineFile::open(const fs::path& p) {
  path_ = p;
  f_.open(p, std::ios::app);
  if (!f_) throw IoError(concat(p.string(), ": cannot open for appending"));
}

void LineFile::line(const std::string& s) {
  f_ << s << '\n';
  f_.flush();
  if (!f_) throw IoError(concat(path_.string(), ": write failed"));
}

// On resume: drop metric rows written after the checkpoint's step (they will be redone).
void truncate_metrics(const fs::path& p, int64_t step) {
  std::ifstream in(p);
  if (!in) return;
  std::string line, out;
  bool header = true;
  while (std::getline(in, line)) {
    if (!header) {
      std::stringstream ss(line);
      std::string split, epoch, st;
      std::getline(ss, split, ',');
      std::getline(ss, epoch, ',');
      std::getline(ss, st, ',');
      if (std::strtoll(st.c_str(), nullptr, 10) > step) continue;
    }
    header = false;
    out += line + "\n";
  }
  write_file_atomic(p.string(), out);
}

// ---- Report ----

Report::Report(const fs::path& out, const TrainRun& run, std::ostream& log, const Progress& p)
    : out_(out), run_(run), log_(log), p_(p) {
  const bool new_metrics = !fs::exists(out / "metrics.csv");
  metrics_.open(out / "metrics.csv");
  if (new_metrics) metrics_.line(kMetricsHeader);
  events_.open(out / "events.jsonl");
  bar_ = !run.quiet && isatty(STDERR_FILENO) && &log == &std::cerr;
}

void Report::event(json j) {
  j["time"] = iso_now();
  j["step"] = p_.step;
  j["epoch"] = p_.epoch;
  events_.line(j.dump());
}

void Report::start_clock() {
  t0_ = std::chrono::steady_clock::now();
}

double Report::wall() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

void Report::train_row(const Interval& sum, double lr, double last_norm, int64_t epochs,
                       int64_t used_batches) {
  const int64_t epoch = p_.epoch, step = p_.step, batch_in_epoch = p_.batch_in_epoch;
  const double acc = sum.valid ? double(sum.correct) / double(sum.valid) : std::nan("");
  metrics_.line(concat("train,", epoch, ",", step, ",", fmt(sum.loss / sum.n), ",",
                       fmt(sum.ce / sum.n), ",", fmt(sum.act / sum.n), ",", fmt(acc), ",",
                       fmt(lr), ",", fmt(last_norm), ",", p_.samples, ",", fmt(wall(), 4)));
  if (bar_) {
    const int width = 24, done = int(width * batch_in_epoch / used_batches);
    log_ << "\repoch " << epoch + 1 << "/" << epochs << " [" << std::string(size_t(done), '#')
         << std::string(size_t(width - done), '.') << "] " << batch_in_epoch << "/"
         << used_batches << " loss " << fmt(sum.loss / sum.n, 4) << " acc " << fmt(acc, 3)
         << " lr " << fmt(lr, 3) << std::flush;
  } else if (!run_.quiet) {
    log_ << "epoch " << epoch + 1 << "/" << epochs << " step " << step << " loss "
         << fmt(sum.loss / sum.n, 4) << " acc " << fmt(acc, 3) << " lr " << fmt(lr, 3)
         << " " << fmt(wall(), 3) << " s\n";
  }
}

void Report::end_bar() {
  if (bar_) log_ << "\n";
}

void Report::test_row(const StepAccuracy& ea, double metric, double lr, int64_t test_samples) {
  const int64_t epoch = p_.epoch;
  metrics_.line(concat("test,", epoch - 1, ",", p_.step, ",", fmt(ea.loss), ",,,", fmt(metric),
                       ",", fmt(lr), ",,", test_samples, ",", fmt(wall(), 4)));
  const double last_step = last_step_accuracy(ea);
  event({{"event", "eval"}, {"split", "test"}, {"accuracy", metric},
         {"last_step_accuracy", std::isfinite(last_step) ? json(last_step) : json(nullptr)},
         {"loss", ea.loss}});
  if (!run_.quiet)
    log_ << "epoch " << epoch << ": test accuracy " << fmt(metric, 4) << " (last step "
         << fmt(last_step, 4) << ")\n";
}

void Report::finish() {
  const double best = p_.best;
  const json summary{{"epochs", p_.epoch}, {"steps", p_.step}, {"best_test_accuracy",
                      std::isfinite(best) ? json(best) : json(nullptr)}, {"wall_s", wall()}};
  write_file_atomic((out_ / "summary.json").string(), summary.dump(2) + "\n");
  event({{"event", "done"}});
  if (!run_.quiet)
    log_ << "dynsim: trained " << p_.step << " steps in " << fmt(wall(), 4) << " s; weights in "
         << (out_ / "weights.safetensors").string() << "\n";
}

// ---- dynsim eval ----

void write_eval(const Config& cfg, int T, const StepAccuracy& acc, const EvalRun& run, double secs,
                const std::string& device_note, std::ostream& log) {
  const std::string path = run.output.empty()
                               ? (fs::path(cfg.get_string("train.output")) / ("eval_" + run.split + ".csv")).string()
                               : run.output;
  std::string csv = "step,time_ms,valid,correct,accuracy\n";
  const double dt = cfg.get_double("dynamics.dt");
  for (int t = 0; t < T; ++t) {
    const int64_t v = acc.valid[size_t(t)], c = acc.correct[size_t(t)];
    csv += concat(t, ",", fmt(t * dt), ",", v, ",", c, ",", v ? fmt(double(c) / double(v)) : "", "\n");
  }
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  write_file_atomic(path, csv);
  if (!run.quiet) {
    log << "dynsim: " << run.split << " accuracy " << fmt(acc.accuracy(), 4) << " over the labelled "
        << "steps";
    const double last_step = last_step_accuracy(acc);
    if (std::isfinite(last_step)) log << ", " << fmt(last_step, 4) << " at the last one";
    log << " (" << fmt(secs, 3) << " s on " << device_note << "); per step in " << path << "\n";
  }
}

}  // namespace dynsim::models::train_detail
