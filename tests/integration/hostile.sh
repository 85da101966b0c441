#!/usr/bin/env bash
# hostile.sh: garbage, truncated, unknown-type, wrong-run and old-generation messages reach a
# worker's session (through a relay in front of the coordinator) and its data endpoint while it
# trains: it drops them all and the run completes with the single-process losses.
TEST_NAME=hostile
. "$(dirname "$0")/lib.sh"

[ -x "$ITEST_HOSTILE" ] || { echo "no $ITEST_HOSTILE"; exit 77; }
write_spec "$T/run.yaml" 16 8
reference "$T/run.yaml"
start_coord
"$ITEST_HOSTILE" proxy "ipc://$T/p.sock" "$WORKER_EP" 60 > "$T/proxy.out" 2> "$T/proxy.log" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
start_worker a "ipc://$T/p.sock" --log-level debug
start_worker b
wait_until 10 "2 active workers" bash -c "[ \$($SHOAL_BIN/shoalctl --control $CTL_EP workers --json | grep -c '\"active\"') -eq 2 ]"
DATA_PIDS=()
for w in a b; do
    wait_until 5 "data endpoint of $w" grep -q "data endpoint tcp://" "$T/$w.log"
    EP=$(grep -o "data endpoint tcp://[0-9.:]*" "$T/$w.log" | head -1 | awk '{print $3}')
    "$ITEST_HOSTILE" data "$EP" 4 > "$T/data_$w.out" 2> "$T/data_$w.log" &
    DATA_PIDS+=("$!")
    PIDS+=("$!")
done
ctl submit "$T/run.yaml" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
wait_until 60 "run $RUN done" run_state_is "$RUN" done
wait "${DATA_PIDS[@]}"
for w in a b; do
    worker_state_is $w active || fail "worker $w is $(worker_state $w)"
done
kill -TERM "$PROXY_PID"
[ "$(run_field "$RUN" generation)" = 1 ] || fail "the hostile messages cost a plan change"
for w in a b; do compare_losses $w 1e-5; done
# The relay did inject, and the worker said what it dropped.
for what in "dropped a bad message" "dropped run control 3 of run 'r999'" \
            "dropped run control 3 of run '$RUN' generation 0" "dropped step commit" \
            "dropped assignment for run r999" "dropped stale assignment"; do
    grep -q "$what" "$T/a.log" || fail "worker a never logged: $what"
done
for w in a b; do
    grep -q "sent [1-9]" "$T/data_$w.out" || fail "no garbage reached $w's data endpoint"
done
grep -q "comm gen .* dropped" "$T/a.log" || fail "worker a's comm never logged a dropped frame"
ledger_ok "$RUN"
finish
