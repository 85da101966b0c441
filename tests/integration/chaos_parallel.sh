#!/usr/bin/env bash
# chaos_parallel.sh SEED NFAULTS [EP]: a pp 2 x ep EP x dp 2 run (EP defaults to $CHAOS_EP, else
# 2) on 2·2·EP workers + 2 spares, checkpointing every 50 steps, through NFAULTS faults drawn
# from SEED: SIGKILL a worker and restart it after a seeded time down, SIGTERM one (preemption)
# and restart it, add a new worker, drain one, undrain a drained one, SIGKILL the coordinator and
# restart it. The first four faults are a seeded order of kill, add, drain and coordinator, so
# every seed has each; at least pp·ep + 1 workers stay undrained, at most 3 are added. Between
# two faults: a committed step, or a seeded pause. The schedule is printed first: a failure is
# replayed by running the same seed. The run lasts 60 + 30·NFAULTS steps (CHAOS_STEPS overrides):
# a fault took 15-25 steps on the shared 2-core machine (load 15-25); that the run is still
# running at each fault is checked, so a run too short for the faults fails saying so.
# After each fault, `shoalctl workers` must come to show every worker as it is within 30 s (a
# live one active, standby, joining or drained exactly when the schedule drained it, a stopped
# one dead or left, a cell only on a live undrained worker, no cell twice); a worker down for
# 1.5 s or more must be shown dead before it is restarted.
# At the end:
# - the run is done with its final checkpoint and no reason noted; no worker was quarantined;
#   the workers are shown as they are;
# - the loss never jumps back towards its initial value: of each step, the loss the run ended up
#   with (the newest generation's record) is at most m + (L1 - m)/2 + L1/20, where L1 is step
#   1's loss and m the lowest loss of the steps before. A state lost or replaced by a fresh
#   initialisation trains from about L1 again, which passes the bound once the run has learned
#   a tenth of L1; a state rolled back to a checkpoint is some steps behind, at a loss close to
#   m. The L1/20 term is the batch-to-batch noise of the first steps, where m is still near L1;
# - every committed checkpoint (each step of a `checkpoint` ledger entry) exports with
#   `shoalctl export`, which reads and verifies every shard against the committed digests, and
#   every shard directory on the workers matches its own manifest.json;
# - the run's and the cluster's ledgers verify;
# - the final weights are byte-identical to an uninterrupted run of the same spec: the export
#   of the last step and `shoal-worker train --export` of the spec in one process are compared
#   with cmp; when they differ the first differing tensors are printed (name, elements that
#   differ, max abs diff). CHAOS_BYTES=report prints that without failing (for debugging the
#   other checks).
# CHAOS_ROLLBACK=1 adds the fault `pair` (one of the first five, and drawn like the others
# after): every holder of one part of the model (stage, ep rank: its replicas in every dp
# replica) is SIGKILLed at the same moment, a few steps past a committed checkpoint (every 25
# steps in this mode), so no peer holds that part's state and the run must roll back. Right
# after each, the first plan must load the checkpoint and the ledger must hold its `rollback`
# entry (from the committed step, to the checkpoint); then the workers are restarted. The
# final weights must still equal the uninterrupted run's, byte for byte.
SEED=${1:?usage: chaos_parallel.sh SEED NFAULTS [EP]}
NFAULTS=${2:?usage: chaos_parallel.sh SEED NFAULTS [EP]}
EP=${3:-${CHAOS_EP:-2}}
TEST_NAME=chaos_parallel_${SEED}
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/chaos_lib.sh"

# The helpers poll through python3 a few times a second; a version manager's shim first on
# PATH (pyenv's takes a second a start on a loaded machine) would slow the fault loop down.
[ -x /usr/bin/python3 ] && python3() { /usr/bin/python3 "$@"; }

PP=2
DP=2
CELLS=$((PP * EP * DP))
STEPS=${CHAOS_STEPS:-$((60 + 30 * NFAULTS))}
ROLLBACK=${CHAOS_ROLLBACK:-0}
EVERY=${CHAOS_EVERY:-50}
[ "$ROLLBACK" = 1 ] && EVERY=${CHAOS_EVERY:-25}
MAX_ADDS=3
WORKERS=()
for ((i = 1; i <= CELLS + 2; i++)); do WORKERS+=("p$i"); done

# The schedule, from the seed alone.
RANDOM=$SEED
declare -A DRAINED=()
POOL=("${WORKERS[@]}")
ADDS=0
first=(kill add drain coord)
[ "$ROLLBACK" = 1 ] && first+=(pair)
for ((k = ${#first[@]} - 1; k > 0; k--)); do # seeded shuffle of the first four (five)
    j=$((RANDOM % (k + 1)))
    t=${first[k]} first[k]=${first[j]} first[j]=$t
done
SCHED=()
for ((k = 1; k <= NFAULTS; k++)); do
    undrained=() drained=()
    for w in "${POOL[@]}"; do
        if [ -n "${DRAINED[$w]:-}" ]; then drained+=("$w"); else undrained+=("$w"); fi
    done
    kinds=(kill kill term coord)
    [ ${#undrained[@]} -gt $((PP * EP + 1)) ] && kinds+=(drain)
    [ ${#drained[@]} -ge 1 ] && kinds+=(undrain)
    [ $ADDS -lt $MAX_ADDS ] && kinds+=(add)
    [ "$ROLLBACK" = 1 ] && kinds+=(pair)
    kind=${kinds[RANDOM % ${#kinds[@]}]}
    if [ $k -le ${#first[@]} ]; then
        kind=${first[k - 1]}
        [ $kind = drain ] && [ ${#undrained[@]} -le $((PP * EP + 1)) ] && kind=kill
    fi
    case $kind in
    kill | term) target=${POOL[RANDOM % ${#POOL[@]}]} ;;
    drain)
        target=${undrained[RANDOM % ${#undrained[@]}]}
        DRAINED[$target]=1
        ;;
    undrain)
        target=${drained[RANDOM % ${#drained[@]}]}
        unset "DRAINED[$target]"
        ;;
    add)
        ADDS=$((ADDS + 1))
        target=n$ADDS
        POOL+=("$target")
        ;;
    coord) target=coordinator ;;
    pair) target=$((RANDOM % PP)).$((RANDOM % EP)) ;; # the part: stage.ep_rank
    esac
    sched_fault $k $kind $target 31
done
note "seed $SEED: pp $PP x ep $EP x dp $DP, $STEPS steps, workers ${POOL[*]}, drained at the end: ${!DRAINED[*]}"
unset DRAINED
declare -A DRAINED=()

cat > "$T/run.yaml" <<EOF
name: chaos
model:
  preset: tiny
data:
  files:
    - $SHOAL_DATA
  seed: 7
train:
  steps: $STEPS
  global_batch: 8
  seq_len: 32
  micro_batch: 1
  lr: 3e-3
  warmup_steps: 5
checkpoint:
  dir: ckpt
  every_steps: $EVERY
  keep: 1000
parallel:
  pipeline_stages: $PP
  expert_parallel: $EP
  data_parallel: auto
EOF

# The uninterrupted run of the same spec, in one process, alongside.
(
    mkdir -p "$T/ref" && cd "$T/ref" &&
        exec "$SHOAL_BIN/shoal-worker" train "$T/run.yaml" --metrics "$T/ref.jsonl" \
            --export "$T/ref-model" --quiet > "$T/ref.out" 2>&1
) &
REF_PID=$!
PIDS+=("$REF_PID")

# states_true: `shoalctl workers` shows every worker of the pool as it is (the header's rule).
states_true() {
    local w alive
    : > "$T/truth"
    for w in "${POOL_NOW[@]}"; do
        alive=0
        kill -0 "${WPID[$w]}" 2>/dev/null && alive=1
        echo "$w $alive ${DRAINED[$w]:-0}" >> "$T/truth"
    done
    ctl workers --json > "$T/workers.json" 2>/dev/null || return 1
    python3 - "$T/truth" "$T/workers.json" <<'EOF'
import json, sys
truth = {l.split()[0]: l.split()[1:] for l in open(sys.argv[1])}
shown = {w["name"]: w for w in json.load(open(sys.argv[2]))["workers"]}
bad, cells = [], {}
for name, (alive, drained) in truth.items():
    w = shown.get(name)
    if w is None:
        bad.append(f"{name} not shown")
        continue
    st, cell = w["state"], w.get("cell")
    if alive == "1":
        want = {"drained"} if drained == "1" else {"active", "standby", "joining"}
    else:
        want = {"dead", "left"}
    if st not in want:
        bad.append(f"{name} shown {st}, is {'alive' if alive == '1' else 'stopped'}"
                   f"{' and drained' if drained == '1' else ''}")
    if cell:
        key = (cell["replica"], cell["stage"], cell["ep_rank"])
        if alive != "1" or drained == "1":
            bad.append(f"{name} shown holding cell {key}")
        if key in cells:
            bad.append(f"cell {key} shown on {cells[key]} and {name}")
        cells[key] = name
extra = sorted(set(shown) - set(truth))
if extra:
    bad.append(f"unknown workers shown: {extra}")
open(sys.argv[1] + ".bad", "w").write("; ".join(bad) + "\n")
sys.exit(1 if bad else 0)
EOF
}
check_states() {
    wait_until 30 "workers shown as they are ($1): $(cat "$T/truth.bad" 2>/dev/null)" states_true
}

# part_holders STAGE EP_RANK: the names of the live workers `shoalctl workers` shows holding a
# cell of that part (one per data-parallel replica); fails when none.
part_holders() {
    ctl workers --json 2>/dev/null | python3 -c '
import json, sys
s, e = int(sys.argv[1]), int(sys.argv[2])
n = [w["name"] for w in json.load(sys.stdin)["workers"] if w.get("cell") and
     w["state"] not in ("dead", "left") and w["cell"]["stage"] == s and w["cell"]["ep_rank"] == e]
print(" ".join(n))
sys.exit(0 if n else 1)' "$1" "$2"
}

# steps_past_checkpoint RUN: a checkpoint is committed and the committed step is 1 to EVERY - 3
# steps past the newest one (so that losing a part now loses steps, with a margin before the
# next checkpoint); writes "step checkpoint_step" to $T/at_kill.
steps_past_checkpoint() {
    ctl status "$1" --json 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["runs"][0]
s, c, every = r["step"], r["checkpoint_step"], int(sys.argv[1])
open(sys.argv[2], "w").write(f"{s} {c}\n")
sys.exit(0 if c >= 1 and 1 <= s - c <= every - 3 and r["state"] == "running" else 1)' \
        "$EVERY" "$T/at_kill"
}

# last_seq RUN: the sequence number of the run's newest ledger entry.
last_seq() {
    ctl events "$1" --json 2>/dev/null |
        python3 -c 'import json, sys; print(max([e["seq"] for e in json.load(sys.stdin)["events"]], default=0))'
}

# rolled_back RUN SEQ STEP: after ledger entry SEQ, the first plan loads a checkpoint below
# STEP (the step committed when the part was lost) and a `rollback` entry of that plan's
# generation records it (to_step = the checkpoint, from_step >= STEP); fails until both are
# there, exits 2 when the first plan is not from the checkpoint (a peer cannot hold the part).
rolled_back() {
    ctl events "$1" --since "$2" --json > "$T/rb.json" 2>/dev/null || return 1
    python3 - "$T/rb.json" "$3" <<'EOF'
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
step = int(sys.argv[2])
plans = [e["detail"] for e in ev if e["kind"] == "plan"]
if not plans:
    sys.exit(1)
p = plans[0]
if p["source"] != "checkpoint":
    print(f"the first plan after the part was lost is from {p['source']}: {p}")
    sys.exit(2)
rb = [e["detail"] for e in ev if e["kind"] == "rollback" and e["detail"]["generation"] == p["generation"]]
if not rb:
    sys.exit(1)
r = rb[0]
assert r["to_step"] == p["start_step"] - 1 < step <= r["from_step"], (r, p, step)
print(f"rollback from step {r['from_step']} to checkpoint {r['to_step']} "
      f"({r['steps_lost']} steps lost), plan generation {p['generation']}")
EOF
}

start_coord
POOL_NOW=("${WORKERS[@]}")
for w in "${WORKERS[@]}"; do start_worker $w; done
wait_until 60 "${#WORKERS[@]} active workers" n_workers_is active ${#WORKERS[@]}
submit_run "$T/run.yaml"
wait_until 120 "step 2" run_step_at_least "$RUN" 2
T0=$SECONDS
note "step 2 at generation $(run_field "$RUN" generation); faults start"

k=0
ROLLBACKS=0
for f in "${SCHED[@]}"; do
    k=$((k + 1))
    read -r kind target down gap pause <<< "$f"
    [ $k = 1 ] || no_quarantine "$RUN" "$T/events.json" "by fault $((k - 1))"
    note "fault $k at $((SECONDS - T0)) s, run $(run_field "$RUN" state) at step $(run_field "$RUN" step): $kind $target"
    STEP0=$(run_field "$RUN" step)
    run_state_is "$RUN" running ||
        fail "the run is $(run_field "$RUN" state) before fault $k: raise CHAOS_STEPS (now $STEPS)"
    case $kind in
    kill | term)
        [ $kind = kill ] && stop_worker $target KILL || stop_worker $target TERM
        sleep "$(tenths $down)"
        if [ $down -ge 15 ]; then
            want=dead
            [ $kind = term ] && want=left
            wait_until 10 "$target shown $want" worker_state_is $target $want
        fi
        MARK=$(log_lines $target)
        start_worker $target
        wait_until 30 "$target registered again" logged_since $target "$MARK" "session: registered"
        ;;
    add)
        start_worker $target
        POOL_NOW+=("$target")
        wait_until 30 "$target registered" logged_since $target 0 "session: registered"
        ;;
    coord) kill_coord $down ;;
    pair)
        wait_until 300 "a few steps past a committed checkpoint" steps_past_checkpoint "$RUN"
        read -r ps pe <<< "${target/./ }"
        holders=$(part_holders $ps $pe) || fail "nobody shown holding part $target"
        seq=$(last_seq "$RUN")
        read -r at_step at_ckpt < "$T/at_kill"
        for w in $holders; do kill -KILL "${WPID[$w]}" 2>/dev/null; done
        for w in $holders; do wait "${WPID[$w]}" 2>/dev/null; done
        note "part $target: SIGKILLed its holders $holders at once (step $at_step, checkpoint $at_ckpt)"
        poll_until 120 rolled_back "$RUN" "$seq" "$at_step" > "$T/rb.out" ||
            fail "no rollback after part $target was lost: $(cat "$T/rb.out")"
        note "  $(cat "$T/rb.out")"
        ROLLBACKS=$((ROLLBACKS + 1))
        sleep "$(tenths $down)"
        for w in $holders; do
            MARK=$(log_lines $w)
            start_worker $w
            wait_until 30 "$w registered again" logged_since $w "$MARK" "session: registered"
        done
        ;;
    drain)
        DRAINED[$target]=1
        ctl drain $target > "$T/drain.out" || fail "drain $target: $(cat "$T/drain.out")"
        wait_until 90 "$target drained" worker_state_is $target drained
        ;;
    undrain)
        unset "DRAINED[$target]"
        ctl undrain $target > "$T/undrain.out" || fail "undrain $target: $(cat "$T/undrain.out")"
        ;;
    esac
    check_states "after fault $k"
    after_fault $k $gap $pause "$STEP0" "$RUN"
done

note "faults done at $((SECONDS - T0)) s, run $(run_field "$RUN" state) at step $(run_field "$RUN" step)"
wait_until 400 "run $RUN done" run_state_is "$RUN" done
note "run done at $((SECONDS - T0)) s, generation $(run_field "$RUN" generation)"
[ "$(run_field "$RUN" checkpoint_step)" = "$STEPS" ] || fail "final checkpoint not committed"
no_reason "$RUN"
no_quarantine "$RUN" "$T/events.json"
check_states "at the end"
plans_summary "$T/events.json"
if [ "$ROLLBACK" = 1 ]; then
    [ $ROLLBACKS -ge 1 ] || fail "CHAOS_ROLLBACK=1 and no part was lost"
    note "$ROLLBACKS part(s) lost with every holder, each rolled back to its checkpoint"
fi

# The loss curve the run ended up with never jumps back towards its start.
python3 - "$T" "${POOL_NOW[@]}" <<'EOF' || fail "the loss jumped back towards its initial value"
import json, os, sys
t, names = sys.argv[1], sys.argv[2:]
final = {}  # step -> the record of the newest generation
for name in names:
    path = f"{t}/{name}.jsonl"
    for line in open(path) if os.path.exists(path) else []:
        r = json.loads(line)
        if r.get("run") and (r["step"] not in final or r["generation"] >= final[r["step"]]["generation"]):
            final[r["step"]] = r
steps = sorted(final)
assert steps == list(range(1, steps[-1] + 1)), f"steps missing: {sorted(set(range(1, steps[-1] + 1)) - set(steps))}"
l1 = final[1]["loss"]
low = l1
worst = -1e9
for s in steps[1:]:
    loss = final[s]["loss"]
    bound = low + (l1 - low) / 2 + l1 / 20
    worst = max(worst, loss - bound)
    assert loss <= bound, (f"step {s}: loss {loss:.4f} (generation {final[s]['generation']}) "
                           f"> {bound:.4f}: lowest before {low:.4f}, step 1 {l1:.4f}")
    low = min(low, loss)
print(f"  loss {l1:.4f} -> {final[steps[-1]]['loss']:.4f} over {len(steps)} steps, "
      f"never above the bound (closest {worst:+.4f})")
EOF

# Every committed checkpoint loads (export verifies each shard against the committed digests)
# and every shard directory on the workers matches its manifest.json.
CKPTS=$(python3 -c "
import json, sys
ev = json.load(open(sys.argv[1]))['events']
print(' '.join(str(s) for s in sorted({e['detail']['step'] for e in ev if e['kind'] == 'checkpoint'})))" \
    "$T/events.json")
for s in $CKPTS; do
    ctl export "$RUN" --step "$s" --out "$T/export-$s" > "$T/export.out" 2>&1 ||
        fail "checkpoint $s does not export: $(cat "$T/export.out")"
done
python3 - "$T" "$RUN" "${POOL_NOW[@]}" <<'EOF' || fail "a shard directory does not match its manifest"
import glob, hashlib, json, os, sys
t, run, names = sys.argv[1], sys.argv[2], sys.argv[3:]
n = 0
for name in names:
    for d in sorted(glob.glob(f"{t}/{name}/runs/{run}/ckpt/step-*")):
        m = json.load(open(f"{d}/manifest.json"))
        for f in m["files"]:
            p = f"{d}/{f['name']}"
            assert os.path.getsize(p) == f["size"], f"{p}: size differs from the manifest"
            h = hashlib.sha256(open(p, "rb").read()).hexdigest()
            assert h == f["sha256"], f"{p}: SHA-256 differs from the manifest"
        n += 1
print(f"  {n} shard directories match their manifests")
EOF
note "checkpoints $CKPTS export and verify"
ledger_ok "$RUN"
ledger_ok cluster

# The final weights, bit for bit, against the uninterrupted run.
wait "$REF_PID" || fail "the uninterrupted run failed: $(tail -3 "$T/ref.out")"
if cmp "$T/export-$STEPS/model.safetensors" "$T/ref-model/model.safetensors" > "$T/cmp.out" 2>&1; then
    note "final weights byte-identical to the uninterrupted run"
else
    python3 - "$T/export-$STEPS/model.safetensors" "$T/ref-model/model.safetensors" <<'EOF'
import json, struct, sys
def tensors(path):
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        hdr = json.loads(fh.read(n))
        data = fh.read()
    return {k: (v, data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in hdr.items()
            if k != "__metadata__"}
got, want = tensors(sys.argv[1]), tensors(sys.argv[2])
if sorted(got) != sorted(want):
    print(f"  tensor names differ: {sorted(set(got) ^ set(want))[:10]}")
diff = []
for name in want:
    if name not in got or got[name][1] == want[name][1]:
        continue
    a = struct.unpack(f"<{len(got[name][1]) // 4}f", got[name][1])
    b = struct.unpack(f"<{len(want[name][1]) // 4}f", want[name][1])
    d = [abs(x - y) for x, y in zip(a, b)]
    diff.append((name, sum(x != y for x, y in zip(a, b)), len(a), max(d)))
print(f"  {len(diff)} of {len(want)} tensors differ from the uninterrupted run; the first:")
for name, n, total, m in diff[:8]:
    print(f"    {name}: {n} of {total} elements, max abs diff {m:.3g}")
EOF
    [ "${CHAOS_BYTES:-check}" = report ] || fail "final weights differ from the uninterrupted run: $(cat "$T/cmp.out")"
fi
note "faults $NFAULTS, wall $((SECONDS - T0)) s from the first fault"
finish
