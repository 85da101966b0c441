#!/usr/bin/env bash
# shoalctl_history.sh: after a tiny real run (a coordinator and two data-parallel workers, 8
# steps), `shoalctl history RUN --json` lists every committed step once with strictly increasing
# steps, non-decreasing commit times within the run's span, finite losses, the step's tokens
# (the global batch: 4 x 16, counted once, not per replica) and tokens/s = tokens / step time;
# --csv and --from agree with it; `plot RUN` without --metrics draws over wall time; an unknown
# run is refused. Usage: shoalctl_history.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" history
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
start_cluster 2 hw
cat >"$tmp/run.yaml" <<YAML
name: hist
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
train:
  steps: 8
  global_batch: 4
  seq_len: 16
  lr: 1e-3
checkpoint:
  every_steps: 8
YAML
run_done() {
    "$bin" status hist --json 2>/dev/null | python3 -c \
        'import json,sys; r=json.load(sys.stdin)["runs"][0]; sys.exit(0 if r["state"] == "done" else 1)'
}
t0=$(date +%s%3N)
poll_until 30 workers_all_active 2 || err "the two workers did not register"
expect 0 submit "$tmp/run.yaml"
poll_until 60 run_done || err "run did not finish: $("$bin" status hist 2>&1)"
t1=$(date +%s%3N)

expect 0 history hist --json
cp "$tmp/out" "$tmp/hist.json"
python3 - "$tmp/hist.json" "$t0" "$t1" <<'PY' || err "history --json: $(head -c 600 "$tmp/hist.json")"
import json, math, sys
doc = json.load(open(sys.argv[1]))
t0, t1 = int(sys.argv[2]), int(sys.argv[3])
rows = doc["rows"]
assert doc["run"] == "r1", doc["run"]
steps = [r["step"] for r in rows]
# every step committed on its own (each StepReport moves a rank by one step): 1..8, once each
assert steps == list(range(1, 9)), steps
times = [r["time_ms"] for r in rows]
assert all(a <= b for a, b in zip(times, times[1:])), times
assert t0 <= times[0] and times[-1] <= t1, (t0, times, t1)
for r in rows:
    assert math.isfinite(r["loss"]) and r["loss"] > 0, r
    assert r["tokens"] == 4 * 16, r
    assert r["step_seconds"] > 0 and abs(r["tokens_per_s"] - r["tokens"] / r["step_seconds"]) <= 1e-6 * r["tokens_per_s"] + 1e-3, r
    assert r["generation"] >= 1 and 0 <= r["ranks"] <= 2, r
PY
expect 0 history hist --csv --from 5
python3 - "$tmp/out" "$tmp/hist.json" <<'PY' || err "history --csv --from 5: $(cat "$tmp/out")"
import csv, json, sys
c = list(csv.DictReader(open(sys.argv[1])))
rows = json.load(open(sys.argv[2]))["rows"]
assert [int(r["step"]) for r in c] == [5, 6, 7, 8], c
assert [int(r["time_ms"]) for r in c] == [r["time_ms"] for r in rows[4:]]
PY
expect 0 history hist
grep -Eq "^ +8  20[0-9-]+ [0-9:.]+Z" "$tmp/out" || err "history table: $(cat "$tmp/out")"
expect 1 history nope
expect 0 plot hist --out "$tmp/hist.png"
grep -q "plotted 8 step(s) and 0 plan change(s) to $tmp/hist.png (x axis: wall time)" "$tmp/out" ||
    err "plot RUN: $(cat "$tmp/out") $(cat "$tmp/err")"
exit $fail
