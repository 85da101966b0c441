#!/usr/bin/env bash
# peer_timeout.sh: a worker is SIGKILLed while the coordinator is slow to notice (dead_after
# 6 s): the survivors' collectives time out first (--comm-timeout-ms 2000), they report
# ACTIVITY_FAILED, the coordinator re-plans at once (possibly again while the dead worker still
# looks alive), and once it is declared dead the survivors finish the run with the
# single-process losses: a dead peer is an error and a new plan, never a hang. The coordinator
# sees closed connections only through heartbeats here (closed_grace_ms 0), as when a host is
# cut off rather than its process killed.
TEST_NAME=peer_timeout
DEAD_AFTER_MS=6000
. "$(dirname "$0")/lib.sh"
echo "closed_grace_ms: 0" >> "$T/coord.yaml"

# 120 steps: a 32-step run was over before the kill after step 6 took effect (fresh-clone CI,
# 2026-12-02: the survivors committed step 32 and never waited on the dead peer)
write_spec "$T/run.yaml" 120 4
reference "$T/run.yaml"
start_coord
for w in a b c; do start_worker $w --comm-timeout-ms 2000; done
wait_until 10 "3 active workers" bash -c "[ \$($SHOAL_BIN/shoalctl --control $CTL_EP workers --json | grep -c '\"active\"') -eq 3 ]"
ctl submit "$T/run.yaml" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
wait_until 60 "step 6" run_step_at_least "$RUN" 6
kill -KILL "${WPID[c]}"
wait "${WPID[c]}" 2>/dev/null
T0=$SECONDS
wait_until 30 "a failed assignment" grep -q "assignment failed" "$T/a.log" "$T/b.log"
note "collective failed $((SECONDS - T0)) s after the kill"
wait_until 120 "run $RUN done" run_state_is "$RUN" done
note "run done $((SECONDS - T0)) s after the kill, generation $(run_field "$RUN" generation)"
grep -q "reports its plan failed" "$T/coord.log" || fail "the coordinator never heard of the failure"
grep -q "no message from rank" "$T/a.log" "$T/b.log" || fail "the timeout did not name the silent rank"
[ "$(run_field "$RUN" checkpoint_step)" = 120 ] || fail "final checkpoint not committed"
for w in a b; do compare_losses $w 1e-4; done
ledger_ok "$RUN"
finish
