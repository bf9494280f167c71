#!/usr/bin/env bash
# README command 1: install, build, and run the main job on the built-in default: DyRCNNx4 at
# 64x64 shown a grating from step 2 for 15 steps of 2 ms (30 steps in all), on the GPU when
# present and supported by this build, else the CPU. It prints each area's response onset and
# peak latency and writes the responses and a plot of the per-area mean traces to out/default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh build
./build/dynsim info
./build/dynsim simulate --output out/default --overwrite
/usr/bin/python3 tools/python/plot_traces.py out/default
