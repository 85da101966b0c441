#!/usr/bin/env bash
# worker_kill.sh: one of 3 workers is SIGKILLed mid-run: the coordinator declares it dead, the
# other two continue under a new generation (state agreed from a peer, their in-flight
# collective aborted) and the run completes with the single-process losses.
TEST_NAME=worker_kill
. "$(dirname "$0")/lib.sh"

write_spec "$T/run.yaml" 24 4
reference "$T/run.yaml"
start_coord
for w in a b c; do start_worker $w; done
wait_until 10 "3 active workers" bash -c "[ \$($SHOAL_BIN/shoalctl --control $CTL_EP workers --json | grep -c '\"active\"') -eq 3 ]"
ctl submit "$T/run.yaml" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
wait_until 60 "step 6" run_step_at_least "$RUN" 6
kill -KILL "${WPID[c]}"
T0=$SECONDS
note "worker c killed at committed step $(run_field "$RUN" step)"
wait_until 20 "worker c dead" worker_state_is c dead
wait_until 60 "run $RUN done without c" run_state_is "$RUN" done
note "run done $((SECONDS - T0)) s after the kill, generation $(run_field "$RUN" generation)"
[ "$(run_field "$RUN" generation)" -ge 2 ] || fail "no new plan after the death"
[ "$(run_field "$RUN" step)" = 24 ] || fail "status step $(run_field "$RUN" step), expected 24"
[ "$(run_field "$RUN" checkpoint_step)" = 24 ] || fail "final checkpoint not committed"
# 2 ranks sum the micro-batches in another order than 3: equal up to float rounding.
for w in a b; do compare_losses $w 1e-4; done
grep -q "generation 2" "$T/a.log" || fail "worker a never trained generation 2"
ledger_ok "$RUN"
finish
