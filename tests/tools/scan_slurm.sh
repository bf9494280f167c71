#!/usr/bin/env bash
# `dynsim scan submit` on a throwaway one-node Slurm (tests/tools/slurm_node.sh): 20 slow runs
# (DyRCNNx4 32x32, 200 steps, one thread, one run per group) in a 4-task array, at most 2 tasks
# at once (--throttle 2). Task 1 is cancelled (scancel) after its first DONE, must stop short of
# its shard without requeueing itself, and is requeued by hand (scontrol requeue); task 2 gets
# USR1 (the time-limit warning) after its first DONE and must requeue itself. Then the whole
# array finishes and `scan collect` finds every run once: collected == runs, duplicates == 0,
# results.csv has runs + 1 lines with unique run ids, `scan status --json` done == total.
# Without Slurm (not root, no slurm-wlm/munge, daemons that cannot start) it prints
# "SKIP: <reason>", plays the same scenario by hand (the generated sbatch script run with bash
# and the array variables, scontrol stubbed) and exits 77 if every check holds.
# Usage: scan_slurm.sh DYNSIM
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DYNSIM" >&2; exit 2; }
dynsim=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3

N=4           # array tasks
R=5           # runs per task
RUNS=$((N * R))
DEADLINE=240  # seconds for the whole array, from the submission

T=$(mktemp -d)
chmod 755 "$T"   # munged: every directory above its socket must be a+x
S=$T/scan
slurm=
bg_pids=()
cleanup() {
  local rc=$? p
  for p in "${bg_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ -n "$slurm" ]; then bash "$here/slurm_node.sh" stop "$slurm" || true; fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "scan_slurm: FAIL: $*" >&2; exit 1; }
log() { echo "scan_slurm: [$SECONDS s] $*"; }

cat > "$T/grid.toml" <<'TOML'
# 20 runs of ~1 s each (DyRCNNx4 32x32, 200 steps, one thread).
[scan]
kind = "simulate"
seeds = 5
[scan.set]
"model.preset" = "DyRCNNx4"
"model.input_height" = 32
"model.input_width" = 32
"simulation.steps" = 200
"simulation.threads" = 1
[[axis]]
key = "dynamics.tau"
values = [3.0, 9.0]
[[axis]]
key = "stimulus.contrast"
values = [0.5, 1.0]
TOML
"$dynsim" scan expand "$T/grid.toml" -o "$S" -q
test "$(wc -l < "$S/manifest.jsonl")" -eq $RUNS || fail "expand did not give $RUNS runs"

# Runs of shard i (index mod N == i) that have a DONE file.
shard_done() {
  local n=0 _idx id
  while read -r _idx id; do [ -e "$S/runs/$id/DONE" ] && n=$((n + 1)); done \
    < <("$dynsim" scan shard "$S" --shard "$1/$N")
  echo $n
}
# One key of `scan status --json`.
status_get() { "$dynsim" scan status "$S" --json | $py -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# The final checks: collect, counts, results.csv, status. Prints the counts.
check_collected() {
  "$dynsim" scan collect "$S" || fail "scan collect exited $?"
  $py - "$S" $RUNS <<'PY' || fail "collected results are wrong"
import csv, json, sys
d, runs = sys.argv[1], int(sys.argv[2])
c = json.load(open(f"{d}/results.config.json"))["counts"]
print("scan_slurm: counts:", json.dumps(c, sort_keys=True))
rows = list(csv.reader(open(f"{d}/results.csv")))
ids = [r[1] for r in rows[1:]]
ok = True
def check(cond, what):
    global ok
    if not cond:
        print("scan_slurm: FAIL:", what); ok = False
check(rows[0][:2] == ["index", "run_id"], f"results.csv header {rows[0][:2]}")
check(c["runs"] == runs, f"counts.runs {c['runs']} != {runs}")
check(c["collected"] == runs, f"counts.collected {c['collected']} != {runs}")
check(c["duplicates"] == 0, f"counts.duplicates {c['duplicates']} != 0")
check(c["missing"] == 0, f"counts.missing {c['missing']} != 0")
check(len(rows) == runs + 1, f"results.csv has {len(rows)} lines, not {runs + 1}")
check(len(set(ids)) == len(ids), "results.csv repeats a run id")
sys.exit(0 if ok else 1)
PY
  local ndone total
  ndone=$(status_get "done") total=$(status_get total)
  if [ "$ndone" != "$total" ] || [ "$total" != $RUNS ]; then
    fail "scan status: done $ndone, total $total"
  fi
  log "scan status: done $ndone of $total; results.csv: $((RUNS + 1)) lines, unique run ids"
}

# ---------------------------------------------------------------------------------------------
# Without Slurm: the same scenario by hand. Exits 77 when every check holds.
by_hand() {
  log "no Slurm: running the sbatch script's logic by hand"
  "$dynsim" scan submit "$S" --print-sbatch --runs-per-task $R --run-args "--pack 1" \
    --dynsim "$dynsim" > "$T/task.sbatch"
  grep -q -- "--array=0-$((N - 1))\$" "$T/task.sbatch" || fail "sbatch script: no --array=0-$((N - 1))"
  # A stub scontrol records the script's requeue calls.
  mkdir -p "$T/bin"
  printf '#!/bin/sh\necho "$*" >> %s/scontrol.log\n' "$T" > "$T/bin/scontrol"
  chmod +x "$T/bin/scontrol"
  : > "$T/scontrol.log"
  # Task i of job 999 as Slurm would start it; $2: the signal to send after its first DONE.
  task_signalled() {
    local i=$1 sig=$2 pid rc=0 t=0
    PATH=$T/bin:$PATH SLURM_ARRAY_JOB_ID=999 SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_MIN=0 \
      SLURM_ARRAY_TASK_COUNT=$N bash "$T/task.sbatch" > "$T/task$i.log" 2>&1 &
    pid=$!; bg_pids+=("$pid")
    until [ "$(shard_done "$i")" -ge 1 ]; do
      kill -0 "$pid" 2>/dev/null || fail "task $i ended before its first DONE"
      t=$((t + 1)); [ $t -lt 600 ] || fail "task $i: no DONE after 120 s"
      sleep 0.2
    done
    kill -"$sig" "$pid"
    wait "$pid" || rc=$?
    bg_pids=()
    local d; d=$(shard_done "$i")
    log "task $i: $sig after its first DONE: exit $rc with $d of $R runs done"
    [ $rc -eq 75 ] || { cat "$T/task$i.log"; fail "task $i: exit $rc after $sig, not 75"; }
    [ "$d" -lt $R ] || fail "task $i: shard complete after $sig (runs too fast for the test)"
  }
  # Task 1: TERM (what scancel sends) -> 75, no requeue; then its rerun finishes the shard.
  task_signalled 1 TERM
  [ ! -s "$T/scontrol.log" ] || fail "the script called scontrol after TERM: $(cat "$T/scontrol.log")"
  [ "$(status_get pending)" -gt 0 ] || fail "scan status: nothing pending after the TERM"
  # Task 2: USR1 (the time-limit warning) -> 75 and scontrol requeue 999_2.
  task_signalled 2 USR1
  grep -qx "requeue 999_2" "$T/scontrol.log" \
    || fail "after USR1 the script did not run 'scontrol requeue 999_2' ($(cat "$T/scontrol.log"))"
  # Tasks 0 and 3 straight from the array variables (no --shard), then the reruns of 1 and 2.
  for i in 0 3; do
    SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_COUNT=$N \
      "$dynsim" scan run "$S" --pack 1 -q || fail "task $i exited $?"
    [ "$(shard_done $i)" -eq $R ] || fail "task $i: the array variables did not select shard $i/$N"
  done
  for i in 1 2; do
    PATH=$T/bin:$PATH SLURM_ARRAY_JOB_ID=999 SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_MIN=0 \
      SLURM_ARRAY_TASK_COUNT=$N bash "$T/task.sbatch" > "$T/task$i.rerun.log" 2>&1 \
      || { rc=$?; cat "$T/task$i.rerun.log"; fail "task $i rerun exited $rc"; }
    log "task $i rerun: $(grep "scan run:" "$T/task$i.rerun.log" || true)"
  done
  check_collected
  log "all checks hold without Slurm (exit 77: skipped)"
  exit 77
}

# ---------------------------------------------------------------------------------------------
skip_reason=
if [ "$(id -u)" -ne 0 ]; then
  skip_reason="needs root (the test cluster's SlurmUser=root)"
else
  slurm=$T/slurm
  mkdir -p "$slurm"
  out=$(bash "$here/slurm_node.sh" start "$slurm" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -eq 77 ]; then
    skip_reason=$(grep -m1 '^SKIP:' <<< "$out" | sed 's/^SKIP: //') || skip_reason="slurm_node.sh: $out"
  elif [ "$rc" -ne 0 ]; then
    echo "$out"; fail "slurm_node.sh start exited $rc"
  fi
fi
if [ -n "$skip_reason" ]; then
  echo "SKIP: $skip_reason"
  slurm=
  by_hand
fi
# shellcheck disable=SC1091
. "$slurm/env.sh"
log "one-node Slurm up ($(sinfo -h -o '%P %D node(s) %c CPUs %T' | head -n1))"

# Task state (PENDING, RUNNING, CANCELLED, COMPLETED, ...) of array task $1 of the job.
task_state() { squeue -h -t all -j "${job}_$1" -o %T 2>/dev/null | head -n1; }
task_field() { scontrol show job -o "${job}_$1" 2>/dev/null | tr ' ' '\n' | grep "^$2=" | cut -d= -f2-; }
t0=$SECONDS
left() { echo $((DEADLINE - (SECONDS - t0))); }
diagnose() {
  exec >&2
  echo "--- squeue"; squeue -t all -o '%i %T %M %r' || true
  echo "--- scan status"; "$dynsim" scan status "$S" || true
  for f in "$S"/logs/*.out; do [ -e "$f" ] && { echo "--- $f"; tail -n 5 "$f"; }; done
}
# Wait until array task $1 runs and has $2 DONE runs in its shard.
wait_running_done() {
  local i=$1 want=$2 st
  while :; do
    st=$(task_state "$i")
    [ "$st" = RUNNING ] && [ "$(shard_done "$i")" -ge "$want" ] && return 0
    case $st in COMPLETED|CANCELLED|FAILED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY)
      diagnose; fail "task $i is $st before its first DONE could be seen" ;;
    esac
    [ "$(left)" -gt 0 ] || { diagnose; fail "timeout waiting for task $i to run (state $st)"; }
    sleep 0.2
  done
}
# Wait until array task $1 is in a state other than $2 (a |-list, as for case); sets st.
wait_state_not() {
  local i=$1
  while :; do
    st=$(task_state "$i")
    eval "case \$st in $2) ;; *) return 0 ;; esac"
    [ "$(left)" -gt 0 ] || { diagnose; fail "timeout: task $i still $st"; }
    sleep 0.2
  done
}

rc=0
out=$("$dynsim" scan submit "$S" --runs-per-task $R --throttle 2 --run-args "--pack 1" \
  --dynsim "$dynsim") || rc=$?
[ $rc -eq 0 ] || { echo "$out"; fail "scan submit exited $rc"; }
echo "$out"
job=$(grep -E '^[0-9]+$' <<< "$out" | tail -n 1) || fail "no job id in the output of scan submit"
[ "$(ls "$S"/submit-*.sbatch | wc -l)" -eq 1 ] || fail "expected one submit-*.sbatch"
grep -q -- "--array=0-$((N - 1))%2$" "$S/submit-0.sbatch" || fail "submit-0.sbatch: no --array=0-$((N - 1))%2"
log "submitted job $job: $RUNS runs in $N array tasks of $R"

# Task 1: scancel after its first DONE; it finishes its current run, exits 75, no requeue.
wait_running_done 1 1
d1=$(shard_done 1)
log "task ${job}_1 is RUNNING with $d1 of $R runs done: scancel ${job}_1"
scancel "${job}_1"
wait_state_not 1 "RUNNING|COMPLETING|PENDING|CONFIGURING"
d1=$(shard_done 1)
log "task ${job}_1 is $st (ExitCode $(task_field 1 ExitCode)) with $d1 of $R runs done"
[ "$st" = CANCELLED ] || { diagnose; fail "task 1 is $st after scancel, not CANCELLED"; }
[ "$d1" -lt $R ] || fail "task 1 finished its shard before the cancel took (runs too fast for the test)"
[ "$(status_get pending)" -gt 0 ] || fail "scan status: nothing pending after the cancel"
"$dynsim" scan status "$S" | head -n 1 || true
sleep 1
[ "$(task_state 1)" = CANCELLED ] || fail "task 1 requeued itself after scancel ($(task_state 1))"
scontrol requeue "${job}_1"
log "scontrol requeue ${job}_1 (now $(task_state 1))"

# Task 2: USR1 (as --signal=B:USR1@120 sends it before the time limit) after its first DONE;
# the script forwards it, dynsim exits 75 and the script requeues the task.
wait_running_done 2 1
d2=$(shard_done 2)
log "task ${job}_2 is RUNNING with $d2 of $R runs done: scancel --batch --signal=USR1 ${job}_2"
scancel --batch --signal=USR1 "${job}_2"
wait_state_not 2 "RUNNING"
log "task ${job}_2 after USR1: $st with $(shard_done 2) of $R runs done"

# The whole array: nothing left in squeue's default (active) states, every run done.
while :; do
  active=$(squeue -h -j "$job" -o %i 2>/dev/null | wc -l)
  if [ "$active" -eq 0 ] && [ "$(status_get "done")" = $RUNS ]; then break; fi
  [ "$(left)" -gt 0 ] || { diagnose; fail "timeout: the array did not finish in $DEADLINE s"; }
  sleep 0.5
done
log "job $job finished: $(squeue -h -t all -j "$job" -o '%i=%T' | sort | tr '\n' ' ')"
for i in $(seq 0 $((N - 1))); do
  st=$(task_state "$i") rs=$(task_field "$i" Restarts)
  log "task ${job}_$i: $st, restarts ${rs:-?}, exit code $(task_field "$i" ExitCode)"
  [ "$st" = COMPLETED ] || fail "task $i ended $st"
  [ "$(shard_done "$i")" -eq $R ] || fail "task $i: shard not complete"
done
[ "$(task_field 1 Restarts)" -ge 1 ] || fail "task 1 was not restarted"
[ "$(task_field 2 Restarts)" -ge 1 ] || fail "task 2 did not requeue itself after USR1"
[ "$(ls "$S"/logs/"${job}"_*.out | wc -l)" -eq $N ] || fail "expected $N task logs in $S/logs"
check_collected
log "ok (job $job; task 1 cancelled with $d1 of $R runs done and requeued; task 2 requeued itself after USR1)"
