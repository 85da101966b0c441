# fault_bench_lib.sh: what the fault benchmarks (bench_recovery.sh, bench_goodput.sh) share,
# sourced after BINDIR is known: a real coordinator with its default timings (heartbeat 500 ms,
# dead_after 3 s, closed_grace 150 ms: the figures are what an operator gets) and shoal-worker
# daemons on 127.0.0.1, in a temp dir removed on exit; workers killed with real SIGKILL.
# Usage: . fault_bench_lib.sh BINDIR TAG
set -u
bindir=$1
. "$(dirname "${BASH_SOURCE[0]}")/../integration/poll.sh"
"$bindir/shoal-worker" --help 2>&1 | grep -q -- "--coordinator" ||
    { echo "shoal-worker has no daemon mode (--coordinator): skip"; exit 77; }
BENCH_DATA=${BENCH_DATA:-/usr/share/games/fortunes}
[ -r "$BENCH_DATA" ] || { echo "no training data $BENCH_DATA: skip"; exit 77; }
# a version manager's python3 shim first on PATH costs a second a start on a loaded machine
[ -x /usr/bin/python3 ] && python3() { /usr/bin/python3 "$@"; }

tmp=$(mktemp -d "/tmp/shoal-bench-$2-XXXXXX")
declare -A WPID=()
COORD_PID=
cleanup() {
    local p
    for p in "${WPID[@]}" $COORD_PID; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${KEEP_TMP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
die() {
    echo "bench failed: $*" >&2
    for f in "$tmp"/*.log; do echo "---- $f" >&2; tail -n 15 "$f" >&2; done
    exit 1
}
now_ms() { date +%s%3N; }
export SHOAL_CONTROL="ipc://$tmp/c.sock"
# plaintext TCP on loopback, as the test harnesses run it (TCP otherwise needs CURVE keys)
export SHOAL_INSECURE=1
ctl() { "$bindir/shoalctl" --timeout 5 "$@"; }
COORD_EP=

# start_coord: the coordinator on a free TCP port of 127.0.0.1 (its own state dir per cluster).
start_coord() {
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    COORD_EP=tcp://127.0.0.1:$port
    "$bindir/shoal-coordinator" --state-dir "$tmp/$1/coord" --listen "$COORD_EP" \
        --control "$SHOAL_CONTROL" > "$tmp/coord.log" 2>&1 &
    COORD_PID=$!
    poll_until 20 ctl status > /dev/null || die "coordinator did not answer"
}

# start_worker NAME: a worker daemon; log $tmp/NAME.log, metrics $tmp/NAME.jsonl.
start_worker() {
    "$bindir/shoal-worker" --coordinator "$COORD_EP" --name "$1" --state-dir "$tmp/$1" \
        --data-endpoint tcp://127.0.0.1:0 --metrics "$tmp/$1.jsonl" >> "$tmp/$1.log" 2>&1 &
    WPID[$1]=$!
}

# stop_cluster: SIGKILL every worker and the coordinator (between cases).
stop_cluster() {
    local p
    for p in "${WPID[@]}" $COORD_PID; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    WPID=()
    COORD_PID=
}

# bench_spec FILE NAME STEPS PP DP: the run the benches train (tiny, G 8 x T 32 in micro-batches
# of one sequence, checkpoint every 10 steps) in PP stages x DP replicas (fixed: a worker beyond
# them stays a spare instead of making another replica).
bench_spec() {
    cat > "$1" <<EOF
name: $2
model:
  preset: tiny
data:
  files: [$BENCH_DATA]
  seed: 11
train:
  steps: $3
  global_batch: 8
  seq_len: 32
  micro_batch: 1
  lr: 2e-3
  warmup_steps: 5
checkpoint:
  every_steps: 10
parallel:
  pipeline_stages: $4
  data_parallel: $5
EOF
}
TOKENS_PER_STEP=$((8 * 32))

# run_now RUN: the run as `shoalctl status RUN --json` shows it: "state step generation ckpt".
run_now() {
    ctl status "$1" --json 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["runs"][0]
print(r["state"], r["step"], r["generation"], r["checkpoint_step"])'
}
run_step_ge() { local s; s=$(run_now "$1") && set -- $s "$2" && [ "$2" -ge "$5" ]; }
n_live_is() {
    [ "$(ctl workers --json 2>/dev/null | python3 -c '
import json, sys
print(sum(w["state"] in ("active", "standby") for w in json.load(sys.stdin)["workers"]))')" = "$1" ]
}

# cell_worker STAGE PICK: the name of an active worker holding a cell of that stage, the
# (PICK mod their number)-th of them by name.
cell_worker() {
    ctl workers --json 2>/dev/null | python3 -c '
import json, sys
w = sorted(x["name"] for x in json.load(sys.stdin)["workers"] if x.get("cell") and
           x["state"] == "active" and x["cell"]["stage"] == int(sys.argv[1]))
print(w[int(sys.argv[2]) % len(w)])' "$1" "$2"
}

# pct FILE: p50, p99 and max of the numbers in FILE (one a line) as "p50 p99 max n"; p99 is the
# nearest-rank percentile (with 20 samples, the largest).
pct() {
    python3 - "$1" <<'EOF'
import math, sys
v = sorted(float(l) for l in open(sys.argv[1]) if l.strip())
if not v:
    print("- - - 0")
    sys.exit()
rank = lambda p: v[max(0, math.ceil(p / 100 * len(v)) - 1)]
print(f"{rank(50):.0f} {rank(99):.0f} {v[-1]:.0f} {len(v)}")
EOF
}
