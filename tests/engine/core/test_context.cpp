// Context: options, two contexts side by side, the scratch arena, the plan cache, copies, and
// the CPU RNG stream (exactness across contexts).
#include <doctest/doctest.h>

#include "engine/core/context.h"
#include "engine/core/device.h"
#include "kernels/dispatch.h"

using namespace dynsim;

TEST_CASE("context: two contexts coexist with independent state") {
  ContextOptions a, b;
  a.seed = 1;
  b.seed = 2;
  b.threads = 1;
  Context ca(a), cb(b);
  CHECK(ca.rng().seed() == 1);
  CHECK(cb.rng().seed() == 2);
  CHECK(cb.threads() == 1);
  CHECK(ca.threads() >= 1);
  ca.rng().advance(10);
  CHECK(ca.rng().offset() == 10);
  CHECK(cb.rng().offset() == 0);
  ca.scratch().get(1000);
  CHECK(cb.scratch().capacity() == 0);
}

TEST_CASE("context: scratch arena grows only when asked for more") {
  Context c;
  void* p = c.scratch().get(1024);
  size_t cap = c.scratch().capacity();
  CHECK(cap >= 1024);
  CHECK(c.scratch().get(512) == p);
  CHECK(c.scratch().get(1024) == p);
  c.scratch().get(cap + 1);
  CHECK(c.scratch().capacity() > cap);
}

TEST_CASE("context: plan cache creates once per key") {
  Context c;
  int made = 0;
  auto make = [&] {
    ++made;
    return std::make_shared<int>(42);
  };
  CHECK(c.plans().get_or_create<int>("conv:3x3", make) == 42);
  CHECK(c.plans().get_or_create<int>("conv:3x3", make) == 42);
  CHECK(made == 1);
  CHECK(c.plans().size() == 1);
}

TEST_CASE("context: plan keys are kind + numbers, no allocation; string keys for singletons") {
  Context c;
  int made = 0;
  auto make = [&] {
    ++made;
    return std::make_shared<int>(made);
  };
  PlanKey a("conv2d"), b("conv2d"), other("pool");
  a << 1 << 64 << -3;
  b << 1 << 64 << -3;
  other << 1 << 64 << -3;
  CHECK(a == b);
  CHECK_FALSE(a == other);
  CHECK(PlanKeyHash()(a) == PlanKeyHash()(b));
  CHECK(a.str() == "conv2d 1,64,-3");
  PlanKey shorter("conv2d");
  shorter << 1 << 64;
  CHECK_FALSE(a == shorter);
  CHECK(c.plans().get_or_create<int>(a, make) == 1);
  CHECK(c.plans().get_or_create<int>(b, make) == 1);  // same problem: same plan
  CHECK(c.plans().get_or_create<int>(other, make) == 2);
  CHECK(c.plans().get_or_create<int>(shorter, make) == 3);
  CHECK(c.plans().get_or_create<int>(std::string("conv2d 1,64,-3"), make) == 4);  // own space
  CHECK(c.plans().size() == 4);
  PlanKey full("big");
  for (int i = 0; i < PlanKey::kMax; ++i) full << i;
  CHECK_THROWS_WITH_AS(full << 99, doctest::Contains("plan key 'big': more than 24 values"),
                       Error);
}

TEST_CASE("context: copies on the host, and CUDA requests fail clearly without a device") {
  Context c;
  Tensor a = Tensor::from({3}, {1, 2, 3});
  Tensor b = c.to_device(a);
  CHECK_FALSE(b.same_storage(a));
  CHECK(c.host_view(a).same_storage(a));  // host tensors are read in place, never copied
  CHECK(b.to_vector() == a.to_vector());
  CHECK_THROWS_WITH_AS(c.copy(Tensor::zeros({4}), a), doctest::Contains("shapes or dtypes differ"),
                       Error);
  ContextOptions o;
  o.precision = Precision::TF32;
  CHECK_THROWS_WITH_AS(Context{o}, doctest::Contains("tf32 needs a CUDA device"), Error);
  if (cuda_device_count() == 0) {
    ContextOptions g;
    g.device = Device::Cuda;
    CHECK_THROWS_WITH_AS(Context{g}, doctest::Contains("0 CUDA device(s) found"), Error);
  }
}

TEST_CASE("context: CPU ops on a CUDA context name the op when no kernel exists") {
  // Dispatch of an op without a CUDA implementation (checked without constructing a CUDA
  // context: the message comes from ops::no_cuda).
  CHECK_THROWS_WITH_AS(ops::no_cuda("conv2d_forward"),
                       "conv2d_forward: no CUDA implementation in this build", NotImplemented);
}
