// `dynsim train` / `dynsim eval` (models/train/trainer.h): the train schema, the datasets it
// names (load_splits, the synthetic grating task) and their transforms. Siblings: trainer.cpp
// (setup, loop, evaluation), trainer_resume.cpp, trainer_report.cpp.
#include "models/train/trainer.h"

#include <algorithm>

#include "engine/dynamics/stimulus.h"
#include "models/config/sim_config.h"

namespace dynsim::models {

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

}  // namespace dynsim::models
