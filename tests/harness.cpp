// The op harness (tests/harness.h).
#include "tests/harness.h"

#include <unistd.h>

#include <sstream>

#include <fstream>

#include <cmath>
#include <random>

#include "engine/io/npy.h"

namespace dynsim::test {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TempDir::TempDir(const std::string& tag) {
  static int counter = 0;
  path_ = std::filesystem::temp_directory_path() /
          (tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}


std::string& torch_refs_dir_storage() {
  static std::string dir;
  return dir;
}
const std::string& torch_refs_dir() { return torch_refs_dir_storage(); }
Tensor torch_ref(const std::string& case_name, const std::string& array) {
  return load_npy(torch_refs_dir() + "/" + case_name + "/" + array + ".npy");
}

Tensor random_ints(const Shape& s, int lo, int hi, uint64_t seed, DType t) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  Tensor r = Tensor::empty(s, t);
  for (int64_t i = 0; i < r.numel(); ++i) r.set(i, d(g));
  return r;
}
Tensor random_uniform(const Shape& s, double lo, double hi, uint64_t seed, DType t) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  Tensor r = Tensor::empty(s, t);
  for (int64_t i = 0; i < r.numel(); ++i) r.set(i, d(g));
  return r;
}
Tensor random_away_from_zero(const Shape& s, double lo, double hi, double gap, uint64_t seed,
                             DType t) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  Tensor r = Tensor::empty(s, t);
  for (int64_t i = 0; i < r.numel(); ++i) {
    double v;
    do v = d(g);
    while (std::abs(v) < gap);
    r.set(i, v);
  }
  return r;
}

void require_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  REQUIRE_MESSAGE(got.shape() == want.shape(), what, ": shape ", got.shape().str(), " vs ",
                  want.shape().str());
  for (int64_t i = 0; i < got.numel(); ++i) {
    if (got.item(i) != want.item(i)) {
      FAIL(what, ": element ", i, " is ", got.item(i), ", expected ", want.item(i));
    }
  }
}

void require_close(const Tensor& got, const Tensor& want, double atol, double rtol,
                   const std::string& what) {
  REQUIRE_MESSAGE(got.shape() == want.shape(), what, ": shape ", got.shape().str(), " vs ",
                  want.shape().str());
  for (int64_t i = 0; i < got.numel(); ++i) {
    double a = got.item(i), b = want.item(i);
    if (!(std::abs(a - b) <= atol + rtol * std::abs(b))) {
      FAIL(what, ": element ", i, " is ", a, ", expected ", b, " (|diff| ", std::abs(a - b),
           " > atol ", atol, " + rtol ", rtol, " * |expected|)");
    }
  }
}

namespace {

double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += a.item(i) * b.item(i);
  return s;
}

double objective(Context& ctx, const OpCase& c, const std::vector<Tensor>& in,
                 const std::vector<Tensor>& r) {
  std::vector<Tensor> out = c.forward(ctx, in);
  double L = 0;
  for (size_t k = 0; k < out.size(); ++k) L += dot(out[k], r[k]);
  return L;
}

std::vector<Tensor> alloc_grads(const OpCase& c, double fill_value) {
  std::vector<Tensor> g(c.inputs.size());
  for (size_t i = 0; i < c.inputs.size(); ++i)
    if (c.differentiable[i]) {
      g[i] = Tensor::empty(c.inputs[i].shape(), c.inputs[i].dtype());
      g[i].fill(fill_value);
    }
  return g;
}

}  // namespace

GradCheckStats check_gradients(const CaseBuilder& build, double eps, double atol, double rtol) {
  Context ctx;
  OpCase c = build(DType::F64);
  REQUIRE(c.inputs.size() == c.differentiable.size());
  REQUIRE(c.inputs.size() == c.input_names.size());
  std::vector<Tensor> out = c.forward(ctx, c.inputs);
  std::vector<Tensor> r;
  for (size_t k = 0; k < out.size(); ++k)
    r.push_back(random_uniform(out[k].shape(), -1, 1, 1000 + k, DType::F64));

  // Overwrite mode: prefill with NaN so that an element the backward forgets shows up.
  std::vector<Tensor> g = alloc_grads(c, std::nan(""));
  c.backward(ctx, c.inputs, r, g, GradMode::Overwrite);

  GradCheckStats stats;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (!c.differentiable[i]) continue;
    Tensor numeric = Tensor::empty(c.inputs[i].shape(), DType::F64);
    std::vector<Tensor> in = c.inputs;
    in[i] = c.inputs[i].clone();
    for (int64_t e = 0; e < in[i].numel(); ++e) {
      const double x0 = in[i].item(e);
      in[i].set(e, x0 + eps);
      double lp = objective(ctx, c, in, r);
      in[i].set(e, x0 - eps);
      double lm = objective(ctx, c, in, r);
      in[i].set(e, x0);
      numeric.set(e, (lp - lm) / (2 * eps));
    }
    stats.elements += in[i].numel();
    require_close(g[i], numeric, atol, rtol,
                  c.name + ": d/d" + c.input_names[i] + " (analytic vs central difference)");
  }

  // Accumulate mode adds to what is there.
  std::vector<Tensor> acc = alloc_grads(c, 0.0);
  std::vector<Tensor> prior(acc.size());
  for (size_t i = 0; i < acc.size(); ++i)
    if (acc[i].defined()) {
      prior[i] = random_uniform(acc[i].shape(), -1, 1, 77 + i, DType::F64);
      acc[i] = prior[i].clone();
    }
  c.backward(ctx, c.inputs, r, acc, GradMode::Accumulate);
  for (size_t i = 0; i < acc.size(); ++i) {
    if (!acc[i].defined()) continue;
    Tensor want = Tensor::empty(acc[i].shape(), DType::F64);
    for (int64_t e = 0; e < want.numel(); ++e) want.set(e, prior[i].item(e) + g[i].item(e));
    require_close(acc[i], want, 1e-12, 1e-12, c.name + ": accumulate d/d" + c.input_names[i]);
  }
  return stats;
}

void check_cpu_vs_cuda(const CaseBuilder& build, double rel_tol, DType t) {
  OpCase c = build(t);
  Context cpu;
  ContextOptions o;
  o.device = Device::Cuda;
  Context gpu(o);

  std::vector<Tensor> din;
  for (auto& x : c.inputs) din.push_back(gpu.to_device(x));
  std::vector<Tensor> out_cpu = c.forward(cpu, c.inputs);
  std::vector<Tensor> out_gpu = c.forward(gpu, din);
  REQUIRE(out_cpu.size() == out_gpu.size());
  const std::string tag = concat(c.name, " (", dtype_name(t), ")");
  auto compare = [&](const Tensor& want, const Tensor& got_dev, const std::string& what) {
    Tensor got = gpu.to_host(got_dev);
    double scale = 0;
    for (int64_t e = 0; e < want.numel(); ++e) scale = std::max(scale, std::abs(want.item(e)));
    require_close(got, want, rel_tol * std::max(scale, 1e-30), 0.0, what);
  };
  for (size_t k = 0; k < out_cpu.size(); ++k)
    compare(out_cpu[k], out_gpu[k], tag + ": output " + std::to_string(k) + " CPU vs CUDA");

  std::vector<Tensor> r, dr;
  for (size_t k = 0; k < out_cpu.size(); ++k) {
    const DType rt = out_cpu[k].dtype() == DType::I32 ? t : out_cpu[k].dtype();
    r.push_back(random_uniform(out_cpu[k].shape(), -1, 1, 500 + k, rt));
    dr.push_back(gpu.to_device(r.back()));
  }
  for (GradMode m : {GradMode::Overwrite, GradMode::Accumulate}) {
    const bool acc = m == GradMode::Accumulate;
    std::vector<Tensor> g_cpu(c.inputs.size()), g_gpu(c.inputs.size());
    for (size_t i = 0; i < c.inputs.size(); ++i)
      if (c.differentiable[i]) {
        // Overwrite starts from NaN (an element left unwritten shows up); Accumulate from a
        // random prior, the same on both devices.
        g_cpu[i] = acc ? random_uniform(c.inputs[i].shape(), -1, 1, 900 + i, c.inputs[i].dtype())
                       : Tensor::empty(c.inputs[i].shape(), c.inputs[i].dtype());
        if (!acc) g_cpu[i].fill(std::nan(""));
        g_gpu[i] = gpu.to_device(g_cpu[i]);
      }
    c.backward(cpu, c.inputs, r, g_cpu, m);
    c.backward(gpu, din, dr, g_gpu, m);
    for (size_t i = 0; i < c.inputs.size(); ++i)
      if (c.differentiable[i])
        compare(g_cpu[i], g_gpu[i],
                tag + (acc ? ": accumulate d/d" : ": d/d") + c.input_names[i] + " CPU vs CUDA");
  }
}

}  // namespace dynsim::test
