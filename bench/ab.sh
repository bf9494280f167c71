#!/usr/bin/env bash
# A/B timing of two builds in one run: the same benchmark from build A and build B, alternated
# round by round (A B A B ...) so that load changes on a shared machine hit both alike.
# usage: bash bench/ab.sh BUILD_A BUILD_B ROUNDS BENCH [ARGS...]
#   e.g. bash bench/ab.sh ../base/build build 3 fast_paths_bench --threads 1 --repeats 3
# Prints the CPU, each round's output under "== A round i" / "== B round i", and the load.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: bash bench/ab.sh BUILD_A BUILD_B ROUNDS BENCH [ARGS...]" >&2
  exit 64
fi
a=$1 b=$2 rounds=$3 bench=$4
shift 4
for d in "$a" "$b"; do
  if [[ ! -x "$d/bench/$bench" ]]; then
    echo "ab.sh: no executable $d/bench/$bench (build it: cmake --build $d --target $bench)" >&2
    exit 66
  fi
done
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ ]]; then
  echo "ab.sh: ROUNDS must be a positive integer, got '$rounds'" >&2
  exit 64
fi
echo "# ab.sh $(date -u '+%Y-%m-%d %H:%M UTC'), CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "# A = $a, B = $b, command: $bench $*"
for ((i = 1; i <= rounds; ++i)); do
  for side in A B; do
    d=$a; [[ $side == B ]] && d=$b
    echo "== $side round $i (load $(cut -d' ' -f1-3 /proc/loadavg))"
    "$d/bench/$bench" "$@"
  done
done
