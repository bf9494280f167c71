#!/usr/bin/env bash
# models/configs/scans/Snakefile end to end on tiny_grid.toml (12 runs, 2 shard jobs, --cores 2),
# in a temporary working directory (nothing is written into the source tree): results.csv has
# 13 lines with unique run ids; a second `snakemake` has nothing to do; with results.csv and a
# shard's marker removed it reruns that shard alone (it finds its runs done); a shard whose
# `scan run` exits 75 writes no marker and fails the workflow, and the next call finishes it.
# Exit 77 when snakemake is not installed. Usage: scan_snakemake.sh DYNSIM SOURCE_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 DYNSIM SOURCE_DIR" >&2; exit 2; }
command -v snakemake >/dev/null 2>&1 || { echo "SKIP: snakemake not installed"; exit 77; }
dynsim=$(realpath "$1")
snakefile=$(realpath "$2/models/configs/scans/Snakefile")
py=/usr/bin/python3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

fail() { echo "scan_snakemake: FAIL: $*" >&2; exit 1; }
# snakemake in $T with --cores 2; its output goes to $T/smk.log (printed when it fails).
smk() {
  (cd "$T" && snakemake -s "$snakefile" --directory "$T" --cores 2 --nocolor "$@") \
    > "$T/smk.log" 2>&1
}
# smk, which must succeed: else print its log and fail.
smk_ok() { smk "$@" || { local rc=$?; cat "$T/smk.log"; fail "snakemake $* exited $rc"; }; }
check_results() {
  $py - "$1/results.csv" <<'PY' || fail "$1/results.csv is wrong"
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
ids = [r[1] for r in rows[1:]]
assert rows[0][:2] == ["index", "run_id"], rows[0][:2]
assert len(rows) == 13, f"{len(rows)} lines, not 13"
assert len(set(ids)) == 12, "repeated run ids"
PY
}
echo "scan_snakemake: $(snakemake --version) on $snakefile"

# 1. End to end, then nothing to do.
smk_ok --config "dynsim=$dynsim" out=scan_out
check_results "$T/scan_out"
for i in 0 1; do [ -e "$T/scan_out/shards/$i.done" ] || fail "no marker shards/$i.done"; done
echo "scan_snakemake: first call: $(grep -c '^rule ' "$T/smk.log" || true) job(s); results.csv: 13 lines"
smk_ok --config "dynsim=$dynsim" out=scan_out
grep -q "Nothing to be done" "$T/smk.log" || { cat "$T/smk.log"; fail "the second call had work to do"; }
echo "scan_snakemake: second call: nothing to be done"

# 2. Results and one shard's marker removed: only that shard (its runs already done) and collect
#    run again. (Snakemake 7 does not rerun a job for a missing intermediate file alone.)
rm "$T/scan_out/results.csv" "$T/scan_out/shards/1.done"
smk_ok --config "dynsim=$dynsim" out=scan_out
jobs=$(grep -E '^rule ' "$T/smk.log" | sort | tr '\n' ' ') || true
if [ "$jobs" != "rule collect: rule run_shard: " ] || ! grep -q "wildcards: i=1" "$T/smk.log"; then
  cat "$T/smk.log"; fail "reran: $jobs"
fi
check_results "$T/scan_out"
echo "scan_snakemake: removed results.csv and shards/1.done: reran run_shard (i=1), collect"

# 3. An interrupted shard (scan run exits 75): no marker, the workflow fails; the next call
#    finishes it.
cat > "$T/dynsim75" <<EOF
#!/bin/sh
# dynsim, except that \`scan run\` of shard 1/2 exits 75 as if interrupted.
case "\$*" in *"scan run "*" --shard 1/2 "*) exit 75 ;; esac
exec "$dynsim" "\$@"
EOF
chmod +x "$T/dynsim75"
rc=0; smk --config "dynsim=$T/dynsim75" out=int_out || rc=$?
[ $rc -ne 0 ] || { cat "$T/smk.log"; fail "snakemake exited 0 with an interrupted shard"; }
[ -e "$T/int_out/shards/0.done" ] || { cat "$T/smk.log"; fail "shard 0 has no marker"; }
[ ! -e "$T/int_out/shards/1.done" ] || fail "the interrupted shard 1 has a marker"
[ ! -e "$T/int_out/results.csv" ] || fail "results.csv written with an interrupted shard"
smk_ok --config "dynsim=$dynsim" out=int_out
check_results "$T/int_out"
echo "scan_snakemake: interrupted shard: snakemake exited $rc, no marker; the next call finished"
echo "scan_snakemake: ok"
