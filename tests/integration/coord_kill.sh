#!/usr/bin/env bash
# coord_kill.sh: the coordinator is SIGKILLed mid-run and restarted on the same state dir after
# the workers noticed (they keep training within the lease, and resume the session when it answers again): the
# run completes with the single-process losses, no committed step or checkpoint is lost, and
# the ledger verifies.
TEST_NAME=coord_kill
DEAD_AFTER_MS=2500
. "$(dirname "$0")/lib.sh"

write_spec "$T/run.yaml" 24 4
reference "$T/run.yaml"
start_coord
for w in a b c; do start_worker $w; done
wait_until 10 "3 active workers" bash -c "[ \$($SHOAL_BIN/shoalctl --control $CTL_EP workers --json | grep -c '\"active\"') -eq 3 ]"
ctl submit "$T/run.yaml" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
wait_until 60 "step 6 and a checkpoint" bash -c "
    s=\$($SHOAL_BIN/shoalctl --control $CTL_EP status $RUN --json | python3 -c 'import json,sys; r=json.load(sys.stdin)[\"runs\"][0]; print(r[\"step\"], r[\"checkpoint_step\"])')
    set -- \$s; [ \"\$1\" -ge 6 ] && [ \"\$2\" -ge 4 ]"
STEP_BEFORE=$(run_field "$RUN" step)
CKPT_BEFORE=$(run_field "$RUN" checkpoint_step)
kill -KILL "$COORD_PID"
wait "$COORD_PID" 2>/dev/null
note "coordinator killed at committed step >= $STEP_BEFORE, checkpoint $CKPT_BEFORE"
# Down for longer than dead_after: the workers declare it lost and train on to the lease.
for w in a b c; do
    wait_until 30 "worker $w to notice the coordinator's loss" \
        grep -q "no word from the coordinator" "$T/$w.log"
done
start_coord
STEP_AFTER=$(run_field "$RUN" step)
CKPT_AFTER=$(run_field "$RUN" checkpoint_step)
note "restarted: committed step $STEP_AFTER, checkpoint $CKPT_AFTER"
[ "$STEP_AFTER" -ge "$STEP_BEFORE" ] || fail "committed step went back: $STEP_BEFORE -> $STEP_AFTER"
[ "$CKPT_AFTER" -ge "$CKPT_BEFORE" ] || fail "checkpoint went back: $CKPT_BEFORE -> $CKPT_AFTER"
wait_until 60 "run $RUN done after the restart" run_state_is "$RUN" done
[ "$(run_field "$RUN" step)" = 24 ] || fail "status step $(run_field "$RUN" step), expected 24"
[ "$(run_field "$RUN" checkpoint_step)" = 24 ] || fail "final checkpoint not committed"
for w in a b c; do
    compare_losses $w 1e-5
    grep -q "the coordinator answers again" "$T/$w.log" ||
        fail "$w never reconnected"
done
# The workers came back within dead_after: nobody declared dead, no cell lost, one plan.
grep -q -- "-> dead\|cell is lost" "$T/coord.log" && fail "a worker lost its cell over the restart"
[ "$(run_field "$RUN" generation)" = 1 ] || fail "the restart cost a re-plan"
ledger_ok "$RUN"
finish
