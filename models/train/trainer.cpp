// `dynsim train` / `dynsim eval` (models/train/trainer.h).
#include "models/train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/io/atomic_file.h"
#include "engine/io/checkpoint.h"
#include "engine/core/device.h"
#include "engine/optim/optimizer.h"
#include "engine/io/safetensors.h"
#include "engine/dynamics/sequence.h"
#include "engine/dynamics/stimulus.h"
#include "models/config/sim_config.h"
#include "models/common/weights.h"

namespace dynsim::models {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

ConfigSchema make_train_schema() {
  ConfigSchema s;
  add_model_keys(s);
  s.add_enum("data.dataset",
             {"fashion-mnist", "idx", "cifar10", "cifar100", "npy", "npz", "folder", "synthetic"},
             "fashion-mnist",
             "fashion-mnist (Debian's dataset-fashion-mnist), idx files, CIFAR binaries, .npy "
             "pairs, .npz archives, class-per-folder images, or a synthetic grating task");
  s.add_string("data.path", "",
               "fashion-mnist: its folder; cifar: the folder of .bin files; npz: the train "
               "archive; folder: the train root");
  s.add_string("data.test_path", "", "npz: the test archive; folder: the test root");
  s.add_string("data.train_images", "", "idx / npy: train images");
  s.add_string("data.train_labels", "", "idx / npy: train labels");
  s.add_string("data.test_images", "", "idx / npy: test images");
  s.add_string("data.test_labels", "", "idx / npy: test labels");
  s.add_int("data.train_subset", 0, "use the first N training images (0: all)").at_least(0);
  s.add_int("data.test_subset", 0, "use the first N test images (0: all)").at_least(0);
  s.add_int("data.synthetic_size", 512, "synthetic: training images (test: a quarter)").at_least(1);
  s.add_enum("data.fit", {"resize", "pad"}, "resize",
             "to the model input: bilinear resize, or centred zero-pad / centre-crop");
  s.add_int("data.random_crop_padding", 0, "training: random crop after zero-padding by N (0: off)")
      .at_least(0);
  s.add_bool("data.random_flip", false, "training: random horizontal flips");
  s.add_doubles("data.mean", {}, "per-channel normalisation mean (one value: all channels)");
  s.add_doubles("data.std", {}, "per-channel normalisation std");

  s.add_int("train.epochs", 1, "epochs").at_least(1);
  s.add_int("train.max_steps", 0, "stop after this many optimiser steps in all (0: no limit)")
      .at_least(0);
  s.add_int("train.batch", 32, "samples per micro-batch").at_least(1);
  s.add_int("train.accumulate", 1, "micro-batches per optimiser step").at_least(1);
  s.add_int("train.steps", 10, "n_timesteps: a frame is shown for this many steps").at_least(1);
  s.add_int("train.idle_steps", 0, "steps on a blank frame before each sequence").at_least(0);
  s.add_int("train.tbptt", 0, "truncated BPTT: cut every N real steps (0: off)").at_least(0);
  s.add_string("train.pattern", "1", "presentation pattern of 0/1 (spec §5)");
  s.add_bool("train.shuffle_pattern", false, "shuffle the pattern per batch");
  s.add_double("train.reaction_time", 0.0, "ms of labels masked after each onset").at_least(0);
  s.add_int("train.residual_steps", 0, "blank steps appended; labels shift right by as many")
      .at_least(0);
  s.add_double("train.non_input_value", 0.0, "value of blank frames");
  s.add_enum("train.memory", {"store-all", "checkpoint"}, "store-all",
             "reverse mode memory: keep every step, or recompute segments");
  s.add_int("train.checkpoint_segment", 5, "memory = checkpoint: steps per segment").at_least(1);
  s.add_int("train.seed", 0, "data order, augmentation and pattern shuffles").at_least(0);
  s.add_int("train.threads", 0, "CPU threads (0 = all cores)").at_least(0);
  s.add_enum("train.device", {"auto", "cpu", "cuda"}, "auto",
             "where to run (auto: the CUDA device when there is one, else the CPU)");
  s.add_enum("train.precision", {"fp32", "tf32", "bf16"}, "fp32",
             "fp32 (CUDA: TF32 off), tf32 (CUDA only: cuDNN and cuBLAS may use TF32 tensor ops; "
             "an error with device cpu, ignored when auto trains on the CPU) or bf16 (bf16 "
             "storage of the sequences, activations and their gradients, every op computed in "
             "f32, parameters, gradients, tau and losses f32; on the CPU too, emulated)");
  s.add_bool("train.deterministic", true,
             "CUDA: deterministic cuDNN algorithms only (a resumed run then ends bit for bit like "
             "an uninterrupted one); no effect on the CPU, which always is");
  s.add_int("train.log_every", 10, "optimiser steps per metrics row / progress line").at_least(1);
  s.add_int("train.eval_every", 1, "epochs between test-split evaluations (0: never)").at_least(0);
  s.add_int("train.eval_batch", 64, "samples per evaluation batch").at_least(1);
  s.add_string("train.output", "out/train", "output folder");

  s.add_double("loss.ce_weight", 1.0, "cross-entropy weight").at_least(0);
  s.add_double("loss.activity_weight", 0.0, "activity loss weight (DynVision: 2e-4)").at_least(0);
  s.add_enum("loss.activity_mode", {"legacy", "marked"}, "legacy",
             "legacy: every conv/linear output (before March 2026); marked: the listed areas");
  s.add_strings("loss.activity_areas", {}, "marked mode: areas whose rates are penalised");
  s.add_bool("loss.activity_signed", false, "marked mode: |mean| instead of L1 / n");

  s.add_enum("optimizer.kind", {"adam", "adamw", "sgd"}, "adam", "optimiser (DynVision: adam)");
  s.add_double("optimizer.lr", 2e-4, "base learning rate").greater_than(0);
  s.add_double("optimizer.momentum", 0.0, "sgd momentum").at_least(0);
  s.add_bool("optimizer.nesterov", false, "sgd: Nesterov momentum");
  s.add_double("optimizer.weight_decay", 5e-4,
               "adam/sgd: coupled L2 (DynVision); adamw: decoupled").at_least(0);
  s.add_double("optimizer.beta1", 0.9, "adam beta1").range(0, 1);
  s.add_double("optimizer.beta2", 0.999, "adam beta2").range(0, 1);
  s.add_double("optimizer.eps", 1e-8, "adam epsilon").greater_than(0);
  s.add_enum("optimizer.groups", {"dynvision", "none"}, "dynvision",
             "lr factors: recurrence x0.2, feedback x0.5 (dynvision) or none");
  s.add_double("optimizer.clip_grad_norm", 1.0, "global gradient-norm clip (0: off)").at_least(0);
  s.add_enum("optimizer.schedule", {"cosine", "none"}, "cosine", "cosine annealing per epoch");
  s.add_int("optimizer.cosine_t_max", 500, "cosine schedule period in epochs").at_least(1);
  s.add_double("optimizer.eta_min", 0.0, "cosine schedule floor").at_least(0);

  s.add_int("checkpoint.every_steps", 0, "also checkpoint every N optimiser steps (0: epochs only)")
      .at_least(0);
  s.add_int("checkpoint.keep_last", 3, "checkpoints kept besides the best").at_least(1);
  return s;
}

// ---- Data. ----

data::Dataset subset(data::Dataset ds, int64_t n) {
  if (n <= 0 || n >= ds.size()) return ds;
  ds.images = ds.images.slice(0, n).to_dtype(DType::F32);  // a copy: the rest is freed
  ds.labels = ds.labels.slice(0, n).to_dtype(DType::I32);
  return ds;
}

// A synthetic task for tests and demos: class k is a grating at orientation 180 k / K degrees
// with a random phase, on a grey background, plus Gaussian noise. Seeded.
data::Dataset synthetic(int64_t n, int K, int C, int H, int W, uint64_t seed) {
  data::Dataset ds;
  ds.images = Tensor::empty(Shape{n, C, H, W});
  ds.labels = Tensor::empty(Shape{n}, DType::I32);
  ds.n_classes = K;
  ds.source = "synthetic";
  const int64_t per = int64_t(C) * H * W;
  for (int64_t i = 0; i < n; ++i) {
    const int k = int(i % K);
    stim::GratingParams p;
    p.cycles = 3;
    p.orientation = 180.0 * k / K;
    p.phase = 360.0 * double(rng::bits(seed, uint64_t(i), 7).v[0]) / 4294967296.0;
    p.amplitude = 0.4;
    const Tensor g = stim::grating(C, H, W, p);
    const Tensor noise = stim::white_noise(C, H, W, 0.15, seed * 1000003u + uint64_t(i));
    float* dst = ds.images.data<float>() + i * per;
    for (int64_t j = 0; j < per; ++j)
      dst[j] = float(std::clamp(0.5 + g.item(j) + noise.item(j), 0.0, 1.0));
    ds.labels.data<int32_t>()[i] = k;
  }
  return ds;
}

std::string need(const Config& cfg, const std::string& key) {
  const std::string v = cfg.get_string(key);
  if (v.empty())
    cfg.fail(key, concat("data.dataset = '", cfg.get_string("data.dataset"), "' needs ", key));
  return v;
}

}  // namespace

const ConfigSchema& train_schema() {
  static const ConfigSchema schema = make_train_schema();
  return schema;
}

Splits load_splits(const Config& cfg) {
  const std::string kind = cfg.get_string("data.dataset");
  Splits s;
  if (kind == "fashion-mnist") {
    const std::string dir = cfg.get_string("data.path");
    const data::IdxPaths p =
        dir.empty() ? data::find_fashion_mnist() : data::find_fashion_mnist(dir);
    if (!p.found())
      throw NoInputError(concat("Fashion-MNIST not found under '",
                                dir.empty() ? "/usr/share/datasets/fashion-mnist" : dir,
                                "' (Debian: apt-get install dataset-fashion-mnist; or set "
                                "data.path)"));
    s.train = data::load_idx(p.train_images, p.train_labels);
    s.test = data::load_idx(p.test_images, p.test_labels);
  } else if (kind == "idx" || kind == "npy") {
    auto load = kind == "idx" ? data::load_idx : data::load_npy_pair;
    s.train = load(need(cfg, "data.train_images"), need(cfg, "data.train_labels"));
    s.test = load(need(cfg, "data.test_images"), need(cfg, "data.test_labels"));
  } else if (kind == "cifar10" || kind == "cifar100") {
    const std::string dir = need(cfg, "data.path");
    s.train = data::load_cifar(dir, kind == "cifar100", true);
    s.test = data::load_cifar(dir, kind == "cifar100", false);
  } else if (kind == "npz") {
    s.train = data::load_npz(need(cfg, "data.path"));
    s.test = data::load_npz(need(cfg, "data.test_path"));
  } else if (kind == "folder") {
    s.train = data::load_image_folder(need(cfg, "data.path"));
    s.test = data::load_image_folder(need(cfg, "data.test_path"), int(s.train.images.dim(2)),
                                     int(s.train.images.dim(3)));
  } else {
    const int64_t n = cfg.get_int("data.synthetic_size");
    const int K = int(cfg.get_int("model.n_classes"));
    const int C = int(cfg.get_int("model.input_channels")), H = int(cfg.get_int("model.input_height")),
              W = int(cfg.get_int("model.input_width"));
    const uint64_t seed = uint64_t(cfg.get_int("train.seed"));
    s.train = synthetic(n, K, C, H, W, seed * 2 + 1);
    s.test = synthetic(std::max<int64_t>(n / 4, K), K, C, H, W, seed * 2 + 2);
  }
  s.train = subset(std::move(s.train), cfg.get_int("data.train_subset"));
  s.test = subset(std::move(s.test), cfg.get_int("data.test_subset"));
  const int K = int(cfg.get_int("model.n_classes"));
  for (const data::Dataset* d : {&s.train, &s.test}) {
    if (d->size() == 0) throw DataError(concat(d->source, ": no samples"));
    if (d->n_classes > K)
      cfg.fail("model.n_classes", concat(K, " classes, but ", d->source, " has labels up to ",
                                         d->n_classes - 1));
  }
  return s;
}

data::Transform transform_for(const Config& cfg, const data::Dataset& ds, bool training) {
  data::Transform t;
  const int C = int(cfg.get_int("model.input_channels"));
  const int c_data = int(ds.images.dim(1));
  if (c_data != C) {
    if (c_data == 1 && C == 3)
      t.channels = 3;
    else
      cfg.fail("model.input_channels",
               concat(C, " channels, but ", ds.source, " has ", c_data, " (grey images can be "
                      "replicated to 3, nothing else)"));
  }
  t.height = int(cfg.get_int("model.input_height"));
  t.width = int(cfg.get_int("model.input_width"));
  t.fit = cfg.get_string("data.fit") == "pad" ? data::Transform::Fit::Pad : data::Transform::Fit::Resize;
  if (training) {
    t.crop_padding = int(cfg.get_int("data.random_crop_padding"));
    t.random_crop = t.crop_padding > 0;
    t.random_flip = cfg.get_bool("data.random_flip");
  }
  for (double v : cfg.get_doubles("data.mean")) t.mean.push_back(float(v));
  for (double v : cfg.get_doubles("data.std")) {
    if (!(v > 0)) cfg.fail("data.std", concat("every std must be > 0, got ", v));
    t.std.push_back(float(v));
  }
  for (const auto* l : {&t.mean, &t.std})
    if (l->size() > 1 && int(l->size()) != C)
      cfg.fail(l == &t.mean ? "data.mean" : "data.std",
               concat(l->size(), " values for ", C, " channels (give one or ", C, ")"));
  return t;
}

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

// Accuracy at the last step that has labels (what a sequence ends with); NaN when none has.
double last_step_accuracy(const StepAccuracy& a) {
  for (size_t t = a.valid.size(); t-- > 0;)
    if (a.valid[t]) return double(a.correct[t]) / double(a.valid[t]);
  return std::nan("");
}

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

std::string iso_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Appends lines to a file, flushing each (metrics survive a kill).
class LineFile {
 public:
  LineFile() = default;
  void open(const fs::path& p) {
    path_ = p;
    f_.open(p, std::ios::app);
    if (!f_) throw IoError(concat(p.string(), ": cannot open for appending"));
  }
  void line(const std::string& s) {
    f_ << s << '\n';
    f_.flush();
    if (!f_) throw IoError(concat(path_.string(), ": write failed"));
  }

 private:
  fs::path path_;
  std::ofstream f_;
};

const char* kMetricsHeader =
    "split,epoch,step,loss,ce,activity,accuracy,lr,grad_norm,samples,wall_s";

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

std::string fmt(double v, int prec = 6) {
  if (!std::isfinite(v)) return "";
  std::ostringstream o;
  o << std::setprecision(prec) << v;
  return o.str();
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
  int64_t epoch = 0, step = 0, batch_in_epoch = 0, samples_at_start = 0;
  double best = std::nan("");
  if (resuming) {
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
    for (auto& e : s.graph.params.entries()) {
      if (!ck.weights.has(e.name))
        throw DataError(concat("checkpoint ", path, ": no weight '", e.name, "'"));
      const Tensor& w = ck.weights.get(e.name);
      if (w.shape() != e.value.shape() || w.dtype() != e.value.dtype())
        throw DataError(concat("checkpoint ", path, ": weight '", e.name, "' is ", w.str(),
                               ", the model needs ", e.value.str()));
      ctx.copy(e.value, w);
    }
    opt.load_state(ctx, ck.optimizer_state, s.graph.params);
    epoch = ck.epoch;
    step = ck.step;
    batch_in_epoch = ck.batch_in_epoch;
    const json tj = json::parse(ck.trainer_json);
    if (tj.contains("best") && tj["best"].is_number()) best = tj["best"].get<double>();
    if (tj.contains("samples") && tj["samples"].is_number_integer())
      samples_at_start = tj["samples"].get<int64_t>();
    if (fs::exists(out / "metrics.csv")) truncate_metrics(out / "metrics.csv", step);
    log << "dynsim: resuming from " << path << " (epoch " << epoch << ", step " << step << ")\n";
  }
  fs::create_directories(ckdir);
  cfg.write_toml((out / "config.toml").string());
  cfg.write_json((out / "config.json").string());
  const bool new_metrics = !fs::exists(out / "metrics.csv");
  LineFile metrics, events;
  metrics.open(out / "metrics.csv");
  if (new_metrics) metrics.line(kMetricsHeader);
  events.open(out / "events.jsonl");
  auto event = [&](json j) {
    j["time"] = iso_now();
    j["step"] = step;
    j["epoch"] = epoch;
    events.line(j.dump());
  };
  event({{"event", resuming ? "resume" : "start"},
         {"train_samples", data.train.size()},
         {"test_samples", data.test.size()},
         {"threads", ctx.threads()},
         {"device", device_note}});

  const int64_t epochs = cfg.get_int("train.epochs"), max_steps = cfg.get_int("train.max_steps");
  const int64_t log_every = cfg.get_int("train.log_every"), eval_every = cfg.get_int("train.eval_every");
  const int64_t every_steps = cfg.get_int("checkpoint.every_steps");
  const int keep_last = int(cfg.get_int("checkpoint.keep_last"));
  s.loss.scale = 1.0 / double(accumulate);

  int64_t samples = samples_at_start;  // samples seen since the run began (metrics.csv)
  auto save = [&](double metric) {
    CheckpointData d;
    d.epoch = epoch;
    d.step = step;
    d.batch_in_epoch = batch_in_epoch;
    d.metric = metric;
    for (const auto& e : s.graph.params.entries()) d.weights.add(e.name, ctx.to_host(e.value), e.trainable);
    d.optimizer_state = opt.state();
    for (auto& [n, t] : d.optimizer_state) t = ctx.to_host(t);
    d.trainer_json = json{{"best", std::isfinite(best) ? json(best) : json(nullptr)},
                          {"lr", opt.lr()}, {"seed", cfg.get_int("train.seed")},
                          {"samples", samples}}.dump();
    d.config_toml = cfg.to_toml();
    char name[32];
    std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
    write_checkpoint(ckdir.string(), name, d);
    prune_checkpoints(ckdir.string(), keep_last);
    event({{"event", "checkpoint"}, {"path", (ckdir / name).string()},
           {"metric", std::isfinite(metric) ? json(metric) : json(nullptr)}});
  };

  Bptt bp(ctx, s.graph, s.solver);
  ParamStore grads = Bptt::zero_grads(ctx, s.graph.params);
  const auto t0 = std::chrono::steady_clock::now();
  auto wall = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  const bool bar = !run.quiet && isatty(STDERR_FILENO) && &log == &std::cerr;
  // Running sums over the current log interval.
  double sum_loss = 0, sum_ce = 0, sum_act = 0, last_norm = std::nan("");
  int64_t sum_valid = 0, sum_correct = 0, sum_n = 0;
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
      sum_loss += lv.total, sum_ce += lv.ce, sum_act += lv.activity, ++sum_n;
      sum_valid += lv.valid, sum_correct += lv.correct;
      samples += batch->x.dim(0);
      batch_in_epoch = batch->index + 1;
      if (batch_in_epoch % accumulate != 0) continue;
      last_norm = clip > 0 ? clip_grad_norm(ctx, grads, clip) : std::nan("");
      opt.step(ctx, s.graph.params, grads);
      Bptt::zero(ctx, grads);
      ++step;
      const bool last_of_epoch = batch_in_epoch >= used_batches;
      if (step % log_every == 0 || last_of_epoch) {
        const double acc = sum_valid ? double(sum_correct) / double(sum_valid) : std::nan("");
        metrics.line(concat("train,", epoch, ",", step, ",", fmt(sum_loss / sum_n), ",",
                            fmt(sum_ce / sum_n), ",", fmt(sum_act / sum_n), ",", fmt(acc), ",",
                            fmt(opt.lr()), ",", fmt(last_norm), ",", samples, ",", fmt(wall(), 4)));
        if (bar) {
          const int width = 24, done = int(width * batch_in_epoch / used_batches);
          log << "\repoch " << epoch + 1 << "/" << epochs << " [" << std::string(size_t(done), '#')
              << std::string(size_t(width - done), '.') << "] " << batch_in_epoch << "/"
              << used_batches << " loss " << fmt(sum_loss / sum_n, 4) << " acc " << fmt(acc, 3)
              << " lr " << fmt(opt.lr(), 3) << std::flush;
        } else if (!run.quiet) {
          log << "epoch " << epoch + 1 << "/" << epochs << " step " << step << " loss "
              << fmt(sum_loss / sum_n, 4) << " acc " << fmt(acc, 3) << " lr " << fmt(opt.lr(), 3)
              << " " << fmt(wall(), 3) << " s\n";
        }
        sum_loss = sum_ce = sum_act = 0, sum_valid = sum_correct = sum_n = 0;
      }
      if (every_steps > 0 && step % every_steps == 0 && !last_of_epoch) save(std::nan(""));
      if (run.stop && run.stop->load() != 0) {
        stop_now = true;
        break;
      }
      if (max_steps > 0 && step >= max_steps) break;
    }
    if (bar) log << "\n";
    const bool epoch_done = batch_in_epoch >= used_batches;
    if (epoch_done) {
      ++epoch;
      batch_in_epoch = 0;
      if (eval_every > 0 && epoch % eval_every == 0) {
        const StepAccuracy ea = run_eval(ctx, s, data.test, cfg.get_int("train.eval_batch"));
        last_metric = ea.accuracy();
        if (std::isfinite(last_metric) && !(last_metric <= best)) best = last_metric;
        metrics.line(concat("test,", epoch - 1, ",", step, ",", fmt(ea.loss), ",,,",
                            fmt(last_metric), ",", fmt(opt.lr()), ",,", data.test.size(), ",",
                            fmt(wall(), 4)));
        const double last_step = last_step_accuracy(ea);
        event({{"event", "eval"}, {"split", "test"}, {"accuracy", last_metric},
               {"last_step_accuracy", std::isfinite(last_step) ? json(last_step) : json(nullptr)},
               {"loss", ea.loss}});
        if (!run.quiet)
          log << "epoch " << epoch << ": test accuracy " << fmt(last_metric, 4) << " (last step "
              << fmt(last_step, 4) << ")\n";
      }
      save(last_metric);
      last_metric = std::nan("");
    }
    if (stop_now) {
      if (!epoch_done) save(std::nan(""));
      const int sig = run.stop->load();
      event({{"event", "stopped"}, {"signal", sig}});
      log << "dynsim: stopped by signal " << sig << " after step " << step
          << "; checkpoint written, continue with --resume\n";
      return int(ExitCode::Preempted);
    }
    if (max_steps > 0 && step >= max_steps) {
      if (!epoch_done) save(std::nan(""));
      break;
    }
  }
  to_host(ctx, s.graph);
  export_weights(s.graph, (out / "weights.safetensors").string());
  const json summary{{"epochs", epoch}, {"steps", step}, {"best_test_accuracy",
                      std::isfinite(best) ? json(best) : json(nullptr)}, {"wall_s", wall()}};
  write_file_atomic((out / "summary.json").string(), summary.dump(2) + "\n");
  event({{"event", "done"}});
  if (!run.quiet)
    log << "dynsim: trained " << step << " steps in " << fmt(wall(), 4) << " s; weights in "
        << (out / "weights.safetensors").string() << "\n";
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
  const std::string path = run.output.empty()
                               ? (fs::path(cfg.get_string("train.output")) / ("eval_" + run.split + ".csv")).string()
                               : run.output;
  std::string csv = "step,time_ms,valid,correct,accuracy\n";
  const double dt = cfg.get_double("dynamics.dt");
  for (int t = 0; t < s.T; ++t) {
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
  return 0;
}

}  // namespace dynsim::models
