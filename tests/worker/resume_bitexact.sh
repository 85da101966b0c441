#!/usr/bin/env bash
# resume_bitexact: 40 steps straight, and 40 steps with the trainer SIGKILLed after the step-20
# checkpoint and restarted, end with byte-identical model and optimizer tensors.
# usage: resume_bitexact.sh SHOAL_WORKER
set -euo pipefail
worker=$1
tmp=$(mktemp -d /tmp/shoal-resume-XXXXXX)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
pid=
corpus=/usr/share/games/fortunes/fortunes
[ -f "$corpus" ] || { head -c 300000 /dev/urandom | base64 > "$tmp/corpus.txt"; corpus=$tmp/corpus.txt; }
spec() { # $1 = checkpoint dir
    cat <<EOS
name: resume-test
model: {preset: tiny}
data: {files: [$corpus], seed: 7}
train: {steps: 40, global_batch: 8, seq_len: 64, micro_batch: 4, lr: 3e-3, warmup_steps: 4}
checkpoint: {dir: $1, every_steps: 10, keep: 10}
EOS
}
spec "$tmp/straight" > "$tmp/straight.yaml"
spec "$tmp/killed" > "$tmp/killed.yaml"

"$worker" train "$tmp/straight.yaml" --quiet > "$tmp/straight.log" 2>&1

"$worker" train "$tmp/killed.yaml" > "$tmp/killed1.log" 2>&1 &
pid=$!
for _ in $(seq 1 6000); do
    [ -d "$tmp/killed/step-00000020" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.01
done
[ -d "$tmp/killed/step-00000020" ] || { echo "FAIL: no step-20 checkpoint appeared"; cat "$tmp/killed1.log"; exit 1; }
kill -9 $pid 2>/dev/null && killed=yes || killed="no (it had finished)"
wait $pid 2>/dev/null || true
last=$(grep -c '^step ' "$tmp/killed1.log" || true)
echo "first process SIGKILLed: $killed, after $last steps"
[ "$killed" = yes ] && [ "$last" -lt 40 ] || { echo "FAIL: the trainer was not killed mid-run"; exit 1; }

"$worker" train "$tmp/killed.yaml" > "$tmp/killed2.log" 2>&1
grep -q "resumed run resume-test from" "$tmp/killed2.log" || { echo "FAIL: did not resume"; cat "$tmp/killed2.log"; exit 1; }
head -1 "$tmp/killed2.log"

for f in model.safetensors optimizer.safetensors trainer_state.json; do
    if ! cmp "$tmp/straight/step-00000040/$f" "$tmp/killed/step-00000040/$f"; then
        echo "FAIL: $f differs between the straight and the killed-and-resumed run"
        exit 1
    fi
done
echo "PASS: step-40 model, optimizer and trainer state are byte-identical"
