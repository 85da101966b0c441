#!/usr/bin/env bash
# shoalctl_parallel.sh: a run split into 2 pipeline stages x 2 expert-parallel ranks, end to end
# with real processes: a coordinator and four shoal-worker daemons on 127.0.0.1. The planner
# places the four cells (shoalctl plan shows layers and experts per worker), the workers train
# with 1F1B and all-to-all, every worker reports the same per-step loss, and those losses match
# `shoal-worker train` of the same spec in one process within 1e-4 relative. The checkpoint
# shards of the four cells (each holding only its part) are committed together, and
# `shoalctl export` of the last step equals the single process's parameters byte for byte (exact sums),
# the single process running on 2 threads and the cells on 1.
# A fifth worker beyond whole replicas is a spare (standby). Usage: shoalctl_parallel.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" parallel
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
run_holds() {
    "$bin" status par --json >"$tmp/poll" 2>/dev/null &&
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs'][0]; sys.exit(0 if ($1) else 1)" \
            "$tmp/poll"
}

start_cluster 5 pw
cat >"$tmp/run.yaml" <<YAML
name: par
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
  seed: 5
train:
  steps: 20
  global_batch: 8
  seq_len: 32
  micro_batch: 1
  lr: 2e-3
  warmup_steps: 2
checkpoint:
  every_steps: 10
parallel:
  pipeline_stages: 2
  expert_parallel: 2
YAML
workers_up() {
    "$bin" workers --json 2>/dev/null | python3 -c \
        'import json,sys; w=json.load(sys.stdin)["workers"]; sys.exit(0 if len(w) == 5 else 1)'
}
poll_until 30 workers_up || err "the five workers did not register"
expect 0 submit "$tmp/run.yaml"
# while it trains: four workers hold a cell, the fifth (beyond whole replicas) is a spare
one_spare() {
    "$bin" workers --json 2>/dev/null | python3 -c '
import json, sys
w = json.load(sys.stdin)["workers"]
states = sorted(x["state"] for x in w)
cells = [x for x in w if x.get("cell")]
sys.exit(0 if states.count("standby") == 1 and len(cells) == 4 else 1)'
}
poll_until 60 one_spare || err "no spare while training: $("$bin" workers 2>&1)"
poll_until 240 run_holds 'r["state"] == "done" and r["checkpoint_step"] == 20' ||
    err "run did not finish with checkpoint 20: $(cat "$tmp/poll")"

# the plan: dp 1 x pp 2 x ep 2, layers and experts per worker, one spare
expect 0 plan par --json
python3 - "$tmp/out" <<'PY' || err "plan: $(cat "$tmp/out")"
import json, sys
doc = json.load(open(sys.argv[1]))
plan = doc["plan"]
t = plan["topology"]
assert (t["dp"], t["pp"], t["ep"]) == (1, 2, 2), t
assert len(plan["peers"]) == 4, plan["peers"]
st = plan["stages"]
assert [s["n_layers"] for s in st] and sum(s["n_layers"] for s in st) == 4, st
assert st[0]["first_layer"] == 0 and st[1]["first_layer"] == st[0]["n_layers"], st
PY
# hot experts (issue 13): replica 0 / ep rank 0 of each stage reported its MoE layers' counts
# (1 on stage 0, 2-3 on stage 1); after the step's reduce they cover the whole batch, so the
# newest step's counts of every layer sum to global_batch x seq_len x top_k = 8 x 32 x 2
expect 0 experts par --json --redundant 1
python3 "$(dirname "$0")/parallel_check.py" experts "$tmp/out" 20 $((8 * 32 * 2)) $((2 * 5)) ||
    err "experts: $(cat "$tmp/out")"
expect 0 experts par
grep -q "CONTIGUOUS" "$tmp/out" || err "experts table: $(cat "$tmp/out")"
# the same spec in one process, on 2 threads (the cells run on 1): a run has the same bits at any
# thread count (kernels/kgemm.c), so the export must still match byte for byte
(cd "$tmp" && "$bindir/shoal-worker" train run.yaml --metrics single.jsonl --threads 2 \
    --export single-model --quiet >single.log 2>&1) ||
    err "single-process train failed: $(tail -3 "$tmp/single.log")"
python3 "$(dirname "$0")/parallel_check.py" losses "$tmp" 4 1 || err "losses differ"

# four shards of step 20, each a part; the export equals the single process's model
expect 0 export par --step 20 --out "$tmp/m20"
python3 "$(dirname "$0")/parallel_check.py" export "$tmp" 20 4 exact ||
    err "export differs from the single process"

[ $fail -eq 0 ] && echo "shoalctl_parallel: all checks passed"
[ $fail -eq 0 ] || { for f in coord w1 w2 w3 w4 w5; do echo "---- $f.log"; tail -15 "$tmp/$f.log"; done; }
exit $fail
