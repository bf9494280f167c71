#!/usr/bin/env bash
# Packing scan runs into one batch (issue 17): 64 small simulate runs of DyRCNNx4 at 32x32 (an
# 8 tau x 8 contrast grid), run three ways in one go on the same machine:
#   pack auto  `dynsim scan run DIR --pack auto` (runs that differ only in tau and contrast
#              share one Scheduler batch)
#   pack 1     `dynsim scan run DIR --pack 1` (one run at a time, one process)
#   separate   64 `dynsim simulate` processes, one after the other (a shell loop)
# Prints runs/s of each, the ratios, and the CPU's name; checks that the packed outputs are
# byte-identical to the pack-1 outputs. Usage: bash bench/scan_pack.sh BUILD [ROUNDS]
set -euo pipefail
build=${1:?usage: scan_pack.sh BUILD [ROUNDS]}
rounds=${2:-1}
dynsim=$(cd "$build" && pwd)/dynsim
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cat > "$d/grid.toml" <<'TOML'
[scan]
kind = "simulate"
name = "pack-bench"
[scan.set]
"model.preset" = "DyRCNNx4"
"model.input_height" = 32
"model.input_width" = 32
[[axis]]
key = "dynamics.tau"
values = [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
[[axis]]
key = "stimulus.contrast"
values = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]
TOML
taus=(3.0 4.0 5.0 6.0 7.0 8.0 9.0 10.0)
cons=(0.2 0.3 0.4 0.5 0.6 0.7 0.8 1.0)
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "scan_pack: $(date -u +%F) on $cpu, $(nproc) cores; 64 runs of DyRCNNx4 32x32, 20 steps"
now() { date +%s.%N; }
times=()
for r in $(seq "$rounds"); do
  rm -rf "$d/auto" "$d/one" "$d/sep"
  "$dynsim" scan expand "$d/grid.toml" -o "$d/auto" -q
  "$dynsim" scan expand "$d/grid.toml" -o "$d/one" -q
  t0=$(now); "$dynsim" scan run "$d/auto" --pack auto -q; t1=$(now)
  "$dynsim" scan run "$d/one" --pack 1 -q; t2=$(now)
  mkdir -p "$d/sep"
  for i in "${!taus[@]}"; do for j in "${!cons[@]}"; do
    "$dynsim" simulate --preset DyRCNNx4 --set model.input_height=32 --set model.input_width=32 \
      --set "dynamics.tau=${taus[$i]}" --set "stimulus.contrast=${cons[$j]}" \
      --set "simulation.output=$d/sep/$i-$j" > /dev/null
  done; done
  t3=$(now)
  a=$(/usr/bin/python3 -c "print($t1 - $t0)"); o=$(/usr/bin/python3 -c "print($t2 - $t1)"); s=$(/usr/bin/python3 -c "print($t3 - $t2)")
  groups=$(/usr/bin/python3 -c "import json,glob; print(len({json.load(open(f))['timing']['group_wall_s'] for f in glob.glob('$d/auto/runs/*/DONE')}))")
  printf 'round %d: pack auto %.2f s (%s group(s)), pack 1 %.2f s, separate %.2f s\n' "$r" "$a" "$groups" "$o" "$s"
  times+=("$a $o $s")
done
# The packed outputs are those of the runs alone, byte for byte.
for f in "$d"/one/runs/*/*; do
  [ "$(basename "$f")" = DONE ] && continue
  cmp -s "$f" "$d/auto/runs/$(basename "$(dirname "$f")")/$(basename "$f")" || { echo "DIFFERENT: $f"; exit 1; }
done
/usr/bin/python3 - "$rounds" "${times[@]}" <<'PY'
import sys
rounds = int(sys.argv[1])
t = [list(map(float, x.split())) for x in sys.argv[2:]]
a, o, s = (min(r[k] for r in t) for k in range(3))
print(f"best of {rounds}: runs/s  pack auto {64 / a:.2f}  pack 1 {64 / o:.2f}  separate {64 / s:.2f}")
print(f"ratios: pack auto / separate {s / a:.2f}x, pack auto / pack 1 {o / a:.2f}x, "
      f"pack 1 / separate {s / o:.2f}x")
PY
echo "outputs: pack auto byte-identical to pack 1"
