#!/bin/bash
# curve_cluster.sh BINDIR: CURVE on a real coordinator (worker and control endpoints on TCP) and
# real workers: plaintext TCP is refused without --insecure; a worker with an unknown key cannot
# register; a read key may look but not drain; a key the coordinator does not list (or a client
# that expects another coordinator key) cannot act at all; SIGHUP and `keys reload` admit a newly
# listed key, a bad allow-list is refused with the old one kept; two CURVE workers train a run
# together over the data plane with the keys the plan published, and copy each other's
# checkpoint shards from their CURVE shard servers; a drained worker hands its cell's state over
# to a spare that was in none of its plans (the keys travel in the Handover).
. "$(dirname "${BASH_SOURCE[0]}")/ctl_lib.sh" "$1" curve
unset SHOAL_INSECURE # this test is about what plaintext may not do

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
k="$tmp/keys"
for who in coord w1 w2 w3 reader admin rogue other; do
    "$bin" keys new --out "$k/$who" >/dev/null || err "keys new --out $k/$who"
done
[ "$(stat -c %a "$k/w1/key.secret")" = 600 ] || err "key.secret mode $(stat -c %a "$k/w1/key.secret")"
"$bin" keys new --out "$k/w1" >/dev/null 2>&1 && err "keys new overwrote an existing key"
for who in w1 w2 w3 reader admin rogue; do cp "$k/coord/key.public" "$k/$who/coordinator.public"; done
cp "$k/other/key.public" "$k/other/coordinator.public" # a client that expects another coordinator
pub() { cat "$k/$1/key.public"; }
cat >"$tmp/allow" <<EOF
# institution uni-a
worker uni-a $(pub w1)
worker uni-a $(pub w3)
operator read alice $(pub reader)
operator admin bob $(pub admin)
EOF
wport=$(port)
cport=$(port)
ctl="tcp://127.0.0.1:$cport"
printf 'keys_dir: %s\nallow_list: %s\n' "$k/coord" "$tmp/allow" >"$tmp/coord.yaml"

# plaintext TCP needs --insecure
"$bindir/shoal-coordinator" --state-dir "$tmp/plain" --listen "tcp://127.0.0.1:$wport" \
    >"$tmp/plain.log" 2>&1 && err "a TCP coordinator without keys started"
grep -q "insecure" "$tmp/plain.log" || err "no word of --insecure: $(cat "$tmp/plain.log")"
# the local (ipc) control socket relies on file permissions: 0660
"$bindir/shoal-coordinator" --state-dir "$tmp/local" --listen "ipc://$tmp/local-w.sock" \
    --control "ipc://$tmp/local-c.sock" >"$tmp/local.log" 2>&1 &
local_pid=$!
poll_until 10 test -S "$tmp/local-c.sock" || err "no ipc control socket: $(cat "$tmp/local.log")"
[ "$(stat -c %a "$tmp/local-c.sock")" = 660 ] || err "control socket mode $(stat -c %a "$tmp/local-c.sock")"
kill "$local_pid"; wait "$local_pid"

"$bindir/shoal-coordinator" --state-dir "$tmp/coord" --listen "tcp://127.0.0.1:$wport" \
    --control "$ctl" --config "$tmp/coord.yaml" >"$tmp/coord.log" 2>&1 &
coord=$!
pids+=($coord)
as() { local who=$1; shift; "$bin" --control "$ctl" --keys "$k/$who" --timeout 2 "$@"; }
poll_until 10 as admin status >/dev/null || { err "admin cannot reach the coordinator"; exit 1; }

worker() { curve_worker "$1" "$k/$2"; } # NAME KEYNAME
worker alpha w1
worker beta w2
listed() { as reader workers --json 2>/dev/null | grep -q "\"$1\""; }
poll_until 20 listed alpha || err "a listed worker did not register: $(tail -5 "$tmp/alpha.log")"
grep -q "name alpha, .*uni-a" "$tmp/coord.log" || err "alpha's institution is not its key's (uni-a)"
sleep 1.5
listed beta && err "a worker with an unknown key registered"

# roles
as reader status >/dev/null || err "a read key cannot run status"
as reader drain alpha >"$tmp/out" 2>&1 && err "a read key drained a worker"
grep -qi "forbidden\|not allowed" "$tmp/out" || err "read drain: $(cat "$tmp/out")"
as reader keys reload >/dev/null 2>&1 && err "a read key reloaded the allow-list"
as admin drain alpha >/dev/null || err "an admin key cannot drain"
as admin undrain alpha >/dev/null || err "an admin key cannot undrain"
# keys the coordinator does not list, or a coordinator key that is not the coordinator's
as rogue --timeout 1 status >/dev/null 2>&1 && err "an unlisted operator key got an answer"
as other --timeout 1 status >/dev/null 2>&1 && err "a client expecting another coordinator got an answer"
"$bin" --control "$ctl" --timeout 1 status >"$tmp/out" 2>&1 && err "plaintext shoalctl over TCP worked"
grep -q "operator key" "$tmp/out" || err "plaintext shoalctl: $(cat "$tmp/out")"

# SIGHUP admits a newly listed key; a bad list is refused and the old one stays
echo "worker uni-b $(pub w2)" >>"$tmp/allow"
kill -HUP "$coord"
poll_until 20 listed beta || err "beta not admitted after SIGHUP: $(tail -5 "$tmp/beta.log")"
cp "$tmp/allow" "$tmp/allow.good"
echo "worker uni-c not-a-key" >>"$tmp/allow"
as admin keys reload >"$tmp/out" 2>&1 && err "a bad allow-list was accepted"
grep -q "allow:[0-9]*:" "$tmp/out" || err "bad allow-list error has no FILE:LINE: $(cat "$tmp/out")"
kill -0 "$coord" 2>/dev/null || err "the coordinator died on a bad allow-list"
as admin status >/dev/null || err "the old allow-list is gone after a refused reload"
cp "$tmp/allow.good" "$tmp/allow"
as admin keys reload >/dev/null || err "keys reload of a good list failed"

# the two workers train together (data plane over CURVE, keys from the plan)
cat >"$tmp/run.yaml" <<YAML
name: curve
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
train:
  steps: 4
  global_batch: 2
  seq_len: 16
  lr: 1e-3
checkpoint:
  every_steps: 2
  replicas: 1
YAML
as admin submit "$tmp/run.yaml" >/dev/null || err "submit"
done_run() { as reader status curve --json 2>/dev/null | grep -q "\"state\": *\"done\""; }
poll_until 120 done_run || err "the CURVE run did not complete: $(as reader status curve 2>&1)"
grep -q "CURVE key is not\|another CURVE key" "$tmp"/alpha.log "$tmp"/beta.log && err "a genuine peer's frame was refused"
# checkpoint replication between the two (their shard servers are CURVE too)
copied() { grep -q "holding a copy of" "$tmp"/alpha.log "$tmp"/beta.log; }
poll_until 20 copied || err "no checkpoint shard copied over CURVE: $(grep -h "copy" "$tmp"/alpha.log "$tmp"/beta.log | tail -3)"

# a hand-over over CURVE: a third worker joins; a run of one cell (the others are spares, so no
# data-parallel peer holds the state): draining the holder hands its state to a spare that was
# in none of the drained worker's plans
worker gamma w3
poll_until 20 listed gamma || err "gamma did not register: $(tail -5 "$tmp/gamma.log")"
sed -e 's/^name: curve/name: hand/' -e 's/steps: 4/steps: 100000/' "$tmp/run.yaml" >"$tmp/hand.yaml"
printf 'parallel:\n  data_parallel: 1\n' >>"$tmp/hand.yaml"
as admin submit "$tmp/hand.yaml" >/dev/null || err "submit hand"
holder() { # the name of the worker holding the cell of run hand, once the run has stepped
    as reader status hand --json 2>/dev/null | grep -q '"step": *[1-9]' &&
        as reader workers --json 2>/dev/null | python3 -c '
import json, sys
w = [x for x in json.load(sys.stdin)["workers"] if x.get("cell") and x["run"]]
sys.exit(1) if len(w) != 1 else print(w[0]["name"])'
}
poll_until 60 holder >/dev/null || err "run hand did not train"
victim=$(holder)
as admin drain "$victim" >/dev/null || err "drain $victim"
took() { grep -q "took the state after step" "$tmp"/alpha.log "$tmp"/beta.log "$tmp"/gamma.log; }
poll_until 60 took || err "no worker took $victim's state over CURVE: $(grep -h "hand-over\|handed\|took" "$tmp"/*.log | tail -5)"
grep -q "handed the state after step" "$tmp/$victim.log" || err "$victim did not hand its state over"
as admin cancel hand >/dev/null || err "cancel hand"
[ "$fail" -eq 0 ] && echo "curve_cluster: ok"
exit "$fail"
