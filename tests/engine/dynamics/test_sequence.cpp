// The input/label sequence pipeline: DynVision's masking acceptance test T7 (spec §8, from
// tests/base/test_temporal_masking.py, T=10, dt=2), the residual example of spec §5, seeded
// pattern shuffles, per-sample schedules and clear errors for bad settings.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "engine/dynamics/sequence.h"

using namespace dynsim;
using namespace dynsim::seq;

namespace {

// T7's model: n_timesteps 10, dt 2, a single frame to expand, no shuffling.
SequenceParams t7(const std::string& pattern, double reaction_ms) {
  SequenceParams p;
  p.data_steps = 1;
  p.n_timesteps = 10;
  p.dt = 2;
  p.pattern = parse_pattern(pattern);
  p.reaction_ms = reaction_ms;
  return p;
}

std::vector<int> masked_steps(const SequencePlan& plan) {
  std::vector<int> out;
  for (int t = 0; t < plan.total_steps(); ++t)
    if (plan.label_from[size_t(t)] < 0) out.push_back(t);
  return out;
}

// A [B,1,C,H,W] batch whose every element is 10 + its index, so no value equals a fill value.
Tensor single_frames(int64_t B, int64_t C, int64_t H, int64_t W, DType t = DType::F32) {
  Tensor x = Tensor::empty({B, 1, C, H, W}, t);
  for (int64_t i = 0; i < x.numel(); ++i) x.set(i, 10.0 + double(i));
  return x;
}

Tensor labels_of(const std::vector<double>& v) {
  return Tensor::from({int64_t(v.size())}, v, DType::I32);
}

}  // namespace

TEST_CASE("sequence: parse and resample a pattern (T7: 1011 over 10 steps)") {
  CHECK(parse_pattern("1011") == std::vector<int>{1, 0, 1, 1});
  CHECK(resample_pattern({1, 0, 1, 1}, 10) == std::vector<int>{1, 1, 1, 0, 0, 1, 1, 1, 1, 1});
  CHECK(resample_pattern({1}, 4) == std::vector<int>{1, 1, 1, 1});
  CHECK(resample_pattern({1, 0}, 10) == std::vector<int>{1, 1, 1, 1, 1, 0, 0, 0, 0, 0});
  // Longer pattern than steps: floor(t * P / T) picks every other entry.
  CHECK(resample_pattern({1, 0, 0, 1, 1, 0}, 3) == std::vector<int>{1, 0, 1});
  CHECK(resample_pattern(parse_pattern("1100111100"), 10) == parse_pattern("1100111100"));
}

TEST_CASE("sequence: T7 1011 with lossrt 4 masks the labels at t in {0,1,3,4,5,6}") {
  SequencePlan plan = plan_sequence(t7("1011", 4));
  CHECK(plan.expanded);
  CHECK(plan.total_steps() == 10);
  CHECK(plan.pattern == std::vector<int>{1, 1, 1, 0, 0, 1, 1, 1, 1, 1});
  CHECK(masked_steps(plan) == std::vector<int>{0, 1, 3, 4, 5, 6});
  // Inputs are blanked only where the pattern is 0 (the reaction window hides labels only).
  CHECK(plan.frame == std::vector<int>{0, 0, 0, -1, -1, 0, 0, 0, 0, 0});

  Tensor x = single_frames(2, 3, 2, 2);
  Tensor in = build_inputs(x, plan, 0.0f);
  CHECK(in.shape() == Shape{2, 10, 3, 2, 2});
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 10; ++t)
      for (int64_t e = 0; e < 12; ++e) {
        const double want = plan.pattern[size_t(t)] ? x.item(b * 12 + e) : 0.0;
        REQUIRE(in.item((b * 10 + t) * 12 + e) == want);
      }
  Tensor lab = build_labels(labels_of({5, 7}), plan);
  CHECK(lab.shape() == Shape{2, 10});
  const std::vector<double> want0 = {-1, -1, 5, -1, -1, -1, -1, 5, 5, 5};
  const std::vector<double> want1 = {-1, -1, 7, -1, -1, -1, -1, 7, 7, 7};
  CHECK(lab.slice(0, 1).to_vector() == want0);
  CHECK(lab.slice(1, 2).to_vector() == want1);
}

TEST_CASE("sequence: T7 1100111100 with lossrt 4 leaves only t = 6 and 7 valid") {
  SequencePlan plan = plan_sequence(t7("1100111100", 4));
  std::vector<int> valid;
  for (int t = 0; t < 10; ++t)
    if (plan.label_from[size_t(t)] >= 0) valid.push_back(t);
  CHECK(valid == std::vector<int>{6, 7});
}

TEST_CASE("sequence: T7 reaction steps: 6 ms and 5 ms at dt 2 both mask 3 steps") {
  CHECK(reaction_steps(6, 2) == 3);
  CHECK(reaction_steps(5, 2) == 3);  // ceil(2.5)
  CHECK(reaction_steps(4, 2) == 2);
  CHECK(reaction_steps(0.5, 2) == 1);  // at least one step
  CHECK(reaction_steps(0, 2) == 0);
  CHECK(reaction_steps(1.1, 0.1) == 11);
  // A plain double division, as in Python: 0.1*3 / 0.1 = 3.0000000000000004 -> 4 steps.
  CHECK(reaction_steps(0.1 * 3, 0.1) == 4);
  for (double ms : {6.0, 5.0}) {
    SequencePlan plan = plan_sequence(t7("1", ms));  // a static image still has an onset at 0
    CHECK(masked_steps(plan) == std::vector<int>{0, 1, 2});
    CHECK(plan.reaction == std::vector<uint8_t>{1, 1, 1, 0, 0, 0, 0, 0, 0, 0});
  }
  // Without a reaction time a static image masks nothing.
  CHECK(masked_steps(plan_sequence(t7("1", 0))).empty());
}

TEST_CASE("sequence: T7 reaction mask of [1,0,1,1,0,1,1,1,1,1] is [1,1,1,1,0,1,1,0,0,0]") {
  // Convention: 1 = label masked (DynVision's _compute_reaction_mask returns True to ignore).
  CHECK(reaction_mask({1, 0, 1, 1, 0, 1, 1, 1, 1, 1}, 4, 2) ==
        std::vector<uint8_t>{1, 1, 1, 1, 0, 1, 1, 0, 0, 0});
  CHECK(reaction_mask({1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 4, 2) ==
        std::vector<uint8_t>{1, 1, 0, 0, 0, 0, 0, 0, 0, 0});
  CHECK(reaction_mask({0, 0, 1, 1, 1, 1, 1, 1, 1, 1}, 4, 2) ==
        std::vector<uint8_t>{0, 0, 1, 1, 0, 0, 0, 0, 0, 0});
  CHECK(reaction_mask(std::vector<int>(10, 0), 4, 2) == std::vector<uint8_t>(10, 0));
  CHECK(reaction_mask(std::vector<int>(10, 1), 0, 2) == std::vector<uint8_t>(10, 0));
  // A window longer than the rest of the sequence is clipped.
  CHECK(reaction_mask({0, 0, 0, 1}, 10, 2) == std::vector<uint8_t>{0, 0, 0, 1});
}

TEST_CASE("sequence: T7 non_input_value = -1 fills the masked inputs") {
  SequenceParams p = t7("10", 0);
  p.non_input_value = -1;
  SequencePlan plan = plan_sequence(p);
  Tensor x = single_frames(2, 1, 2, 2);
  for (const Tensor& in : {build_inputs(x, plan), build_inputs(x, plan, -1.0f)}) {
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t t = 0; t < 10; ++t)
        for (int64_t e = 0; e < 4; ++e)
          REQUIRE(in.item((b * 10 + t) * 4 + e) == (t < 5 ? x.item(b * 4 + e) : -1.0));
  }
}

TEST_CASE("sequence: T7 multi-frame input is neither expanded nor masked") {
  SequenceParams p = t7("1011", 4);
  p.n_timesteps = 5;
  p.data_steps = 5;
  SequencePlan plan = plan_sequence(p);
  CHECK_FALSE(plan.expanded);
  CHECK(plan.total_steps() == 5);
  CHECK(masked_steps(plan).empty());
  CHECK(plan.frame == std::vector<int>{0, 1, 2, 3, 4});
  Tensor x = Tensor::empty({2, 5, 3, 2, 2}, DType::F64);
  for (int64_t i = 0; i < x.numel(); ++i) x.set(i, 10.0 + double(i));
  Tensor in = build_inputs(x, plan, 0.0f);
  CHECK(in.shape() == x.shape());
  CHECK(in.to_vector() == x.to_vector());
  CHECK(build_labels(labels_of({5, 5}), plan).to_vector() == std::vector<double>(10, 5));
  // Per-step labels of multi-frame data are kept step by step.
  Tensor per_step = Tensor::from({2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 0}, DType::I32);
  CHECK(build_labels(per_step, plan).to_vector() == per_step.to_vector());
}

TEST_CASE("sequence: T7 a T = 1 model does not expand") {
  SequenceParams p = t7("1", 4);
  p.n_timesteps = 1;
  SequencePlan plan = plan_sequence(p);
  CHECK_FALSE(plan.expanded);
  CHECK(plan.total_steps() == 1);
  Tensor x = single_frames(2, 3, 2, 2);
  CHECK(build_inputs(x, plan, 0.0f).shape() == Shape{2, 1, 3, 2, 2});
  Tensor x4 = x.view({2, 3, 2, 2});  // [B,C,H,W] is one frame
  CHECK(build_inputs(x4, plan, 0.0f).to_vector() == x.to_vector());
  CHECK(build_labels(labels_of({5, 5}), plan).shape() == Shape{2, 1});
}

TEST_CASE("sequence: residual steps R=4, T=10: labels [-1 x4, y x10], 14 frames") {
  SequenceParams p = t7("1", 0);
  p.residual_steps = 4;
  SequencePlan plan = plan_sequence(p);
  CHECK(plan.total_steps() == 14);
  Tensor x = single_frames(2, 1, 1, 2);
  Tensor in = build_inputs(x, plan, 0.0f);
  CHECK(in.shape() == Shape{2, 14, 1, 1, 2});
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 14; ++t) {
      CHECK(plan.residual[size_t(t)] == (t >= 10));
      for (int64_t e = 0; e < 2; ++e)
        REQUIRE(in.item((b * 14 + t) * 2 + e) == (t < 10 ? x.item(b * 2 + e) : 0.0));
    }
  Tensor lab = build_labels(labels_of({3, 8}), plan);
  std::vector<double> want = {-1, -1, -1, -1};
  want.resize(14, 3);
  CHECK(lab.slice(0, 1).to_vector() == want);

  // Residual steps combine with the pattern: the masks move right with the labels.
  p = t7("1011", 4);
  p.residual_steps = 2;
  plan = plan_sequence(p);
  CHECK(masked_steps(plan) == std::vector<int>{0, 1, 2, 3, 5, 6, 7, 8});
  CHECK(plan.frame == std::vector<int>{0, 0, 0, -1, -1, 0, 0, 0, 0, 0, -1, -1});

  // DynVision at temporal.py 6aed6d7 keeps the labels in front instead.
  p = t7("1", 0);
  p.residual_steps = 4;
  p.shift_labels_by_residual = false;
  want.assign(10, 3);
  want.resize(14, -1);
  CHECK(build_labels(labels_of({3, 8}), plan_sequence(p)).slice(0, 1).to_vector() == want);
}

TEST_CASE("sequence: the shuffle is a seeded, reproducible permutation of the base pattern") {
  const std::vector<int> base = parse_pattern("1110010001101");
  std::set<std::vector<int>> seen;
  for (uint64_t batch = 0; batch < 20; ++batch) {
    std::vector<int> a = shuffle_pattern(base, 42, batch);
    CHECK(a == shuffle_pattern(base, 42, batch));  // same seed and batch, same order
    std::vector<int> sa = a, sb = base;
    std::sort(sa.begin(), sa.end());
    std::sort(sb.begin(), sb.end());
    CHECK(sa == sb);
    seen.insert(a);
  }
  CHECK(seen.size() > 10);  // batches draw different orders
  CHECK(shuffle_pattern(base, 1, 0) != shuffle_pattern(base, 2, 0));
  CHECK(shuffle_pattern({1}, 3, 4) == std::vector<int>{1});

  // The order itself is a permutation, and over many batches every value lands at every
  // position (Fisher-Yates reaches all orders).
  std::vector<std::vector<int>> hits(8, std::vector<int>(8, 0));
  for (uint64_t batch = 0; batch < 400; ++batch) {
    std::vector<int> o = shuffle_order(8, 9, batch);
    std::vector<int> sorted = o;
    std::sort(sorted.begin(), sorted.end());
    for (int i = 0; i < 8; ++i) REQUIRE(sorted[size_t(i)] == i);
    for (int i = 0; i < 8; ++i) hits[size_t(i)][size_t(o[size_t(i)])]++;
  }
  for (const auto& row : hits)
    for (int h : row) CHECK(h > 20);  // 50 expected per cell
  CHECK(shuffle_order(1, 9, 0) == std::vector<int>{0});

  // The plan shuffles the base pattern before resampling (DynVision's order): the resampled
  // pattern is made of blocks of equal values, one block per base entry.
  SequenceParams p = t7("1011", 0);
  p.shuffle = true;
  p.seed = 7;
  for (uint64_t batch = 0; batch < 8; ++batch) {
    p.batch_index = batch;
    SequencePlan plan = plan_sequence(p);
    const std::vector<int> base_shuffled = shuffle_pattern(p.pattern, 7, batch);
    CHECK(plan.pattern == resample_pattern(base_shuffled, 10));
    // The 0 takes the block of its new position: 3 steps at base index 0 or 2, else 2.
    const auto zero =
        std::find(base_shuffled.begin(), base_shuffled.end(), 0) - base_shuffled.begin();
    CHECK(std::count(plan.pattern.begin(), plan.pattern.end(), 0) == (zero % 2 == 0 ? 3 : 2));
  }
  // Exact values pin the stream (Philox4x32-10 + Fisher-Yates) across machines and compilers.
  CHECK(shuffle_order(10, 123, 0) == std::vector<int>{3, 6, 8, 0, 7, 4, 1, 9, 2, 5});
  CHECK(shuffle_order(10, 123, 5) == std::vector<int>{9, 8, 2, 0, 6, 3, 4, 7, 1, 5});
  CHECK(shuffle_pattern(parse_pattern("1000000000"), 123, 5) == parse_pattern("0001000000"));
}

TEST_CASE("sequence: per-sample schedules set onset, duration and contrast") {
  Tensor x = Tensor::from({3, 1, 1, 2}, {1, 3, 2, 4, 5, -1}, DType::F32);
  std::vector<Schedule> s(3);
  s[0] = {1.0, 0, -1};  // the frame throughout
  s[1] = {0.5, 2, 3};   // half contrast at t = 2, 3, 4
  s[2] = {2.0, 4, 10};  // doubled from t = 4 on (duration past the end)
  const float bg = 1.0f;
  Tensor out = apply_schedules(x, s, 6, bg);
  CHECK(out.shape() == Shape{3, 6, 1, 1, 2});
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t t = 0; t < 6; ++t)
      for (int64_t e = 0; e < 2; ++e) {
        const double f = x.item(b * 2 + e);
        const int64_t end =
            s[size_t(b)].duration < 0 ? 6 : s[size_t(b)].onset + s[size_t(b)].duration;
        const bool on = t >= s[size_t(b)].onset && t < end;
        const double want = on ? bg + s[size_t(b)].contrast * (f - bg) : bg;
        REQUIRE(out.item((b * 6 + t) * 2 + e) == want);
      }
  // Frames that already vary over time keep their own frame at each step.
  Tensor movie = Tensor::empty({1, 4, 1, 1, 1}, DType::F64);
  for (int64_t t = 0; t < 4; ++t) movie.set(t, double(t + 2));
  Tensor m = apply_schedules(movie, {{3.0, 1, 2}}, 4, 0.0f);
  CHECK(m.to_vector() == std::vector<double>{0, 9, 12, 0});
  // Onset beyond the end shows only the background; duration 0 shows nothing.
  CHECK(apply_schedules(movie, {{1.0, 9, -1}}, 4, 0.5f).to_vector() == std::vector<double>(4, 0.5));
  CHECK(apply_schedules(movie, {{1.0, 1, 0}}, 4, 0.5f).to_vector() == std::vector<double>(4, 0.5));
}

TEST_CASE("sequence: bad settings give clear DataErrors") {
  CHECK_THROWS_WITH_AS(parse_pattern(""), doctest::Contains("pattern is empty"), DataError);
  CHECK_THROWS_WITH_AS(parse_pattern("10a1"), doctest::Contains("character 2 of \"10a1\" is 'a'"),
                       DataError);
  CHECK_THROWS_WITH_AS(parse_pattern("1 0"), doctest::Contains("a string of 0 and 1"), DataError);
  CHECK_THROWS_WITH_AS(resample_pattern({}, 10), doctest::Contains("pattern is empty"), DataError);
  CHECK_THROWS_WITH_AS(resample_pattern({1, 2}, 10), doctest::Contains("entry 1 is 2"), DataError);
  CHECK_THROWS_WITH_AS(resample_pattern({1}, 0), doctest::Contains("needs T >= 1"), DataError);
  CHECK_THROWS_WITH_AS(reaction_steps(-1, 2), doctest::Contains("loss_reaction_time must be >= 0"),
                       DataError);
  CHECK_THROWS_WITH_AS(reaction_steps(4, 0), doctest::Contains("dt must be positive"), DataError);
  CHECK_THROWS_WITH_AS(shuffle_order(0, 1, 2), doctest::Contains("needs P >= 1"), DataError);

  SequenceParams p = t7("1011", 4);
  p.residual_steps = -1;
  CHECK_THROWS_WITH_AS(plan_sequence(p), doctest::Contains("residual steps must be >= 0, got -1"),
                       DataError);
  p = t7("1011", 4);
  p.n_timesteps = -3;
  CHECK_THROWS_WITH_AS(plan_sequence(p), doctest::Contains("n_timesteps must be >= 1, got -3"),
                       DataError);
  p = t7("1011", 4);
  p.data_steps = 0;
  CHECK_THROWS_WITH_AS(plan_sequence(p), doctest::Contains("needs >= 1 time steps"), DataError);
  p = t7("1011", 4);
  p.pattern.clear();
  CHECK_THROWS_WITH_AS(plan_sequence(p), doctest::Contains("plan_sequence: the presentation"),
                       DataError);

  SequencePlan plan = plan_sequence(t7("1011", 4));
  Tensor movie = Tensor::zeros({2, 3, 1, 2, 2});
  CHECK_THROWS_WITH_AS(build_inputs(movie, plan, 0.0f),
                       doctest::Contains("has 3 time steps but the plan expects 1"), DataError);
  CHECK_THROWS_WITH_AS(build_inputs(Tensor::zeros({2, 2}), plan, 0.0f),
                       doctest::Contains("data must be [B,T,C,H,W] or [B,C,H,W]"), DataError);
  CHECK_THROWS_WITH_AS(build_inputs(Tensor::zeros({2, 1, 2, 2}, DType::I32), plan, 0.0f),
                       doctest::Contains("needs f32 or f64"), DataError);
  CHECK_THROWS_WITH_AS(build_labels(Tensor::zeros({2}), plan), doctest::Contains("host i32 tensor"),
                       DataError);
  CHECK_THROWS_WITH_AS(build_labels(Tensor::zeros({2, 4}, DType::I32), plan),
                       doctest::Contains("have 4 steps but the data has 1"), DataError);

  Tensor x = Tensor::zeros({2, 1, 2, 2});
  CHECK_THROWS_WITH_AS(apply_schedules(x, {{}}, 4, 0.0f),
                       doctest::Contains("1 schedules for a batch of 2"), DataError);
  CHECK_THROWS_WITH_AS(apply_schedules(x, {{1.0, -1, 2}, {}}, 4, 0.0f),
                       doctest::Contains("sample 0 has onset -1"), DataError);
  CHECK_THROWS_WITH_AS(apply_schedules(x, {{}, {1.0, 0, -2}}, 4, 0.0f),
                       doctest::Contains("sample 1 has duration -2"), DataError);
  CHECK_THROWS_WITH_AS(apply_schedules(Tensor::zeros({2, 3, 1, 2, 2}), {{}, {}}, 4, 0.0f),
                       doctest::Contains("have 3 steps, but T = 4"), DataError);
  CHECK_THROWS_WITH_AS(apply_schedules(x, {{}, {}}, 0, 0.0f), doctest::Contains("needs T >= 1"),
                       DataError);
}
