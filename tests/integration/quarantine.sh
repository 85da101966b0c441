#!/usr/bin/env bash
# quarantine.sh: a worker that cannot run any plan (the run's data file is missing on its host)
# fails each plan it gets. The coordinator re-plans at once, then after a back-off, and on its
# third failure in a row quarantines it (state quarantined, `quarantine` in the ledger); the healthy worker
# finishes the run alone with the single-process losses. `shoalctl undrain` makes it active again.
# The data path /proc/self/cwd/data.txt is the same string for both workers but resolves in each
# worker's working directory; only a's has the file.
TEST_NAME=quarantine
. "$(dirname "$0")/lib.sh"

write_spec "$T/run.yaml" 12 4
sed -i "s|- $SHOAL_DATA|- /proc/self/cwd/data.txt|" "$T/run.yaml"
mkdir -p "$T/ha" "$T/hb" "$T/ref"
cp "$SHOAL_DATA" "$T/ha/data.txt"
cp "$SHOAL_DATA" "$T/ref/data.txt"
reference "$T/run.yaml"
start_coord
cd "$T/ha" && start_worker a
cd "$T/hb" && start_worker b
cd "$T"
wait_until 10 "2 active workers" bash -c "[ \$($SHOAL_BIN/shoalctl --control $CTL_EP workers --json | grep -c '\"active\"') -eq 2 ]"
ctl submit "$T/run.yaml" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
T0=$SECONDS
wait_until 30 "b quarantined" worker_state_is b quarantined
note "b quarantined $((SECONDS - T0)) s after the submit, generation $(run_field "$RUN" generation)"
grep -q "assignment failed.*data.txt" "$T/b.log" || fail "b did not fail on its missing data file"
wait_until 90 "run $RUN done" run_state_is "$RUN" done
note "run done $((SECONDS - T0)) s after the submit"
ctl events "$RUN" --json > "$T/events.json" || fail "events"
python3 - "$T/events.json" <<'PY' || fail "ledger: $(cat "$T/events.json" | head -c 2000)"
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
kinds = [e["kind"] for e in ev]
q = [e["detail"] for e in ev if e["kind"] == "quarantine"]
plans = [e["detail"] for e in ev if e["kind"] == "plan"]
assert len(q) == 1 and q[0]["name"] == "b" and "data.txt" in q[0]["detail"], q
assert q[0]["failures"] == 3, q
# gen 1, two failure re-plans, one without b (a spare for a late failure report of a)
assert 4 <= len(plans) <= 5, [(p["generation"], p["reason"]) for p in plans]
assert len(plans[-1]["workers"]) == 1, plans[-1]
print(f"  {len(plans)} plans, quarantine: {q[0]['detail']}")
PY
no_reason "$RUN"
compare_losses a 1e-5
ctl undrain b > /dev/null || fail "undrain b"
wait_until 10 "b active" worker_state_is b active
ledger_ok "$RUN"
finish
