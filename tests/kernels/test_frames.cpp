// Repeated input frames (kernels/frames.h), the Scheduler's once-per-distinct-frame saving: the
// flags against two independent references on random sequences with planted repeats (the planted
// frame identities, and an element-by-element comparison of the raw bits), f32 and f64, idle steps
// with a first frame equal or not to the idle value, -0 != +0, equal NaN payloads equal, and the
// argument checks. The gpu suite (Skipped without a device): the CUDA twin's flags are the CPU's.
#include <cstring>
#include <limits>
#include <random>

#include "engine/core/device.h"
#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

// A sequence [B, T, frame...] and the flags its planting implies: every frame carries an identity
// (-1: the idle frame's values, else a fresh random frame), step s repeats when every sample's
// identity at s equals the one at s - 1.
struct Planted {
  Tensor x;
  int64_t idle = 0;
  double idle_value = 0;
  std::vector<int32_t> want;
  std::string kinds;  // one digit per recorded step
  std::string what;
};

// Step kinds: 0 fresh frames everywhere, 1 every sample repeats, 2 all but one sample repeat,
// 3 every sample returns to its frame of two steps back, 4 every sample shows the idle frame.
Planted plant(int64_t B, int64_t T, const std::vector<int64_t>& frame, int64_t idle,
              double idle_value, DType t, uint64_t seed) {
  Planted p;
  p.idle = idle;
  p.idle_value = idle_value;
  std::vector<int64_t> dims = {B, T};
  dims.insert(dims.end(), frame.begin(), frame.end());
  p.x = Tensor::empty(Shape(dims), t);
  const int64_t fe = B * T > 0 ? p.x.numel() / (B * T) : 0;
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> val(-1, 1);
  std::uniform_int_distribution<int> kind(0, 4);
  std::vector<std::vector<int>> id(size_t(B), std::vector<int>(size_t(T), -1));
  int next_id = 0;
  auto set_frame = [&](int64_t b, int64_t tr, int ident, int64_t copy_from) {
    id[size_t(b)][size_t(tr)] = ident;
    for (int64_t i = 0; i < fe; ++i) {
      const int64_t e = (b * T + tr) * fe + i;
      p.x.set(e, ident == -1      ? idle_value
                 : copy_from >= 0 ? p.x.item((b * T + copy_from) * fe + i)
                                  : val(g));
    }
  };
  std::string kinds;
  for (int64_t tr = 0; tr < T; ++tr) {
    int k = kind(g);
    if ((k == 1 || k == 2) && tr == 0) k = 0;
    if (k == 3 && tr < 2) k = 0;
    if (k == 2 && B < 2) k = 0;
    kinds += char('0' + k);
    const int64_t odd = std::uniform_int_distribution<int64_t>(0, std::max<int64_t>(B - 1, 0))(g);
    for (int64_t b = 0; b < B; ++b) {
      if (k == 4)
        set_frame(b, tr, -1, -1);
      else if (k == 1 || (k == 2 && b != odd))
        set_frame(b, tr, id[size_t(b)][size_t(tr - 1)], tr - 1);
      else if (k == 3)
        set_frame(b, tr, id[size_t(b)][size_t(tr - 2)], tr - 2);
      else
        set_frame(b, tr, next_id++, -1);
    }
  }
  p.want.assign(size_t(idle + T), 0);
  for (int64_t s = 1; s < idle + T; ++s) {
    bool same = true;
    for (int64_t b = 0; b < B; ++b) {
      const int prev = s - 1 < idle ? -1 : id[size_t(b)][size_t(s - 1 - idle)];
      const int cur = s < idle ? -1 : id[size_t(b)][size_t(s - idle)];
      same = same && prev == cur;
    }
    p.want[size_t(s)] = same;
  }
  p.kinds = kinds;
  p.what = concat(dtype_name(t), " x", p.x.shape().str(), " idle ", idle, " (", idle_value,
                  ") steps ", kinds);
  return p;
}

// The raw bits of element e (zero-extended).
uint64_t bits_at(const Tensor& x, int64_t e) {
  uint64_t b = 0;
  const size_t w = dtype_size(x.dtype());
  std::memcpy(&b, static_cast<const char*>(x.raw()) + size_t(e) * w, w);
  return b;
}

// Brute force: element by element, step by step, on the bits.
std::vector<int32_t> brute_force(const Tensor& x, int64_t idle, double idle_value) {
  const int64_t B = x.dim(0), T = x.dim(1), fe = B * T > 0 ? x.numel() / (B * T) : 0;
  Tensor idle_el = Tensor::from(Shape{1}, {idle_value}, x.dtype());
  const uint64_t ib = bits_at(idle_el, 0);
  auto bits = [&](int64_t b, int64_t s, int64_t i) {
    return s < idle ? ib : bits_at(x, (b * T + (s - idle)) * fe + i);
  };
  std::vector<int32_t> f(size_t(idle + T), 0);
  for (int64_t s = 1; s < idle + T; ++s) {
    int32_t same = 1;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < fe; ++i)
        if (bits(b, s, i) != bits(b, s - 1, i)) same = 0;
    f[size_t(s)] = same;
  }
  return f;
}

std::vector<int32_t> as_vector(const Tensor& flags) {
  const int32_t* p = flags.data<int32_t>();
  return std::vector<int32_t>(p, p + flags.numel());
}

std::vector<int32_t> run_cpu(const Tensor& x, int64_t idle, double idle_value) {
  Context ctx;
  Tensor flags = Tensor::empty(Shape{idle + x.dim(1)}, DType::I32);
  flags.data<int32_t>()[0] = 7;  // overwritten
  ops::repeated_frames(ctx, x, idle, idle_value, flags);
  return as_vector(flags);
}

std::vector<Planted> random_cases(DType t) {
  std::vector<Planted> cases;
  uint64_t seed = 100;
  const std::vector<std::vector<int64_t>> frames = {{5}, {3, 4, 4}, {2, 3}, {1}};
  for (int64_t B : {1, 2, 3})
    for (int64_t idle : {0, 1, 3})
      for (const auto& fr : frames)
        for (double iv : {0.0, 0.5})
          for (int rep = 0; rep < 2; ++rep) cases.push_back(plant(B, 9, fr, idle, iv, t, ++seed));
  return cases;
}

// A hand-made sequence [2, 7, 2] with idle steps 2 and idle value 0: +0 equals the idle frame,
// -0 does not; identical NaN payloads repeat, different ones do not.
template <class T>
Tensor signed_zero_nan_sequence() {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const U quiet = sizeof(T) == 4 ? U(0x7fc00000u) : U(0x7ff8000000000000ull);
  auto nan_with = [&](U payload) {
    const U b = quiet | payload;
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
  };
  Tensor x = Tensor::zeros({2, 7, 2}, dtype_of<T>());
  T* p = x.data<T>();
  auto at = [&](int b, int tr, int i) -> T& { return p[(b * 7 + tr) * 2 + i]; };
  // tr 0: all +0 (repeats the idle frame); tr 1: sample 0 element 1 is -0; tr 2 the same;
  // tr 3 all +0 again; tr 4: NaN payload 1 in sample 1; tr 5 the same; tr 6: payload 2.
  at(0, 1, 1) = at(0, 2, 1) = T(-0.0);
  at(1, 4, 0) = at(1, 5, 0) = nan_with(1);
  at(1, 6, 0) = nan_with(2);
  return x;
}
const std::vector<int32_t> kSignedZeroNanWant = {0, 1, 1, 0, 1, 0, 0, 1, 0};

bool no_cuda_device() {
  if (cuda_device_count() > 0) return false;
  MESSAGE("SKIPPED: no CUDA device");
  return true;
}

}  // namespace

TEST_CASE("frames: planted repeats equal a bitwise brute force (f32, f64, idle steps)") {
  for (DType t : {DType::F32, DType::F64}) {
    int repeats = 0, partial = 0;
    for (const Planted& p : random_cases(t)) {
      CAPTURE(p.what);
      const std::vector<int32_t> got = run_cpu(p.x, p.idle, p.idle_value);
      REQUIRE(got == p.want);
      REQUIRE(got == brute_force(p.x, p.idle, p.idle_value));
      for (size_t s = size_t(p.idle) + 1; s < got.size(); ++s) repeats += got[s];
      partial += int(p.kinds.find('2') != std::string::npos);
    }
    // The random cases exercise both outcomes and the partial repeats.
    CHECK(repeats > 50);
    CHECK(partial > 10);
  }
}

TEST_CASE("frames: idle steps repeat; a first frame repeats the idle frame only bit for bit") {
  for (DType t : {DType::F32, DType::F64}) {
    CAPTURE(dtype_name(t));
    // 0.1 is rounded to the dtype as ops::fill does: a first frame of T(0.1) repeats.
    Tensor x = Tensor::empty({2, 3, 4}, t);
    x.fill(0.1);
    CHECK(run_cpu(x, 3, 0.1) == std::vector<int32_t>{0, 1, 1, 1, 1, 1});
    CHECK(run_cpu(x, 0, 0.1) == std::vector<int32_t>{0, 1, 1});
    CHECK(run_cpu(x, 2, 0.2) == std::vector<int32_t>{0, 1, 0, 1, 1});
    // One element of one sample's first frame off: no repeat at the first recorded step.
    x.set(1 * 12 + 3, 0.1 + 1e-3);
    CHECK(run_cpu(x, 2, 0.1) == std::vector<int32_t>{0, 1, 0, 0, 1});
    // -0 against an idle value of +0, and +0 against -0.
    Tensor z = Tensor::zeros({1, 2, 3}, t);
    CHECK(run_cpu(z, 1, 0.0) == std::vector<int32_t>{0, 1, 1});
    CHECK(run_cpu(z, 1, -0.0) == std::vector<int32_t>{0, 0, 1});
    // A NaN idle value: the first frame repeats it when its bits are T(NaN)'s.
    const double qnan = std::numeric_limits<double>::quiet_NaN();
    Tensor n = Tensor::empty({1, 2, 3}, t);
    n.fill(qnan);
    CHECK(run_cpu(n, 2, qnan) == std::vector<int32_t>{0, 1, 1, 1});
  }
}

TEST_CASE("frames: -0 differs from +0, identical NaN payloads repeat, different ones do not") {
  CHECK(run_cpu(signed_zero_nan_sequence<float>(), 2, 0.0) == kSignedZeroNanWant);
  CHECK(run_cpu(signed_zero_nan_sequence<double>(), 2, 0.0) == kSignedZeroNanWant);
  CHECK(brute_force(signed_zero_nan_sequence<float>(), 2, 0.0) == kSignedZeroNanWant);
}

TEST_CASE("frames: empty batches, steps and frames") {
  // Vacuous repeats: no sample, or an empty frame, never differs; no recorded step at all.
  CHECK(run_cpu(Tensor::zeros({0, 3, 2}), 1, 0.0) == std::vector<int32_t>{0, 1, 1, 1});
  CHECK(run_cpu(Tensor::zeros({2, 3, 0}), 0, 0.0) == std::vector<int32_t>{0, 1, 1});
  CHECK(run_cpu(Tensor::zeros({2, 0, 4}), 2, 0.0) == std::vector<int32_t>{0, 1});
  CHECK(run_cpu(Tensor::zeros({2, 1, 4}), 0, 0.0) == std::vector<int32_t>{0});
}

TEST_CASE("frames: bad arguments name the op and the argument") {
  Context ctx;
  const Tensor x = Tensor::zeros({2, 3, 4});
  const Tensor ok = Tensor::zeros({5}, DType::I32);
  auto fails = [&](const Tensor& in, int64_t idle, const Tensor& flags, const char* role) {
    CAPTURE(role);
    CHECK_THROWS_WITH_AS(ops::repeated_frames(ctx, in, idle, 0.0, flags),
                         doctest::Contains("repeated_frames"), DataError);
    CHECK_THROWS_WITH_AS(ops::repeated_frames(ctx, in, idle, 0.0, flags), doctest::Contains(role),
                         DataError);
  };
  CHECK_NOTHROW(ops::repeated_frames(ctx, x, 2, 0.0, ok));
  fails(x, 2, Tensor::zeros({4}, DType::I32), "flags");                      // [idle + T] wrong
  fails(x, 2, Tensor::zeros({5, 1}, DType::I32), "flags");                   // rank
  fails(x, 2, Tensor::zeros({5}, DType::F32), "flags");                      // dtype
  fails(x, 2, Tensor(), "flags");                                            // undefined
  fails(Tensor::zeros({2, 3}), 2, Tensor::zeros({5}, DType::I32), "input");  // rank < 3
  fails(Tensor::zeros({6}), 2, ok, "input");
  fails(x, -1, Tensor::zeros({2}, DType::I32), "idle_steps");
  fails(Tensor::zeros({2, 3, 4}, DType::I32), 2, ok, "f32, f64 or bf16");
  fails(Tensor(), 2, ok, "input");
}

TEST_CASE("frames: the CUDA twin's flags are the CPU's" * doctest::test_suite("gpu")) {
  if (no_cuda_device()) return;
  ContextOptions o;
  o.device = Device::Cuda;
  Context gpu(o);
  auto on_gpu = [&](const Tensor& x, int64_t idle, double iv) {
    const Tensor flags = gpu.zeros(Shape{idle + x.dim(1)}, DType::I32);
    ops::repeated_frames(gpu, gpu.to_device(x), idle, iv, flags);
    return as_vector(gpu.to_host(flags));
  };
  for (DType t : {DType::F32, DType::F64})
    for (const Planted& p : random_cases(t)) {
      CAPTURE(p.what);
      const std::vector<int32_t> want = run_cpu(p.x, p.idle, p.idle_value);
      REQUIRE(want == p.want);
      REQUIRE(on_gpu(p.x, p.idle, p.idle_value) == want);
    }
  CHECK(on_gpu(signed_zero_nan_sequence<float>(), 2, 0.0) == kSignedZeroNanWant);
  CHECK(on_gpu(signed_zero_nan_sequence<double>(), 2, 0.0) == kSignedZeroNanWant);
  Tensor z = Tensor::zeros({1, 2, 3});
  CHECK(on_gpu(z, 1, -0.0) == std::vector<int32_t>{0, 0, 1});
  // A longer sequence (many blocks): every step repeats but one element of one late frame.
  Tensor big = Tensor::zeros({3, 50, 8, 32, 32});
  big.fill(0.25);
  big.set((2 * 50 + 37) * 8 * 32 * 32 + 5000, 0.5);
  std::vector<int32_t> want_big = run_cpu(big, 4, 0.25);
  CHECK(want_big[4 + 37] == 0);
  CHECK(want_big[4 + 38] == 0);
  CHECK(on_gpu(big, 4, 0.25) == want_big);
  // Host tensors and host flags are refused by name.
  CHECK_THROWS_WITH_AS(ops::repeated_frames(gpu, z, 1, 0.0, gpu.zeros(Shape{3}, DType::I32)),
                       doctest::Contains("repeated_frames"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::repeated_frames(gpu, gpu.to_device(z), 1, 0.0, Tensor::zeros({3}, DType::I32)),
      doctest::Contains("flags"), DataError);
}
