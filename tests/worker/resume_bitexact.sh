#!/usr/bin/env bash
# resume_bitexact: 40 steps straight, and 40 steps with the trainer SIGKILLed after the step-20
# checkpoint and restarted, end with byte-identical model and optimizer tensors. The kill point
# is fixed, not raced: an LD_PRELOAD shim makes the trainer stop itself (SIGSTOP) just before it
# commits its step-30 checkpoint; the test then SIGKILLs the stopped process.
# usage: resume_bitexact.sh SHOAL_WORKER STOP_AT_RENAME_SO
set -euo pipefail
. "$(dirname "$0")/../integration/poll.sh"
worker=$1
shim=$2
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

# (a sanitizer build's runtime wants to be the first library; the shim comes before it)
LD_PRELOAD="$shim" SHOAL_TEST_STOP_AT_RENAME=/step-00000030 \
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
    "$worker" train "$tmp/killed.yaml" > "$tmp/killed1.log" 2>&1 &
pid=$!
stopped() { [ "$(awk '{print $3}' "/proc/$pid/stat")" = T ]; }
stopped_or_gone() { stopped || ! kill -0 "$pid"; }
poll_until 240 stopped_or_gone && stopped ||
    { echo "FAIL: the trainer did not stop before its step-30 commit"; cat "$tmp/killed1.log"; exit 1; }
kill -9 "$pid"
rc=0
wait "$pid" 2>/dev/null || rc=$?
[ "$rc" = 137 ] || { echo "FAIL: the trainer ended with $rc, not by the SIGKILL"; exit 1; }
last=$(grep -c '^step ' "$tmp/killed1.log" || true)
echo "first process SIGKILLed after $last steps, before committing its step-30 checkpoint"
# Killed mid-run: step 20 committed, steps 30 and 40 not (30's files lie in a .tmp dir).
[ -f "$tmp/killed/step-00000020/manifest.json" ] || { echo "FAIL: no committed step-20 checkpoint"; exit 1; }
for s in 30 40; do
    [ ! -e "$tmp/killed/step-000000$s" ] || { echo "FAIL: step $s was committed before the kill"; exit 1; }
done
ls -d "$tmp"/killed/.tmp-step-00000030-* > /dev/null || { echo "FAIL: the kill did not land mid-checkpoint"; exit 1; }

"$worker" train "$tmp/killed.yaml" > "$tmp/killed2.log" 2>&1
grep -q "resumed run resume-test from $tmp/killed/step-00000020" "$tmp/killed2.log" ||
    { echo "FAIL: did not resume from step 20"; cat "$tmp/killed2.log"; exit 1; }
head -1 "$tmp/killed2.log"

for f in model.safetensors optimizer.safetensors trainer_state.json; do
    if ! cmp "$tmp/straight/step-00000040/$f" "$tmp/killed/step-00000040/$f"; then
        echo "FAIL: $f differs between the straight and the killed-and-resumed run"
        exit 1
    fi
done
echo "PASS: step-40 model, optimizer and trainer state are byte-identical"
