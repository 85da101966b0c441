# ctl_lib.sh: what the shoalctl scripts that start a real coordinator and workers share (sourced
# after BINDIR is known): skip without daemon mode, a temp dir and process list cleaned on exit,
# err/expect, and the cluster on 127.0.0.1 with the control socket in the temp dir.
# Usage: . ctl_lib.sh BINDIR TAG  (sets bin, tmp, pids, fail, SHOAL_CONTROL)
. "$(dirname "${BASH_SOURCE[0]}")/../integration/poll.sh"
bindir="$1"
bin="$bindir/shoalctl"
"$bindir/shoal-worker" --help 2>&1 | grep -q -- "--coordinator" ||
    { echo "shoal-worker has no daemon mode (--coordinator) yet: skip"; exit 77; }
tmp=$(mktemp -d "/tmp/shoal-$2-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
[ -n "${KEEP_TMP:-}" ] && trap - EXIT
fail=0
err() { echo "FAIL: $*"; fail=1; }
expect() {
    local want=$1; shift
    "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    [ "$got" -eq "$want" ] || err "shoalctl $* exited $got, expected $want: $(cat "$tmp/err")"
}
export SHOAL_CONTROL="ipc://$tmp/c.sock"

# start_cluster N NAME_PREFIX: a coordinator and N workers named PREFIX1..PREFIXN (state dirs
# $tmp/coord, $tmp/w1..wN; logs $tmp/coord.log, $tmp/wI.log; per-step metrics $tmp/wI.jsonl).
start_cluster() {
    local i
    cluster_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bindir/shoal-coordinator" --state-dir "$tmp/coord" --listen "tcp://127.0.0.1:$cluster_port" \
        --control "$SHOAL_CONTROL" >"$tmp/coord.log" 2>&1 &
    pids+=($!)
    for ((i = 1; i <= $1; i++)); do
        start_worker "$2" "$i"
    done
}

# start_worker NAME_PREFIX I [FLAGS...]: one more worker PREFIXI of the cluster (state dir
# $tmp/wI, log $tmp/wI.log, metrics $tmp/wI.jsonl); its pid is ${pids[-1]} and worker_pid[I].
declare -A worker_pid
start_worker() {
    local prefix=$1 i=$2
    shift 2
    "$bindir/shoal-worker" --coordinator "tcp://127.0.0.1:$cluster_port" --name "$prefix$i" \
        --state-dir "$tmp/w$i" --metrics "$tmp/w$i.jsonl" "$@" >>"$tmp/w$i.log" 2>&1 &
    pids+=($!)
    worker_pid[$i]=$!
}

# curve_worker NAME KEYDIR: a CURVE worker NAME of the coordinator on 127.0.0.1:$wport with the
# key pair in KEYDIR (state dir $tmp/s-NAME, log $tmp/NAME.log); its pid joins pids.
curve_worker() {
    "$bindir/shoal-worker" --coordinator "tcp://127.0.0.1:$wport" --name "$1" --keys "$2" \
        --state-dir "$tmp/s-$1" >>"$tmp/$1.log" 2>&1 &
    pids+=($!)
}

# workers_all_active N: exactly N workers registered, every one active.
workers_all_active() {
    "$bin" workers --json 2>/dev/null | python3 -c \
        'import json,sys; w=json.load(sys.stdin)["workers"]; sys.exit(0 if len(w) == int(sys.argv[1]) and all(x["state"] == "active" for x in w) else 1)' "$1"
}

# long_run_spec FILE NAME: a tiny run that trains until stopped (steps far beyond any test).
long_run_spec() {
    cat >"$1" <<YAML
name: $2
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
train:
  steps: 100000
  global_batch: 2
  seq_len: 16
  lr: 1e-3
YAML
}
