// The input/label sequence pipeline (engine/dynamics/sequence.h): a plan per batch says, for each
// step, which data frame is shown (or non_input_value) and which label applies (or
// non_label_index); build_inputs / build_labels then apply it to the batch tensors.
#include "engine/dynamics/sequence.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "engine/core/errors.h"
#include "engine/core/rng.h"

namespace dynsim::seq {
namespace {

void check_pattern(const char* fn, const std::vector<int>& pattern) {
  if (pattern.empty()) throw DataError(concat(fn, ": the presentation pattern is empty"));
  for (size_t i = 0; i < pattern.size(); ++i)
    if (pattern[i] != 0 && pattern[i] != 1)
      throw DataError(concat(fn, ": presentation pattern entry ", i, " is ", pattern[i],
                             " (only 0 and 1 are allowed)"));
}

// Keeps the shuffle stream apart from other draws that share the user's seed (noise etc.).
constexpr uint64_t kShuffleDomain = 0x5345515348554646ull;  // "SEQSHUFF"

template <class T>
void fill_inputs(const Tensor& data, const SequencePlan& plan, float non_input_value,
                 const Tensor& out) {
  const int64_t B = out.dim(0), Tt = out.dim(1);
  const int64_t frame_size = out.numel() / (B * Tt);
  const T* src = data.data<T>();
  T* dst = out.data<T>();
  const T fill = T(non_input_value);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < Tt; ++t) {
      T* d = dst + (b * Tt + t) * frame_size;
      const int f = plan.frame[size_t(t)];
      if (f < 0) {
        for (int64_t e = 0; e < frame_size; ++e) d[e] = fill;
      } else {
        const T* s = src + (b * plan.data_steps + f) * frame_size;
        std::memcpy(d, s, size_t(frame_size) * sizeof(T));
      }
    }
}

template <class T>
void fill_schedules(const Tensor& frames, bool per_step, const std::vector<Schedule>& sched,
                    int T_steps, float background, const Tensor& out) {
  const int64_t B = out.dim(0);
  const int64_t frame_size = out.numel() / (B * T_steps);
  const T* src = frames.data<T>();
  T* dst = out.data<T>();
  const double bg = background;
  for (int64_t b = 0; b < B; ++b) {
    const Schedule& s = sched[size_t(b)];
    const int64_t end = s.duration < 0 ? int64_t(T_steps) : int64_t(s.onset) + s.duration;
    for (int64_t t = 0; t < T_steps; ++t) {
      T* d = dst + (b * T_steps + t) * frame_size;
      const T* f = src + (per_step ? b * T_steps + t : b) * frame_size;
      if (t < s.onset || t >= end) {
        for (int64_t e = 0; e < frame_size; ++e) d[e] = T(bg);
      } else if (s.contrast == 1.0) {  // exactly the frame, with no rounding detour
        std::memcpy(d, f, size_t(frame_size) * sizeof(T));
      } else {
        for (int64_t e = 0; e < frame_size; ++e) d[e] = T(bg + s.contrast * (double(f[e]) - bg));
      }
    }
  }
}

void check_float_host(const char* fn, const char* role, const Tensor& t) {
  if (!t.defined()) throw DataError(concat(fn, ": ", role, " is undefined"));
  if (!t.is_cpu()) throw DataError(concat(fn, ": ", role, " must be a host tensor, got ", t.str()));
  if (t.dtype() != DType::F32 && t.dtype() != DType::F64)
    throw DataError(concat(fn, ": ", role, " needs f32 or f64, got ", t.str()));
}

}  // namespace

std::vector<int> parse_pattern(const std::string& text) {
  if (text.empty()) throw DataError("parse_pattern: the presentation pattern is empty");
  std::vector<int> out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (ch != '0' && ch != '1')
      throw DataError(concat("parse_pattern: character ", i, " of \"", text, "\" is '", ch,
                             "' (a pattern is a string of 0 and 1)"));
    out.push_back(ch - '0');
  }
  return out;
}

std::vector<int> resample_pattern(const std::vector<int>& pattern, int T) {
  check_pattern("resample_pattern", pattern);
  if (T < 1) throw DataError(concat("resample_pattern: needs T >= 1 steps, got ", T));
  const int64_t P = int64_t(pattern.size());
  std::vector<int> out(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) out[size_t(t)] = pattern[size_t(t * P / T)];
  return out;
}

std::vector<int> shuffle_order(int P, uint64_t seed, uint64_t batch_index) {
  if (P < 1) throw DataError(concat("shuffle_order: needs P >= 1 entries, got ", P));
  std::vector<int> order(static_cast<size_t>(P));
  for (int i = 0; i < P; ++i) order[size_t(i)] = i;
  // Draw k uses Philox counter (batch_index, attempt k); 64 random bits reduced modulo i+1 have
  // a bias below i * 2^-64, irrelevant for patterns of a few hundred entries.
  uint32_t draw = 0;
  for (int i = P - 1; i >= 1; --i, ++draw) {
    const rng::U4 r = rng::bits(seed ^ kShuffleDomain, batch_index, draw);
    const uint64_t x = (uint64_t(r.v[0]) << 32) | r.v[1];
    std::swap(order[size_t(i)], order[size_t(x % uint64_t(i + 1))]);
  }
  return order;
}

std::vector<int> shuffle_pattern(const std::vector<int>& pattern, uint64_t seed,
                                 uint64_t batch_index) {
  check_pattern("shuffle_pattern", pattern);
  const std::vector<int> order = shuffle_order(int(pattern.size()), seed, batch_index);
  std::vector<int> out(pattern.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = pattern[size_t(order[i])];
  return out;
}

int reaction_steps(double reaction_ms, double dt) {
  if (!(dt > 0) || !std::isfinite(dt))
    throw DataError(concat("reaction_steps: dt must be positive and finite, got ", dt));
  if (!(reaction_ms >= 0) || !std::isfinite(reaction_ms))
    throw DataError(
        concat("reaction_steps: loss_reaction_time must be >= 0 ms, got ", reaction_ms));
  if (reaction_ms == 0) return 0;
  const double steps = std::ceil(reaction_ms / dt);
  if (steps > 1e9)
    throw DataError(concat("reaction_steps: ", reaction_ms, " ms / dt ", dt, " is too many steps"));
  return std::max(1, int(steps));
}

std::vector<uint8_t> reaction_mask(const std::vector<int>& resampled, double reaction_ms,
                                   double dt) {
  const int n = reaction_steps(reaction_ms, dt);
  for (size_t i = 0; i < resampled.size(); ++i)
    if (resampled[i] != 0 && resampled[i] != 1)
      throw DataError(concat("reaction_mask: pattern entry ", i, " is ", resampled[i],
                             " (only 0 and 1 are allowed)"));
  std::vector<uint8_t> mask(resampled.size(), 0);
  if (n == 0) return mask;
  for (size_t t = 0; t < resampled.size(); ++t) {
    const bool rising = resampled[t] == 1 && (t == 0 || resampled[t - 1] == 0);
    if (!rising) continue;
    for (size_t k = t; k < resampled.size() && k < t + size_t(n); ++k) mask[k] = 1;
  }
  return mask;
}

SequencePlan plan_sequence(const SequenceParams& p) {
  if (p.data_steps < 1)
    throw DataError(concat("plan_sequence: the data needs >= 1 time steps, got ", p.data_steps));
  if (p.n_timesteps < 1)
    throw DataError(concat("plan_sequence: n_timesteps must be >= 1, got ", p.n_timesteps));
  if (p.residual_steps < 0)
    throw DataError(concat("plan_sequence: residual steps must be >= 0, got ", p.residual_steps));
  check_pattern("plan_sequence", p.pattern);
  (void)reaction_steps(p.reaction_ms, p.dt);  // validates dt and the reaction time

  SequencePlan plan;
  plan.data_steps = p.data_steps;
  plan.residual_steps = p.residual_steps;
  plan.non_input_value = p.non_input_value;
  plan.non_label_index = p.non_label_index;
  // Only a single frame is expanded (and masked); multi-frame data and T = 1 models run as given.
  plan.expanded = p.data_steps == 1 && p.n_timesteps > 1;
  plan.real_steps = plan.expanded ? p.n_timesteps : p.data_steps;
  const int Tr = plan.real_steps, R = p.residual_steps;

  std::vector<int> labels_real(static_cast<size_t>(Tr));
  plan.frame.assign(size_t(Tr + R), -1);
  if (plan.expanded) {
    const std::vector<int> base =
        p.shuffle ? shuffle_pattern(p.pattern, p.seed, p.batch_index) : p.pattern;
    plan.pattern = resample_pattern(base, Tr);
    plan.reaction = reaction_mask(plan.pattern, p.reaction_ms, p.dt);
    for (int t = 0; t < Tr; ++t) {
      const bool on = plan.pattern[size_t(t)] == 1;
      plan.frame[size_t(t)] = on ? 0 : -1;
      labels_real[size_t(t)] = on && !plan.reaction[size_t(t)] ? 0 : -1;
    }
  } else {
    plan.pattern.assign(size_t(Tr), 1);
    plan.reaction.assign(size_t(Tr), 0);
    for (int t = 0; t < Tr; ++t) plan.frame[size_t(t)] = labels_real[size_t(t)] = t;
  }

  plan.residual.assign(size_t(Tr + R), 0);
  for (int t = Tr; t < Tr + R; ++t) plan.residual[size_t(t)] = 1;
  // The network answers R steps late, so its labels move right by R (spec §5).
  plan.label_from.assign(size_t(Tr + R), -1);
  const int shift = p.shift_labels_by_residual ? R : 0;
  for (int t = 0; t < Tr; ++t) plan.label_from[size_t(t + shift)] = labels_real[size_t(t)];
  return plan;
}

Tensor build_inputs(const Tensor& data, const SequencePlan& plan, float non_input_value) {
  const char* fn = "build_inputs";
  check_float_host(fn, "data", data);
  if (data.rank() != 4 && data.rank() != 5)
    throw DataError(concat(fn, ": data must be [B,T,C,H,W] or [B,C,H,W], got ", data.str()));
  const int64_t T_data = data.rank() == 5 ? data.dim(1) : 1;
  if (T_data != plan.data_steps)
    throw DataError(concat(fn, ": data ", data.str(), " has ", T_data,
                           " time steps but the plan expects ", plan.data_steps));
  if (plan.frame.size() != size_t(plan.total_steps()))
    throw DataError(concat(fn, ": the plan is inconsistent (", plan.frame.size(), " frames for ",
                           plan.total_steps(), " steps)"));
  const int64_t B = data.dim(0);
  Shape s{B, plan.total_steps(), data.dim(-3), data.dim(-2), data.dim(-1)};
  Tensor out = Tensor::empty(s, data.dtype());
  if (data.dtype() == DType::F32)
    fill_inputs<float>(data, plan, non_input_value, out);
  else
    fill_inputs<double>(data, plan, non_input_value, out);
  return out;
}

Tensor build_inputs(const Tensor& data, const SequencePlan& plan) {
  return build_inputs(data, plan, plan.non_input_value);
}

Tensor build_labels(const Tensor& labels, const SequencePlan& plan) {
  const char* fn = "build_labels";
  if (!labels.defined()) throw DataError(concat(fn, ": labels are undefined"));
  if (!labels.is_cpu() || labels.dtype() != DType::I32)
    throw DataError(concat(fn, ": labels must be a host i32 tensor, got ", labels.str()));
  // [B] and [B,1] give one label per sample for every step; [B,T_data] one per data step.
  const bool per_step = labels.rank() == 2 && labels.dim(1) != 1;
  if (labels.rank() != 1 && labels.rank() != 2)
    throw DataError(concat(fn, ": labels must be [B] or [B,T_data], got ", labels.str()));
  if (per_step && labels.dim(1) != plan.data_steps)
    throw DataError(concat(fn, ": labels ", labels.str(), " have ", labels.dim(1),
                           " steps but the data has ", plan.data_steps));
  if (plan.label_from.size() != size_t(plan.total_steps()))
    throw DataError(concat(fn, ": the plan is inconsistent (", plan.label_from.size(),
                           " labels for ", plan.total_steps(), " steps)"));
  const int64_t B = labels.dim(0), Tt = plan.total_steps();
  const int64_t stride = per_step ? labels.dim(1) : 1;
  Tensor out = Tensor::empty({B, Tt}, DType::I32);
  const int32_t* src = labels.data<int32_t>();
  int32_t* dst = out.data<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < Tt; ++t) {
      const int from = plan.label_from[size_t(t)];
      dst[b * Tt + t] =
          from < 0 ? int32_t(plan.non_label_index) : src[b * stride + (per_step ? from : 0)];
    }
  return out;
}

Tensor apply_schedules(const Tensor& frames, const std::vector<Schedule>& per_sample, int T,
                       float background) {
  const char* fn = "apply_schedules";
  check_float_host(fn, "frames", frames);
  if (T < 1) throw DataError(concat(fn, ": needs T >= 1 steps, got ", T));
  if (frames.rank() != 4 && frames.rank() != 5)
    throw DataError(concat(fn, ": frames must be [B,T,C,H,W] or [B,C,H,W], got ", frames.str()));
  const bool per_step = frames.rank() == 5;
  if (per_step && frames.dim(1) != T)
    throw DataError(
        concat(fn, ": frames ", frames.str(), " have ", frames.dim(1), " steps, but T = ", T));
  const int64_t B = frames.dim(0);
  if (int64_t(per_sample.size()) != B)
    throw DataError(concat(fn, ": ", per_sample.size(), " schedules for a batch of ", B));
  for (size_t b = 0; b < per_sample.size(); ++b) {
    const Schedule& s = per_sample[b];
    if (s.onset < 0)
      throw DataError(concat(fn, ": sample ", b, " has onset ", s.onset, " (must be >= 0)"));
    if (s.duration < -1)
      throw DataError(concat(fn, ": sample ", b, " has duration ", s.duration,
                             " (>= 0 steps, or -1 for until the end)"));
    if (!std::isfinite(s.contrast))
      throw DataError(concat(fn, ": sample ", b, " has contrast ", s.contrast));
  }
  Shape s{B, T, frames.dim(-3), frames.dim(-2), frames.dim(-1)};
  Tensor out = Tensor::empty(s, frames.dtype());
  if (frames.dtype() == DType::F32)
    fill_schedules<float>(frames, per_step, per_sample, T, background, out);
  else
    fill_schedules<double>(frames, per_step, per_sample, T, background, out);
  return out;
}

}  // namespace dynsim::seq
