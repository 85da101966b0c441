#!/usr/bin/env bash
# train_converges: the embedded default (tiny preset on Debian's fortunes, global batch 16,
# seq 128, lr 3e-3, 300 steps) takes the loss from about 5.5 to under 2.6.
# usage: train_converges.sh SHOAL_WORKER
set -euo pipefail
worker=$1
[ -d /usr/share/games/fortunes ] || { echo "SKIP: Debian's fortunes package is not installed"; exit 77; }
tmp=$(mktemp -d /tmp/shoal-conv-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
"$worker" train --default --metrics "$tmp/metrics.jsonl" > train.log 2>&1 || { tail -20 train.log; exit 1; }
tail -3 train.log
first=$(grep -m1 '^step ' train.log | awk '{print $4}')
last=$(grep '^step ' train.log | tail -1 | awk '{print $4}')
steps=$(grep -c '^step ' train.log)
echo "loss $first -> $last over $steps steps"
[ "$steps" -eq 300 ] || { echo "FAIL: $steps steps"; exit 1; }
[ "$(wc -l < metrics.jsonl)" -eq 300 ] || { echo "FAIL: metrics stream incomplete"; exit 1; }
awk -v a="$first" -v b="$last" 'BEGIN { exit !(a > 5.0 && a < 6.0 && b < 2.6) }' \
    || { echo "FAIL: expected ~5.5 -> < 2.6"; exit 1; }
[ -f checkpoints/step-00000300/model.safetensors ] || { echo "FAIL: no final checkpoint"; exit 1; }
echo PASS
