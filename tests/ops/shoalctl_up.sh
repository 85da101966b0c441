#!/usr/bin/env bash
# shoalctl_up.sh: `shoalctl up --workers 2` on a 4-step tiny run (seq 32) starts a real
# coordinator and two real workers, prints progress, ends with exit 0, copies the final model
# out and leaves no process and no temp dir behind. Skips (77) while shoal-worker has no daemon
# mode. Usage: shoalctl_up.sh BINDIR
set -u
. "$(dirname "$0")/../integration/poll.sh"
bindir="$1"
bin="$bindir/shoalctl"
"$bindir/shoal-worker" --help 2>&1 | grep -q -- "--coordinator" ||
    { echo "shoal-worker has no daemon mode (--coordinator) yet: skip"; exit 77; }
tmp=$(mktemp -d /tmp/shoal-upt-XXXXXX)
up_pid=
cleanup() {
    [ -n "$up_pid" ] && kill -TERM "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail=0
err() { echo "FAIL: $*"; fail=1; }
# no_process_in DIR: no process names DIR on its command line (pgrep -f).
no_process_in() { ! pgrep -f "$1" >/dev/null; }

cat >"$tmp/run.yaml" <<YAML
name: up-test
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
  seed: 3
train:
  steps: 4
  global_batch: 4
  micro_batch: 2
  seq_len: 32
  lr: 1e-3
  warmup_steps: 1
checkpoint:
  every_steps: 2
YAML

# TMPDIR inside $tmp: whatever shoalctl up leaves behind is found (and removed by the trap).
mkdir "$tmp/t"
start=$(date +%s)
TMPDIR="$tmp/t" "$bin" up --workers 2 --out "$tmp/model" --time-limit 150 "$tmp/run.yaml" \
    >"$tmp/out" 2>"$tmp/err" &
up_pid=$!
wait "$up_pid"
rc=$?
up_pid=
secs=$(( $(date +%s) - start ))
[ $rc -eq 0 ] || err "shoalctl up exited $rc after $secs s"
grep -q "coordinator on tcp://127.0.0.1:" "$tmp/out" || err "no cluster line"
grep -Eq "^step [0-9]+/4 +loss" "$tmp/out" || err "no progress lines"
grep -Eq "^step 4/4 +loss [0-9.]+ .*done" "$tmp/out" || err "no final progress line"
grep -q "run up-test done: 4 steps" "$tmp/out" || err "no summary"
grep -q "final model (checkpoint of step 4) in $tmp/model/" "$tmp/out" || err "no model line"
[ -s "$tmp/model/config.json" ] && [ -s "$tmp/model/model.safetensors" ] ||
    err "model directory incomplete: $(ls -la "$tmp/model" 2>&1)"
[ -e "$tmp/model/optimizer.safetensors" ] && err "optimizer state copied into the model dir"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); assert c["hidden_size"] > 0' \
    "$tmp/model/config.json" || err "config.json does not parse"
left=$(ls -A "$tmp/t")
[ -z "$left" ] || err "state dir left behind: $left"
# The children go (the state dir held their sockets and logs; no process names it).
poll_until 10 no_process_in "$tmp/t/" || err "processes left behind: $(pgrep -af "$tmp/t/")"

echo "---- shoalctl up output ($secs s)"; cat "$tmp/out"

# Ctrl-C in the middle of a long run: exit 1, says so, stops every child, removes the state dir.
sed 's/steps: 4$/steps: 100000/' "$tmp/run.yaml" >"$tmp/long.yaml"
TMPDIR="$tmp/t" "$bin" up --workers 2 --out "$tmp/model2" "$tmp/long.yaml" \
    >"$tmp/out2" 2>"$tmp/err2" &
up_pid=$!
poll_until 60 grep -Eq "^step [1-9][0-9]*/100000" "$tmp/out2" ||
    err "long run made no progress: $(cat "$tmp/out2" "$tmp/err2")"
kill -INT "$up_pid"
start=$(date +%s%N)
wait "$up_pid"
rc=$?
up_pid=
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ $rc -eq 1 ] || err "interrupted up exited $rc"
[ $ms -lt 25000 ] || err "interrupted up took $ms ms to stop"
grep -q "interrupted" "$tmp/err2" || err "no 'interrupted' message: $(cat "$tmp/err2")"
left=$(ls -A "$tmp/t")
[ -z "$left" ] || err "state dir left behind after Ctrl-C: $left"
poll_until 10 no_process_in "$tmp/t/" || err "processes left after Ctrl-C: $(pgrep -af "$tmp/t/")"
echo "---- interrupted after $(grep -c '^step' "$tmp/out2") progress lines, stopped in $ms ms"
[ $fail -eq 0 ] || { echo "---- stderr"; cat "$tmp/err"; }
[ $fail -eq 0 ] && echo "shoalctl_up: all checks passed"
exit $fail
