#!/usr/bin/env bash
# Configures and builds dynsim into BUILD_DIR (default: build). CUDA is used when nvcc exists.
# Environment: DYNSIM_CUDA_ARCHS (e.g. "90") limits the CUDA architectures compiled;
# DYNSIM_CMAKE_ARGS adds configure arguments, as do the arguments after BUILD_DIR; JOBS sets
# the parallel build jobs (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
shift || true
args=(-DCMAKE_BUILD_TYPE=Release)
if [[ -n "${DYNSIM_CUDA_ARCHS:-}" ]]; then args+=("-DCMAKE_CUDA_ARCHITECTURES=${DYNSIM_CUDA_ARCHS}"); fi
# shellcheck disable=SC2206
args+=(${DYNSIM_CMAKE_ARGS:-})
args+=("$@")
cmake -S . -B "$build" "${args[@]}"
cmake --build "$build" -j"${JOBS:-2}"
