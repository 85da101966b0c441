#!/usr/bin/env bash
# rollback_drained.sh: two workers; a is drained, so b alone holds the run's newest state (and
# its newest checkpoint); b is SIGKILLed past a checkpoint, restarted once the coordinator has
# declared it dead, and a is undrained.
# No live worker holds the committed step: the next plan loads the committed checkpoint (not a
# peer state no rank holds), the ledger records the rollback, the run finishes with the
# single-process losses, and neither healthy worker is quarantined.
TEST_NAME=rollback_drained
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/chaos_lib.sh"

EVERY=4
# 200 steps: b trains alone at ~50 ms a step on an idle machine, and the kill must land between
# two checkpoints before the run ends (with 60 steps it landed at the last one)
write_spec "$T/run.yaml" 200 $EVERY
reference "$T/run.yaml"
start_coord
start_worker a
start_worker b
wait_until 10 "2 active workers" n_workers_is active 2
submit_run "$T/run.yaml"
wait_until 60 "step 3" run_step_at_least "$RUN" 3
ctl drain a > "$T/drain.out" || fail "drain a: $(cat "$T/drain.out")"
wait_until 30 "worker a drained" worker_state_is a drained
A_LAST=$(python3 -c "import json; print(max(json.loads(l)['step'] for l in open('$T/a.jsonl')))")
note "a drained after step $A_LAST, generation $(run_field "$RUN" generation)"
# b alone trains on and commits a checkpoint a does not hold; stop it between two checkpoints.
wait_until 60 "a checkpoint after a's drain, between two checkpoints" \
    past_checkpoint "$RUN" 1 $EVERY $((A_LAST + 1))
stop_worker b KILL
wait_until 20 "worker b dead" worker_state_is b dead
at_loss "$RUN" # what the coordinator had committed once b, the only holder, was gone
read -r STEP_BEFORE CKPT_BEFORE GEN_BEFORE < "$T/past_checkpoint"
note "b SIGKILLed at committed step $STEP_BEFORE (checkpoint $CKPT_BEFORE, generation $GEN_BEFORE)"
start_worker b
wait_until 20 "worker b active again" worker_state_is b active
ctl undrain a > "$T/undrain.out" || fail "undrain a: $(cat "$T/undrain.out")"
T0=$SECONDS
wait_until 90 "run $RUN done" run_state_is "$RUN" done
note "run done $((SECONDS - T0)) s after the restart, generation $(run_field "$RUN" generation)"
events_json "$RUN" "$T/events.json"
rollback_ok "$T/events.json" "$GEN_BEFORE" "$STEP_BEFORE" "$CKPT_BEFORE" $EVERY
no_quarantine "$RUN" "$T/events.json"
for w in a b; do worker_state_is $w active || fail "worker $w is $(worker_state $w), expected active"; done
[ "$(run_field "$RUN" checkpoint_step)" = 200 ] || fail "final checkpoint not committed"
no_reason "$RUN"
# 1 rank and 2 ranks sum the micro-batches in another order: equal up to float rounding,
# which a flipped top-k routing choice compounds (1e-4 by step 56).
compare_losses_lineage 1e-2 a b
ckpt_verify_all "$RUN" a b
ledger_ok "$RUN"
finish
