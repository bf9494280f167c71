#!/usr/bin/env bash
# README command 1: install, build, and run the main job on the built-in default: DyRCNNx4 at
# 64x64 watching a grating for 20 steps, responses written to out/default (GPU when present and
# supported by this build, else CPU), then `dynsim info` for the backends and devices.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh build
./build/dynsim info
./build/dynsim simulate --output out/default --overwrite
