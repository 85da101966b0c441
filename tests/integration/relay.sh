#!/usr/bin/env bash
# relay.sh: workers behind a host relay (`shoal-worker relay`, worker/relay.h). Workers a and c
# reach the coordinator through one relay, b directly. The run trains; c is SIGKILLed: the relay
# tells the coordinator (RelayClosed), which declares c dead as fast as a direct worker's close
# and re-plans; c restarts behind the relay and the run ends with the single-process losses.
# Then the relay itself is SIGKILLed: its workers' one connection closed, both are declared dead,
# and a new relay on the same endpoint brings them back (their sockets reconnect).
TEST_NAME=relay
. "$(dirname "$0")/lib.sh"

STEPS=120
RELAY_EP="ipc://$T/relay.sock"
write_spec "$T/run.yaml" $STEPS 8
reference "$T/run.yaml"
start_coord
start_relay() {
    "$SHOAL_BIN/shoal-worker" relay --coordinator "$WORKER_EP" --listen "$RELAY_EP" --insecure \
        --name relay-test >> "$T/relay.log" 2>&1 &
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
}
start_relay
start_worker a "$RELAY_EP"
start_worker b
start_worker c "$RELAY_EP"
wait_until 20 "3 active workers" bash -c "[ \$($SHOAL_BIN/shoalctl --control $CTL_EP workers --json | grep -c '\"active\"') -eq 3 ]"
ctl submit "$T/run.yaml" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
wait_until 60 "step 6" run_step_at_least "$RUN" 6
kill -KILL "${WPID[c]}"
T0=$SECONDS
wait_until 20 "relayed worker c dead" worker_state_is c dead
note "relayed worker c declared dead $((SECONDS - T0)) s after its SIGKILL"
# dead_after_ms is 2 s: silence alone would take longer than the closed connection's grace
grep -q "connection closed .* ago and no message since" "$T/coord.log" ||
    fail "c was not declared dead by its closed connection"
wait_until 20 "a plan without c" bash -c "grep -q 'generation 2' '$T/a.log'"
start_worker c "$RELAY_EP"
wait_until 180 "run $RUN done" run_state_is "$RUN" done
[ "$(run_field "$RUN" step)" = $STEPS ] || fail "status step $(run_field "$RUN" step), expected $STEPS"
[ "$(run_field "$RUN" checkpoint_step)" = $STEPS ] || fail "final checkpoint not committed"
for w in a b c; do compare_losses $w 1e-4; done
ledger_ok "$RUN"

# The relay's own death: both relayed workers lose the coordinator at once.
kill -KILL "$RELAY_PID"
relayed_are() { worker_state_is a "$1" && worker_state_is c "$1"; }
wait_until 20 "a and c dead with their relay" relayed_are dead
worker_state_is b active || fail "the direct worker b did not stay active ($(worker_state b))"
start_relay
wait_until 30 "a and c active again behind a new relay" relayed_are active
kill -TERM "$RELAY_PID"
wait "$RELAY_PID" 2>/dev/null
grep -q "messages up" "$T/relay.log" || fail "the relay did not report its counts at SIGTERM"
finish
