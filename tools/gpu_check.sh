#!/usr/bin/env bash
# The GPU check. On a machine with an NVIDIA GPU: builds with CUDA for that GPU, runs the whole
# test suite including the CPU-vs-CUDA suite, compute-sanitizer memcheck and racecheck over the
# GPU tests (where the tool exists), then the benchmarks, and writes one results file (date, GPU,
# driver, CUDA, cuDNN, what ran and its numbers, the DyRCNNx4 GPU benchmark's table) to
# OUT/gpu_check_<date>.txt (the benchmark's JSON lines to OUT/dyrcnn_gpu_<date>.jsonl). Without a
# GPU it runs the CPU part, says so, and exits 0.
# Usage: tools/gpu_check.sh [--out DIR] [--deps DIR] [--build DIR]
#   --deps DIR  header-only dependencies unpacked by tools/fetch_deps.sh (machines without apt)
# Exit status: 0 when everything that could run passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
out=bench/results
deps=""
build=build-gpu
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --deps) deps="$(cd "$2" && pwd)/root"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 64 ;;
  esac
done
mkdir -p "$out"
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
report="$out/gpu_check_$stamp.txt"
status=0
log() { echo "$*" | tee -a "$report"; }

log "# dynsim GPU check, $stamp, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
have_gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  have_gpu=1
  log "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
else
  log "gpu: none found (nvidia-smi missing or no device): running the CPU part only"
  arch=90
fi
log "nvcc: $(command -v nvcc >/dev/null && nvcc --version | tail -1 || echo 'not found')"

args=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_ARCHITECTURES=$arch")
[[ -n "$deps" ]] && args+=("-DCMAKE_PREFIX_PATH=$deps/usr" "-DCMAKE_INCLUDE_PATH=$deps/usr/include")
if ! cmake -S . -B "$build" "${args[@]}" >"$build.configure.log" 2>&1 ||
   ! cmake --build "$build" -j"$(nproc)" >"$build.build.log" 2>&1; then
  log "build: FAILED (see $build.configure.log / $build.build.log)"
  tail -20 "$build.build.log" 2>/dev/null | tee -a "$report"
  exit 1
fi
log "build: ok ($build, CUDA arch $arch)"
log "$("$build/dynsim" info | sed 's/^/  /')"

# 1. The whole suite (the gpu suite reports Skipped without a device).
ctest --test-dir "$build" --output-on-failure >"$build.ctest.log" 2>&1 || status=1
log "tests: $(grep -E 'tests passed' "$build.ctest.log")"
grep -E 'Skipped|Failed' "$build.ctest.log" | sed 's/^/  /' | tee -a "$report"

if [[ $have_gpu -eq 1 ]]; then
  # 2. compute-sanitizer over the op-level GPU tests (tests/ops: every kernel on small shapes).
  # The whole-model cases (Scheduler, Bptt, graphs, generator) run the same kernels on large
  # shapes and would take most of a lent machine's time under the sanitizers; they run
  # unsanitized in step 1.
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [[ -n "$cs" ]]; then
    for tool in memcheck racecheck; do
      if "$cs" --tool "$tool" --error-exitcode 9 "$build/tests/dynsim_tests" --suite=gpu \
          '--source-file=*tests/ops/*' >"$build.$tool.log" 2>&1; then
        log "compute-sanitizer $tool: clean (gpu cases of tests/ops)"
      else
        log "compute-sanitizer $tool: FAILED (see $build.$tool.log)"
        status=1
      fi
    done
  else
    log "compute-sanitizer: not found, skipped"
  fi
fi
# 3. GPU benchmark: DyRCNNx4 forward per precision (and a training step) at 64x64 and 224x224,
# batch 64, T = 20 (bench/dyrcnn_gpu_bench; its JSON lines go next to the report). Without a
# device the binary says that it skipped and exits 0.
gpu_bench="$build/bench/dyrcnn_gpu_bench"
if [[ -x "$gpu_bench" ]]; then
  bench_json="$out/dyrcnn_gpu_$stamp.jsonl"
  if "$gpu_bench" --json "$bench_json" >"$build.gpu_bench.log" 2>&1; then
    log "gpu benchmark (bench/dyrcnn_gpu_bench$([[ -s "$bench_json" ]] && echo ", $bench_json")):"
  else
    log "gpu benchmark: FAILED (see $build.gpu_bench.log)"
    status=1
  fi
  sed 's/^/  /' "$build.gpu_bench.log" | tee -a "$report"
else
  log "gpu benchmark: $gpu_bench was not built"
  status=1
fi
# The fast paths (exact savings) against DynVision's literal order on the device, batch 64.
fp_bench="$build/bench/fast_paths_bench"
if [[ -x "$fp_bench" ]]; then
  if "$fp_bench" --cuda --batch 64 --repeats 5 >"$build.fast_paths.log" 2>&1; then
    log "fast paths on the device (bench/fast_paths_bench --cuda --batch 64):"
  else
    log "fast paths benchmark: FAILED (see $build.fast_paths.log)"
    status=1
  fi
  sed 's/^/  /' "$build.fast_paths.log" | tee -a "$report"
fi
# CPU benchmark (needs /usr/bin/python3 with torch for the ratios).
if /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
  bash bench/run_conv2d_vs_torch.sh "$build" 2>&1 | tail -15 | tee -a "$report"
else
  log "cpu conv2d benchmark vs PyTorch: skipped (no torch under /usr/bin/python3)"
fi
log "result: $([[ $status -eq 0 ]] && echo PASS || echo FAIL)"
echo "gpu_check: wrote $report"
exit $status
