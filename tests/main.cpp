// Test entry point. Three suites share one binary:
//   (default) CPU tests;   --suite=gpu  CPU-vs-CUDA tests;   --suite=torch  PyTorch agreement.
// The gpu and torch suites exit 77 (ctest: "Skipped", never "Passed") when there is no CUDA
// device or no PyTorch reference data, and say why.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "engine/device.h"

namespace dynsim::test {
std::string& torch_refs_dir_storage();
}

int main(int argc, char** argv) {
  std::string suite = "cpu";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--suite=", 8) == 0) suite = argv[i] + 8;
    if (std::strncmp(argv[i], "--torch-refs=", 13) == 0)
      dynsim::test::torch_refs_dir_storage() = argv[i] + 13;
  }
  doctest::Context dc;
  dc.applyCommandLine(argc, argv);
  if (suite == "gpu") {
    if (dynsim::cuda_device_count() == 0) {
      std::printf("SKIPPED: the CPU-vs-CUDA suite needs a CUDA device (%s)\n",
                  dynsim::cuda_compiled() ? "none found" : "this build has no CUDA backend");
      return 77;
    }
    dc.addFilter("test-suite", "gpu");
  } else if (suite == "torch") {
    const std::string& dir = dynsim::test::torch_refs_dir_storage();
    if (dir.empty() || !std::filesystem::exists(dir + "/COMPLETE")) {
      std::printf("SKIPPED: no PyTorch reference data at '%s' (needs /usr/bin/python3 + torch)\n",
                  dir.c_str());
      return 77;
    }
    dc.addFilter("test-suite", "torch");
  } else {
    dc.addFilter("test-suite-exclude", "gpu,torch");
  }
  return dc.run();
}
