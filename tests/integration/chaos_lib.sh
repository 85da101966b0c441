# chaos_lib.sh: helpers of the fault tests (rollback_*.sh, drain_restart.sh, worker_names.sh,
# chaos.sh); sourced after lib.sh, whose start_coord, start_worker, ctl, wait_until, fail and
# note they use.

# n_workers_in STATE: how many workers `shoalctl workers` shows in STATE.
n_workers_in() {
    ctl workers --json 2>/dev/null |
        python3 -c "import json,sys; print(sum(w['state'] == '$1' for w in json.load(sys.stdin)['workers']))"
}
n_workers_is() { [ "$(n_workers_in "$1")" = "$2" ]; }

# submit_run SPEC: submits SPEC; sets RUN to the new run's id.
submit_run() {
    ctl submit "$1" > "$T/submit.out" || fail "submit: $(cat "$T/submit.out")"
    RUN=$(awk '/submitted run/ {print $3}' "$T/submit.out")
    [ -n "$RUN" ] || fail "no run id in: $(cat "$T/submit.out")"
}

# step_and_ckpt_at_least RUN STEP CKPT: the committed step and the committed checkpoint.
step_and_ckpt_at_least() {
    local s
    s=$(ctl status "$1" --json 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["runs"][0]
print(r["step"], r["checkpoint_step"])') || return 1
    set -- $s "$2" "$3"
    [ "$1" -ge "$3" ] && [ "$2" -ge "$4" ]
}

# holds_for SECS WHAT CMD...: CMD succeeds at every poll (0.1 s apart) for SECS seconds; the
# negative twin of wait_until (e.g. "stays drained").
holds_for() {
    local secs=$1 what=$2
    shift 2
    local end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do
        "$@" 2>/dev/null || fail "$what stopped holding within ${secs}s"
        sleep 0.1
    done
}

# events_json RUN FILE: the run's ledger entries (`shoalctl events --json`) into FILE.
events_json() { ctl events "$1" --json > "$2" 2> "$2.err" || fail "events $1: $(cat "$2.err")"; }

# jsonl_lines NAME: how many metric records worker NAME has written so far (0 if none).
jsonl_lines() { [ -f "$T/$1.jsonl" ] && wc -l < "$T/$1.jsonl" || echo 0; }

# stop_worker NAME SIG: SIG to the worker, waits for the process to end (SIGTERM: it must exit
# 0 after its Leave).
stop_worker() {
    local rc
    kill -"$2" "${WPID[$1]}" 2>/dev/null
    wait "${WPID[$1]}" 2>/dev/null
    rc=$?
    [ "$2" != TERM ] || [ "$rc" = 0 ] || fail "worker $1 exited with $rc on SIGTERM"
}

# restart_worker NAME SIG [extra start_worker flags...]: stop_worker, then starts it again on
# the same name and state dir.
restart_worker() {
    local name=$1
    stop_worker "$name" "$2"
    shift 2
    start_worker "$name" "$@"
}

# ckpt_verify_all RUN NAME...: every checkpoint directory step-* the workers NAME... hold for
# RUN matches its manifest.json (each listed file present with its size and SHA-256, the four
# files of a checkpoint listed); the final step is among them and its replicas hold the same
# bits (the ranks of one plan do; an earlier step may have been written again under a plan of
# another size, equal up to float rounding). Written in Python because no command verifies a
# checkpoint directory (ckpt_load does, inside the worker).
ckpt_verify_all() {
    local run=$1
    shift
    local total
    total=$(run_field "$run" total_steps) || fail "no status of $run"
    python3 - "$T" "$run" "$total" "$@" <<'EOF' || fail "checkpoint verification failed"
import glob, hashlib, json, os, sys
t, run, total, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
want = {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"}
digests = {}  # step -> {file: sha256} of the first replica seen
n = 0
for name in names:
    for d in sorted(glob.glob(f"{t}/{name}/runs/{run}/ckpt/step-*")):
        m = json.load(open(f"{d}/manifest.json"))
        step = int(os.path.basename(d)[5:])
        assert m["format"] == "shoal-checkpoint-v1" and m["step"] == step, f"{d}: manifest {m}"
        files = {}
        for f in m["files"]:
            p = f"{d}/{f['name']}"
            assert os.path.getsize(p) == f["size"], f"{p}: size differs from the manifest"
            h = hashlib.sha256(open(p, "rb").read()).hexdigest()
            assert h == f["sha256"], f"{p}: SHA-256 {h} differs from the manifest"
            files[f["name"]] = h
        assert set(files) == want, f"{d}: manifest lists {sorted(files)}"
        ref = digests.setdefault(step, files)
        assert step != total or ref == files, f"{d}: replicas of the final step differ: {files} vs {ref}"
        n += 1
assert total in digests, f"no worker holds the final checkpoint {total}: steps {sorted(digests)}"
print(f"  {n} checkpoint dirs verify (steps {sorted(digests)})")
EOF
}

# no_quarantine RUN FILE [WHEN]: writes the run's ledger entries to FILE; none is a
# "quarantine" (WHEN, e.g. "by fault 3", goes into the failure message).
no_quarantine() {
    events_json "$1" "$2"
    python3 -c "
import json, sys
q = [e['detail'] for e in json.load(open('$2'))['events'] if e['kind'] == 'quarantine']
sys.exit('quarantined: %s' % q if q else 0)" || fail "a healthy worker was quarantined${3:+ $3}"
}

# rollback_ok EVENTS GEN STEP CKPT EVERY: the run whose ledger entries are in EVENTS lost the
# only holder of its newest state after generation GEN, at committed step >= STEP with
# checkpoint CKPT (checkpoints every EVERY steps): the first plan after GEN loads the committed
# checkpoint (source checkpoint, start_step = checkpoint + 1; no peer plan at a step no rank
# holds), and a "rollback" entry {from_step, to_step, steps_lost, generation} records it. The
# step rolled back to goes to EVENTS.to_step.
rollback_ok() {
    python3 - "$@" <<'EOF' || fail "no rollback to the checkpoint: $(head -c 3000 "$1")"
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
gen, step, ckpt, every = (int(a) for a in sys.argv[2:6])
plans = [e["detail"] for e in ev if e["kind"] == "plan" and e["detail"]["generation"] > gen]
assert plans, f"no plan after generation {gen}"
show = [(p["generation"], p["source"], p["start_step"], p["reason"]) for p in plans]
first = plans[0]
assert first["source"] == "checkpoint", f"the first plan after the loss is not from the checkpoint: {show}"
to = first["start_step"] - 1
assert to >= ckpt and to % every == 0, f"plan starts at {first['start_step']}, checkpoint was {ckpt}: {show}"
rb = [e["detail"] for e in ev if e["kind"] == "rollback"]
# The coordinator had committed `step` when the holder was gone: a plan that starts from an
# earlier checkpoint is a rollback and must say so. (A holder stopped exactly at a checkpoint
# loses nothing: then no entry is required.)
assert rb or step <= to, f"no rollback entry in the ledger; committed {step}, plans after generation {gen}: {show}"
for r in rb[:1]:
    assert r["generation"] == first["generation"], f"rollback {r} vs plan {first}"
    assert r["to_step"] == to, f"rollback {r}: to_step, plan starts at {first['start_step']}"
    assert r["from_step"] >= step and r["from_step"] > to, f"rollback {r}: committed step was >= {step}"
    assert r["steps_lost"] == r["from_step"] - r["to_step"], f"rollback {r}: steps_lost"
print(f"  rollback {rb[:1]}; committed {step} when the holder was gone; plans after generation {gen}: {show}")
open(sys.argv[1] + ".to_step", "w").write(f"{to}\n")
EOF
}

# past_checkpoint RUN STEP EVERY [CKPT]: the committed step is >= STEP, the committed
# checkpoint >= CKPT (default 1), and the step is 1 or 2 past a multiple of EVERY and past the
# checkpoint (so that stopping the run now loses steps); writes "step checkpoint_step
# generation" to $T/past_checkpoint.
# at_loss RUN: writes "step checkpoint_step generation" of RUN as the coordinator holds them now
# to $T/past_checkpoint (read once the state's only holder is gone: what rollback_ok expects).
at_loss() {
    ctl status "$1" --json 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["runs"][0]
open(sys.argv[1], "w").write(f"{r['"'"'step'"'"']} {r['"'"'checkpoint_step'"'"']} {r['"'"'generation'"'"']}\n")' \
        "$T/past_checkpoint" || fail "status $1"
}

past_checkpoint() {
    ctl status "$1" --json 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["runs"][0]
s, c = r["step"], r["checkpoint_step"]
step, every, ckpt = (int(a) for a in sys.argv[1:4])
ok = s >= step and c >= ckpt and 1 <= s % every <= 2 and s > c
g = r["generation"]
open(sys.argv[4], "w").write(f"{s} {c} {g}\n")
sys.exit(0 if ok else 1)' "$2" "$3" "${4:-1}" "$T/past_checkpoint"
}

# log_lines NAME: the number of lines in $T/NAME.log so far; logged_since NAME LINES REGEX:
# a line after the first LINES of that log matches REGEX (grep -E).
log_lines() { [ -f "$T/$1.log" ] && wc -l < "$T/$1.log" || echo 0; }
logged_since() { tail -n +$(($2 + 1)) "$T/$1.log" | grep -Eq "$3"; }

# compare_losses_lineage TOL NAME...: the losses the run ended up with (of each step, the
# record of the newest generation among the workers NAME...) are the single-process
# reference's within relative TOL, every step of the reference among them. TOL allows for
# rounding: ranks sum the micro-batches in another order than one process, and once a router's
# top-k choice flips on such a difference the gap compounds (1e-7 over the first 50 steps, up
# to 2e-2 by step 240); a state lost or trained from the wrong step is far off.
compare_losses_lineage() {
    python3 - "$T" "$@" <<'EOF' || fail "losses differ from the single-process reference"
import json, os, sys
t, tol, names = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
ref = {}
for line in open(f"{t}/ref.jsonl"):
    r = json.loads(line)
    ref[r["step"] + 1] = r["loss"]
final = {}  # step -> the record of the newest generation
for name in names:
    path = f"{t}/{name}.jsonl"
    for line in open(path) if os.path.exists(path) else []:
        r = json.loads(line)
        if r["step"] not in final or r["generation"] >= final[r["step"]]["generation"]:
            final[r["step"]] = r
missing = sorted(set(ref) - set(final))
assert not missing, f"no worker logged steps {missing}"
worst, at = 0.0, 0
for s in sorted(ref):
    f = final[s]
    rel = abs(f["loss"] - ref[s]) / abs(ref[s])
    worst, at = max((worst, at), (rel, s))
    assert rel <= tol, (f"step {s}: loss {f['loss']!r} (generation {f['generation']}, "
                        f"{f['nranks']} ranks) vs reference {ref[s]!r}: rel {rel:.3g} > {tol:g}")
print(f"  {len(ref)} steps match the reference, worst relative difference {worst:.3g} (step {at})")
EOF
}


# tenths T: T tenths of a second as "S.T" (the seeded fault schedules count in tenths).
tenths() { echo "$(($1 / 10)).$(($1 % 10))"; }

# kill_coord DOWN: SIGKILLs the coordinator and starts it again after DOWN tenths of a second.
kill_coord() {
    kill -KILL "$COORD_PID"
    wait "$COORD_PID" 2>/dev/null
    sleep "$(tenths "$1")"
    start_coord
}

# after_fault K GAP PAUSE STEP0 RUN: what follows fault K: a committed step beyond STEP0 (GAP 1,
# while the run is running) or a pause of PAUSE tenths of a second.
after_fault() {
    if [ "$2" = 1 ] && run_state_is "$5" running; then
        wait_until 120 "a committed step after fault $1" run_step_at_least "$5" $(($4 + 1))
    else
        sleep "$(tenths "$3")"
    fi
}

# plans_summary EVENTS: one line on the run whose ledger entries are in EVENTS: its plans, their
# state sources, its rollbacks and the steps they lost.
plans_summary() {
    python3 - "$1" <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
rb = [e["detail"] for e in ev if e["kind"] == "rollback"]
plans = [e["detail"] for e in ev if e["kind"] == "plan"]
print(f"  {len(plans)} plans ({', '.join(sorted(set(p['source'] for p in plans)))}), "
      f"{len(rb)} rollbacks, {sum(r.get('steps_lost', 0) for r in rb)} steps lost")
PY
}

# sched_fault K KIND TARGET MAX_DOWN: draws the rest of fault K from $RANDOM (the tenths of a
# second a killed, stopped or coordinator process stays down, below MAX_DOWN; then a committed
# step, or a pause of 0.2-1.1 s), appends "KIND TARGET DOWN GAP PAUSE" to SCHED and prints it.
# Called in the script's own shell, never in $(...): the draws go on from the seed.
sched_fault() {
    local down=$((RANDOM % $4)) gap=$((RANDOM % 2)) pause=$((2 + RANDOM % 10)) what
    SCHED+=("$2 $3 $down $gap $pause")
    case $2 in
    kill | term | coord) what="$2 $3, down $(tenths $down) s" ;;
    *) what="$2 $3" ;;
    esac
    [ $gap = 1 ] && what+=", then a committed step" || what+=", then $(tenths $pause) s"
    note "seed $SEED fault $1: $what"
}
