#!/bin/bash
# curve_shard_admit.sh BINDIR FETCH_TOOL: a worker's CURVE shard server admits only the keys the
# coordinator vouches for (issue 11; ops/SECURITY.md "Shard servers"). A real coordinator and two
# real workers under CURVE, no run: a committed-looking step dir is put in alpha's state dir and
# fetched with curve_shard_fetch. The key of beta, a live listed worker, gets the file; a fresh
# key (shoalctl keys new) is refused at the handshake with no byte served; once beta's key is
# taken off the allow-list and `shoalctl keys reload` runs, a new connection with it is refused
# (the coordinator's revocation ends alpha's cached admission). ~5 s.
. "$(dirname "${BASH_SOURCE[0]}")/ctl_lib.sh" "$1" shard-admit
unset SHOAL_INSECURE
fetch=$2

k="$tmp/keys"
for who in coord w1 w2 admin stranger; do
    "$bin" keys new --out "$k/$who" >/dev/null || { err "keys new --out $k/$who"; exit 1; }
done
for who in w1 w2 admin; do cp "$k/coord/key.public" "$k/$who/coordinator.public"; done
pub() { cat "$k/$1/key.public"; }
cat >"$tmp/allow" <<EOF2
worker uni-a $(pub w1)
worker uni-b $(pub w2)
operator admin bob $(pub admin)
EOF2
# two free ports from one python (its start alone takes seconds on the loaded test machine)
read -r wport cport < <(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
ctl="tcp://127.0.0.1:$cport"
printf 'keys_dir: %s\nallow_list: %s\n' "$k/coord" "$tmp/allow" >"$tmp/coord.yaml"
"$bindir/shoal-coordinator" --state-dir "$tmp/coord" --listen "tcp://127.0.0.1:$wport" \
    --control "$ctl" --config "$tmp/coord.yaml" >"$tmp/coord.log" 2>&1 &
pids+=($!)
as() { "$bin" --control "$ctl" --keys "$k/admin" --timeout 2 "$@"; }
poll_until 10 as status >/dev/null || { err "the coordinator does not answer"; exit 1; }
worker() { curve_worker "$1" "$k/$2"; } # NAME KEYNAME
worker alpha w1
worker beta w2
listed() { as workers --json 2>/dev/null | grep -q "\"$1\""; }
poll_until 20 listed alpha || { err "alpha did not register: $(tail -3 "$tmp/alpha.log")"; exit 1; }
poll_until 20 listed beta || { err "beta did not register: $(tail -3 "$tmp/beta.log")"; exit 1; }
ep=$(sed -n 's/.*checkpoint shard server on \(tcp:[^ ]*\) (CURVE.*/\1/p' "$tmp/alpha.log" | head -1)
[ -n "$ep" ] || { err "alpha's shard server is not CURVE-vouched: $(grep -i shard "$tmp/alpha.log")"; exit 1; }
# a committed step dir below alpha's state dir (what the server serves): its manifest
shard="$tmp/s-alpha/runs/r1/checkpoints/step-00000002"
mkdir -p "$shard" && echo '{"step": 2, "files": []}' >"$shard/manifest.json"
get() { "$fetch" "$k/$1" "$(pub w1)" "$ep" "$shard" manifest.json "$2"; }

get w2 8000 >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q "served [1-9][0-9]* bytes" "$tmp/out" ||
    err "a live listed worker's key did not get the shard file (exit $rc): $(cat "$tmp/out")"
get stranger 8000 >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 3 ] || err "a stranger's key was not refused at the handshake (exit $rc): $(cat "$tmp/out")"
grep -q "served\|error reply" "$tmp/out" && err "a stranger got an answer: $(cat "$tmp/out")"
grep -qF "denied CURVE key $(pub stranger) in domain 'shoal-shards'" "$tmp/alpha.log" ||
    err "alpha did not log the stranger's refusal: $(grep -i "denied\|refuse" "$tmp/alpha.log")"

# revocation: beta's key off the list; alpha's cached admission of it ends with the reload
grep -vF -e "$(pub w2)" "$tmp/allow" >"$tmp/allow.new" && mv "$tmp/allow.new" "$tmp/allow"
as keys reload >/dev/null || err "keys reload"
poll_until 5 grep -qF "shard server refuses key $(pub w2)" "$tmp/alpha.log" ||
    err "alpha was not told of the revocation: $(grep -i "key" "$tmp/alpha.log" | tail -3)"
get w2 8000 >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 3 ] || err "a revoked key was not refused at the handshake (exit $rc): $(cat "$tmp/out")"
[ "$fail" -eq 0 ] && echo "PASS"
exit $fail
