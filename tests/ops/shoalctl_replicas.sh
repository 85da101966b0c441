#!/usr/bin/env bash
# shoalctl_replicas.sh: checkpoints survive without a shared file system (checkpoint.replicas).
# Four shoal-worker processes, each with its own state dir and its own (relative) checkpoint
# dir, train 2 pipeline stages x 1 replica (two spares). After a committed checkpoint (the run
# paused meanwhile, so that it stays the newest) the manifest lists 3 holders per shard (the
# writer and 2 copies) on distinct workers. Then a copy held by a survivor is corrupted on disk,
# two workers are SIGKILLed at once (the writer of stage 1's shard and a worker holding no copy
# of it) and their state dirs deleted (the host is gone), and the run resumed: it restores
# (rolls back to) the committed checkpoint, which the survivors load from copies (the corrupt one detected by its
# digest and fetched again from another holder over ZeroMQ), and finishes with every step equal
# to a single-process run of the same spec.
# Usage: shoalctl_replicas.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" repl
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
run_holds() {
    "$bin" status rp --json >"$tmp/poll" 2>/dev/null &&
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs'][0]; sys.exit(0 if ($1) else 1)" \
            "$tmp/poll"
}

start_cluster 4 rw
cat >"$tmp/run.yaml" <<YAML
name: rp
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
  seed: 5
train:
  steps: 200
  global_batch: 8
  seq_len: 32
  micro_batch: 1
  lr: 2e-3
  warmup_steps: 5
checkpoint:
  every_steps: 20
  replicas: 2
parallel:
  pipeline_stages: 2
  data_parallel: 1
YAML
workers_up() {
    "$bin" workers --json 2>/dev/null | python3 -c \
        "import json,sys; w=json.load(sys.stdin)['workers']; sys.exit(0 if len(w) == 4 else 1)"
}
poll_until 30 workers_up || err "the 4 workers did not register"
expect 0 submit "$tmp/run.yaml"
poll_until 150 run_holds 'r["checkpoint_step"] >= 20' || err "no checkpoint 20: $(cat "$tmp/poll")"
# all copies confirmed: 3 distinct holders per shard, each path inside that worker's state dir
three_holders() {
    "$bin" manifest rp --json >"$tmp/manifest.json" 2>/dev/null &&
        python3 - "$tmp/manifest.json" "$tmp" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
shards = doc["manifest"]["shards"]
names = {}
assert len(shards) == 2, shards
for s in shards:
    h = s.get("holders", [])
    ids = [x["worker"] for x in h]
    assert len(ids) == 3 and len(set(ids)) == 3, ids
    assert ids[0] == s["worker"], (ids, s["worker"])
PY
}
# pause at a step boundary so that the checkpoint read below stays the newest one (200 steps:
# a run of 40 was over before the pause arrived on an idle machine)
expect 0 pause rp
poll_until 60 run_holds 'r["state"] == "paused"' || err "run not paused: $(cat "$tmp/poll")"
poll_until 60 three_holders || err "no manifest with 3 holders per shard: $(cat "$tmp/manifest.json")"
step=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$tmp/manifest.json")
"$bin" manifest rp --step "$step" || err "shoalctl manifest (text) failed"

# id -> name, and the worker dirs ($tmp/wI) by name rwI
"$bin" workers --json >"$tmp/workers.json"
read -r writer other corrupt_on copy_path < <(python3 - "$tmp/manifest.json" "$tmp/workers.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["manifest"]
names = {w["id"]: w["name"] for w in json.load(open(sys.argv[2]))["workers"]}
s1 = next(s for s in m["shards"] if s["cell"]["stage"] == 1)
holders = [h["worker"] for h in s1["holders"]]
writer = holders[0]
other = next(i for i in sorted(names) if i not in holders)   # holds no copy of stage 1's shard
survivor = holders[1]                                        # keeps a copy: corrupt it
path = s1["holders"][1]["path"]
print(names[writer], names[other], names[survivor], path)
PY
)
[ -n "${copy_path:-}" ] || err "could not pick the victims"
echo "victims: $writer (writer of stage 1's shard) and $other; corrupting $corrupt_on's copy $copy_path"
# flip one byte in the middle of the survivor's copy of the model file
python3 - "$copy_path/model.safetensors" <<'PY'
import os, sys
p = sys.argv[1]
n = os.path.getsize(p)
with open(p, "r+b") as f:
    f.seek(n // 2); b = f.read(1); f.seek(n // 2); f.write(bytes([b[0] ^ 0x5a]))
PY
pw=${writer#rw}
po=${other#rw}
kill -KILL "${worker_pid[$pw]}" "${worker_pid[$po]}" || err "could not kill $writer and $other"
rm -rf "$tmp/w$pw" "$tmp/w$po" # the hosts are gone: nothing of theirs is readable any more
expect 0 resume rp
poll_until 240 run_holds 'r["state"] == "done"' || err "run not done: $(cat "$tmp/poll")"

expect 0 events rp --json
python3 - "$tmp/out" <<'PY' || err "ledger: $(cat "$tmp/out")"
import json, sys
ev = json.load(open(sys.argv[1]))["events"]
# the plan after the kill restores the cells from the committed checkpoint; a rollback entry
# comes with it only when steps past that checkpoint were lost (the pause may land exactly at
# the checkpoint's step: the lease runs to it and commits it)
plans = [e["detail"] for e in ev if e["kind"] == "plan"]
ckpts = {e["detail"]["step"] for e in ev if e["kind"] == "checkpoint"}
assert len(plans) >= 2 and plans[1]["source"] == "checkpoint", plans
assert plans[1]["start_step"] - 1 >= 20 and plans[1]["start_step"] - 1 in ckpts, (plans[1], ckpts)
rollbacks = [e["detail"] for e in ev if e["kind"] == "rollback"]
assert all(r["to_step"] == plans[1]["start_step"] - 1 for r in rollbacks), (rollbacks, plans[1])
PY
pc=${corrupt_on#rw}
grep -q "model.safetensors: SHA-256 differs" "$tmp/w$pc.log" ||
    err "$corrupt_on did not detect its corrupt copy"
grep -q "fetched from" "$tmp"/w*.log || err "no survivor fetched a shard from a holder"
grep -h "fetched from\|discarded" "$tmp"/w*.log | sed 's/^/  /'

(cd "$tmp" && "$bindir/shoal-worker" train run.yaml --metrics single.jsonl --quiet \
    >single.log 2>&1) || err "single-process train failed: $(tail -3 "$tmp/single.log")"
python3 "$(dirname "$0")/parallel_check.py" losses "$tmp" 3 1 || err "losses differ"

# step time with checkpoint copies in flight on the worker (metric copies_in_flight) against
# the other steps of the same run: copies run off the training thread
python3 - "$tmp" <<'PY'
import glob, json, statistics, sys
rows = [json.loads(l) for f in glob.glob(sys.argv[1] + "/w*.jsonl") for l in open(f)]
busy = [r["step_seconds"] for r in rows if r.get("copies_in_flight", 0) > 0]
idle = [r["step_seconds"] for r in rows if r.get("copies_in_flight", 0) == 0]
assert "copies_in_flight" in rows[0], rows[0]
if busy and idle:
    print("step seconds with copies in flight: median %.3f max %.3f (%d steps); without: "
          "median %.3f max %.3f (%d steps); median ratio %.2f" %
          (statistics.median(busy), max(busy), len(busy), statistics.median(idle), max(idle),
           len(idle), statistics.median(busy) / statistics.median(idle)))
else:
    print("no step ran with copies in flight (%d steps)" % len(rows))
PY

[ $fail -eq 0 ] && echo "shoalctl_replicas: all checks passed"
[ $fail -eq 0 ] || { for f in coord w1 w2 w3 w4; do echo "---- $f.log"; tail -25 "$tmp/$f.log"; done; }
exit $fail
