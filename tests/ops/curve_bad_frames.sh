#!/bin/bash
# curve_bad_frames.sh BINDIR CURVE_SEND: a CURVE coordinator (quarantine_after_bad_messages 1)
# and two CURVE workers training a run; a process holding beta's key pair (a worker of the plan
# that sends garbage) sends alpha's data endpoint malformed frames: alpha drops them, reports
# beta's key in a heartbeat, and the coordinator quarantines beta (the holder of the key), not
# alpha, with the reporter in the reason.
. "$(dirname "${BASH_SOURCE[0]}")/ctl_lib.sh" "$1" curvebad
curve_send=$2
unset SHOAL_INSECURE

k="$tmp/keys"
for who in coord w1 w2; do
    "$bin" keys new --out "$k/$who" >/dev/null || err "keys new --out $k/$who"
done
for who in w1 w2; do cp "$k/coord/key.public" "$k/$who/coordinator.public"; done
pub() { cat "$k/$1/key.public"; }
printf 'worker uni-a %s\nworker uni-a %s\n' "$(pub w1)" "$(pub w2)" >"$tmp/allow"
wport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'keys_dir: %s\nallow_list: %s\nquarantine_after_bad_messages: 1\n' "$k/coord" \
    "$tmp/allow" >"$tmp/coord.yaml"
"$bindir/shoal-coordinator" --state-dir "$tmp/coord" --listen "tcp://127.0.0.1:$wport" \
    --control "$SHOAL_CONTROL" --config "$tmp/coord.yaml" >"$tmp/coord.log" 2>&1 &
pids+=($!)
for w in "alpha w1" "beta w2"; do
    set -- $w
    "$bindir/shoal-worker" --coordinator "tcp://127.0.0.1:$wport" --name "$1" --keys "$k/$2" \
        --state-dir "$tmp/s-$1" >>"$tmp/$1.log" 2>&1 &
    pids+=($!)
done
long_run_spec "$tmp/run.yaml" bad
poll_until 30 "$bin" submit "$tmp/run.yaml" >/dev/null || { err "submit"; exit 1; }
training() { grep -q "^.*step [0-9]*/100000" "$tmp/alpha.log" && grep -q "step [0-9]*/100000" "$tmp/beta.log"; }
poll_until 120 training || { err "the run did not start: $(tail -3 "$tmp/alpha.log")"; exit 1; }
ep=$(grep -o "data endpoint [^ ,]*" "$tmp/alpha.log" | head -1 | cut -d' ' -f3)
[ -n "$ep" ] || { err "no data endpoint in alpha's log"; exit 1; }

"$curve_send" "$k/w2" "$(pub w1)" "$ep" 5 || err "curve_send"
state_of() { "$bin" workers --json | python3 -c "import json,sys; print(' '.join(w['state'] for w in json.load(sys.stdin)['workers'] if w['name']=='$1'))"; }
quarantined() { [ "$(state_of beta)" = quarantined ]; }
poll_until 60 quarantined || err "beta not quarantined: $(state_of beta); alpha: $(grep 'bad frame' "$tmp/alpha.log" | tail -2)"
grep -q "quarantine.*5 bad data-plane frames reported by" "$tmp/coord.log" ||
    err "no quarantine for the reported frames in the coordinator's log: $(grep -i quarantin "$tmp/coord.log" | tail -2)"
[ "$(state_of alpha)" = quarantined ] && err "alpha, the reporter, was quarantined"
grep -qF "bad frame(s) from the connection of key $(pub w2)" "$tmp/alpha.log" ||
    err "alpha did not log beta's key as the sender"
[ "$fail" -eq 0 ] && echo "curve_bad_frames: ok"
exit "$fail"
