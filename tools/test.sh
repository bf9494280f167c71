#!/usr/bin/env bash
# README command 2: install, build and run the whole test suite (ctest). GPU tests report
# "Skipped" without a device; the PyTorch agreement tests run when python3-torch is present.
# With --sanitize it builds and tests the ASan+UBSan configuration (CPU only) in build-asan.
# ctest -j2 in both: the retina acceptance fit (about 500 s) runs beside the rest (test time on a
# 2-core AMD EPYC: main suite 816 s -> 578 s, ASan suite 862 s -> 613 s).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --tests
if [[ "${1:-}" == "--sanitize" ]]; then
  # -O1 -g1 (line tables, no local-variable info): GCC compiles the sanitized code about 2.5x
  # faster than at RelWithDebInfo's -O2 -g (config_toml.cpp 110 s -> 50 s, scheduler.cpp 83 s ->
  # 30 s on a 2-core AMD EPYC) and the reports still name file:line.
  bash tools/build.sh build-asan -DDYNSIM_SANITIZE=ON -DDYNSIM_CUDA=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
    "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # Tests labelled "long" (real training runs) are too slow under ASan; the plain run has them.
  ctest --test-dir build-asan --output-on-failure -j2 -LE long
else
  bash tools/build.sh build
  ctest --test-dir build --output-on-failure -j2
fi
