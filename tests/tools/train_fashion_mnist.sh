#!/bin/sh
# ctest train.fashion_mnist (label "long", a minute or two): DyRCNNx2 trained for 2 epochs on
# 2,000 Fashion-MNIST images (padded to 32x32, 3 steps each) must reach a test accuracy of at
# least 0.3 on 500 test images (chance: 0.1), read from summary.json's best_test_accuracy.
# Exit 77 (Skipped) without Debian's dataset-fashion-mnist. Usage: train_fashion_mnist.sh DYNSIM
set -eu
dynsim=${1:?usage: train_fashion_mnist.sh path/to/dynsim}
data=${DYNSIM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [ ! -d "$data" ]; then
  echo "skipped: no Fashion-MNIST under $data (apt-get install dataset-fashion-mnist)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
"$dynsim" train -q -o "$work/out" --preset DyRCNNx2 \
  --set data.dataset=fashion-mnist --set "data.path=$data" \
  --set model.input_channels=1 --set model.input_height=32 --set model.input_width=32 \
  --set data.fit=pad --set data.train_subset=2000 --set data.test_subset=500 \
  --set train.steps=3 --batch 32 --lr 0.005 --set optimizer.weight_decay=0 --epochs 2 \
  --set train.threads=1
wall=$(($(date +%s) - start))
acc=$(sed -n 's/.*"best_test_accuracy": *\([0-9.eE+-]*\).*/\1/p' "$work/out/summary.json")
if [ -z "$acc" ]; then
  echo "no best_test_accuracy in summary.json:"
  cat "$work/out/summary.json"
  exit 1
fi
echo "Fashion-MNIST (2000 train / 500 test, DyRCNNx2, 2 epochs): test accuracy $acc, ${wall} s"
awk -v a="$acc" 'BEGIN { exit !(a >= 0.3) }' || {
  echo "accuracy $acc is below 0.3"
  exit 1
}
