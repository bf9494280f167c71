// Training and evaluation of a model on a labelled image dataset (`dynsim train`, `dynsim
// eval`): the config schema (model and dynamics keys shared with simulate, plus data, train,
// loss, optimizer and checkpoint), the data pipeline (dataset -> transform -> DynVision's
// sequence expansion and label masking), the loop (reverse mode through time, gradient
// accumulation, clipping, optimiser, cosine schedule), metrics.csv / events.jsonl, checkpoints
// and exact resume, and stopping on SIGTERM / SIGUSR1 after a checkpoint (exit 75).
#pragma once
#include <atomic>
#include <ostream>
#include <string>
#include <vector>

#include "engine/autograd/bptt.h"
#include "engine/io/config.h"
#include "engine/io/dataset.h"

namespace dynsim::models {

const ConfigSchema& train_schema();

struct TrainRun {
  bool resume = false;        // continue from the newest valid checkpoint under the output
  std::string resume_from;    // or from this checkpoint directory
  bool overwrite = false;     // replace an earlier training output
  bool quiet = false;         // no progress output
  const std::atomic<int>* stop = nullptr;  // set (to the signal number) to stop after a step
};

// Runs the training described by cfg. Returns 0 when done, 75 when stopped by *stop (after
// writing a checkpoint). Progress goes to `log`.
int train(const Config& cfg, const TrainRun& run, std::ostream& log);

struct EvalRun {
  std::string checkpoint;  // a checkpoint directory, or
  std::string weights;     // a safetensors file (DynVision names); neither: model.weights / init
  std::string output;      // CSV path ("" = <train.output>/eval_<split>.csv)
  std::string split = "test";
  bool quiet = false;
};
// Accuracy per time step on a split, written as CSV (step, time_ms, valid, correct, accuracy).
int evaluate(const Config& cfg, const EvalRun& run, std::ostream& log);

// Pieces shared with tests.
struct Splits {
  data::Dataset train, test;
};
Splits load_splits(const Config& cfg);
data::Transform transform_for(const Config& cfg, const data::Dataset& ds, bool training);
// Accuracy per real step over a dataset (forward only).
struct StepAccuracy {
  std::vector<int64_t> valid, correct;
  double loss = 0;  // mean total loss over batches
  double accuracy() const;
};

}  // namespace dynsim::models
