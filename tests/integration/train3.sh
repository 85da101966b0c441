#!/usr/bin/env bash
# train3.sh: a coordinator and 3 workers train a small run to the same losses as one process
# (`shoal-worker train`), through a pause and a resume; status and workers report it; every
# replica's checkpoint holds the same bits; the ledger verifies. Then a second run on the same
# workers.
TEST_NAME=train3
. "$(dirname "$0")/lib.sh"

write_spec "$T/run.yaml" 20 4
reference "$T/run.yaml"
start_coord
for w in a b c; do start_worker $w; done
wait_until 10 "3 active workers" bash -c "[ \$($SHOAL_BIN/shoalctl --control $CTL_EP workers --json | grep -c '\"active\"') -eq 3 ]"
ctl submit "$T/run.yaml" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
[ -n "$RUN" ] || fail "no run id in: $(cat "$T/submit.out")"
wait_until 60 "the first plan" run_field_at_least "$RUN" generation 1
ctl pause "$RUN" > /dev/null || fail "pause"
# Paused: the workers may train on up to the lease the coordinator froze (the step committed at
# the pause plus the step window; every cell stops at that same boundary), and there they stop:
# the run commits the lease's step, and no worker trains a step beyond it while paused.
run_state_is "$RUN" paused || fail "run $RUN is $(run_field "$RUN" state) after pause"
P=$(paused_step "$RUN") || fail "no pause in the ledger"
LEASE=$((P + STEP_WINDOW < 20 ? P + STEP_WINDOW : 20))
wait_until 60 "the paused run to reach its lease $LEASE" run_step_at_least "$RUN" "$LEASE"
hold_for 2 "no step beyond the lease $LEASE while paused" workers_within "$LEASE" a b c
[ "$(run_field "$RUN" step)" = "$LEASE" ] || fail "step $(run_field "$RUN" step) committed beyond the lease $LEASE while paused"
run_state_is "$RUN" paused || fail "run $RUN is $(run_field "$RUN" state) while paused"
note "paused at step $P, stopped at the frozen lease $LEASE"
ctl resume "$RUN" > /dev/null || fail "resume"
wait_until 60 "run $RUN done" run_state_is "$RUN" done
note "run $RUN done: step $(run_field "$RUN" step), checkpoint $(run_field "$RUN" checkpoint_step), generation $(run_field "$RUN" generation)"
[ "$(run_field "$RUN" step)" = 20 ] || fail "status step $(run_field "$RUN" step), expected 20"
[ "$(run_field "$RUN" checkpoint_step)" = 20 ] || fail "checkpoint step is not 20"
[ "$(run_field "$RUN" generation)" = 1 ] || fail "a fault-free run needs one plan"
for w in a b c; do
    compare_losses $w 1e-5
    [ -f "$T/$w/runs/$RUN/ckpt/step-00000020/manifest.json" ] || fail "$w holds no step-20 checkpoint"
    worker_state_is $w active || fail "worker $w is $(worker_state $w), expected active"
done
# Every replica holds the same bits: data-parallel all-reduce results are identical.
for w in b c; do
    cmp -s "$T/a/runs/$RUN/ckpt/step-00000020/model.safetensors" \
        "$T/$w/runs/$RUN/ckpt/step-00000020/model.safetensors" || fail "replicas a and $w differ"
done
ctl events "$RUN" > "$T/events.out" || fail "events"
grep -q checkpoint "$T/events.out" || fail "no checkpoint in the ledger: $(cat "$T/events.out")"
ledger_ok "$RUN"
# A second run on the same workers: each drops the first run's assignment (STOP) and takes
# the next one.
sed 's/^name: itest/name: second/; s/^  steps: 20/  steps: 4/' "$T/run.yaml" > "$T/run2.yaml"
ctl submit "$T/run2.yaml" > "$T/submit2.out" || fail "submit: $(cat "$T/submit2.out")"
RUN2=$(awk '/submitted run/ {print $3}' "$T/submit2.out")
wait_until 60 "run $RUN2 done" run_state_is "$RUN2" done
[ "$(run_field "$RUN2" checkpoint_step)" = 4 ] || fail "run $RUN2: final checkpoint not committed"
for w in a b c; do
    grep -q "\"run\":\"$RUN2\",\"step\":4," "$T/$w.jsonl" || fail "$w did not train run $RUN2"
done
ledger_ok "$RUN2"
finish
