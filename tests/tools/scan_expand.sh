#!/usr/bin/env bash
# `dynsim scan expand` end to end: the example grid (DynVision's timing scan, 81 runs) expands to
# byte-identical manifests with 1 and 3 validation threads (and 1 and 2 OpenMP threads), shards
# partition it, and a bad grid exits 78 naming the run, the key and the grid's line:col.
# Usage: scan_expand.sh DYNSIM SOURCE_DIR
set -euo pipefail
dynsim=$1 src=$2
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
OMP_NUM_THREADS=1 "$dynsim" scan expand "$src/models/configs/scans/dynvision_grid.toml" -o "$d/a" -q \
  --threads 1
OMP_NUM_THREADS=2 "$dynsim" scan expand "$src/models/configs/scans/dynvision_grid.toml" -o "$d/b" \
  --threads 3
for f in manifest.jsonl runs.txt scan.json; do cmp "$d/a/$f" "$d/b/$f"; done
test "$(wc -l < "$d/a/manifest.jsonl")" -eq 81
test "$(cut -d' ' -f2 "$d/a/runs.txt" | sort -u | wc -l)" -eq 81
# Shards: 4 shards cover the 81 runs once each; the Slurm variables give the same shard.
for i in 0 1 2 3; do "$dynsim" scan shard "$d/a" --shard "$i/4"; done | sort -n > "$d/shards"
cmp <(sort -n "$d/a/runs.txt") "$d/shards"
SLURM_ARRAY_TASK_ID=12 SLURM_ARRAY_TASK_MIN=10 SLURM_ARRAY_TASK_COUNT=4 "$dynsim" scan shard "$d/a" \
  > "$d/slurm2"
cmp "$d/slurm2" <("$dynsim" scan shard "$d/a" --shard 2/4)
# A bad axis value: exit 78, the location of the value, the run and the key.
cat > "$d/bad.toml" <<TOML
[scan]
kind = "simulate"
[[axis]]
key = "dynamics.tau"
values = [5.0, -1.0]
TOML
set +e
"$dynsim" scan expand "$d/bad.toml" -o "$d/c" 2> "$d/err"
rc=$?
set -e
cat "$d/err"
test $rc -eq 78
grep -q "bad.toml:5:16: run 1: key 'dynamics.tau'" "$d/err"
test ! -e "$d/c/manifest.jsonl"   # nothing written
echo "scan_expand: ok"
