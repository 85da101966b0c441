#!/usr/bin/env bash
# shoalctl_live.sh: shoalctl against a real coordinator with two real workers training: workers
# --json has exactly the documented fields with real cells, plan (dry run) places both, pause and
# resume stick, drain/undrain of a real worker, events --follow streams, cancel releases the
# workers. Skips (77) while shoal-worker has no daemon mode. Usage: shoalctl_live.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" ctl
# doc_holds PYTHON-CONDITION VERB...: the condition on `d` (the parsed `shoalctl VERB --json`)
# holds.
doc_holds() {
    local cond=$1; shift
    "$bin" "$@" --json >"$tmp/poll" &&
        python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if ($cond) else 1)" \
            "$tmp/poll"
}
# wait_for SECONDS PYTHON-CONDITION VERB...: polls until doc_holds.
wait_for() {
    local secs=$1 cond=$2; shift 2
    poll_until "$secs" doc_holds "$cond" "$@" && return 0
    err "timed out waiting for: $* --json: $cond (last: $(cat "$tmp/poll"))"
    return 1
}

start_cluster 2 lw
long_run_spec "$tmp/run.yaml" live
wait_for 20 'len(d["workers"]) == 2 and all(w["state"] == "active" for w in d["workers"])' workers
expect 0 submit "$tmp/run.yaml"
wait_for 30 'd["runs"][0]["state"] == "running" and d["runs"][0]["step"] >= 1' status live

expect 0 workers --json
python3 - "$tmp/out" <<'PY' || err "workers --json: $(cat "$tmp/out")"
import json, sys
ws = json.load(open(sys.argv[1]))["workers"]
assert len(ws) == 2, ws
for w in ws:
    assert set(w) == {"id", "name", "state", "run", "cell", "last_heartbeat_ms"}, sorted(w)
    assert w["state"] == "active" and w["run"] == "r1", w
    assert set(w["cell"]) == {"replica", "stage", "ep_rank"}, w
    assert isinstance(w["last_heartbeat_ms"], int) and 0 <= w["last_heartbeat_ms"] < 5000, w
assert sorted(w["cell"]["replica"] for w in ws) == [0, 1], ws
assert sorted(w["name"] for w in ws) == ["lw1", "lw2"], ws
PY
expect 0 workers
grep -Eq "^w[0-9]+ +lw1 +active +r1 +r[01]/s0/e0 +[0-9.]+ s ago$" "$tmp/out" ||
    err "workers table: $(cat "$tmp/out")"

expect 0 plan live --json
python3 - "$tmp/out" <<'PY' || err "plan --json: $(cat "$tmp/out")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["dry_run"] is True, d
p = d["plan"]
assert len(p["peers"]) == 2 and p["topology"]["dp"] * p["topology"]["pp"] * p["topology"]["ep"] == 2, p
PY
expect 0 plan live
grep -Eq "^generation [0-9]+: dp 2 x pp 1 x ep 1" "$tmp/out" || err "plan header: $(cat "$tmp/out")"
grep -Eq "^RANK +WORKER +REPLICA +STAGE +EP_RANK +EXPERTS" "$tmp/out" || err "plan table: $(cat "$tmp/out")"

# events --follow streams entries as JSON lines until interrupted, then exits 0; it shows at
# least every entry the ledger held when it started.
expect 0 events live --json
n_before=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["events"]))' "$tmp/out")
"$bin" events live --follow --json >"$tmp/follow" 2>"$tmp/follow.err" &
fpid=$!
follow_shows() { [ "$(grep -c . "$tmp/follow")" -ge "$1" ]; }
poll_until 30 follow_shows "$n_before" ||
    err "events --follow showed $(grep -c . "$tmp/follow") of $n_before entries in 30 s"
kill -INT "$fpid"; wait "$fpid"; frc=$?
[ $frc -eq 0 ] || err "events --follow exited $frc: $(cat "$tmp/follow.err")"
python3 - "$tmp/follow" <<'PY' || err "events --follow: $(head -c 600 "$tmp/follow")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert lines and lines[0]["seq"] == 1 and lines[0]["kind"] == "submit", lines[:2]
assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1)), [e["seq"] for e in lines]
PY

expect 0 pause live
wait_for 10 'd["runs"][0]["state"] == "paused"' status live
expect 1 pause live                      # already paused: refused
expect 0 resume live
wait_for 10 'd["runs"][0]["state"] == "running"' status live

expect 0 drain lw2
grep -q "lw2" "$tmp/out" || err "drain output: $(cat "$tmp/out")"
wait_for 20 'any(w["name"] == "lw2" and w["state"] == "drained" and w["cell"] is None for w in d["workers"])' workers
expect 0 undrain lw2
wait_for 20 'any(w["name"] == "lw2" and w["state"] == "active" for w in d["workers"])' workers

expect 0 cancel live
wait_for 10 'd["runs"][0]["state"] == "cancelled"' status live
wait_for 10 'all(w["run"] is None for w in d["workers"])' workers
expect 0 verify live

[ $fail -eq 0 ] && echo "shoalctl_live: all checks passed"
[ $fail -eq 0 ] || { for f in coord w1 w2; do echo "---- $f.log"; tail -15 "$tmp/$f.log"; done; }
exit $fail
