#!/usr/bin/env bash
# grad_attack.sh MODE SANITY: three workers train a dp 3 run; one is shoal-worker-attack with
# SHOAL_GRAD_ATTACK=MODE (nan: NaN gradients, scale100: gradients x100, ascent100: gradients
# x-100, a gradient-ascent attack) from step 1.
#   SANITY on  (train.grad_sanity_k 10): its two peers leave its gradient out of every step and
#              report it; the coordinator quarantines it (state quarantined, a `quarantine`
#              ledger entry with cause "gradient rejected"), the run re-plans on the two
#              honest workers and finishes with a final loss within 5% of the single-process
#              (clean) run's.
#   SANITY off (train.grad_sanity_k 0): nan: every replica's step 1 fails (non-finite gradient
#              norm) and the run never commits a step while the attacker is in it; scale100:
#              the run finishes (clipping bounds the step) and its final loss is printed beside
#              the clean one; ascent100: the run finishes but diverges: its final loss is above
#              both the clean run's by more than 20% and its own first step's.
# Prints the final losses (the figures of ops/SECURITY.md).
TEST_NAME=grad_attack_${1:-nan}_${2:-on}
. "$(dirname "$0")/lib.sh"
MODE=${1:-nan}
SANITY=${2:-on}
[ -x "$SHOAL_BIN/shoal-worker-attack" ] || { echo "no shoal-worker-attack (SHOAL_ATTACK_WORKER=OFF)"; exit 77; }
STEPS=40
write_spec "$T/run.yaml" $STEPS 10
# the checks are opt-in (train.grad_sanity_k defaults to 0)
[ "$SANITY" = on ] && sed -i 's/^train:$/train:\n  grad_sanity_k: 10/' "$T/run.yaml"
reference "$T/run.yaml"
start_coord
start_worker a
start_worker b
SHOAL_GRAD_ATTACK=$MODE WORKER_BIN="$SHOAL_BIN/shoal-worker-attack" start_worker evil
wait_until 20 "3 active workers" bash -c "[ \$($SHOAL_BIN/shoalctl --control $CTL_EP workers --json | grep -c '\"active\"') -eq 3 ]"
ctl submit "$T/run.yaml" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
T0=$SECONDS
final_loss() { # the last step's loss a worker logged
    python3 -c "
import json,sys
last = {}
for line in open('$T/$1.jsonl'):
    r = json.loads(line); last[r['step']] = r['loss']
print(f'{last[max(last)]:.6f}' if last else 'none')"
}
ref_final=$(python3 -c "
import json
last = {}
for line in open('$T/ref.jsonl'):
    r = json.loads(line); last[r['step']] = r['loss']
print(f'{last[max(last)]:.6f}')")
if [ "$SANITY" = on ]; then
    wait_until 60 "evil quarantined" worker_state_is evil quarantined
    note "evil quarantined $((SECONDS - T0)) s after the submit"
    wait_until 180 "run $RUN done" run_state_is "$RUN" done
    ctl events "$RUN" --json > "$T/events.json" || fail "events"
    python3 - "$T/events.json" <<'PY' || fail "ledger: $(head -c 2000 "$T/events.json")"
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
q = [e["detail"] for e in ev if e["kind"] == "quarantine"]
assert len(q) == 1 and q[0]["name"] == "evil" and q[0]["cause"] == "gradient rejected", q
print(f"  quarantine: {q[0]['detail']}")
PY
    a_final=$(final_loss a)
    python3 -c "
r = $a_final / $ref_final
print(f'  final loss {$a_final:.4f}, clean single-process {$ref_final:.4f}, ratio {r:.4f}')
assert abs(r - 1) <= 0.05, 'final loss not within 5% of the clean run'" || fail "final loss"
    grep -q "left out" "$T/a.log" || fail "a never left a gradient out"
    ledger_ok "$RUN"
    ctl undrain evil > /dev/null || fail "undrain evil"
    wait_until 10 "evil active" worker_state_is evil active
elif [ "$MODE" = nan ]; then
    # no step commits while the attacker is a member; the workers fail their plans
    wait_until 30 "a step failure" grep -q "gradient norm is nan" "$T/a.log"
    sleep 5
    step=$(run_field "$RUN" step)
    note "sanity off, NaN: run at step ${step:-0} after $((SECONDS - T0)) s, state $(run_field "$RUN" state); workers: $(ctl workers --json | python3 -c 'import json,sys; print(", ".join(w["name"]+"="+w["state"] for w in json.load(sys.stdin)["workers"]))')"
    grep -q "gradient norm is nan" "$T/b.log" || fail "b did not fail on the NaN"
    [ "$(run_state_is "$RUN" done && echo done)" != done ] || fail "the run finished with NaN gradients"
else
    wait_until 180 "run $RUN done" run_state_is "$RUN" done
    a_final=$(final_loss a)
    python3 -c "
print(f'  sanity off, $MODE: final loss {$a_final:.4f}, clean {$ref_final:.4f}, ratio {$a_final / $ref_final:.4f}')"
    ! grep -q "left out" "$T/a.log" || fail "sanity off, yet a gradient was left out"
    if [ "$MODE" = ascent100 ]; then
        a_first=$(python3 -c "
import json
print(json.loads(open('$T/a.jsonl').readline())['loss'])")
        python3 -c "
assert $a_final > 1.2 * $ref_final and $a_final > $a_first, 'the ascent attack did not diverge'
print(f'  diverged: first step {$a_first:.4f} -> final {$a_final:.4f}')" || fail "no divergence"
    fi
fi
finish
