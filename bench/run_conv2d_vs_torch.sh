#!/usr/bin/env bash
# dynsim CPU conv2d vs PyTorch CPU on DyRCNNx4's layer shapes.
# Usage: bash bench/run_conv2d_vs_torch.sh BUILD_DIR [extra args for conv2d_torch.py]
set -euo pipefail
build=${1:?usage: run_conv2d_vs_torch.sh BUILD_DIR [--threads N] [--repeats R]}
shift
here=$(cd "$(dirname "$0")" && pwd)
bin="$build/bench/conv2d_bench"
[[ -x "$bin" ]] || { echo "no $bin: build the project (Release) first" >&2; exit 66; }
exec /usr/bin/python3 "$here/conv2d_torch.py" "$bin" "$@"
