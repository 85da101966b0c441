#!/usr/bin/env bash
# chaos.sh SEED: a data-parallel run on 3 workers, checkpointing often, through 12 faults drawn
# from SEED: SIGKILL a worker and restart it, SIGTERM a worker and restart it, drain a worker,
# undrain a drained one, SIGKILL the coordinator and restart it (each restart after a seeded
# time down, which may outlast dead_after). At least one worker stays undrained. Between two
# faults: the run commits a step, or a seeded pause (the run outlasts the faults). The schedule
# is printed first, so a failure is replayed by running the same seed (CHAOS_STEPS overrides
# the run's length).
# At the end: the run is done within a deadline with no reason noted; no worker was quarantined
# and exactly the workers the schedule left drained are drained (the others active); every
# checkpoint directory verifies against its manifest and the final one's replicas are equal;
# the ledgers verify; the run's losses are the single-process reference's within CHAOS_TOL
# (5e-2: ranks round otherwise than one process and a flipped top-k routing choice compounds
# it; see compare_losses_lineage).
SEED=${1:?usage: chaos.sh SEED}
TEST_NAME=chaos_$SEED
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/chaos_lib.sh"

STEPS=${CHAOS_STEPS:-240}
EVERY=8
NFAULTS=12
WORKERS=(a b c)

# The schedule, from the seed alone.
RANDOM=$SEED
declare -A DRAINED=()
SCHED=()
for ((k = 1; k <= NFAULTS; k++)); do
    undrained=() drained=()
    for w in "${WORKERS[@]}"; do
        if [ -n "${DRAINED[$w]:-}" ]; then drained+=("$w"); else undrained+=("$w"); fi
    done
    kinds=(kill term coord)
    [ ${#undrained[@]} -ge 2 ] && kinds+=(drain)
    [ ${#drained[@]} -ge 1 ] && kinds+=(undrain)
    kind=${kinds[RANDOM % ${#kinds[@]}]}
    case $kind in
    kill | term) # half the time the only undrained worker, when there is one: no survivor
        target=${WORKERS[RANDOM % ${#WORKERS[@]}]}
        [ ${#undrained[@]} = 1 ] && [ $((RANDOM % 2)) = 1 ] && target=${undrained[0]}
        ;;
    drain)
        target=${undrained[RANDOM % ${#undrained[@]}]}
        DRAINED[$target]=1
        ;;
    undrain)
        target=${drained[RANDOM % ${#drained[@]}]}
        unset "DRAINED[$target]"
        ;;
    coord) target=coordinator ;;
    esac
    sched_fault $k $kind $target 41
done
note "seed $SEED: drained at the end: ${!DRAINED[*]}"

write_spec "$T/run.yaml" "$STEPS" $EVERY
(reference "$T/run.yaml") &
REF_PID=$!
start_coord
for w in "${WORKERS[@]}"; do start_worker $w; done
wait_until 20 "3 active workers" n_workers_is active 3
submit_run "$T/run.yaml"
wait_until 60 "step 2" run_step_at_least "$RUN" 2
T0=$SECONDS

k=0
for f in "${SCHED[@]}"; do
    k=$((k + 1))
    read -r kind target down gap pause <<< "$f"
    [ $k = 1 ] || no_quarantine "$RUN" "$T/events.json" "by fault $((k - 1))"
    note "fault $k at $((SECONDS - T0)) s, run $(run_field "$RUN" state) at step $(run_field "$RUN" step): $kind $target"
    STEP0=$(run_field "$RUN" step)
    case $kind in
    kill | term)
        MARK=$(log_lines $target)
        [ $kind = kill ] && stop_worker $target KILL || stop_worker $target TERM
        sleep "$(tenths $down)"
        start_worker $target
        wait_until 30 "$target registered again" logged_since $target "$MARK" "session: registered with"
        ;;
    coord) kill_coord $down ;;
    drain)
        ctl drain $target > "$T/drain.out" || fail "drain $target: $(cat "$T/drain.out")"
        wait_until 60 "$target drained" worker_state_is $target drained
        ;;
    undrain)
        ctl undrain $target > "$T/undrain.out" || fail "undrain $target: $(cat "$T/undrain.out")"
        wait_until 30 "$target active" worker_state_is $target active
        ;;
    esac
    after_fault $k $gap $pause "$STEP0" "$RUN"
done

note "faults done at $((SECONDS - T0)) s, run $(run_field "$RUN" state) at step $(run_field "$RUN" step)"
wait_until 150 "run $RUN done" run_state_is "$RUN" done
note "run done at $((SECONDS - T0)) s, generation $(run_field "$RUN" generation)"
[ "$(run_field "$RUN" checkpoint_step)" = "$STEPS" ] || fail "final checkpoint not committed"
no_reason "$RUN"
no_quarantine "$RUN" "$T/events.json"
for w in "${WORKERS[@]}"; do
    want=active
    [ -n "${DRAINED[$w]:-}" ] && want=drained
    wait_until 20 "worker $w $want (now $(worker_state $w))" worker_state_is $w $want
done
plans_summary "$T/events.json"
ckpt_verify_all "$RUN" "${WORKERS[@]}"
ledger_ok "$RUN"
ledger_ok cluster
wait "$REF_PID" || fail "reference training failed"
compare_losses_lineage "${CHAOS_TOL:-5e-2}" "${WORKERS[@]}"
finish
