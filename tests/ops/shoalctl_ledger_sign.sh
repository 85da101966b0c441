#!/usr/bin/env bash
# shoalctl_ledger_sign.sh: the signed ledger end to end with a real shoal-coordinator on ipc://.
# `keys new-signing` writes a 0600 secret and never overwrites it; a coordinator configured with
# it signs every entry, and `verify --pubkey` (entries fetched live, or an exported file checked
# offline) passes; a wrong key, an altered entry, an altered entry re-hashed without the key and
# stripped signatures each fail with exit 1 and a message naming the entry and the cause. A
# coordinator without a configured key makes one in its state dir (0600) and logs its public
# key; a configured key file that is missing stops it at start. Usage: shoalctl_ledger_sign.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" lsg
coord_pid=
stop_coord() {
    [ -n "$coord_pid" ] && kill -TERM "$coord_pid" 2>/dev/null && wait "$coord_pid" 2>/dev/null
    coord_pid=
}
mode() { stat -c %a "$1"; }
start_coord() { # STATE_DIR [extra flags]
    local state=$1; shift
    "$bindir/shoal-coordinator" --state-dir "$state" --listen "ipc://$tmp/w.sock" \
        --control "$SHOAL_CONTROL" "$@" >"$tmp/coord.log" 2>&1 &
    coord_pid=$!
    pids+=($coord_pid)
    for _ in $(seq 50); do
        "$bin" --timeout 0.2 status >/dev/null 2>&1 && return 0
        kill -0 "$coord_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# keys new-signing: 0600 secret, 64-hex public key, no overwrite
expect 0 keys new-signing --out "$tmp/keys"
[ "$(mode "$tmp/keys/ledger_signing.key")" = 600 ] || err "secret key mode $(mode "$tmp/keys/ledger_signing.key")"
pub=$(cat "$tmp/keys/ledger_signing.pub")
[[ "$pub" =~ ^[0-9a-f]{64}$ ]] || err "public key file: '$pub'"
grep -qF -e "$pub" "$tmp/out" || err "new-signing did not print the public key: $(cat "$tmp/out")"
cp "$tmp/keys/ledger_signing.key" "$tmp/key.before"
expect 1 keys new-signing --out "$tmp/keys"
grep -q "never overwritten" "$tmp/err" || err "overwrite refusal: $(cat "$tmp/err")"
cmp -s "$tmp/key.before" "$tmp/keys/ledger_signing.key" || err "the secret key was overwritten"
expect 0 keys new-signing --out "$tmp/other"
other=$(cat "$tmp/other/ledger_signing.pub")

key_config() { printf 'ledger_signing_key: %s\n' "$1" >"$2"; }  # keys come from config files
key_config "$tmp/keys/ledger_signing.key" "$tmp/signed.yaml"
start_coord "$tmp/state" --config "$tmp/signed.yaml" ||
    { echo "FAIL: coordinator did not start: $(cat "$tmp/coord.log")"; exit 1; }
grep -qF -e "$pub" "$tmp/coord.log" || err "the coordinator did not log its public key"
long_run_spec "$tmp/run.yaml" signed
expect 0 submit "$tmp/run.yaml"
expect 0 verify signed
expect 0 verify signed --pubkey "$tmp/keys/ledger_signing.pub"
grep -q "every one signed by $pub" "$tmp/out" || err "verify --pubkey output: $(cat "$tmp/out")"
expect 0 verify cluster --pubkey "$pub" --json
python3 - "$tmp/out" <<'PY' || err "verify --pubkey --json: $(cat "$tmp/out")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is True and d["first_bad"] == 0 and d["entries"] >= 1, d
PY
expect 1 verify signed --pubkey "$other"
grep -q "entry 1: signature does not verify with the given public key" "$tmp/err" ||
    err "wrong key: $(cat "$tmp/err")"

# the published form: events --json, checked offline once the coordinator is gone
expect 0 events signed --json
cp "$tmp/out" "$tmp/ledger.json"
stop_coord
expect 0 verify --ledger "$tmp/ledger.json" --pubkey "$tmp/keys/ledger_signing.pub"
expect 1 verify --ledger "$tmp/ledger.json" --pubkey "$tmp/other/ledger_signing.pub"
grep -q "signature does not verify" "$tmp/err" || err "offline wrong key: $(cat "$tmp/err")"
expect 2 verify --ledger "$tmp/ledger.json"

tamper() { # HOW OUT: alter entry 1 of the export
    python3 - "$tmp/ledger.json" "$1" "$2" <<'PY'
import hashlib, json, sys
src, how, dst = sys.argv[1:]
doc = json.load(open(src))
ev = doc["events"]
assert len(ev) >= 1, doc
if how == "strip":
    for e in ev:
        del e["sig"]
else:
    ev[0]["kind"] = "forged"
    if how == "rehash":  # recompute every hash as a forger without the key could
        prev = "0" * 64
        for e in ev:
            e["prev_hash"] = prev
            body = {k: v for k, v in e.items() if k not in ("hash", "sig")}
            canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            e["hash"] = prev = hashlib.sha256((prev + canon).encode()).hexdigest()
json.dump(doc, open(dst, "w"))
PY
}
tamper edit "$tmp/edit.json"
expect 1 verify --ledger "$tmp/edit.json" --pubkey "$pub"
grep -q "BROKEN at entry 1: hash does not match" "$tmp/err" || err "tampered entry: $(cat "$tmp/err")"
tamper rehash "$tmp/rehash.json"
expect 1 verify --ledger "$tmp/rehash.json" --pubkey "$pub"
grep -q "entry 1: signature does not verify" "$tmp/err" || err "re-hashed forgery: $(cat "$tmp/err")"
tamper strip "$tmp/strip.json"
expect 1 verify --ledger "$tmp/strip.json" --pubkey "$pub"
grep -q "entry 1: unsigned" "$tmp/err" || err "stripped signatures: $(cat "$tmp/err")"

# no key configured: one made in the state dir, 0600, its public key logged and usable
start_coord "$tmp/state2" || { echo "FAIL: coordinator 2: $(cat "$tmp/coord.log")"; exit 1; }
[ "$(mode "$tmp/state2/ledger_signing.key")" = 600 ] || err "made key mode"
pub2=$(cat "$tmp/state2/ledger_signing.pub")
grep -q "public key $pub2" "$tmp/coord.log" || err "made key not logged: $(cat "$tmp/coord.log")"
expect 0 verify cluster --pubkey "$tmp/state2/ledger_signing.pub"
stop_coord
# restarted, it keeps the same key and extends the signed chain
start_coord "$tmp/state2" || { echo "FAIL: coordinator 2 restart: $(cat "$tmp/coord.log")"; exit 1; }
expect 0 verify cluster --pubkey "$pub2"
grep -q "2 entries verified" "$tmp/out" || err "restart chain: $(cat "$tmp/out")"
stop_coord

# a configured key that is missing stops the coordinator with the path in the message
"$bindir/shoal-coordinator" --state-dir "$tmp/state3" --listen "ipc://$tmp/w.sock" \
    --control "ipc://$tmp/c3.sock" --config <(key_config "$tmp/nope.key" /dev/stdout) \
    >"$tmp/coord3.log" 2>&1
[ $? -ne 0 ] || err "a missing configured key did not stop the coordinator"
grep -q "nope.key" "$tmp/coord3.log" || err "missing key not named: $(cat "$tmp/coord3.log")"
[ -e "$tmp/nope.key" ] && err "a missing configured key was created"
# a key others may read is refused
chmod 644 "$tmp/keys/ledger_signing.key"
"$bindir/shoal-coordinator" --state-dir "$tmp/state4" --listen "ipc://$tmp/w.sock" \
    --control "ipc://$tmp/c4.sock" --config "$tmp/signed.yaml" >"$tmp/coord4.log" 2>&1
[ $? -ne 0 ] || err "a world-readable key was accepted"
grep -q "chmod 600" "$tmp/coord4.log" || err "readable key message: $(cat "$tmp/coord4.log")"

[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
