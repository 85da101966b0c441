#!/usr/bin/env bash
# worker_kill.sh: one of 3 workers is SIGKILLed mid-run: the coordinator declares it dead, the
# other two continue under a new generation (state agreed from a peer, their in-flight
# collective aborted). The killed worker is restarted on its state dir: it joins at a step
# boundary, receives the state from a peer (broadcast) and trains to the end; every worker's
# losses are the single-process ones.
TEST_NAME=worker_kill
. "$(dirname "$0")/lib.sh"

# 120 steps: a step takes ~70 ms on an idle machine, and a worker linked with cuBLAS needs a
# second or more to start on a loaded one; the run must outlast the faults it is put through.
STEPS=120
write_spec "$T/run.yaml" $STEPS 8
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
wait_until 20 "a plan without c" bash -c "grep -q 'generation 2' '$T/a.log'"
note "generation 2 $((SECONDS - T0)) s after the kill"
START_STEP=$(run_field "$RUN" step)
start_worker c
wait_until 180 "run $RUN done" run_state_is "$RUN" done
GEN=$(run_field "$RUN" generation)
note "run done $((SECONDS - T0)) s after the kill, generation $GEN"
[ "$GEN" -ge 3 ] || fail "no plan took the restarted worker back (generation $GEN)"
[ "$(run_field "$RUN" step)" = $STEPS ] || fail "status step $(run_field "$RUN" step), expected $STEPS"
[ "$(run_field "$RUN" checkpoint_step)" = $STEPS ] || fail "final checkpoint not committed"
grep -q "rank [0-9] sends it to" "$T/a.log" "$T/b.log" || fail "no peer broadcast of the state"
# 2 ranks sum the micro-batches in another order than 3: equal up to float rounding.
for w in a b c; do compare_losses $w 1e-4; done
ledger_ok "$RUN"
finish
