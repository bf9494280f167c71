#!/usr/bin/env bash
# Crash safety of `dynsim scan run`: a 200-run tiny CPU scan in 4 shards (packed 4 runs a group),
# kill -9 of a random live shard at a random time, 20 times (a killed shard is restarted before
# the next kill), then every shard rerun to the end and collected. Checks: 0 runs lost, 0
# duplicate rows in the shard logs or results.csv, every run's result row and output files
# (their DONE checksums) equal to an uninterrupted reference scan's. Usage: scan_crash.sh DYNSIM
set -euo pipefail
dynsim=$1
d=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$d"
}
trap cleanup EXIT
cat > "$d/grid.toml" <<'TOML'
[scan]
kind = "simulate"
seeds = 8
[scan.set]
"model.preset" = "DyRCNNx2"
"model.input_height" = 32
"model.input_width" = 32
"simulation.steps" = 12
"simulation.threads" = 1
[[axis]]
key = "dynamics.tau"
values = [3.0, 4.0, 5.0, 7.0, 9.0]
[[axis]]
key = "stimulus.contrast"
values = [0.2, 0.4, 0.6, 0.8, 1.0]
TOML
"$dynsim" scan expand "$d/grid.toml" -o "$d/ref" -q
"$dynsim" scan expand "$d/grid.toml" -o "$d/cut" -q
"$dynsim" scan run "$d/ref" --pack 1 -q

RANDOM=20261207  # a fixed sequence of kill times and victims
start() {  # (re)start shard $1 unless it runs
  local i=$1
  if [ -z "${pids[$i]:-}" ] || ! kill -0 "${pids[$i]}" 2>/dev/null; then
    "$dynsim" scan run "$d/cut" --shard "$i/4" --pack 4 -q --stale-after 5 &
    pids[$i]=$!
  fi
}
kills=0 rounds=0
while [ "$kills" -lt 20 ] && [ "$rounds" -lt 200 ]; do
  rounds=$((rounds + 1))
  for i in 0 1 2 3; do start "$i"; done
  sleep "0.$(printf '%03d' $((RANDOM % 250)))"
  i=$((RANDOM % 4))
  if kill -9 "${pids[$i]}" 2>/dev/null; then
    wait "${pids[$i]}" 2>/dev/null || true
    kills=$((kills + 1))
  fi
done
for i in 0 1 2 3; do
  if [ -n "${pids[$i]:-}" ]; then wait "${pids[$i]}" 2>/dev/null || true; fi
done
pids=()
done_before=$(ls "$d/cut/runs" | grep -cvE '\.(tmp|failed)$' || true)
echo "scan_crash: $kills kill -9 in $rounds rounds; $done_before of 200 runs done before the reruns"
test "$kills" -eq 20
# Rerun every shard to the end (stale leases of killed shards are reclaimed: their pids are gone).
for i in 0 1 2 3; do "$dynsim" scan run "$d/cut" --shard "$i/4" --pack 4 -q; done
"$dynsim" scan collect "$d/ref" -q
"$dynsim" scan collect "$d/cut" -q
/usr/bin/python3 - "$d/ref" "$d/cut" <<'PY'
import json, os, sys
ref, cut = sys.argv[1], sys.argv[2]
def rows(d):
    return [json.loads(l) for l in open(os.path.join(d, "results.jsonl"))]
def done(d, rid):
    return json.load(open(os.path.join(d, "runs", rid, "DONE")))
r, c = rows(ref), rows(cut)
counts = json.load(open(os.path.join(cut, "results.config.json")))["counts"]
logged = []
for f in sorted(os.listdir(os.path.join(cut, "results"))):
    for line in open(os.path.join(cut, "results", f)):
        logged.append(json.loads(line)["run_id"])  # every kept line parses (torn tails are cut)
ids = [x["run_id"] for x in c]
csv = open(os.path.join(cut, "results.csv")).read().splitlines()[1:]
lost = 200 - len(set(ids))
dup_logs = len(logged) - len(set(logged))
dup_csv = len(csv) - len(set(l.split(",")[1] for l in csv))
diff = 0
for a, b in zip(r, c):
    assert a["run_id"] == b["run_id"]
    if a["result"] != b["result"]:
        diff += 1
    elif done(ref, a["run_id"])["outputs"] != done(cut, b["run_id"])["outputs"]:
        diff += 1
print(f"scan_crash: {len(c)} runs collected, {lost} lost, {dup_logs} duplicate log rows, "
      f"{dup_csv} duplicate csv rows, {counts['unlogged']} taken from DONE alone, "
      f"{counts['dropped']} torn log rows dropped, {diff} differing from the reference")
assert len(r) == 200 and len(c) == 200 and lost == 0 and dup_logs == 0 and dup_csv == 0
assert len(csv) == 200 and diff == 0
PY
