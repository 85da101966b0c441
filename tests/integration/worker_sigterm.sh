#!/usr/bin/env bash
# worker_sigterm.sh: an operator drain takes worker b out at a step boundary (it trains to the
# frozen lease, is left out of the next plan, goes idle but stays registered); then SIGTERM to
# training worker c: it finishes or abandons its step, sends Leave and exits 0 within the grace
# period; the coordinator shows it "left"; worker a finishes the run alone (and talks to a
# systemd-style NOTIFY_SOCKET all along).
TEST_NAME=worker_sigterm
. "$(dirname "$0")/lib.sh"

GRACE=4
# 120 steps: a step takes ~70 ms on an idle machine, and a worker linked with cuBLAS needs a
# second or more to start on a loaded one; the run must outlast the faults it is put through.
STEPS=120
write_spec "$T/run.yaml" $STEPS 8
reference "$T/run.yaml"
start_coord
notify_listener "$T/notify.out"
NOTIFY_SOCKET="$T/notify.sock" start_worker a
start_worker b
start_worker c --grace-seconds $GRACE
wait_until 10 "3 active workers" bash -c "[ \$($SHOAL_BIN/shoalctl --control $CTL_EP workers --json | grep -c '\"active\"') -eq 3 ]"
ctl submit "$T/run.yaml" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
wait_until 60 "step 3" run_step_at_least "$RUN" 3
ctl drain b > "$T/drain.out" || fail "drain: $(cat "$T/drain.out")"
wait_until 30 "worker b drained" worker_state_is b drained
B_LAST=$(python3 -c "import json; print(max(json.loads(l)['step'] for l in open('$T/b.jsonl')))")
note "b drained after step $B_LAST, generation $(run_field "$RUN" generation)"
[ "$(run_field "$RUN" generation)" = 2 ] || fail "drain did not produce generation 2"
grep -q "run $RUN: stop" "$T/b.log" || fail "b was not told to stop"
wait_until 60 "step $((B_LAST + 2))" run_step_at_least "$RUN" $((B_LAST + 2))
kill -TERM "${WPID[c]}"
wait "${WPID[c]}"
RC=$?
# The worker's own account (from the moment it saw the stop until its Leave was answered), not a
# stopwatch outside it that a loaded machine can stretch.
ELAPSED=$(sed -n 's/.*left \([0-9.]*\) s after the stop request.*/\1/p' "$T/c.log" | tail -1)
note "worker c exited with $RC, left ${ELAPSED:-?} s after the stop request (grace $GRACE s)"
[ "$RC" = 0 ] || fail "worker c exited with $RC, expected 0"
[ -n "$ELAPSED" ] || fail "worker c did not log when it left"
python3 -c "import sys; sys.exit(0 if $ELAPSED <= $GRACE else 1)" ||
    fail "worker c left $ELAPSED s after the stop request, grace was $GRACE s"
grep -q "session: leaving" "$T/c.log" || fail "worker c sent no Leave"
grep -q "did not acknowledge the Leave" "$T/c.log" && fail "the coordinator did not acknowledge c's Leave"
wait_until 5 "worker c left" worker_state_is c left
wait_until 180 "run $RUN done without c" run_state_is "$RUN" done
[ "$(run_field "$RUN" generation)" = 3 ] || fail "expected generation 3 (drain, leave)"
[ "$(run_field "$RUN" checkpoint_step)" = $STEPS ] || fail "final checkpoint not committed"
compare_losses a 1e-4
# b stopped at the boundary: it never trained past the step where the new plan began.
[ "$(python3 -c "import json; print(max(json.loads(l)['step'] for l in open('$T/b.jsonl')))")" = "$B_LAST" ] ||
    fail "b trained after its drain"
worker_state_is b drained || fail "b is $(worker_state b), expected drained"
ledger_ok "$RUN"
# systemd Type=notify: READY once up, a WATCHDOG ping every second, STATUS on changes.
for what in READY=1 WATCHDOG=1 "STATUS=step"; do
    grep -q "^$what" "$T/notify.out" || fail "worker a never sent $what to NOTIFY_SOCKET"
done
finish
