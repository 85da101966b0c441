#!/usr/bin/env bash
# drain_restart.sh: a drain outlives the drained worker's process. b and c are drained mid-run,
# then SIGKILLed and restarted under the same name and state dir: b at once (it registers again
# while the coordinator still thinks it alive), c once the coordinator declared it dead. Both
# stay "drained" (no plan takes them) until `shoalctl undrain`, after which they are active and
# join the run, which finishes with the single-process losses.
TEST_NAME=drain_restart
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/chaos_lib.sh"

# 400 steps: a lone worker trains ~8 steps/s, and the drain, both restarts, c's death and the
# holds below take 15-20 s; with 160 steps the run had ended before the undrain (CI, 2026-12-01)
write_spec "$T/run.yaml" 400 10
reference "$T/run.yaml"
start_coord
for w in a b c; do start_worker $w; done
wait_until 10 "3 active workers" n_workers_is active 3
submit_run "$T/run.yaml"
wait_until 60 "step 3" run_step_at_least "$RUN" 3
for w in b c; do ctl drain $w > "$T/drain.out" || fail "drain $w: $(cat "$T/drain.out")"; done
wait_until 30 "b and c drained" n_workers_is drained 2
note "b and c drained at step $(run_field "$RUN" step), generation $(run_field "$RUN" generation)"

declare -A MARK
for w in b c; do MARK[$w]=$(log_lines $w); done
restart_worker b KILL
stop_worker c KILL
wait_until 20 "worker c dead" worker_state_is c dead
start_worker c
# Both new processes registered and heartbeat.
for w in b c; do wait_until 20 "$w registered again" logged_since $w "${MARK[$w]}" "session: registered with"; done
note "b and c restarted: $(worker_state b), $(worker_state c)"
holds_for 3 "b and c drained after their restart" n_workers_is drained 2
GEN=$(run_field "$RUN" generation)
ctl plan "$RUN" --json > "$T/plan.json" || fail "plan $RUN"
python3 - "$T/plan.json" "$(ctl workers --json)" <<'EOF' || fail "a drained worker is in the plan"
import json, sys
plan = json.load(open(sys.argv[1]))["plan"]
ids = {w["name"]: w["id"] for w in json.loads(sys.argv[2])["workers"]}
members = [p["worker"] for p in plan["peers"]]
assert members == [ids["a"]], f"plan generation {plan['generation']}: {members}, names {ids}"
EOF

for w in b c; do ctl undrain $w > "$T/undrain.out" || fail "undrain $w: $(cat "$T/undrain.out")"; done
wait_until 20 "b and c active" n_workers_is active 3
note "undrained at step $(run_field "$RUN" step)"
# 200 s: the ~300 steps left after the undrain take 40 s on an idle machine, 120 s at load 20
wait_until 200 "run $RUN done" run_state_is "$RUN" done
[ "$(run_field "$RUN" generation)" -gt "$GEN" ] || fail "no plan took b and c back"
no_quarantine "$RUN" "$T/events.json"
python3 - "$T/events.json" <<'EOF' || fail "b and c never trained again after the undrain"
import json
ev = json.load(open(__import__("sys").argv[1]))["events"]
plans = [e["detail"] for e in ev if e["kind"] == "plan"]
assert len(plans[-1]["workers"]) == 3, [(p["generation"], p["workers"]) for p in plans]
EOF
for w in a b c; do worker_state_is $w active || fail "worker $w is $(worker_state $w), expected active"; done
# 3 ranks, then 1, then 3 again: float rounding compounded by routing flips (see chaos.sh).
compare_losses_lineage 5e-2 a b c
ledger_ok "$RUN"
finish
