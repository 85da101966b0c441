#!/usr/bin/env bash
# shoalctl_fast_death.sh: a SIGKILLed worker is declared dead from its closed connection (the
# coordinator's socket monitor), well before the 3 s heartbeat timeout, and the run re-plans
# without it. A worker that stays alive keeps its place: its connection never closes.
# Usage: shoalctl_fast_death.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" fastdeath
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
start_cluster 2 fd
long_run_spec "$tmp/run.yaml" fd
workers_up() {
    "$bin" workers --json 2>/dev/null | python3 -c \
        'import json,sys; w=json.load(sys.stdin)["workers"]; sys.exit(0 if len(w) == 2 else 1)'
}
poll_until 30 workers_up || err "the two workers did not register"
expect 0 submit "$tmp/run.yaml"
training() {
    "$bin" status fd --json 2>/dev/null | python3 -c \
        'import json,sys; r=json.load(sys.stdin)["runs"][0]; sys.exit(0 if r["step"] >= 5 else 1)'
}
poll_until 30 training || err "the run did not start training"
victim=fd2
killed_ms=$(python3 -c 'import time; print(int(time.time() * 1000))')
# the state dir makes the pattern this test's own: tests running side by side use the same names
pkill -KILL -f -- "--name $victim --state-dir $tmp/" || err "could not kill $victim"
dead() {
    "$bin" events fd --json 2>/dev/null | python3 -c '
import json, sys
ev = json.load(sys.stdin)["events"]
sys.exit(0 if any(e["kind"] == "worker_state" and e["detail"]["to"] == "dead" for e in ev) else 1)'
}
poll_until 10 dead || err "$victim was never declared dead"
"$bin" events fd --json >"$tmp/cluster.json" 2>/dev/null
python3 - "$tmp/cluster.json" "$killed_ms" "$victim" <<'PY' || err "death: $(cat "$tmp/cluster.json" | head -c 2000)"
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
killed, victim = int(sys.argv[2]), sys.argv[3]
d = [e for e in ev if e["kind"] == "worker_state" and e["detail"]["to"] == "dead"]
assert len(d) == 1 and d[0]["detail"]["name"] == victim, d
assert d[0]["detail"]["reason"].startswith("connection closed"), d[0]
took = d[0]["time_ms"] - killed
print("%s declared dead %d ms after SIGKILL: %s" % (victim, took, d[0]["detail"]["reason"]))
assert took < 2000, took   # the heartbeat timeout alone would take 3000 ms
PY
# the run goes on without it
replanned() {
    "$bin" status fd --json 2>/dev/null | python3 -c \
        'import json,sys; r=json.load(sys.stdin)["runs"][0]; sys.exit(0 if r["generation"] >= 2 and r["state"] == "running" else 1)'
}
poll_until 20 replanned || err "no re-plan after the death: $("$bin" status fd 2>&1)"
[ $fail -eq 0 ] && echo "shoalctl_fast_death: all checks passed"
[ $fail -eq 0 ] || { for f in coord w1 w2; do echo "---- $f.log"; tail -15 "$tmp/$f.log"; done; }
exit $fail
