#!/usr/bin/env bash
# rollback_single.sh MODE: the only worker of a run is stopped a step or two after a committed
# checkpoint and restarted on the same name and state dir; MODE: KILL (SIGKILL, restarted at
# once: it registers again while holding its cell), KILL-dead (SIGKILL, restarted once the
# coordinator declared it dead) or TERM (SIGTERM: it leaves, then is restarted). Nobody holds
# the newest state any more, so the next plan loads the last committed checkpoint (source
# checkpoint, generation + 1, start_step = checkpoint + 1), the ledger records a "rollback"
# {from_step, to_step, steps_lost, generation}, the restarted worker trains on from the
# checkpoint (not from step 1), and the run finishes with the single-process losses and no
# "unplaced" note.
MODE=${1:-KILL}
SIG=${MODE%-dead}
TEST_NAME=rollback_single_$MODE
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/chaos_lib.sh"

EVERY=4
STEPS=120 # ~50 ms a step on an idle machine: 40 steps could end before a poll saw the window
write_spec "$T/run.yaml" $STEPS $EVERY
reference "$T/run.yaml"
start_coord
start_worker a
wait_until 10 "worker a active" worker_state_is a active
submit_run "$T/run.yaml"
# Stop it just past a committed checkpoint (committed step 1 or 2 beyond a multiple of EVERY):
# steps are lost whatever the timing of the signal.
wait_until 60 "step 6 and a checkpoint, between two checkpoints" past_checkpoint "$RUN" 6 $EVERY
stop_worker a "$SIG"
LINES_BEFORE=$(jsonl_lines a)
if [ "$MODE" = KILL-dead ]; then
    wait_until 20 "worker a dead" worker_state_is a dead
elif [ "$MODE" = TERM ]; then
    wait_until 5 "worker a left" worker_state_is a left
fi
# What the coordinator had committed once a was gone (a may have trained on until the signal
# landed, and a SIGTERMed worker finishes its step): the rollback goes back from there.
at_loss "$RUN"
read -r STEP_BEFORE CKPT_BEFORE GEN_BEFORE < "$T/past_checkpoint"
start_worker a
note "worker a stopped by SIG$SIG at committed step $STEP_BEFORE (checkpoint $CKPT_BEFORE, generation $GEN_BEFORE), now $(worker_state a); restarted"
T0=$SECONDS
wait_until 60 "run $RUN done" run_state_is "$RUN" done
note "run done $((SECONDS - T0)) s after the restart, generation $(run_field "$RUN" generation)"
events_json "$RUN" "$T/events.json"
rollback_ok "$T/events.json" "$GEN_BEFORE" "$STEP_BEFORE" "$CKPT_BEFORE" $EVERY
# The restarted process trained from the checkpoint on, not from step 1.
TO=$(cat "$T/events.json.to_step")
FIRST=$(tail -n +$((LINES_BEFORE + 1)) "$T/a.jsonl" | head -1 | python3 -c "import json,sys; print(json.load(sys.stdin)['step'])")
[ "$FIRST" = $((TO + 1)) ] ||
    fail "the restarted worker's first step is $FIRST, expected $((TO + 1)) (after checkpoint $TO)"
grep -q "loaded checkpoint" "$T/a.log" || fail "worker a loaded no checkpoint"
[ "$(run_field "$RUN" step)" = $STEPS ] || fail "status step $(run_field "$RUN" step), expected $STEPS"
[ "$(run_field "$RUN" checkpoint_step)" = $STEPS ] || fail "final checkpoint not committed"
no_reason "$RUN"
compare_losses a 1e-5
ckpt_verify_all "$RUN" a
ledger_ok "$RUN"
finish
