// The fused step tail's CUDA twin (kernels/leak_tail_cuda.cu), gpu suite: against the CPU twin
// (f32 within 1e-5, f64 within 1e-10 of the largest CPU value; outputs and every gradient in both
// write modes), the CPU's bits where every rounding step is shared (Euler and RK4 without the
// supralinearity's pow), the unfused CUDA ops' bits (f32: the CUDA relu is f32 only), and the same
// grad_tau on every run. Without a device the gpu suite is Skipped (tests/main.cpp). On the CPU:
// the CUDA twin rejects host tensors by name before touching a device.
#include "engine/core/device.h"
#include "tests/kernels/leak_tail_case.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

bool no_device() {
  if (cuda_device_count() > 0) return false;
  MESSAGE("SKIPPED: no CUDA device");
  return true;
}

ContextOptions cuda_options() {
  ContextOptions o;
  o.device = Device::Cuda;
  return o;
}

std::vector<LeakTailCaseCfg> configs() {
  std::vector<LeakTailCaseCfg> v;
  uint64_t seed = 40;
  int terms = 0;
  for (LeakRule rule : {LeakRule::Euler, LeakRule::Rk4Frozen, LeakRule::Exp})
    for (bool with_h : {true, false})
      for (bool per_sample : {false, true})
        for (double n : {0.0, 2.0}) {
          LeakTailCaseCfg k;
          k.rule = rule, k.with_h = with_h, k.per_sample = per_sample, k.supra_n = n;
          k.terms = 1 + terms++ % 4, k.seed = seed++;
          k.shape = Shape{3, 2, 5, 7};
          v.push_back(k);
        }
  return v;
}

// DyRCNN's V1 at 64x64: several parts per sample in the grad_tau sum.
LeakTailCaseCfg large_config(LeakRule rule, bool per_sample) {
  LeakTailCaseCfg k;
  k.rule = rule, k.terms = 3, k.per_sample = per_sample, k.supra_n = 2.0, k.seed = 90;
  k.shape = Shape{8, 36, 64, 64};
  return k;
}

}  // namespace

TEST_CASE("cuda_leak_tail: CPU vs CUDA, f32 and f64, outputs and gradients in both write modes" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  for (const LeakTailCaseCfg& k : configs()) {
    check_cpu_vs_cuda(leak_tail_case(k), 1e-5, DType::F32);
    check_cpu_vs_cuda(leak_tail_case(k), 1e-10, DType::F64);
  }
  for (bool per_sample : {false, true})
    check_cpu_vs_cuda(leak_tail_case(large_config(LeakRule::Euler, per_sample)), 1e-5, DType::F32);
}

TEST_CASE("cuda_leak_tail: Euler and RK4 give the CPU's bits (forward, grad_u, grad_h)" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context cpu, gpu(cuda_options());
  for (DType t : {DType::F32, DType::F64})
    for (const LeakTailCaseCfg& k : configs()) {
      if (k.rule == LeakRule::Exp || k.supra_n != 0) continue;  // expm1 / pow: not bitwise
      const std::vector<Tensor> in = leak_tail_inputs(k, t);
      std::vector<Tensor> din;
      for (const Tensor& v : in) din.push_back(gpu.to_device(v));
      const Tensor h = k.with_h ? in[size_t(k.terms)] : Tensor(), tau = in[size_t(k.terms) + 1];
      const Tensor dh = k.with_h ? din[size_t(k.terms)] : Tensor(), dtau = din[size_t(k.terms) + 1];
      const LeakTailParams p = leak_tail_params(k);
      const std::string tag = concat(leak_tail_case(k)(t).name, " (", dtype_name(t), ")");
      Tensor x = Tensor::empty(k.shape, t), r = Tensor::empty(k.shape, t);
      Tensor dx = gpu.empty(k.shape, t), dr = gpu.empty(k.shape, t);
      ops::leak_tail_forward(cpu, p, leak_tail_terms(in, k.terms), h, tau, x, r);
      ops::leak_tail_forward(gpu, p, leak_tail_terms(din, k.terms), dh, dtau, dx, dr);
      require_bits(gpu.to_host(dx), x, tag + ": x");
      require_bits(gpu.to_host(dr), r, tag + ": r");
      const Tensor gr = random_uniform(k.shape, -1, 1, 61, t), gx = random_uniform(k.shape, -1, 1, 62, t);
      Tensor gu = Tensor::empty(k.shape, t), gh = Tensor::empty(k.shape, t);
      Tensor dgu = gpu.empty(k.shape, t), dgh = gpu.empty(k.shape, t);
      ops::leak_tail_backward(cpu, p, gr, gx, leak_tail_terms(in, k.terms), h, tau, gu, gh,
                              Tensor(), GradMode::Overwrite);
      ops::leak_tail_backward(gpu, p, gpu.to_device(gr), gpu.to_device(gx),
                              leak_tail_terms(din, k.terms), dh, dtau, dgu, dgh, Tensor(),
                              GradMode::Overwrite);
      require_bits(gpu.to_host(dgu), gu, tag + ": grad_u");
      if (k.with_h) require_bits(gpu.to_host(dgh), gh, tag + ": grad_h");
    }
}

TEST_CASE("cuda_leak_tail: the fused kernel equals the unfused CUDA ops bit for bit (f32)" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context gpu(cuda_options());
  std::vector<LeakTailCaseCfg> ks = configs();
  ks.push_back(large_config(LeakRule::Rk4Frozen, true));
  for (const LeakTailCaseCfg& k : ks) {
    const DType t = DType::F32;
    std::vector<Tensor> din;
    for (const Tensor& v : leak_tail_inputs(k, t)) din.push_back(gpu.to_device(v));
    const std::vector<Tensor> terms(din.begin(), din.begin() + k.terms);
    const Tensor h = k.with_h ? din[size_t(k.terms)] : Tensor(), tau = din[size_t(k.terms) + 1];
    const LeakTailParams p = leak_tail_params(k);
    const std::string tag = leak_tail_case(k)(t).name;
    const Unfused want = unfused_forward(gpu, p, terms, h, tau);
    Tensor x = gpu.empty(k.shape, t), r = gpu.empty(k.shape, t);
    ops::leak_tail_forward(gpu, p, leak_tail_terms(din, k.terms), h, tau, x, r);
    require_bits(gpu.to_host(x), gpu.to_host(want.x), tag + ": x");
    require_bits(gpu.to_host(r), gpu.to_host(want.r), tag + ": r");
    const Tensor gr = gpu.to_device(random_uniform(k.shape, -1, 1, 71, t));
    const Tensor gx = gpu.to_device(random_uniform(k.shape, -1, 1, 72, t));
    for (GradMode m : {GradMode::Overwrite, GradMode::Accumulate}) {
      Tensor gu[2], gh[2], gt[2];
      for (int j = 0; j < 2; ++j) {
        gu[j] = gpu.to_device(random_uniform(k.shape, -1, 1, 73, t));
        gh[j] = gpu.to_device(random_uniform(k.shape, -1, 1, 74, t));
        gt[j] = gpu.to_device(random_uniform(tau.shape(), -1, 1, 75, t));
      }
      unfused_backward(gpu, p, want, gr, gx, h, tau, gu[0], gh[0], gt[0], m);
      ops::leak_tail_backward(gpu, p, gr, gx, leak_tail_terms(din, k.terms), h, tau, gu[1], gh[1],
                              gt[1], m);
      const std::string bt = tag + (m == GradMode::Accumulate ? " accumulate" : "");
      require_bits(gpu.to_host(gu[1]), gpu.to_host(gu[0]), bt + ": grad_u");
      require_bits(gpu.to_host(gh[1]), gpu.to_host(gh[0]), bt + ": grad_h");
      require_bits(gpu.to_host(gt[1]), gpu.to_host(gt[0]), bt + ": grad_tau");
    }
  }
}

TEST_CASE("cuda_leak_tail: grad_tau is the same on every run" * doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context gpu(cuda_options());
  for (bool per_sample : {false, true}) {
    const LeakTailCaseCfg k = large_config(LeakRule::Exp, per_sample);
    std::vector<Tensor> din;
    for (const Tensor& v : leak_tail_inputs(k, DType::F32)) din.push_back(gpu.to_device(v));
    const Tensor gr = gpu.to_device(random_uniform(k.shape, -1, 1, 81, DType::F32));
    Tensor gt[2];
    for (Tensor& g : gt) {
      g = gpu.empty(din[4].shape());
      ops::leak_tail_backward(gpu, leak_tail_params(k), gr, Tensor(), leak_tail_terms(din, 3),
                              din[3], din[4], Tensor(), Tensor(), g, GradMode::Overwrite);
    }
    require_bits(gpu.to_host(gt[1]), gpu.to_host(gt[0]), concat("grad_tau run to run, tau ",
                                                                 din[4].shape().str()));
  }
}

TEST_CASE("cuda_leak_tail: the CUDA twin rejects host tensors by name") {
#if DYNSIM_WITH_CUDA
  Context ctx;
  const Tensor u = random_uniform({2, 3, 4, 4}, -1, 1, 1, DType::F32), tau = Tensor::from({1}, {2.0});
  Tensor r = Tensor::empty(u.shape());
  CHECK_THROWS_WITH_AS(cuda::leak_tail_forward(ctx, {}, {u}, Tensor(), tau, Tensor(), r),
                       doctest::Contains("leak_tail_forward: CUDA op got f32[2,3,4,4]@cpu"),
                       DataError);
  CHECK_THROWS_WITH_AS(cuda::leak_tail_backward(ctx, {}, u, Tensor(), {u}, Tensor(), tau, r,
                                                Tensor(), Tensor(), GradMode::Overwrite),
                       doctest::Contains("leak_tail_backward: CUDA op got f32[2,3,4,4]@cpu"),
                       DataError);
  CHECK_THROWS_WITH_AS(cuda::leak_tail_forward(ctx, {}, {}, Tensor(), tau, Tensor(), r),
                       doctest::Contains("leak_tail_forward: needs 1 to 8 drive terms, got 0"),
                       DataError);
#else
  MESSAGE("CPU-only build: there is no CUDA twin to call");
  CHECK_FALSE(ops::kCudaBuilt);
#endif
}
