# lib.sh: helpers of the multi-process integration tests (sourced). Real binaries, a temp dir,
# ipc:// control plane, tcp 127.0.0.1 data plane on free ports, real signals.
# Environment (from CMake): SHOAL_BIN (dir with shoal-worker, shoal-coordinator, shoalctl),
# ITEST_HOSTILE (helper), SHOAL_DATA (a text file to train on).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/poll.sh"

T=$(mktemp -d /tmp/shoal-it.XXXXXX)
PIDS=()
TEST_NAME=${TEST_NAME:-integration}

fail() {
    echo "FAIL [$TEST_NAME]: $*" >&2
    for f in "$T"/*.log; do
        [ -f "$f" ] || continue
        echo "---- tail of $f" >&2
        tail -n 25 "$f" >&2
    done
    exit 1
}

note() { echo "[$TEST_NAME] $*"; }

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null
    done
    wait 2>/dev/null
    [ -n "${KEEP_TMP:-}" ] && echo "kept $T" || rm -rf "$T"
}
trap cleanup EXIT

[ -x "$SHOAL_BIN/shoal-worker" ] && [ -x "$SHOAL_BIN/shoal-coordinator" ] &&
    [ -x "$SHOAL_BIN/shoalctl" ] || { echo "binaries missing in $SHOAL_BIN"; exit 77; }
[ -r "$SHOAL_DATA" ] || { echo "no training data $SHOAL_DATA"; exit 77; }

CTL_EP="ipc://$T/coord/control.sock"
WORKER_EP="ipc://$T/w.sock"

# The coordinator: fast heartbeats so that deaths are seen in about two seconds (10 missed
# heartbeats: a loaded 2-core machine must not kill live workers). DEAD_AFTER_MS overrides.
# The lease runs STEP_WINDOW steps ahead of the committed step.
STEP_WINDOW=4
cat > "$T/coord.yaml" <<EOF
heartbeat_interval_ms: 200
dead_after_ms: ${DEAD_AFTER_MS:-2000}
step_window: $STEP_WINDOW
EOF

# write_spec FILE STEPS EVERY: the run spec every test trains (and the reference trains alone).
write_spec() {
    cat > "$1" <<EOF
name: itest
model:
  preset: tiny
data:
  files:
    - $SHOAL_DATA
  seed: 3
train:
  steps: $2
  global_batch: 6
  seq_len: 32
  micro_batch: 2
  lr: 3e-3
  warmup_steps: 2
checkpoint:
  dir: ckpt
  every_steps: $3
  keep: 3
EOF
}

# start_coord: (re)starts the coordinator on $T/c; sets COORD_PID.
start_coord() {
    "$SHOAL_BIN/shoal-coordinator" --state-dir "$T/coord" --listen "$WORKER_EP" \
        --config "$T/coord.yaml" >> "$T/coord.log" 2>&1 &
    COORD_PID=$!
    PIDS+=("$COORD_PID")
    wait_until 10 "coordinator control socket" ctl status >/dev/null
}

# start_worker NAME [COORD_ENDPOINT] [extra flags...]: sets WPID[NAME]. WORKER_BIN overrides
# the binary (e.g. shoal-worker-attack).
declare -A WPID
start_worker() {
    local name=$1 ep=$WORKER_EP
    shift
    if [ $# -gt 0 ] && [[ $1 == ipc://* || $1 == tcp://* ]]; then
        ep=$1
        shift
    fi
    "${WORKER_BIN:-$SHOAL_BIN/shoal-worker}" --coordinator "$ep" --name "$name" --state-dir "$T/$name" \
        --data-endpoint tcp://127.0.0.1:0 --metrics "$T/$name.jsonl" --comm-timeout-ms 20000 \
        "$@" >> "$T/$name.log" 2>&1 &
    WPID[$name]=$!
    PIDS+=("$!")
}

ctl() { "$SHOAL_BIN/shoalctl" --control "$CTL_EP" --timeout 3 "$@"; }

# wait_until SECONDS WHAT CMD...: polls CMD every 0.1 s until it succeeds; fails after SECONDS.
wait_until() {
    local secs=$1 what=$2
    shift 2
    poll_until "$secs" "$@" || fail "timed out after ${secs}s waiting for $what"
}

# hold_for SECONDS WHAT CMD...: CMD must hold at every poll for SECONDS; fails at the first poll
# where it does not.
hold_for() {
    local secs=$1 what=$2
    shift 2
    poll_while "$secs" "$@" || fail "$what no longer holds"
}

# run_field RUN KEY: one field of `shoalctl status RUN --json`.
run_field() {
    ctl status "$1" --json 2>/dev/null |
        python3 -c "import json,sys; print(json.load(sys.stdin)['runs'][0]['$2'])"
}

# no_reason RUN: `shoalctl status RUN` answers and prints no reason line for RUN ("run RUN:
# unplaced: ..."); the --json document has no reason field (run_field RUN reason is empty
# whatever the coordinator says).
no_reason() {
    ctl status "$1" > "$T/status.out" 2>&1 || fail "status $1: $(cat "$T/status.out")"
    ! grep -q "^run $1: " "$T/status.out" || fail "reason of run $1: $(grep "^run $1: " "$T/status.out")"
}

# paused_step RUN: the committed step that the ledger recorded when RUN was last paused.
paused_step() {
    ctl events "$1" --json 2>/dev/null | python3 -c "
import json, sys
print([e['detail']['step'] for e in json.load(sys.stdin)['events']
       if e['kind'] == 'run_state' and e['detail']['to'] == 'paused'][-1])"
}

run_state_is() { [ "$(run_field "$1" state)" = "$2" ]; }
run_field_at_least() { local v; v=$(run_field "$1" "$2") && [ "${v:-0}" -ge "$3" ]; }
run_step_at_least() { run_field_at_least "$1" step "$2"; }

# metrics_max_step WORKER: the highest step in the worker's metrics (0 before its first).
metrics_max_step() {
    python3 -c "
import json, sys
steps = [json.loads(l)['step'] for l in open(sys.argv[1]) if l.strip()]
print(max(steps, default=0))" "$T/$1.jsonl" 2>/dev/null || echo 0
}

# workers_within STEP WORKER...: no worker has trained a step beyond STEP.
workers_within() {
    local step=$1 w
    shift
    for w in "$@"; do
        [ "$(metrics_max_step "$w")" -le "$step" ] || return 1
    done
}

worker_state() {
    ctl workers --json 2>/dev/null | python3 -c "
import json,sys
for w in json.load(sys.stdin)['workers']:
    if w['name'] == '$1': print(w['state'])"
}
worker_state_is() { [ "$(worker_state "$1")" = "$2" ]; }

# reference SPEC: trains SPEC in one process; the per-step losses land in $T/ref.jsonl.
reference() {
    mkdir -p "$T/ref"
    (cd "$T/ref" && "$SHOAL_BIN/shoal-worker" train "$1" --metrics "$T/ref.jsonl" --quiet \
        > "$T/ref.out" 2>&1) || fail "reference training failed: $(tail -3 "$T/ref.out")"
}

# compare_losses WORKER TOL [FIRST_STEP]: every step the worker logged (its last record of each
# step) has the reference's loss within relative TOL; the last step of the run is among them.
compare_losses() {
    python3 - "$T/ref.jsonl" "$T/$1.jsonl" "$2" "${3:-1}" <<'EOF' || fail "losses of $1 differ from the single-process reference"
import json, sys
ref = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    ref[r["step"] + 1] = r["loss"]  # `train` numbers steps from 0, the daemon from 1
got = {}
for line in open(sys.argv[2]):
    r = json.loads(line)
    got[r["step"]] = r["loss"]
tol, first = float(sys.argv[3]), int(sys.argv[4])
last = max(ref)
assert last in got, f"worker never trained the last step {last}: steps {sorted(got)}"
worst = 0.0
for step, loss in sorted(got.items()):
    if step < first:
        continue
    rel = abs(loss - ref[step]) / abs(ref[step])
    worst = max(worst, rel)
    assert rel <= tol, f"step {step}: loss {loss!r} vs reference {ref[step]!r} (rel {rel:.3g})"
print(f"  {len(got)} steps match the reference, worst relative difference {worst:.3g}, "
      f"final loss {got[last]:.6f}")
EOF
}

# ledger_ok RUN: the hash chain verifies.
ledger_ok() { ctl verify "$1" > "$T/verify.out" 2>&1 || fail "ledger of $1: $(cat "$T/verify.out")"; }

# finish: SIGTERM every live worker and the coordinator; each must exit 0 (a clean Leave, and
# under SHOAL_SANITIZE no leak or UB report); then no sanitizer report in any log.
finish() {
    local name rc
    for name in "${!WPID[@]}"; do
        kill -0 "${WPID[$name]}" 2>/dev/null || continue
        kill -TERM "${WPID[$name]}"
        wait "${WPID[$name]}"
        rc=$?
        [ "$rc" = 0 ] || fail "worker $name exited with $rc on SIGTERM"
    done
    if kill -0 "$COORD_PID" 2>/dev/null; then
        kill -TERM "$COORD_PID"
        wait "$COORD_PID"
        rc=$?
        [ "$rc" = 0 ] || fail "coordinator exited with $rc on SIGTERM"
    fi
    if grep -l "Sanitizer\|runtime error:" "$T"/*.log > "$T/sanitizer.out" 2>/dev/null; then
        fail "sanitizer reports in $(cat "$T/sanitizer.out")"
    fi
    note "ok"
}

# notify_listener FILE: a systemd-style NOTIFY_SOCKET ($T/notify.sock) whose datagrams are
# appended to FILE, one per line, until the test ends.
notify_listener() {
    python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a") as out:
    while True:
        out.write(s.recv(4096).decode(errors="replace") + "\n")
        out.flush()
' "$T/notify.sock" "$1" &
    PIDS+=("$!")
    wait_until 5 "notify socket" test -S "$T/notify.sock"
}
