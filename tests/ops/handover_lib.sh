# handover_lib.sh: what the hand-over abort scripts share (sourced after ctl_lib.sh): the skips
# (no fortunes file, no shoal-worker-attack), a dp 1 x pp 1 run spec $tmp/run.yaml named NAME
# (checkpoint every 5 steps), a coordinator on a free port ($cluster_port, log $tmp/coord.log)
# n_live N: exactly N workers active or standby; and a_trains N: once worker A (logging to
# $tmp/a.log) registers, submits the run and waits for A to train step N.
# Usage: . handover_lib.sh NAME
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
[ -x "$bindir/shoal-worker-attack" ] || { echo "no shoal-worker-attack in $bindir: skip"; exit 77; }
export SHOAL_INSECURE=1 # plaintext TCP on loopback
long_run_spec "$tmp/run.yaml" "$1"
cat >>"$tmp/run.yaml" <<YAML
checkpoint:
  every_steps: 5
parallel:
  pipeline_stages: 1
  data_parallel: 1
YAML
cluster_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bindir/shoal-coordinator" --state-dir "$tmp/coord" --listen "tcp://127.0.0.1:$cluster_port" \
    --control "$SHOAL_CONTROL" >"$tmp/coord.log" 2>&1 &
pids+=($!)
n_live() {
    "$bin" workers --json 2>/dev/null | python3 -c \
        'import json,sys; sys.exit(0 if sum(x["state"] in ("active", "standby") for x in json.load(sys.stdin)["workers"]) == int(sys.argv[1]) else 1)' "$1"
}
trained() { grep -q " step $1/.*generation" "$tmp/a.log"; }
a_trains() {
    poll_until 60 n_live 1 || { err "A did not register"; exit 1; }
    "$bin" submit "$tmp/run.yaml" >/dev/null || { err "submit"; exit 1; }
    poll_until 120 trained "$1" || { err "A did not train step $1"; tail "$tmp/a.log"; exit 1; }
}
