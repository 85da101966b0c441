#!/usr/bin/env bash
# worker_sigterm.sh: SIGTERM to a training worker: it finishes or abandons its step, sends Leave
# and exits 0 within the grace period; the coordinator shows it "left"; the others finish the run.
TEST_NAME=worker_sigterm
. "$(dirname "$0")/lib.sh"

GRACE=4
write_spec "$T/run.yaml" 24 4
reference "$T/run.yaml"
start_coord
for w in a b; do start_worker $w; done
start_worker c --grace-seconds $GRACE
wait_until 10 "3 active workers" bash -c "[ \$($SHOAL_BIN/shoalctl --control $CTL_EP workers --json | grep -c '\"active\"') -eq 3 ]"
ctl submit "$T/run.yaml" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
wait_until 60 "step 6" run_step_at_least "$RUN" 6
START=$(date +%s.%N)
kill -TERM "${WPID[c]}"
wait "${WPID[c]}"
RC=$?
ELAPSED=$(python3 -c "import time; print(f'{time.time() - $START:.2f}')")
note "worker c exited with $RC after $ELAPSED s (grace $GRACE s)"
[ "$RC" = 0 ] || fail "worker c exited with $RC, expected 0"
python3 -c "import sys; sys.exit(0 if $ELAPSED <= $GRACE + 0.5 else 1)" ||
    fail "worker c took $ELAPSED s, grace was $GRACE s"
grep -q "session: leaving" "$T/c.log" || fail "worker c sent no Leave"
grep -q "did not acknowledge the Leave" "$T/c.log" && fail "the coordinator did not acknowledge c's Leave"
wait_until 5 "worker c left" worker_state_is c left
wait_until 60 "run $RUN done without c" run_state_is "$RUN" done
[ "$(run_field "$RUN" checkpoint_step)" = 24 ] || fail "final checkpoint not committed"
for w in a b; do compare_losses $w 1e-4; done
ledger_ok "$RUN"
finish
