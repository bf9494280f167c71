// The op harness (after ggml's test-backend-ops): an OpCase describes one op instance (inputs,
// forward, backward); the checks run it as (a) exact forward comparisons against plain-loop
// references on small-integer inputs, (b) f64 central-difference gradient checks of every
// differentiable input, in both gradient write modes, and (c) CPU vs CUDA on the same inputs.
#pragma once
#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "engine/core/context.h"
#include "engine/core/tensor.h"
#include "kernels/op_common.h"

namespace dynsim::test {

// A fresh folder under the system temp folder (named after `tag`, the pid and a counter),
// removed with everything in it at scope exit.
// A string as one single-quoted shell word.
std::string shell_quote(const std::string& s);
// A whole file as bytes ("" if it cannot be read).
std::string read_text(const std::filesystem::path& p);

class TempDir {
 public:
  explicit TempDir(const std::string& tag = "dynsim_test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Deterministic host tensors (std::mt19937_64 seeded; independent of the engine's RNG).
Tensor random_ints(const Shape& s, int lo, int hi, uint64_t seed, DType t = DType::F32);
Tensor random_uniform(const Shape& s, double lo, double hi, uint64_t seed, DType t = DType::F64);
// Uniform values with |x| >= gap (keeps inputs away from kinks such as relu's 0).
Tensor random_away_from_zero(const Shape& s, double lo, double hi, double gap, uint64_t seed,
                             DType t = DType::F64);

// Element-by-element comparisons; failures name the element and both values.
void require_equal(const Tensor& got, const Tensor& want, const std::string& what);
void require_close(const Tensor& got, const Tensor& want, double atol, double rtol,
                   const std::string& what);

struct OpCase {
  std::string name;
  std::vector<std::string> input_names;
  std::vector<Tensor> inputs;       // host tensors; the harness copies them where it runs
  std::vector<bool> differentiable;  // one per input
  // Outputs for the given inputs (on ctx's device).
  std::function<std::vector<Tensor>(Context&, const std::vector<Tensor>&)> forward;
  // Writes the gradient of every differentiable input into grads[i] (preallocated, same shape
  // as inputs[i], undefined where not differentiable) for the given output gradients.
  std::function<void(Context&, const std::vector<Tensor>& inputs,
                     const std::vector<Tensor>& grad_outputs, const std::vector<Tensor>& grads,
                     GradMode)>
      backward;
};
using CaseBuilder = std::function<OpCase(DType)>;  // fresh inputs in the dtype asked for

struct GradCheckStats {
  int64_t elements = 0;  // how many input elements were perturbed
};

// (b) f64 gradient check: L = sum_k <r_k, y_k> for random r; every element of every
// differentiable input is perturbed by +-eps. Also checks Accumulate == prior + Overwrite.
GradCheckStats check_gradients(const CaseBuilder& build, double eps = 1e-6, double atol = 1e-5,
                               double rtol = 1e-3);

// (c) The same case on the CPU and on CUDA in dtype t (f32 unless the CUDA twin also takes f64):
// outputs, then gradients in Overwrite mode and in Accumulate mode onto the same random prior,
// each within rel_tol (relative to the largest magnitude of the CPU tensor). Call only from
// "gpu" test cases.
void check_cpu_vs_cuda(const CaseBuilder& build, double rel_tol = 1e-5, DType t = DType::F32);

// Location of the PyTorch reference arrays (tests/python/make_torch_refs.py), "" if unset.
const std::string& torch_refs_dir();
// Loads <torch_refs_dir>/<case>/<name>.npy.
Tensor torch_ref(const std::string& case_name, const std::string& array);

}  // namespace dynsim::test
