// `dynsim train` / `dynsim eval` (models/train/trainer.h): the setup built from the config
// (graph, losses, sequence expansion, device), the training loop (epochs, micro-batches,
// accumulation, clipping, optimiser steps, the cosine schedule, evaluation at epoch ends) and
// `dynsim eval`. Siblings: trainer_schema.cpp (schema, datasets, transforms),
// trainer_resume.cpp (checkpoints, --resume, signals), trainer_report.cpp (metrics, events,
// progress); trainer_detail.h declares what they share.
#include "models/train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include "engine/core/device.h"
#include "engine/dynamics/sequence.h"
#include "engine/io/checkpoint.h"
#include "engine/io/safetensors.h"
#include "engine/optim/optimizer.h"
#include "models/common/weights.h"
#include "models/config/sim_config.h"
#include "models/train/trainer_detail.h"

namespace dynsim::models {
namespace fs = std::filesystem;
using namespace train_detail;  // Progress, Report, CheckpointWriter, ... (trainer_detail.h)

double StepAccuracy::accuracy() const {
  int64_t v = 0, c = 0;
  for (size_t i = 0; i < valid.size(); ++i) v += valid[i], c += correct[i];
  return v ? double(c) / double(v) : std::nan("");
}

namespace {

// Everything the loop needs, built from the config.
struct Setup {
  Config cfg;
  Graph graph;
  SolverSpec solver;
  LossSpec loss;
  BpttOptions bopt;
  seq::SequenceParams seq;
  int T = 0;
};

RunOptions run_options_for_training(const Config& cfg) {
  RunOptions r;
  r.idle_steps = int(cfg.get_int("train.idle_steps"));
  r.non_input_value = float(cfg.get_double("train.non_input_value"));
  r.record = RecordMode::None;
  r.stability_check = cfg.get_bool("dynamics.stability_check");
  r.input_adaption_weight = cfg.get_double("model.input_adaption_weight");
  return r;
}

Setup make_setup(const Config& cfg) {
  Setup s;
  s.cfg = cfg;
  s.graph = build_graph(cfg);
  s.solver = solver_spec(cfg);
  s.loss.ce_weight = cfg.get_double("loss.ce_weight");
  s.loss.activity_weight = cfg.get_double("loss.activity_weight");
  s.loss.activity_mode =
      cfg.get_string("loss.activity_mode") == "marked" ? ActivityMode::Marked : ActivityMode::Legacy;
  s.loss.activity_areas = cfg.get_strings("loss.activity_areas");
  s.loss.activity_signed = cfg.get_bool("loss.activity_signed");
  for (const std::string& a : s.loss.activity_areas)
    if (s.graph.area_index(a) < 0) cfg.fail("loss.activity_areas", concat("no area named '", a, "'"));
  if (s.loss.activity_mode == ActivityMode::Marked && s.loss.activity_weight > 0 &&
      s.loss.activity_areas.empty())
    cfg.fail("loss.activity_areas", "marked activity loss needs at least one area");
  if (s.graph.readout.source < 0 && s.loss.ce_weight > 0)
    cfg.fail("model.n_classes", "training with cross-entropy needs a classifier (n_classes >= 1)");
  s.bopt.run = run_options_for_training(cfg);
  s.bopt.tbptt = int(cfg.get_int("train.tbptt"));
  if (cfg.get_string("train.memory") == "checkpoint") {
    s.bopt.memory = MemoryPolicy::Checkpoint;
    s.bopt.checkpoint_every = int(cfg.get_int("train.checkpoint_segment"));
  }
  s.seq.n_timesteps = int(cfg.get_int("train.steps"));
  try {
    s.seq.pattern = seq::parse_pattern(cfg.get_string("train.pattern"));
  } catch (const DataError& e) {
    cfg.fail("train.pattern", e.what());
  }
  s.seq.shuffle = cfg.get_bool("train.shuffle_pattern");
  s.seq.seed = uint64_t(cfg.get_int("train.seed"));
  s.seq.reaction_ms = cfg.get_double("train.reaction_time");
  s.seq.dt = cfg.get_double("dynamics.dt");
  s.seq.residual_steps = int(cfg.get_int("train.residual_steps"));
  s.seq.non_input_value = float(cfg.get_double("train.non_input_value"));
  s.T = s.seq.n_timesteps + s.seq.residual_steps;
  return s;
}


// One batch of frames [B, C, H, W] and labels [B] as a sequence: DynVision's expansion over
// n_timesteps, the (shuffled) presentation pattern, reaction-time masking and residual steps.
std::pair<Tensor, Tensor> make_sequence(const Setup& s, const Tensor& x, const Tensor& y,
                                        uint64_t batch_index) {
  seq::SequenceParams p = s.seq;
  p.batch_index = batch_index;
  const seq::SequencePlan plan = seq::plan_sequence(p);
  return {seq::build_inputs(x, plan, p.non_input_value), seq::build_labels(y, plan)};
}

// train.device: cuda runs on CUDA device 0 (an error naming the key when there is none, or when
// the graph cannot run there); auto takes the device when there is one and the graph runs there
// (cuda_unsupported), else the CPU. *where says which and why.
Context make_context(const Config& cfg, const Graph& g, std::string* where) {
  const std::string dev = cfg.get_string("train.device");
  ContextOptions co;
  co.threads = int(cfg.get_int("train.threads"));
  co.seed = uint64_t(cfg.get_int("train.seed"));
  co.deterministic = cfg.get_bool("train.deterministic");
  const DType dtype = g.params.entries().empty() ? DType::F32 : g.params.entries().front().value.dtype();
  const int n = cuda_device_count();
  const std::string why = n > 0 ? cuda_unsupported(g, dtype) : std::string("no CUDA device");
  if (dev == "cuda" && !why.empty())
    cfg.fail("train.device", concat("'cuda' cannot be used: ",
                                    n > 0 ? why : std::string(cuda_compiled() ? "no CUDA device found"
                                                                              : "this build has no CUDA backend")));
  const bool tf32 = cfg.get_string("train.precision") == "tf32";
  if (tf32 && dev == "cpu")
    cfg.fail("train.precision", "tf32 needs a CUDA device (train.device = 'cpu')");
  if (dev != "cpu" && why.empty()) {
    co.device = Device::Cuda;
    co.precision = tf32 ? Precision::TF32 : Precision::FP32;
    const auto gpus = cuda_devices();
    *where = concat(gpus.empty() ? "cuda:0" : concat("cuda:0 (", gpus.front().name, ")"), ", ",
                    precision_name(co.precision));
  } else {
    *where = dev == "auto" ? concat("cpu (auto: ", why, ")") : "cpu";
  }
  if (cfg.get_string("train.precision") == "bf16") *where += ", bf16 storage";
  return Context(co);
}

// The model's parameters onto the context's device (a no-op on the CPU).
void to_context(Context& ctx, Graph& g) {
  if (ctx.device() == Device::Cpu) return;
  for (auto& e : g.params.entries()) e.value = ctx.to_device(e.value);
}

// The parameters back on the host (for export).
void to_host(Context& ctx, Graph& g) {
  for (auto& e : g.params.entries())
    if (!e.value.is_cpu()) e.value = ctx.to_host(e.value);
}

// A batch's sequence as Bptt takes it: bf16 with train.precision = bf16 (rounded once, on the
// host), on the context's device (one copy, not one per step).
Tensor run_input(const Setup& s, Context& ctx, Tensor in) {
  if (s.cfg.get_string("train.precision") == "bf16") in = in.to_dtype(DType::BF16);
  return ctx.device() != Device::Cpu ? ctx.to_device(in) : in;
}

// Forward-only pass over a dataset: accuracy per real step and the mean loss.
StepAccuracy run_eval(Context& ctx, Setup& s, const data::Dataset& ds, int64_t batch) {
  Bptt bp(ctx, s.graph, s.solver);
  data::Batcher::Options o;
  o.batch_size = batch;
  o.shuffle = false;
  data::Batcher bt(ds, transform_for(s.cfg, ds, false), o);
  StepAccuracy acc;
  acc.valid.assign(size_t(s.T), 0);
  acc.correct.assign(size_t(s.T), 0);
  int64_t n = 0;
  while (auto b = bt.next()) {
    // Evaluation shows the pattern unshuffled (batch index 0 for every batch).
    auto [in, lab] = make_sequence(s, b->x, b->y, 0);
    const LossValues lv = bp.run(run_input(s, ctx, in), lab, {}, s.loss, s.bopt, nullptr);
    for (int t = 0; t < s.T; ++t) {
      acc.valid[size_t(t)] += lv.valid_per_step[size_t(t)];
      acc.correct[size_t(t)] += lv.correct_per_step[size_t(t)];
    }
    acc.loss += lv.total;
    ++n;
  }
  if (n) acc.loss /= double(n);
  return acc;
}

}  // namespace

int train(const Config& cfg, const TrainRun& run, std::ostream& log) {
  Setup s = make_setup(cfg);
  for (const std::string& w : s.graph.warnings) log << "dynsim: warning: " << w << "\n";
  const Splits data = load_splits(cfg);
  const data::Transform train_tf = transform_for(cfg, data.train, true);
  transform_for(cfg, data.test, false);  // checks now, not after the first epoch
  std::string device_note;
  Context ctx = make_context(cfg, s.graph, &device_note);
  to_context(ctx, s.graph);
  // Checked before the output folder is touched: a rejected config leaves nothing behind.
  const int64_t B = cfg.get_int("train.batch"), accumulate = cfg.get_int("train.accumulate");
  const int64_t n_batches = data.train.size() / B;  // drop_last: equal micro-batches
  if (n_batches < accumulate)
    throw ConfigError(concat(cfg.where("train.batch"), ": ", data.train.size(), " training samples "
                             "give ", n_batches, " full batches of ", B, ", fewer than "
                             "train.accumulate = ", accumulate));
  // Micro-batches used per epoch: a final group smaller than train.accumulate is dropped (like
  // drop_last), so no gradient is carried across an epoch end, where checkpoints hold none.
  const int64_t used_batches = n_batches / accumulate * accumulate;

  std::string out_s = cfg.get_string("train.output");
  while (out_s.size() > 1 && out_s.back() == '/') out_s.pop_back();
  const fs::path out(out_s);
  const std::string leaf = out.filename().string();
  if (leaf.empty() || leaf == "." || leaf == "..")
    cfg.fail("train.output", concat("'", out_s, "' names no folder that dynsim can create"));
  const fs::path ckdir = out / "checkpoints";
  const bool resuming = run.resume || !run.resume_from.empty();
  if (fs::exists(out) && !resuming) {
    if (!run.overwrite)
      throw UsageError(concat("output folder '", out.string(), "' exists; pass --resume to "
                              "continue that training, --overwrite to start over, or choose "
                              "another train.output"));
    if (!fs::is_directory(out) || (!fs::is_empty(out) && !fs::exists(out / "events.jsonl")))
      throw UsageError(concat("'", out.string(), "' is not a dynsim training output; "
                              "--overwrite leaves it alone"));
    fs::remove_all(out);
  }

  // Optimiser.
  OptimizerHyper h;
  h.lr = cfg.get_double("optimizer.lr");
  h.momentum = cfg.get_double("optimizer.momentum");
  h.nesterov = cfg.get_bool("optimizer.nesterov");
  h.weight_decay = cfg.get_double("optimizer.weight_decay");
  h.beta1 = cfg.get_double("optimizer.beta1");
  h.beta2 = cfg.get_double("optimizer.beta2");
  h.eps = cfg.get_double("optimizer.eps");
  const std::string ok = cfg.get_string("optimizer.kind");
  Optimizer opt(ok == "sgd" ? OptimizerKind::SGD : ok == "adamw" ? OptimizerKind::AdamW : OptimizerKind::Adam,
                h, cfg.get_string("optimizer.groups") == "dynvision" ? dynvision_param_groups()
                                                                    : std::vector<ParamGroupRule>{});
  const double lr0 = h.lr, clip = cfg.get_double("optimizer.clip_grad_norm");
  const bool cosine = cfg.get_string("optimizer.schedule") == "cosine";
  const int t_max = int(cfg.get_int("optimizer.cosine_t_max"));
  const double eta_min = cfg.get_double("optimizer.eta_min");

  // Where we start.
  Progress p;
  if (resuming) p = resume_run(cfg, run, out, ckdir, s.graph.params, ctx, opt, log);
  // The loop advances these; the checkpoints and the report read them through p.
  int64_t &epoch = p.epoch, &step = p.step, &batch_in_epoch = p.batch_in_epoch;
  int64_t& samples = p.samples;  // samples seen since the run began (metrics.csv)
  double& best = p.best;
  fs::create_directories(ckdir);
  cfg.write_toml((out / "config.toml").string());
  cfg.write_json((out / "config.json").string());
  Report rep(out, run, log, p);
  rep.event({{"event", resuming ? "resume" : "start"},
             {"train_samples", data.train.size()},
             {"test_samples", data.test.size()},
             {"threads", ctx.threads()},
             {"device", device_note}});

  const int64_t epochs = cfg.get_int("train.epochs"), max_steps = cfg.get_int("train.max_steps");
  const int64_t log_every = cfg.get_int("train.log_every"), eval_every = cfg.get_int("train.eval_every");
  const int64_t every_steps = cfg.get_int("checkpoint.every_steps");
  const int keep_last = int(cfg.get_int("checkpoint.keep_last"));
  s.loss.scale = 1.0 / double(accumulate);

  const CheckpointWriter ckpt{cfg, ckdir, keep_last, s.graph.params, ctx, opt, p, rep};

  Bptt bp(ctx, s.graph, s.solver);
  ParamStore grads = Bptt::zero_grads(ctx, s.graph.params);
  rep.start_clock();
  // Running sums over the current log interval.
  Interval sum;
  double last_norm = std::nan("");
  double last_metric = std::nan("");
  const bool done_already = (max_steps > 0 && step >= max_steps) || epoch >= epochs;

  while (!done_already && epoch < epochs) {
    opt.set_lr(cosine ? cosine_lr(lr0, int(epoch), t_max, eta_min) : lr0);
    data::Batcher::Options bo;
    bo.batch_size = B;
    bo.shuffle = true;
    bo.drop_last = true;
    bo.seed = uint64_t(cfg.get_int("train.seed"));
    bo.epoch = epoch;
    bo.first_batch = batch_in_epoch;
    data::Batcher batcher(data.train, train_tf, bo);
    bool stop_now = false;
    while (auto batch = batcher.next()) {
      if (batch->index >= used_batches) break;
      const uint64_t global = uint64_t(epoch) * uint64_t(n_batches) + uint64_t(batch->index);
      auto [in, lab] = make_sequence(s, batch->x, batch->y, global);
      const LossValues lv = bp.run(run_input(s, ctx, in), lab, {}, s.loss, s.bopt, &grads);
      if (!std::isfinite(lv.total))
        throw DataError(concat("training diverged: loss ", lv.total, " at epoch ", epoch,
                               ", step ", step, " (lower optimizer.lr or enable clipping)"));
      sum.loss += lv.total, sum.ce += lv.ce, sum.act += lv.activity, ++sum.n;
      sum.valid += lv.valid, sum.correct += lv.correct;
      samples += batch->x.dim(0);
      batch_in_epoch = batch->index + 1;
      if (batch_in_epoch % accumulate != 0) continue;
      last_norm = clip > 0 ? clip_grad_norm(ctx, grads, clip) : std::nan("");
      opt.step(ctx, s.graph.params, grads);
      Bptt::zero(ctx, grads);
      ++step;
      const bool last_of_epoch = batch_in_epoch >= used_batches;
      if (step % log_every == 0 || last_of_epoch) {
        rep.train_row(sum, opt.lr(), last_norm, epochs, used_batches);
        sum = Interval();
      }
      if (every_steps > 0 && step % every_steps == 0 && !last_of_epoch) ckpt.save(std::nan(""));
      if (run.stop && run.stop->load() != 0) {
        stop_now = true;
        break;
      }
      if (max_steps > 0 && step >= max_steps) break;
    }
    rep.end_bar();
    const bool epoch_done = batch_in_epoch >= used_batches;
    if (epoch_done) {
      ++epoch;
      batch_in_epoch = 0;
      if (eval_every > 0 && epoch % eval_every == 0) {
        const StepAccuracy ea = run_eval(ctx, s, data.test, cfg.get_int("train.eval_batch"));
        last_metric = ea.accuracy();
        if (std::isfinite(last_metric) && !(last_metric <= best)) best = last_metric;
        rep.test_row(ea, last_metric, opt.lr(), data.test.size());
      }
      ckpt.save(last_metric);
      last_metric = std::nan("");
    }
    if (stop_now) return stopped_by_signal(run, epoch_done, ckpt, log);
    if (max_steps > 0 && step >= max_steps) {
      if (!epoch_done) ckpt.save(std::nan(""));
      break;
    }
  }
  to_host(ctx, s.graph);
  export_weights(s.graph, (out / "weights.safetensors").string());
  rep.finish();
  return 0;
}

int evaluate(const Config& cfg, const EvalRun& run, std::ostream& log) {
  Setup s = make_setup(cfg);
  if (!run.checkpoint.empty() && !run.weights.empty())
    throw UsageError("give --checkpoint or --weights, not both");
  if (!run.checkpoint.empty()) {
    const CheckpointData ck = read_checkpoint(run.checkpoint);
    TensorFile tf;
    for (const auto& e : ck.weights.entries()) tf.tensors[e.name] = e.value;
    import_weights(s.graph, tf, run.checkpoint);
  } else if (!run.weights.empty()) {
    import_weights(s.graph, load_safetensors(run.weights), run.weights);
  }
  if (run.split != "test" && run.split != "train")
    throw UsageError(concat("--split '", run.split, "': expected test or train"));
  const Splits data = load_splits(cfg);
  std::string device_note;
  Context ctx = make_context(cfg, s.graph, &device_note);
  to_context(ctx, s.graph);
  const auto t0 = std::chrono::steady_clock::now();
  const StepAccuracy acc =
      run_eval(ctx, s, run.split == "test" ? data.test : data.train, cfg.get_int("train.eval_batch"));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_eval(cfg, s.T, acc, run, secs, device_note, log);
  return 0;
}

}  // namespace dynsim::models
