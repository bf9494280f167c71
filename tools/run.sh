#!/usr/bin/env bash
# README command 1: install, build, and run the main job on the built-in default
# (GPU when present, else CPU). Until the dynamics engine lands the main job is `dynsim info`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh build
./build/dynsim info
