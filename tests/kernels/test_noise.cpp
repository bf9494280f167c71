// The counter-based noise stream (engine/core/rng.h, kernels/noise_*.cpp): Philox4x32-10 known
// answers, portable_log against std::log, reproducibility by (seed, offset), independence of the
// thread count, the first two moments, gaussian_noise_forward/backward, and CPU vs CUDA bit for
// bit.
#include <cmath>
#include <cstring>

#include "engine/core/rng.h"
#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

Tensor normals(Context& c, uint64_t seed, uint64_t offset, int64_t n, double mean, double std,
               DType t = DType::F32) {
  Tensor y = Tensor::empty({n}, t);
  ops::fill_normal(c, seed, offset, mean, std, y);
  return y;
}

Context with_threads(int threads, uint64_t seed = 0) {
  ContextOptions o;
  o.threads = threads;
  o.seed = seed;
  return Context(o);
}

// gaussian_noise with the stream re-seeded at every forward, so the noise is a fixed function
// of the input and the gradient check sees y = x + sigma z with z constant.
CaseBuilder noise_case(const Shape& s, double sigma, uint64_t seed) {
  return [=](DType t) {
    OpCase c;
    c.name = concat("gaussian_noise sigma=", sigma, " ", s.str());
    c.input_names = {"x"};
    c.inputs = {random_uniform(s, -2, 2, seed, t)};
    c.differentiable = {true};
    c.forward = [sigma](Context& ctx, const std::vector<Tensor>& in) {
      ctx.rng().set_state(1234, 99);
      NoiseParams p;
      p.sigma = sigma;
      Tensor y = ctx.empty(in[0].shape(), in[0].dtype());
      ops::gaussian_noise_forward(ctx, p, in[0], y);
      return std::vector<Tensor>{y};
    };
    c.backward = [](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                    const std::vector<Tensor>& g,
                    GradMode m) { ops::gaussian_noise_backward(ctx, gout[0], g[0], m); };
    return c;
  };
}

}  // namespace

TEST_CASE("rng: Philox4x32-10 known-answer vectors (Random123 kat_vectors)") {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    rng::U4 c{{k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}};
    rng::U4 r = rng::philox4x32_10(c, k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) {
      CAPTURE(i);
      CHECK(r.v[i] == k.out[i]);
    }
  }
  // bits() lays out (index, attempt) as the counter and the seed as the key.
  rng::U4 b = rng::bits(0xffffffffffffffffull, 0xffffffffffffffffull, 0xffffffffu);
  rng::U4 c{{0xffffffff, 0xffffffff, 0xffffffff, 0}};
  rng::U4 want = rng::philox4x32_10(c, 0xffffffff, 0xffffffff);
  CHECK(std::memcmp(&b, &want, sizeof b) == 0);
}

TEST_CASE("rng: portable_log agrees with std::log to < 4e-16 relative") {
  std::vector<double> xs = {1.0,
                            2.0,
                            0.5,
                            0.1,
                            10.0,
                            1e-300,
                            1e300,
                            2.2250738585072014e-308,
                            1.7976931348623157e308,
                            1.4142135623730951,
                            1.4142135623730949,
                            0.70710678118654757,
                            0.70710678118654746};
  for (int k = 1; k <= 15; ++k) {  // near 1, where log x ~ x - 1 is small
    xs.push_back(1.0 + std::pow(10.0, -k));
    xs.push_back(1.0 - std::pow(10.0, -k));
  }
  xs.push_back(std::nextafter(1.0, 2.0));
  xs.push_back(std::nextafter(1.0, 0.0));
  Tensor mant = random_uniform({200000}, 1.0, 2.0, 71),
         expo = random_ints({200000}, -1020, 1020, 72, DType::F64);
  for (int64_t i = 0; i < mant.numel(); ++i)
    xs.push_back(std::ldexp(mant.item(i), int(expo.item(i))));
  Tensor unit = random_uniform({200000}, 0.0, 1.0, 73);  // the range the polar method feeds it
  for (int64_t i = 0; i < unit.numel(); ++i)
    if (unit.item(i) > 0) xs.push_back(unit.item(i));
  double worst = 0, worst_x = 0;
  for (double x : xs) {
    const double want = std::log(x), got = rng::portable_log(x);
    const double rel = want == 0 ? std::abs(got) : std::abs(got - want) / std::abs(want);
    if (rel > worst) {
      worst = rel;
      worst_x = x;
    }
  }
  INFO("worst relative error ", worst, " at x = ", worst_x);
  CHECK(worst < 4e-16);
}

TEST_CASE("noise: the same (seed, offset) gives the same values; the offset shifts the stream") {
  Context ctx;
  Tensor a = normals(ctx, 7, 100, 5000, 0.0, 1.0), b = normals(ctx, 7, 100, 5000, 0.0, 1.0);
  require_equal(a, b, "same seed and offset");
  // Element i at offset 101 is element i + 1 at offset 100: a counter-based stream.
  Tensor c = normals(ctx, 7, 101, 4999, 0.0, 1.0);
  for (int64_t i = 0; i < c.numel(); ++i) REQUIRE(c.item(i) == a.item(i + 1));
  // Different offsets or seeds give different values (elementwise).
  Tensor d = normals(ctx, 7, 5100, 5000, 0.0, 1.0), e = normals(ctx, 8, 100, 5000, 0.0, 1.0);
  int64_t same_d = 0, same_e = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    same_d += a.item(i) == d.item(i);
    same_e += a.item(i) == e.item(i);
  }
  CHECK(same_d == 0);
  CHECK(same_e == 0);
  // mean + std * z: the same z (rounded to f32 first), shifted and scaled.
  Tensor s = normals(ctx, 7, 100, 5000, 3.0, 0.5);
  for (int64_t i = 0; i < s.numel(); ++i) REQUIRE(s.item(i) == float(3.0 + 0.5 * a.item(i)));
  // Raw bits follow the same counter layout.
  Tensor u0 = Tensor::empty({64}, DType::I32), u1 = Tensor::empty({63}, DType::I32);
  ops::fill_uniform_bits(ctx, 7, 0, u0);
  ops::fill_uniform_bits(ctx, 7, 1, u1);
  for (int64_t i = 0; i < u1.numel(); ++i) REQUIRE(u1.item(i) == u0.item(i + 1));
  CHECK(uint32_t(int32_t(u0.item(5))) == rng::bits(7, 5, 0).v[0]);
}

TEST_CASE("noise: the stream does not depend on the thread count") {
  Context c1 = with_threads(1), c2 = with_threads(2);
  for (DType t : {DType::F32, DType::F64}) {
    Tensor a = normals(c1, 3, 12345, 100000, 0.0, 1.0, t);
    Tensor b = normals(c2, 3, 12345, 100000, 0.0, 1.0, t);
    require_equal(b, a, "fill_normal, 2 threads vs 1");
  }
  NoiseParams p;
  p.sigma = 0.3;
  Context n1 = with_threads(1, 5), n2 = with_threads(2, 5);
  Tensor x = random_uniform({4, 8, 32, 32}, -1, 1, 3, DType::F32);
  Tensor y1 = Tensor::empty(x.shape()), y2 = Tensor::empty(x.shape());
  ops::gaussian_noise_forward(n1, p, x, y1);
  ops::gaussian_noise_forward(n2, p, x, y2);
  require_equal(y2, y1, "gaussian_noise_forward, 2 threads vs 1");
}

TEST_CASE("noise: mean ~ 0 and std ~ sigma over 1e6 draws") {
  Context ctx = with_threads(2);
  const int64_t n = 1000000;
  const double sigma = 0.7;
  for (DType t : {DType::F32, DType::F64}) {
    CAPTURE(std::string(dtype_name(t)));
    Tensor z = normals(ctx, 11, 0, n, 0.0, sigma, t);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; ++i) s += z.item(i);
    const double mean = s / n;
    for (int64_t i = 0; i < n; ++i) s2 += (z.item(i) - mean) * (z.item(i) - mean);
    const double var = s2 / (n - 1);
    // 5 standard errors: se(mean) = sigma / sqrt(n); se(var) = sigma^2 sqrt(2 / (n - 1)).
    CHECK(std::abs(mean) < 5 * sigma / std::sqrt(double(n)));
    CHECK(std::abs(var - sigma * sigma) < 5 * sigma * sigma * std::sqrt(2.0 / (n - 1)));
    // The tails look normal: P(|z| > 2 sigma) = 0.0455, binomial se ~ 2.1e-4.
    int64_t tail = 0;
    for (int64_t i = 0; i < n; ++i) tail += std::abs(z.item(i)) > 2 * sigma;
    CHECK(std::abs(double(tail) / n - 0.0455003) < 5 * std::sqrt(0.0455 * 0.9545 / n));
  }
}

TEST_CASE("noise: gaussian_noise_forward adds sigma z from the context's stream") {
  ContextOptions o;
  o.seed = 42;
  Context ctx(o);
  NoiseParams p;
  p.sigma = 0.25;
  Tensor x = random_uniform({2, 3, 8, 8}, -1, 1, 4, DType::F32), y = Tensor::empty(x.shape());
  const int64_t n = x.numel();
  CHECK(ctx.rng().offset() == 0);
  ops::gaussian_noise_forward(ctx, p, x, y);
  CHECK(ctx.rng().offset() == uint64_t(n));  // the offset advances by numel per call
  Tensor z = normals(ctx, 42, 0, n, 0.0, p.sigma);
  for (int64_t i = 0; i < n; ++i) REQUIRE(y.item(i) == float(float(x.item(i)) + float(z.item(i))));
  // The next call draws the next block of the stream.
  Tensor y2 = Tensor::empty(x.shape());
  ops::gaussian_noise_forward(ctx, p, x, y2);
  CHECK(ctx.rng().offset() == uint64_t(2 * n));
  Tensor z2 = normals(ctx, 42, n, n, 0.0, p.sigma);
  for (int64_t i = 0; i < n; ++i)
    REQUIRE(y2.item(i) == float(float(x.item(i)) + float(z2.item(i))));
  // Not training (or sigma 0): y == x exactly, and no draws are reserved.
  for (auto [training, sigma] : {std::pair{false, 0.25}, {true, 0.0}}) {
    NoiseParams q;
    q.training = training;
    q.sigma = sigma;
    Tensor y3 = Tensor::empty(x.shape());
    ops::gaussian_noise_forward(ctx, q, x, y3);
    require_equal(y3, x, "no noise");
    CHECK(ctx.rng().offset() == uint64_t(2 * n));
    Tensor xi = x.clone();
    ops::gaussian_noise_forward(ctx, q, xi, xi);  // in place is a no-op
    require_equal(xi, x, "no noise, in place");
  }
}

TEST_CASE("noise: the gradient is the identity (f64 gradient check)") {
  check_gradients(noise_case({2, 3, 4, 5}, 0.5, 1));
  check_gradients(noise_case({17}, 2.0, 2));
}

TEST_CASE("noise: bad arguments") {
  Context ctx;
  CHECK_THROWS_WITH_AS(ops::fill_uniform_bits(ctx, 0, 0, Tensor::empty({4})),
                       doctest::Contains("fill_uniform_bits: needs a host i32 tensor"), DataError);
  CHECK_THROWS_WITH_AS(ops::fill_normal(ctx, 0, 0, 0.0, 1.0, Tensor::empty({4}, DType::I32)),
                       doctest::Contains("fill_normal: needs f32 or f64"), DataError);
  NoiseParams p;
  CHECK_THROWS_WITH_AS(ops::gaussian_noise_forward(ctx, p, Tensor::empty({4}), Tensor::empty({5})),
                       doctest::Contains("y has shape [5]"), DataError);
}

TEST_CASE("noise: CPU and CUDA draw the same bits" * doctest::test_suite("gpu")) {
  Context cpu;
  ContextOptions o;
  o.device = Device::Cuda;
  Context gpu(o);
  for (auto [seed, offset, n] : {std::tuple<uint64_t, uint64_t, int64_t>{0, 0, 1000},
                                 {0xdeadbeefcafef00dull, (1ull << 32) - 7, 300000},
                                 {5, 123456789012ull, 77}}) {
    CAPTURE(seed);
    CAPTURE(offset);
    Tensor hb = Tensor::empty({n}, DType::I32), db = gpu.empty({n}, DType::I32);
    ops::fill_uniform_bits(cpu, seed, offset, hb);
    ops::fill_uniform_bits(gpu, seed, offset, db);
    require_equal(gpu.to_host(db), hb, "fill_uniform_bits CPU vs CUDA");
    Tensor hn = Tensor::empty({n}), dn = gpu.empty({n});
    ops::fill_normal(cpu, seed, offset, 0.5, 2.0, hn);
    ops::fill_normal(gpu, seed, offset, 0.5, 2.0, dn);
    require_equal(gpu.to_host(dn), hn, "fill_normal CPU vs CUDA");
  }
  check_cpu_vs_cuda(noise_case({2, 3, 16, 16}, 0.5, 1), 1e-6);
}
