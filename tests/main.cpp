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

#include "engine/core/device.h"

namespace dynsim::test {
std::string& torch_refs_dir_storage();

// Counts the test cases that start, so that a filter matching nothing fails instead of passing.
int& cases_run() {
  static int n = 0;
  return n;
}
struct CaseCounter : doctest::IReporter {
  explicit CaseCounter(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { ++cases_run(); }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};
REGISTER_LISTENER("case_counter", 1, CaseCounter);
}  // namespace dynsim::test

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
  const int rc = dc.run();
  if (rc == 0 && !dc.shouldExit() && dynsim::test::cases_run() == 0) {
    std::printf("FAILED: no test case matched the filters (a renamed test file?)\n");
    return 1;
  }
  return rc;
}
