// The CUDA twins of issue 5 against the CPU references on random inputs (gpu suite): leak step
// and slope, conv2d (cuDNN), linear (cuBLAS), pooling, resize, softplus, supralinearity, sums,
// losses, optimiser updates and the activity loss; f32 within 1e-5 and f64 within 1e-10
// (relative to the largest CPU value), forward and every gradient in both gradient write modes;
// exact equality where the twins share every rounding step; run-to-run determinism. Without a
// device the gpu suite is Skipped (tests/main.cpp). On the CPU: a CUDA context without a device
// is a clear error, and the CUDA twins reject host tensors before touching a device.
#include "engine/core/device.h"
#include "kernels/dispatch.h"
#include "kernels/pool2d_math.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

using Fwd = std::function<std::vector<Tensor>(Context&, const std::vector<Tensor>&)>;
using Bwd = std::function<void(Context&, const std::vector<Tensor>&, const std::vector<Tensor>&,
                               const std::vector<Tensor>&, GradMode)>;

OpCase make_case(std::string name, std::vector<std::string> names, std::vector<Tensor> inputs,
                 std::vector<bool> diff, Fwd f, Bwd b) {
  OpCase c;
  c.name = std::move(name);
  c.input_names = std::move(names);
  c.inputs = std::move(inputs);
  c.differentiable = std::move(diff);
  c.forward = std::move(f);
  c.backward = std::move(b);
  return c;
}

Tensor out_like(Context& ctx, const Tensor& t, const Shape& s) {
  return ctx.empty(s, t.dtype());
}

// ---- leak ------------------------------------------------------------------------------------
const Shape kLeak{3, 2, 5, 7};

CaseBuilder leak_case(LeakRule rule, bool with_h, bool per_sample) {
  return [=](DType t) {
    const LeakParams p{rule, 1.7};
    return make_case(
        concat("leak rule ", int(rule), with_h ? " h" : " no h", per_sample ? " tau[B]" : ""),
        {"u", "h", "tau"},
        {random_uniform(kLeak, -2, 2, 1, t), random_uniform(kLeak, -1, 1, 2, t),
         per_sample ? Tensor::from({3}, {3.0, 5.0, 9.0}, t) : Tensor::from({1}, {4.0}, t)},
        {true, with_h, true},
        [=](Context& c, const std::vector<Tensor>& in) {
          Tensor x = out_like(c, in[0], in[0].shape());
          ops::leak_forward(c, p, in[0], with_h ? in[1] : Tensor(), in[2], x);
          return std::vector<Tensor>{x};
        },
        [=](Context& c, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
            const std::vector<Tensor>& g, GradMode m) {
          ops::leak_backward(c, p, go[0], in[0], with_h ? in[1] : Tensor(), in[2], g[0], g[1], g[2],
                             m);
        });
  };
}

CaseBuilder slope_case(bool per_sample) {
  return [=](DType t) {
    return make_case(
        concat("leak_slope", per_sample ? " tau[B]" : ""), {"u", "r", "tau"},
        {random_uniform(kLeak, -2, 2, 3, t), random_uniform(kLeak, 0, 1, 4, t),
         per_sample ? Tensor::from({3}, {2.0, 4.0, 8.0}, t) : Tensor::from({1}, {3.0}, t)},
        {true, true, true},
        [](Context& c, const std::vector<Tensor>& in) {
          Tensor k = out_like(c, in[0], in[0].shape());
          ops::leak_slope(c, in[0], in[1], in[2], k);
          return std::vector<Tensor>{k};
        },
        [](Context& c, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
           const std::vector<Tensor>& g, GradMode m) {
          ops::leak_slope_backward(c, go[0], in[0], in[1], in[2], g[0], g[1], g[2], m);
        });
  };
}

// ---- conv2d and linear -----------------------------------------------------------------------
struct ConvCfg {
  Shape x, w;
  int stride, pad, groups;
  bool bias;
};

CaseBuilder conv_case(const ConvCfg& k) {
  return [k](DType t) {
    Conv2dParams p;
    p.stride_h = p.stride_w = k.stride, p.pad_h = p.pad_w = k.pad, p.groups = k.groups;
    return make_case(
        concat("conv2d x", k.x.str(), " w", k.w.str(), " s", k.stride, " p", k.pad, " g", k.groups,
               k.bias ? " bias" : ""),
        {"x", "w", "b"},
        {random_uniform(k.x, -1, 1, 11, t), random_uniform(k.w, -1, 1, 12, t),
         random_uniform({k.w[0]}, -1, 1, 13, t)},
        {true, true, k.bias},
        [=](Context& c, const std::vector<Tensor>& in) {
          Tensor y = out_like(c, in[0], p.output_shape(in[0].shape(), in[1].shape()));
          ops::conv2d_forward(c, p, in[0], in[1], k.bias ? in[2] : Tensor(), y);
          return std::vector<Tensor>{y};
        },
        [=](Context& c, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
            const std::vector<Tensor>& g,
            GradMode m) { ops::conv2d_backward(c, p, go[0], in[0], in[1], g[0], g[1], g[2], m); });
  };
}

CaseBuilder linear_case(int64_t n, int64_t in_f, int64_t out_f, bool bias) {
  return [=](DType t) {
    return make_case(
        concat("linear ", n, "x", in_f, " -> ", out_f, bias ? " bias" : ""), {"x", "w", "b"},
        {random_uniform({n, in_f}, -1, 1, 21, t), random_uniform({out_f, in_f}, -1, 1, 22, t),
         random_uniform({out_f}, -1, 1, 23, t)},
        {true, true, bias},
        [=](Context& c, const std::vector<Tensor>& in) {
          Tensor y = out_like(c, in[0], {n, out_f});
          ops::linear_forward(c, in[0], in[1], bias ? in[2] : Tensor(), y);
          return std::vector<Tensor>{y};
        },
        [](Context& c, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
           const std::vector<Tensor>& g,
           GradMode m) { ops::linear_backward(c, go[0], in[0], in[1], g[0], g[1], g[2], m); });
  };
}

// ---- pooling and resize ----------------------------------------------------------------------
Pool2dParams pool_params(int k, int s, int pad, bool include_pad = true) {
  Pool2dParams p;
  p.kernel_h = p.kernel_w = k, p.stride_h = p.stride_w = s, p.pad_h = p.pad_w = pad;
  p.count_include_pad = include_pad;
  return p;
}

CaseBuilder pool_case(bool max, Pool2dParams p, Shape xs) {
  return [=](DType t) {
    auto fwd = [=](Context& c, const Tensor& x, Tensor& y, Tensor& arg) {
      y = out_like(c, x, p.output_shape(x.shape()));
      if (!max) return ops::avgpool2d_forward(c, p, x, y);
      arg = c.empty(y.shape(), DType::I32);
      ops::maxpool2d_forward(c, p, x, y, arg);
    };
    return make_case(
        concat(max ? "maxpool" : "avgpool", " k", p.kernel_h, " s", p.stride_h, " p", p.pad_h,
               p.count_include_pad ? "" : " valid-count", " x", xs.str()),
        {"x"}, {random_uniform(xs, -2, 2, 31, t)}, {true},
        [=](Context& c, const std::vector<Tensor>& in) {
          Tensor y, arg;
          fwd(c, in[0], y, arg);
          return max ? std::vector<Tensor>{y, arg} : std::vector<Tensor>{y};
        },
        [=](Context& c, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
            const std::vector<Tensor>& g, GradMode m) {
          Tensor y, arg;
          fwd(c, in[0], y, arg);
          if (max)
            ops::maxpool2d_backward(c, p, go[0], arg, g[0], m);
          else
            ops::avgpool2d_backward(c, p, go[0], g[0], m);
        });
  };
}

CaseBuilder resize_case(Shape xs, int64_t ho, int64_t wo) {
  return [=](DType t) {
    return make_case(
        concat("resize ", xs.str(), " -> ", ho, "x", wo), {"x"}, {random_uniform(xs, -2, 2, 41, t)},
        {true},
        [=](Context& c, const std::vector<Tensor>& in) {
          Tensor y = out_like(c, in[0], {xs[0], xs[1], ho, wo});
          ops::resize_nearest_forward(c, in[0], y);
          return std::vector<Tensor>{y};
        },
        [](Context& c, const std::vector<Tensor>&, const std::vector<Tensor>& go,
           const std::vector<Tensor>& g,
           GradMode m) { ops::resize_nearest_backward(c, go[0], g[0], m); });
  };
}

// ---- pointwise nonlinearities and sums -------------------------------------------------------
CaseBuilder softplus_case() {
  return [](DType t) {
    return make_case(
        "softplus", {"x", "a", "b"},
        {random_uniform({2, 3, 40, 50}, -4, 4, 51, t), Tensor::from({1}, {1.5}, t),
         Tensor::from({1}, {0.7}, t)},
        {true, true, true},
        [](Context& c, const std::vector<Tensor>& in) {
          Tensor y = out_like(c, in[0], in[0].shape());
          ops::softplus_forward(c, in[0], in[1], in[2], y);
          return std::vector<Tensor>{y};
        },
        [](Context& c, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
           const std::vector<Tensor>& g, GradMode m) {
          ops::softplus_backward(c, go[0], in[0], in[1], in[2], g[0], g[1], g[2], m);
        });
  };
}

CaseBuilder supra_case(SupralinearityParams p) {
  return [=](DType t) {
    return make_case(
        concat("supralinearity n ", p.n, " clamp ", p.clamp), {"x"},
        {random_away_from_zero({2, 3, 6, 7}, -4, 4, 1e-3, 61, t)}, {true},
        [=](Context& c, const std::vector<Tensor>& in) {
          Tensor y = out_like(c, in[0], in[0].shape());
          ops::supralinearity_forward(c, p, in[0], y);
          return std::vector<Tensor>{y};
        },
        [=](Context& c, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
            const std::vector<Tensor>& g,
            GradMode m) { ops::supralinearity_backward(c, p, go[0], in[0], g[0], m); });
  };
}

// kind: 0 sum_all, 1 mean_all, 2 sum_hw, 3 mean_hw. Large shapes use the two-pass sum.
CaseBuilder reduce_case(int kind, Shape xs) {
  return [=](DType t) {
    const bool all = kind < 2;
    return make_case(
        concat("reduce kind ", kind, " x", xs.str()), {"x"}, {random_uniform(xs, -1, 1, 71, t)},
        {true},
        [=](Context& c, const std::vector<Tensor>& in) {
          Tensor y = out_like(c, in[0], all ? Shape{1} : Shape{xs[0], xs[1]});
          if (kind == 0) ops::sum_all_forward(c, in[0], y);
          if (kind == 1) ops::mean_all_forward(c, in[0], y);
          if (kind == 2) ops::sum_hw_forward(c, in[0], y);
          if (kind == 3) ops::mean_hw_forward(c, in[0], y);
          return std::vector<Tensor>{y};
        },
        [=](Context& c, const std::vector<Tensor>&, const std::vector<Tensor>& go,
            const std::vector<Tensor>& g, GradMode m) {
          if (kind == 0) ops::sum_all_backward(c, go[0], g[0], m);
          if (kind == 1) ops::mean_all_backward(c, go[0], g[0], m);
          if (kind == 2) ops::sum_hw_backward(c, go[0], g[0], m);
          if (kind == 3) ops::mean_hw_backward(c, go[0], g[0], m);
        });
  };
}

// ---- losses ----------------------------------------------------------------------------------
CaseBuilder ce_case(int64_t n, int64_t k) {
  return [=](DType t) {
    Tensor labels = random_ints({n}, -1, int(k) - 1, 81, DType::I32);  // -1: ignored rows
    const CrossEntropyParams p{-1};
    return make_case(
        concat("cross_entropy ", n, "x", k), {"logits", "labels"},
        {random_uniform({n, k}, -3, 3, 82, t), labels}, {true, false},
        [=](Context& c, const std::vector<Tensor>& in) {
          Tensor l = out_like(c, in[0], {1});
          ops::cross_entropy_forward(c, p, in[0], in[1], l);
          return std::vector<Tensor>{l};
        },
        [=](Context& c, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
            const std::vector<Tensor>& g,
            GradMode m) { ops::cross_entropy_backward(c, p, go[0], in[0], in[1], g[0], m); });
  };
}

CaseBuilder poisson_case(bool log_input) {
  return [=](DType t) {
    PoissonNllParams p;
    p.log_input = log_input;
    const double lo = log_input ? -2 : 0.05;
    return make_case(
        concat("poisson_nll log_input ", log_input), {"pred", "target"},
        {random_uniform({4, 3, 30, 30}, lo, 3, 91, t), random_ints({4, 3, 30, 30}, 0, 5, 92, t)},
        {true, false},
        [=](Context& c, const std::vector<Tensor>& in) {
          Tensor l = out_like(c, in[0], {1});
          ops::poisson_nll_forward(c, p, in[0], in[1], l);
          return std::vector<Tensor>{l};
        },
        [=](Context& c, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
            const std::vector<Tensor>& g,
            GradMode m) { ops::poisson_nll_backward(c, p, go[0], in[0], in[1], g[0], m); });
  };
}

CaseBuilder mse_case() {
  return [](DType t) {
    return make_case(
        "mse", {"pred", "target"},
        {random_uniform({5, 7, 31}, -2, 2, 95, t), random_uniform({5, 7, 31}, -2, 2, 96, t)},
        {true, true},
        [](Context& c, const std::vector<Tensor>& in) {
          Tensor l = out_like(c, in[0], {1});
          ops::mse_forward(c, in[0], in[1], l);
          return std::vector<Tensor>{l};
        },
        [](Context& c, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
           const std::vector<Tensor>& g,
           GradMode m) { ops::mse_backward(c, go[0], in[0], in[1], g[0], g[1], m); });
  };
}

std::vector<CaseBuilder> all_cases() {
  std::vector<CaseBuilder> v;
  for (LeakRule r : {LeakRule::Euler, LeakRule::Rk4Frozen, LeakRule::Exp})
    for (bool h : {true, false})
      for (bool ps : {false, true}) v.push_back(leak_case(r, h, ps));
  v.push_back(slope_case(false));
  v.push_back(slope_case(true));
  v.push_back(conv_case({{2, 4, 9, 8}, {6, 4, 3, 3}, 1, 1, 1, true}));
  v.push_back(conv_case({{3, 4, 11, 10}, {6, 2, 3, 3}, 2, 0, 2, false}));
  v.push_back(conv_case({{2, 6, 8, 8}, {6, 1, 3, 3}, 1, 1, 6, true}));    // depthwise
  v.push_back(conv_case({{2, 5, 7, 6}, {4, 5, 1, 1}, 1, 0, 1, true}));    // pointwise
  v.push_back(conv_case({{1, 3, 16, 13}, {8, 3, 5, 5}, 2, 2, 1, true}));  // strided 5x5
  v.push_back(linear_case(5, 7, 3, true));
  v.push_back(linear_case(1, 33, 10, false));
  v.push_back(linear_case(64, 128, 40, true));
  for (bool max : {true, false}) {
    v.push_back(pool_case(max, pool_params(3, 2, 1), {2, 3, 9, 10}));
    v.push_back(pool_case(max, pool_params(2, 2, 0), {2, 3, 8, 8}));
    v.push_back(pool_case(max, pool_params(1, 1, 0), {1, 2, 5, 4}));
  }
  v.push_back(pool_case(false, pool_params(3, 1, 1, false), {2, 2, 7, 6}));
  v.push_back(resize_case({2, 3, 4, 5}, 8, 10));
  v.push_back(resize_case({2, 3, 8, 8}, 4, 3));
  v.push_back(resize_case({1, 2, 26, 7}, 22, 12));
  v.push_back(softplus_case());
  v.push_back(supra_case({2.0, 0.8, 1e6}));
  v.push_back(supra_case({1.5, 0.8, 2.0}));
  for (int kind = 0; kind < 4; ++kind) {
    v.push_back(reduce_case(kind, {2, 3, 4, 5}));
    v.push_back(reduce_case(kind, {2, 3, 130, 160}));  // 20800 per plane, 124800 in all
  }
  v.push_back(ce_case(37, 10));
  v.push_back(poisson_case(false));
  v.push_back(poisson_case(true));
  v.push_back(mse_case());
  return v;
}

bool no_device() {
  if (cuda_device_count() > 0) return false;
  MESSAGE("SKIPPED: no CUDA device");
  return true;
}

// Outputs (and, with backward, the Overwrite gradients) on both devices, compared bit for bit.
void require_same_bits(const CaseBuilder& build, DType t, bool backward) {
  OpCase c = build(t);
  Context cpu;
  ContextOptions o;
  o.device = Device::Cuda;
  Context gpu(o);
  std::vector<Tensor> din;
  for (const Tensor& x : c.inputs) din.push_back(gpu.to_device(x));
  std::vector<Tensor> a = c.forward(cpu, c.inputs), b = c.forward(gpu, din);
  const std::string tag = concat(c.name, " (", dtype_name(t), ")");
  for (size_t k = 0; k < a.size(); ++k)
    require_equal(gpu.to_host(b[k]), a[k], concat(tag, " output ", k));
  if (!backward) return;
  std::vector<Tensor> r, dr, ga(c.inputs.size()), gb(c.inputs.size());
  for (size_t k = 0; k < a.size(); ++k) {
    r.push_back(random_uniform(a[k].shape(), -1, 1, 600 + k,
                               a[k].dtype() == DType::I32 ? t : a[k].dtype()));
    dr.push_back(gpu.to_device(r.back()));
  }
  for (size_t i = 0; i < c.inputs.size(); ++i)
    if (c.differentiable[i]) {
      ga[i] = Tensor::zeros(c.inputs[i].shape(), c.inputs[i].dtype());
      gb[i] = gpu.zeros(c.inputs[i].shape(), c.inputs[i].dtype());
    }
  c.backward(cpu, c.inputs, r, ga, GradMode::Overwrite);
  c.backward(gpu, din, dr, gb, GradMode::Overwrite);
  for (size_t i = 0; i < c.inputs.size(); ++i)
    if (c.differentiable[i])
      require_equal(gpu.to_host(gb[i]), ga[i], tag + " d/d" + c.input_names[i]);
}

// Three optimiser steps from the same state on both devices; returns {param, state a, state b}.
std::vector<Tensor> optim_steps(Context& c, int kind, DType t) {
  const Shape s{3, 4, 5, 6};
  Tensor p = c.to_device(random_uniform(s, -1, 1, 101, t));
  Tensor a = c.to_device(random_uniform(s, -0.1, 0.1, 102, t));
  Tensor b = c.to_device(random_uniform(s, 0, 0.01, 103, t));
  for (int step = 1; step <= 3; ++step) {
    Tensor g = c.to_device(random_uniform(s, -1, 1, 110 + uint64_t(step), t));
    if (kind < 2) {
      SgdParams h;
      h.lr = 0.05, h.momentum = 0.9, h.weight_decay = 1e-3, h.nesterov = kind == 1;
      h.first_step = step == 1;
      ops::sgd_step(c, h, p, g, a);
    } else {
      AdamParams h;
      h.lr = 1e-2, h.weight_decay = 0.01, h.decoupled = kind == 3, h.step = step;
      ops::adam_step(c, h, p, g, a, b);
    }
  }
  return {c.host_view(p), c.host_view(a), c.host_view(b)};
}

}  // namespace

TEST_CASE("cuda_ops: every CUDA twin agrees with the CPU (f32 and f64, both write modes)" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  for (const CaseBuilder& b : all_cases()) {
    check_cpu_vs_cuda(b, 1e-5, DType::F32);
    check_cpu_vs_cuda(b, 1e-10, DType::F64);
  }
}

TEST_CASE("cuda_ops: twins that share every rounding step give the CPU's bits" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  for (DType t : {DType::F32, DType::F64}) {
    for (LeakRule r : {LeakRule::Euler, LeakRule::Rk4Frozen}) {
      require_same_bits(leak_case(r, true, true), t, false);
      require_same_bits(leak_case(r, false, false), t, false);
    }
    require_same_bits(pool_case(true, pool_params(3, 2, 1), {2, 3, 9, 10}), t, true);
    require_same_bits(pool_case(false, pool_params(3, 2, 1), {2, 3, 9, 10}), t, true);
    require_same_bits(resize_case({1, 2, 26, 7}, 22, 12), t, true);
    require_same_bits(resize_case({2, 3, 8, 8}, 4, 3), t, true);
    Context cpu;
    ContextOptions o;
    o.device = Device::Cuda;
    Context gpu(o);
    for (int kind = 0; kind < 4; ++kind) {  // SGD, SGD nesterov, Adam, AdamW
      std::vector<Tensor> want = optim_steps(cpu, kind, t), got = optim_steps(gpu, kind, t);
      for (size_t k = 0; k < want.size(); ++k)
        require_equal(got[k], want[k],
                      concat("optimiser ", kind, " (", dtype_name(t), ") tensor ", k));
    }
    Tensor x = random_uniform({3, 70000}, -1, 1, 120, t);
    const double want = ops::sum_squares(cpu, x), got = ops::sum_squares(gpu, gpu.to_device(x));
    CHECK(std::abs(got - want) <= 1e-12 * want);
  }
}

TEST_CASE("cuda_ops: sums and deterministic conv2d give the same bits on every run" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  ContextOptions o;
  o.device = Device::Cuda;
  o.deterministic = true;
  Context gpu(o);
  Tensor x = gpu.to_device(random_uniform({4, 8, 128, 128}, -1, 1, 130, DType::F32));
  Tensor y1 = gpu.empty({1}), y2 = gpu.empty({1});
  ops::sum_all_forward(gpu, x, y1);
  ops::sum_all_forward(gpu, x, y2);
  require_equal(gpu.to_host(y2), gpu.to_host(y1), "sum_all run to run");
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  Tensor w = gpu.to_device(random_uniform({16, 8, 3, 3}, -1, 1, 131, DType::F32));
  Tensor gy =
      gpu.to_device(random_uniform(p.output_shape(x.shape(), w.shape()), -1, 1, 132, DType::F32));
  Tensor gx[2] = {gpu.empty(x.shape()), gpu.empty(x.shape())};
  Tensor gw[2] = {gpu.empty(w.shape()), gpu.empty(w.shape())};
  for (int k = 0; k < 2; ++k)
    ops::conv2d_backward(gpu, p, gy, x, w, gx[k], gw[k], Tensor(), GradMode::Overwrite);
  require_equal(gpu.to_host(gx[1]), gpu.to_host(gx[0]), "conv2d dgrad run to run");
  require_equal(gpu.to_host(gw[1]), gpu.to_host(gw[0]), "conv2d wgrad run to run");
}

// DynVision's activity loss (kernels/activity.h): the CUDA twin sums each sample in one block
// (a fixed tree in double), so accumulate agrees with the CPU's sequential sum within 1e-12 and
// gives the same bits on every run. The seed's increments T(coef * sign / n) are the CPU's bits:
// the absolute seed shares every rounding step, and the signed one does too once the sign of each
// sample's sum agrees, which these inputs ensure (each sum is about +-n / 2, far from 0).
TEST_CASE("cuda_ops: activity_accumulate and activity_seed agree with the CPU" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context cpu;
  ContextOptions o;
  o.device = Device::Cuda;
  Context gpu(o);
  uint64_t seed = 700;
  for (DType t : {DType::F32, DType::F64})
    for (bool is_signed : {false, true})
      for (const Shape& s : {Shape{1, 3, 17, 19}, Shape{5, 8, 33, 35}, Shape{3, 200003},
                             Shape{64, 2, 5}, Shape{7}}) {
        const std::string tag =
            concat("activity ", dtype_name(t), is_signed ? " signed " : " absolute ", s.str());
        Tensor y = random_uniform(s, -1, 1, ++seed, t);
        const int64_t B = s[0], n = y.numel() / B;
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = 0; i < n; ++i)
            y.set(b * n + i, y.item(b * n + i) + (b % 2 ? -0.5 : 0.5));
        if (n > 1)
          for (int64_t i = 0; i < y.numel(); i += 7) y.set(i, 0.0);  // the absolute seed's sign 0
        const Tensor dy = gpu.to_device(y);
        Tensor acc = random_uniform({B}, 0.5, 2, ++seed, DType::F64);
        Tensor dacc = gpu.to_device(acc);
        ops::activity_accumulate(cpu, y, is_signed, acc);
        ops::activity_accumulate(gpu, dy, is_signed, dacc);
        require_close(gpu.to_host(dacc), acc, 0, 1e-12, tag + " accumulate");
        Tensor run[2] = {gpu.zeros({B}, DType::F64), gpu.zeros({B}, DType::F64)};
        for (Tensor& r : run) ops::activity_accumulate(gpu, dy, is_signed, r);
        require_equal(gpu.to_host(run[1]), gpu.to_host(run[0]), tag + " accumulate run to run");
        Tensor grad = random_uniform(s, -1, 1, ++seed, t);
        Tensor dgrad = gpu.to_device(grad);
        ops::activity_seed(cpu, y, 0.37, is_signed, grad);
        ops::activity_seed(gpu, dy, 0.37, is_signed, dgrad);
        require_equal(gpu.to_host(dgrad), grad, tag + " seed");
      }
}

TEST_CASE("cuda_ops: the index inverses behind the gather backwards of pooling and resize") {
  // pool::windows_containing(i) is exactly the set of outputs whose window holds input i.
  for (int k = 1; k <= 4; ++k)
    for (int st = 1; st <= 3; ++st)
      for (int pad = 0; pad <= k / 2; ++pad)
        for (int64_t n = 1; n <= 9; ++n) {
          if (n + 2 * pad < k) continue;
          const int64_t n_out = (n + 2 * pad - k) / st + 1;
          for (int64_t i = 0; i < n; ++i) {
            int64_t lo, hi;
            pool::windows_containing(i, st, pad, k, n_out, lo, hi);
            for (int64_t o = 0; o < n_out; ++o) {
              const pool::Window w = pool::window(o, st, pad, k, n);
              CHECK_MESSAGE((o >= lo && o < hi) == (i >= w.begin && i < w.end), "k ", k, " s ", st,
                            " p ", pad, " n ", n, " i ", i, " o ", o);
            }
          }
        }
  // nearest_first_reader(s) .. (s + 1) is exactly the set of outputs reading input s.
  for (int64_t in = 1; in <= 30; ++in)
    for (int64_t out = 1; out <= 30; ++out)
      for (int64_t s = 0; s < in; ++s) {
        const int64_t lo = nearest_first_reader(s, in, out),
                      hi = nearest_first_reader(s + 1, in, out);
        for (int64_t o = 0; o < out; ++o)
          CHECK_MESSAGE((o >= lo && o < hi) == (nearest_source_index(o, in, out) == s), "in ", in,
                        " out ", out, " s ", s, " o ", o);
      }
}

TEST_CASE("cuda_ops: a CUDA context without a device is a clear error, not a crash") {
  // The first index past the devices found (0 here: no GPU, or a CPU-only build).
  ContextOptions o;
  o.device = Device::Cuda;
  o.device_index = cuda_device_count();
  CHECK_THROWS_WITH_AS(Context{o},
                       doctest::Contains(concat("cuda:", o.device_index, " requested but").c_str()),
                       Error);
  // Allocation names the missing device (or the missing backend in a CPU-only build).
  const std::string want = cuda_compiled() ? "CUDA device(s) found" : "built without CUDA";
  CHECK_THROWS_WITH_AS(Tensor::empty({4}, DType::F32, Device::Cuda, o.device_index),
                       doctest::Contains(want.c_str()), Error);
}

#if DYNSIM_WITH_CUDA
// The CUDA twins check their arguments before any device call, so these run without a GPU.
TEST_CASE("cuda_ops: the CUDA twins reject host tensors by name") {
  Context ctx;
  Tensor x = random_uniform({2, 3, 6, 6}, -1, 1, 140, DType::F32);
  Tensor tau = Tensor::from({1}, {2.0});
  Tensor one = Tensor::from({1}, {1.0});
  auto host_msg = [](const char* op) {
    return doctest::Contains(concat(op, ": CUDA op got").c_str());
  };
  CHECK_THROWS_WITH_AS(cuda::leak_forward(ctx, {}, x, x, tau, x), host_msg("leak_forward"),
                       DataError);
  CHECK_THROWS_WITH_AS(cuda::leak_slope_backward(ctx, x, x, x, tau, x, x, tau, GradMode::Overwrite),
                       host_msg("leak_slope_backward"), DataError);
  Conv2dParams p;
  CHECK_THROWS_WITH_AS(cuda::conv2d_forward(ctx, p, x, Tensor::zeros({4, 3, 3, 3}), Tensor(), x),
                       host_msg("conv2d_forward"), DataError);
  Tensor m = Tensor::zeros({4, 5});
  CHECK_THROWS_WITH_AS(cuda::linear_forward(ctx, m, Tensor::zeros({3, 5}), Tensor(), m),
                       host_msg("linear_forward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::maxpool2d_forward(ctx, pool_params(2, 2, 0), x, x, x),
                       host_msg("maxpool2d_forward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::resize_nearest_backward(ctx, x, x, GradMode::Accumulate),
                       host_msg("resize_nearest_backward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::softplus_forward(ctx, x, one, one, x), host_msg("softplus_forward"),
                       DataError);
  CHECK_THROWS_WITH_AS(cuda::supralinearity_forward(ctx, {}, x, x),
                       host_msg("supralinearity_forward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::mean_hw_forward(ctx, x, m), host_msg("mean_hw_forward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::cross_entropy_forward(ctx, {}, m, Tensor::zeros({4}, DType::I32), one),
                       host_msg("cross_entropy_forward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::mse_forward(ctx, x, x, one), host_msg("mse_forward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::adam_step(ctx, {}, x, x, x, x), host_msg("adam_step"), DataError);
  CHECK_THROWS_WITH_AS(cuda::sum_squares(ctx, x), host_msg("sum_squares"), DataError);
  CHECK_THROWS_WITH_AS(cuda::activity_accumulate(ctx, x, false, Tensor::zeros({2}, DType::F64)),
                       host_msg("activity_accumulate"), DataError);
  CHECK_THROWS_WITH_AS(cuda::activity_seed(ctx, x, 1.0, true, Tensor::zeros(x.shape())),
                       host_msg("activity_seed"), DataError);
}
#endif
