// The golden run: `dynsim simulate` on its built-in defaults (DyRCNNx4, the default stimulus and
// solver) must write the same per-area responses (response_avg_*, response_std_*), logits and
// present arrays as tests/data/golden/simulate_default/, byte for byte. The files were written
// by the build before the layer move (commit 68f4b21), so any change to what the default run
// computes fails here. On the CPU every f32 convolution runs the AVX2/FMA kernel, whose
// blocking is fixed, so the bits do not depend on the machine's cache sizes; a CPU without
// AVX2/FMA takes Eigen's kernels (another summation order): there the arrays are compared
// within 1e-5 relative and the test says loudly that it did not check the bits.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/io/npy.h"
#include "tests/harness.h"

using namespace dynsim;
namespace fs = std::filesystem;

namespace {
const fs::path kGolden = fs::path(DYNSIM_TEST_DATA) / "golden" / "simulate_default";

std::vector<fs::path> golden_files() {
  std::vector<fs::path> v;
  for (const auto& e : fs::directory_iterator(kGolden))
    if (e.path().extension() == ".npy") v.push_back(e.path());
  std::sort(v.begin(), v.end());
  return v;
}
}  // namespace

TEST_CASE("golden: default dynsim simulate writes the recorded arrays bit for bit") {
  const std::vector<fs::path> files = golden_files();
  // 4 areas x (avg, std) + logits + present
  REQUIRE(files.size() == 10);
  const test::TempDir tmp;
  const fs::path out = tmp.path() / "out";
  for (const std::string threads : {"", " --set simulation.threads=1"}) {
    CAPTURE(threads);
    const std::string cmd = test::shell_quote(DYNSIM_CLI) + " simulate -q --overwrite -o " +
                            test::shell_quote(out.string()) + threads;
    const int status = std::system(cmd.c_str());
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    const bool bits = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!bits)
      MESSAGE("WARNING: this CPU lacks AVX2/FMA, so the convolutions take Eigen's kernels: the "
              "golden arrays are compared within 1e-5 relative, NOT bit for bit");
    size_t outputs = 0;
    for (const auto& e : fs::directory_iterator(out)) outputs += e.path().extension() == ".npy";
    CHECK(outputs == files.size());
    for (const fs::path& g : files) {
      CAPTURE(g.filename().string());
      const fs::path o = out / g.filename();
      REQUIRE(fs::exists(o));
      if (bits) {
        CHECK(test::read_text(o) == test::read_text(g));
        continue;
      }
      const Tensor want = load_npy(g.string()), got = load_npy(o.string());
      REQUIRE(want.shape() == got.shape());
      REQUIRE(want.dtype() == got.dtype());
      for (int64_t i = 0; i < want.numel(); ++i) {
        const double w = want.item(i), r = got.item(i);
        if (std::isnan(w)) {
          CHECK(std::isnan(r));
          continue;
        }
        CHECK(std::abs(r - w) <= 1e-5 * std::max(1.0, std::abs(w)));
      }
    }
  }
}
