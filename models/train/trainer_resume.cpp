// `dynsim train` (models/train/trainer.h): checkpoints and exact resume. Writing step-<step>
// checkpoints, `--resume` (the same run or a ConfigError naming the key that differs), and
// stopping on SIGTERM / SIGUSR1 (tools/cli_train.cpp sets TrainRun::stop) after a checkpoint
// with exit code 75. Declared in trainer_detail.h; siblings: trainer.cpp (setup, loop,
// evaluation), trainer_schema.cpp, trainer_report.cpp.
#include <cstdio>
#include <sstream>

#include "engine/io/checkpoint.h"
#include "models/train/trainer_detail.h"

namespace dynsim::models::train_detail {

namespace {

// Keys that may change between a run and its resumption without breaking exactness.
bool resumable_key(const std::string& k) {  // k: a JSON pointer such as "/train/epochs"
  for (const char* p : {"/train/epochs", "/train/max_steps", "/train/log_every", "/train/output",
                        "/train/eval_every", "/train/eval_batch", "/train/device", "/checkpoint/"})
    if (k.rfind(p, 0) == 0) return true;
  return false;
}

// A flattened JSON pointer as the config spells the key: "/area/0/name" -> "area[0].name".
std::string key_name(const std::string& pointer) {
  std::string out;
  std::stringstream ss(pointer.substr(1));
  for (std::string seg; std::getline(ss, seg, '/');) {
    if (!seg.empty() && seg.find_first_not_of("0123456789") == std::string::npos)
      out += "[" + seg + "]";
    else
      out += (out.empty() ? "" : ".") + seg;
  }
  return out;
}

}  // namespace

void CheckpointWriter::save(double metric) const {
  CheckpointData d;
  d.epoch = p.epoch;
  d.step = p.step;
  d.batch_in_epoch = p.batch_in_epoch;
  d.metric = metric;
  for (const auto& e : params.entries()) d.weights.add(e.name, ctx.to_host(e.value), e.trainable);
  d.optimizer_state = opt.state();
  for (auto& [n, t] : d.optimizer_state) t = ctx.to_host(t);
  d.trainer_json = json{{"best", std::isfinite(p.best) ? json(p.best) : json(nullptr)},
                        {"lr", opt.lr()}, {"seed", cfg.get_int("train.seed")},
                        {"samples", p.samples}}.dump();
  d.config_toml = cfg.to_toml();
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(p.step));
  write_checkpoint(ckdir.string(), name, d);
  prune_checkpoints(ckdir.string(), keep_last);
  rep.event({{"event", "checkpoint"}, {"path", (ckdir / name).string()},
             {"metric", std::isfinite(metric) ? json(metric) : json(nullptr)}});
}

Progress resume_run(const Config& cfg, const TrainRun& run, const fs::path& out,
                    const fs::path& ckdir, ParamStore& params, Context& ctx, Optimizer& opt,
                    std::ostream& log) {
  Progress p;
  std::string path = run.resume_from;
  if (path.empty()) {
    std::vector<std::string> refused;
    path = latest_valid_checkpoint(ckdir.string(), &refused);
    for (const std::string& r : refused) log << "dynsim: warning: checkpoint refused: " << r << "\n";
    if (path.empty())
      throw NoInputError(concat("--resume: no valid checkpoint under '", ckdir.string(), "'"));
  }
  const CheckpointData ck = read_checkpoint(path);
  // The run must be the same one: every key except those that cannot change the result.
  const Config old = Config::parse(ck.config_toml, path + "/config.toml", train_schema());
  const json a = old.to_json().flatten(), b = cfg.to_json().flatten();
  for (const json* side : {&b, &a})  // a key only in the checkpoint's config counts too
    for (auto it = side->begin(); it != side->end(); ++it) {
      const std::string& k = it.key();
      if (resumable_key(k) || (a.contains(k) && b.contains(k) && a.at(k) == b.at(k))) continue;
      throw ConfigError(concat("--resume: ", key_name(k), " is ",
                               b.contains(k) ? b.at(k).dump() : "not set", " but the checkpoint ",
                               path, " was made with ",
                               a.contains(k) ? a.at(k).dump() : "nothing",
                               " (resuming must not change the run)"));
    }
  for (auto& e : params.entries()) {
    if (!ck.weights.has(e.name))
      throw DataError(concat("checkpoint ", path, ": no weight '", e.name, "'"));
    const Tensor& w = ck.weights.get(e.name);
    if (w.shape() != e.value.shape() || w.dtype() != e.value.dtype())
      throw DataError(concat("checkpoint ", path, ": weight '", e.name, "' is ", w.str(),
                             ", the model needs ", e.value.str()));
    ctx.copy(e.value, w);
  }
  opt.load_state(ctx, ck.optimizer_state, params);
  p.epoch = ck.epoch;
  p.step = ck.step;
  p.batch_in_epoch = ck.batch_in_epoch;
  const json tj = json::parse(ck.trainer_json);
  if (tj.contains("best") && tj["best"].is_number()) p.best = tj["best"].get<double>();
  if (tj.contains("samples") && tj["samples"].is_number_integer())
    p.samples = tj["samples"].get<int64_t>();
  if (fs::exists(out / "metrics.csv")) truncate_metrics(out / "metrics.csv", p.step);
  log << "dynsim: resuming from " << path << " (epoch " << p.epoch << ", step " << p.step << ")\n";
  return p;
}

int stopped_by_signal(const TrainRun& run, bool epoch_done, const CheckpointWriter& ckpt,
                      std::ostream& log) {
  if (!epoch_done) ckpt.save(std::nan(""));
  const int sig = run.stop->load();
  ckpt.rep.event({{"event", "stopped"}, {"signal", sig}});
  log << "dynsim: stopped by signal " << sig << " after step " << ckpt.p.step
      << "; checkpoint written, continue with --resume\n";
  return int(ExitCode::Preempted);
}

}  // namespace dynsim::models::train_detail
