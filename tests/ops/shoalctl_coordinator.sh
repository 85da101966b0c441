#!/usr/bin/env bash
# shoalctl_coordinator.sh: every shoalctl verb against a real shoal-coordinator on ipc:// in a
# temp dir: submit, status/workers --json with exactly the documented fields (python3 json),
# refusals exit 1 (invalid spec with FILE:LINE:COLUMN, unknown worker, bad state), verify on
# a fresh ledger, events, cancel. Usage: shoalctl_coordinator.sh BINDIR
set -u
bindir="$1"
bin="$bindir/shoalctl"
tmp=$(mktemp -d /tmp/shoal-ctc-XXXXXX)
coord_pid=
cleanup() {
    [ -n "$coord_pid" ] && kill -TERM "$coord_pid" 2>/dev/null && wait "$coord_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail=0
err() { echo "FAIL: $*"; fail=1; }
expect() {
    local want=$1; shift
    "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    [ "$got" -eq "$want" ] || err "shoalctl $* exited $got, expected $want: $(cat "$tmp/err")"
}
py() { python3 - "$@"; }

export SHOAL_CONTROL="ipc://$tmp/c.sock"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bindir/shoal-coordinator" --state-dir "$tmp/state" --listen "tcp://127.0.0.1:$port" \
    --control "$SHOAL_CONTROL" >"$tmp/coord.log" 2>&1 &
coord_pid=$!
for _ in $(seq 50); do
    "$bin" --timeout 0.2 status >/dev/null 2>&1 && break
    sleep 0.1
done
expect 0 status
grep -q "no runs" "$tmp/out" || err "empty status: $(cat "$tmp/out")"

cat >"$tmp/run.yaml" <<YAML
name: ctl-test
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
train:
  steps: 4
  global_batch: 4
  seq_len: 32
  lr: 1e-3
YAML
expect 0 submit "$tmp/run.yaml"
grep -q "ctl-test" "$tmp/out" || err "submit output: $(cat "$tmp/out")"
expect 1 submit "$tmp/run.yaml"
grep -q "already used" "$tmp/err" || err "duplicate name not refused clearly: $(cat "$tmp/err")"

# An invalid spec: exit 1 with the position.
printf 'name: bad\nmodel:\n  preset: huge\n' >"$tmp/bad.yaml"
expect 1 submit "$tmp/bad.yaml"
grep -Eq "$tmp/bad.yaml:3:[0-9]+:" "$tmp/err" || err "no FILE:LINE:COLUMN: $(cat "$tmp/err")"

expect 0 status --json
py "$tmp/out" <<'PY' || err "status --json: $(cat "$tmp/out")"
import json, sys
doc = json.load(open(sys.argv[1]))
assert set(doc) == {"runs"}, doc
runs = doc["runs"]
assert len(runs) == 1, runs
r = runs[0]
assert set(r) == {"id", "name", "state", "step", "total_steps", "loss", "generation",
                  "checkpoint_step", "reason"}, sorted(r)
assert r["reason"] == "", r
assert r["name"] == "ctl-test" and r["state"] == "pending", r
assert r["step"] == 0 and r["total_steps"] == 4 and r["loss"] is None, r
assert isinstance(r["generation"], int) and isinstance(r["checkpoint_step"], int), r
PY
run_id=$(py "$tmp/out" <<'PY'
import json, sys
print(json.load(open(sys.argv[1]))["runs"][0]["id"])
PY
)
expect 0 status "$run_id" --json
expect 0 status ctl-test
grep -Eq "^ID +NAME +STATE +STEP" "$tmp/out" || err "status table header: $(cat "$tmp/out")"
grep -Eq "^$run_id +ctl-test +pending +0/4 " "$tmp/out" || err "status table row: $(cat "$tmp/out")"
expect 1 status no-such-run
grep -q "no-such-run" "$tmp/err" || err "unknown run not named"

expect 0 workers --json
py "$tmp/out" <<'PY' || err "workers --json: $(cat "$tmp/out")"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc == {"workers": []}, doc
PY
expect 0 workers
expect 1 drain nobody
grep -q "nobody" "$tmp/err" || err "drain: unknown worker not named: $(cat "$tmp/err")"
expect 1 undrain nobody
expect 1 pause no-such-run
# ctl-test is pending: only a paused run resumes, only a running run pauses
expect 1 resume ctl-test
grep -q "only a paused run can be resumed" "$tmp/err" || err "resume of a pending run: $(cat "$tmp/err")"
expect 1 pause ctl-test
grep -q "only a running run can be paused" "$tmp/err" || err "pause of a pending run: $(cat "$tmp/err")"
expect 0 status ctl-test --json
grep -q '"pending"' "$tmp/out" || err "resume moved a pending run: $(cat "$tmp/out")"

expect 0 verify "$run_id"
grep -q "intact" "$tmp/out" || err "verify output: $(cat "$tmp/out")"
expect 0 verify ctl-test --json
py "$tmp/out" <<'PY' || err "verify --json: $(cat "$tmp/out")"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["ok"] is True and doc["entries"] >= 1 and doc["first_bad"] == 0, doc
PY
expect 1 verify no-such-run

expect 0 events ctl-test --json
py "$tmp/out" <<'PY' || err "events --json: $(cat "$tmp/out")"
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
assert ev and ev[0]["seq"] == 1 and ev[0]["kind"] == "submit", ev
assert ev[0]["detail"]["name"] == "ctl-test", ev
assert all(len(e["hash"]) == 64 for e in ev), ev
PY
expect 0 events ctl-test
grep -Eq "^ +1 .* submit " "$tmp/out" || err "events table: $(cat "$tmp/out")"
expect 0 events ctl-test --since 1 --json
py "$tmp/out" <<'PY' || err "events --since: $(cat "$tmp/out")"
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
assert all(e["seq"] > 1 for e in ev), ev
PY

# No worker is live: the plan is refused, clearly, with exit 1.
expect 1 plan ctl-test
grep -q "refused" "$tmp/err" || err "plan refusal: $(cat "$tmp/err")"

expect 0 cancel ctl-test
expect 0 status ctl-test --json
grep -q '"cancelled"' "$tmp/out" || err "cancel did not stick: $(cat "$tmp/out")"
expect 1 resume ctl-test
expect 0 verify ctl-test
expect 0 events ctl-test --limit 1 --json
py "$tmp/out" <<'PY' || err "events --limit 1: $(cat "$tmp/out")"
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
assert len(ev) == 1 and ev[0]["seq"] == 1, ev
PY
expect 0 events ctl-test --json
py "$tmp/out" <<'PY' || err "events after cancel: $(cat "$tmp/out")"
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
assert len(ev) >= 2 and ev[-1]["kind"] == "run_state" and ev[-1]["detail"]["to"] == "cancelled", ev
PY
expect 0 events cluster
grep -q "coordinator_start" "$tmp/out" || err "cluster chain: $(cat "$tmp/out")"
expect 0 verify cluster

# The coordinator goes away: the next request fails within the timeout.
kill -TERM "$coord_pid"; wait "$coord_pid" 2>/dev/null; coord_pid=
expect 1 --timeout 0.5 status
grep -q "unreachable" "$tmp/err" || err "no unreachable message: $(cat "$tmp/err")"

[ $fail -eq 0 ] && echo "shoalctl_coordinator: all checks passed"
[ $fail -eq 0 ] || { echo "---- coordinator log"; tail -20 "$tmp/coord.log"; }
exit $fail
