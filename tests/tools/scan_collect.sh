#!/usr/bin/env bash
# The `dynsim scan` CLI from expand to collect on a tiny grid: run, status, collect (CSV and the
# stacked HDF5 read by xarray with named dimensions, padded where runs differ in samples), the
# printed sbatch script, and the exit codes of bad input. Usage: scan_collect.sh DYNSIM
set -euo pipefail
dynsim=$1
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cat > "$d/grid.toml" <<'TOML'
[scan]
kind = "simulate"
seeds = 2
[scan.set]
"model.preset" = "DyRCNNx2"
"model.input_height" = 16
"model.input_width" = 16
"simulation.steps" = 5
[[axis]]
key = "dynamics.tau"
values = [3.0, 9.0]
[[axis]]
name = "stim"
tables = [{"stimulus.contrast" = 0.5}, {"stimulus.contrasts" = [0.2, 0.9]}]
TOML
expect() {  # expect RC CMD...: the command exits RC
  local want=$1; shift
  set +e; "$@" > "$d/out" 2> "$d/err"; local rc=$?; set -e
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL: $* exited $rc, expected $want"; cat "$d/out" "$d/err"; exit 1
  fi
}
"$dynsim" scan expand "$d/grid.toml" -o "$d/s" -q
expect 64 "$dynsim" scan run "$d/s" --pack 0
grep -q -- "--pack '0'" "$d/err"
expect 64 "$dynsim" scan run "$d/s" --index 8
grep -q -- "--index 8: the scan in .* has 8 runs" "$d/err"
expect 64 "$dynsim" scan run "$d/s" --index 1 --shard 0/2
expect 66 "$dynsim" scan run "$d/nothing"
# One shard, then status and a collect that refuses the partial scan.
"$dynsim" scan run "$d/s" --shard 0/2 -q
"$dynsim" scan status "$d/s" > "$d/status"
grep -q "8 run(s): 4 done, 0 running, 4 pending" "$d/status"
expect 65 "$dynsim" scan collect "$d/s"
grep -q "4 of 8 runs are not done" "$d/err"
test ! -e "$d/s/results.csv"
# The rest (progress lines go to stderr without a terminal), then the full collect.
SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_COUNT=2 "$dynsim" scan run "$d/s" 2> "$d/progress"
grep -q "^dynsim scan: 4/4 finished" "$d/progress"
grep -q "shard 1/2: 4 run(s): 4 done now" "$d/progress"
"$dynsim" scan status --json "$d/s" | /usr/bin/python3 -c "import json,sys; s=json.load(sys.stdin); assert s['done'] == 8 and s['total'] == 8, s"
"$dynsim" scan collect "$d/s" --responses "$d/s/responses.h5" > "$d/collect"
grep -q "8 of 8 run(s)" "$d/collect"
test "$(wc -l < "$d/s/results.csv")" -eq 9
head -1 "$d/s/results.csv" | grep -q "^index,run_id,dynamics.tau,stim,model.seed,areas.layer1.onset_ms"
if /usr/bin/python3 -c "import xarray, h5netcdf" 2> /dev/null; then
  /usr/bin/python3 - "$d/s/responses.h5" <<'PY'
import sys, numpy as np, xarray as xr
ds = xr.open_dataset(sys.argv[1], engine="h5netcdf")
r = ds["response_avg_layer1"]
assert r.dims == ("run", "sample", "time"), r.dims
assert r.shape == (8, 2, 5), r.shape
assert list(ds["run"].values) == list(range(8))
assert list(ds["dynamics.tau"].values) == [3.0] * 4 + [9.0] * 4
# Runs of one sample are padded with NaN; runs of two are not.
one, two = r.sel(run=0).values, r.sel(run=2).values
assert np.isnan(one[1]).all() and not np.isnan(one[0]).any() and not np.isnan(two).any()
assert ds["present"].dims == ("run", "area", "time")
print("scan_collect: xarray reads", dict(ds.sizes))
PY
else
  echo "scan_collect: python3-xarray / python3-h5netcdf missing: the xarray read is not checked"
  exit 1
fi
# The sbatch script, printed.
"$dynsim" scan submit "$d/s" --print-sbatch --runs-per-task 3 --throttle 2 --time 2:00:00 \
  --dynsim /opt/dynsim > "$d/sbatch"
grep -q "^#SBATCH --array=0-2%2$" "$d/sbatch"
grep -q "^#SBATCH --signal=B:USR1@120$" "$d/sbatch"
grep -q '"/opt/dynsim" scan run ".*" --shard "$shard/3" --max-hours 1.91667' "$d/sbatch"
expect 64 "$dynsim" scan submit "$d/s" --print-sbatch --time never
echo "scan_collect: ok"
