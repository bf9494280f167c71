// The input/label sequence pipeline of DynVision (spec §5): presentation pattern resampling and
// shuffling, the reaction-time label mask, expansion of a single frame over n_timesteps and the
// R residual steps, plus per-sample stimulus schedules for scans inside one batch.
// Host-side only. Shapes: data [B,T_data,C,H,W] or [B,C,H,W] -> inputs [B,T_total,C,H,W];
// labels i32 [B] or [B,T_data] -> [B,T_total]. Masks use 1 = masked (label ignored).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/core/tensor.h"

namespace dynsim::seq {

// "1011" -> {1,0,1,1}. DataError for an empty string or any character other than 0 and 1.
std::vector<int> parse_pattern(const std::string& text);

// The pattern stretched onto T steps: out[t] = pattern[floor(t * P / T)] (integer arithmetic).
std::vector<int> resample_pattern(const std::vector<int>& pattern, int T);

// A random order of 0..P-1 (Fisher-Yates on the Philox stream with counter = batch_index, draw k
// in the attempt word): the same on every machine. Shuffled entry i is pattern[order[i]], like
// DynVision's base[torch.randperm(P)] (the semantics, not PyTorch's random stream).
std::vector<int> shuffle_order(int P, uint64_t seed, uint64_t batch_index);
// The base pattern permuted by shuffle_order (before resampling, as DynVision does); P = 1 is a
// no-op. One permutation per batch, shared by all its samples.
std::vector<int> shuffle_pattern(const std::vector<int>& pattern, uint64_t seed,
                                 uint64_t batch_index);

// Number of label steps hidden after each onset: max(1, ceil(reaction_ms / dt)), or 0 when
// reaction_ms == 0. The division is a plain double division, as in Python (0.1*3 / 0.1 -> 4 steps).
int reaction_steps(double reaction_ms, double dt);

// 1 for the first reaction_steps steps after every rising edge of the resampled pattern
// (t = 0 counts as an edge when pattern[0] = 1), clipped at the end; 0 elsewhere. Windows may run
// into steps where the pattern is 0 (those are masked anyway).
std::vector<uint8_t> reaction_mask(const std::vector<int>& resampled, double reaction_ms,
                                   double dt);

struct SequenceParams {
  int data_steps = 1;              // T of the data; 1 = a single frame to expand
  int n_timesteps = 1;             // the model's n_timesteps
  std::vector<int> pattern = {1};  // base presentation pattern (0/1)
  bool shuffle = false;            // shuffle_presentation_pattern (DyRCNN's default is true)
  uint64_t seed = 0;               // shuffle stream
  uint64_t batch_index = 0;        // one permutation per batch, shared by its samples
  double reaction_ms = 0;          // loss_reaction_time
  double dt = 2;
  int residual_steps = 0;  // R = n_residual_timesteps
  // true: labels move right by R and the first R are masked (spec §5, older DynVision);
  // false: labels stay in front and the R appended steps are masked (DynVision temporal.py at
  // 6aed6d7 writes new_labels[:, :T] = labels).
  bool shift_labels_by_residual = true;
  float non_input_value = 0;  // shown where the pattern is 0 and in residual steps
  int non_label_index = -1;   // label of masked steps
};

struct SequencePlan {
  int data_steps = 1;        // time steps the data must have
  int real_steps = 1;        // steps before the residual ones (n_timesteps if expanded)
  int residual_steps = 0;    // R
  bool expanded = false;     // a single frame was repeated (and masked)
  std::vector<int> pattern;  // resampled (shuffled) pattern over real_steps; all 1 if not expanded
  std::vector<uint8_t> reaction;  // reaction mask over real_steps (1 = masked)
  // Per step t < total_steps():
  std::vector<int> frame;         // data time index shown at t, or -1 for non_input_value
  std::vector<int> label_from;    // data time index whose label applies at t, or -1 (non_label)
  std::vector<uint8_t> residual;  // 1 for the R appended steps
  float non_input_value = 0;
  int non_label_index = -1;
  int total_steps() const { return real_steps + residual_steps; }
};

SequencePlan plan_sequence(const SequenceParams& p);

// [B,T_data,C,H,W] or [B,C,H,W] (T_data = 1), f32 or f64 -> [B,T_total,C,H,W] of the same dtype;
// masked and residual frames are filled with non_input_value (the plan's in the short form).
Tensor build_inputs(const Tensor& data, const SequencePlan& plan, float non_input_value);
Tensor build_inputs(const Tensor& data, const SequencePlan& plan);
// i32 [B] (one label per sample) or [B,T_data] -> i32 [B,T_total]; masked steps get the plan's
// non_label_index.
Tensor build_labels(const Tensor& labels, const SequencePlan& plan);

// A per-sample stimulus schedule: background before onset and from onset + duration on
// (duration -1 = until the end), background + contrast * (frame - background) in between.
struct Schedule {
  double contrast = 1;
  int onset = 0;
  int duration = -1;
};

// frames [B,T,C,H,W] (T must equal T) or [B,C,H,W] (repeated over T), f32 or f64;
// per_sample has B entries. Returns [B,T,C,H,W].
Tensor apply_schedules(const Tensor& frames, const std::vector<Schedule>& per_sample, int T,
                       float background);

}  // namespace dynsim::seq
