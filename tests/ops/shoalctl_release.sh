#!/usr/bin/env bash
# shoalctl_release.sh: the open release of a short real run (a coordinator and two workers,
# data-parallel) and its replay. `shoalctl release` (no --metrics: the coordinator's history)
# writes the weights (the same bytes as `shoalctl export` of the last step), config.json,
# spec.yaml, a data manifest whose sizes and SHA-256 match the files the trainer read (and the
# data seed), per-step metrics (JSONL and CSV, one row a step with its commit time: count =
# steps, times monotone, losses finite), the plan history, the ledger with the coordinator's verification, and a
# model card, and ledger.json with the coordinator's public key, which `verify --ledger` checks
# offline (an edited entry fails); it refuses a spec that is not the one submitted and a taken
# --out. The release loads in the PyTorch references (tests/reference/moe_ref.py and
# SHOAL_ORACLE when given, where /usr/bin/python3 has torch). `shoalctl plot` of the release writes a PNG. `shoalctl replay` on
# ONE worker reproduces the weights byte for byte, and refuses a release whose data digests do
# not match the files. Usage: shoalctl_release.sh BINDIR [ORACLE]
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" release
oracle=${2:-}
refdir=$(cd "$(dirname "$0")/../reference" && pwd)
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
run_holds() {
    "$bin" status rel --json >"$tmp/poll" 2>/dev/null &&
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs'][0]; sys.exit(0 if ($1) else 1)" \
            "$tmp/poll"
}

start_cluster 2 rw
cat >"$tmp/run.yaml" <<YAML
name: rel
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
  seed: 3
train:
  steps: 12
  global_batch: 4
  seq_len: 16
  micro_batch: 1
  lr: 1e-3
checkpoint:
  every_steps: 6
YAML
poll_until 30 workers_all_active 2 || err "the two workers did not register"
expect 0 submit "$tmp/run.yaml"
poll_until 120 run_holds 'r["state"] == "done" and r["checkpoint_step"] == 12' ||
    err "run did not finish with checkpoint 12: $(cat "$tmp/poll")"

# refusals first: nothing may be left behind
sed 's/lr: 1e-3/lr: 2e-3/' "$tmp/run.yaml" >"$tmp/other.yaml"
expect 1 release rel --out "$tmp/bad" --spec "$tmp/other.yaml" --metrics "$tmp/w1.jsonl,$tmp/w2.jsonl"
grep -q "is not the spec run r1 was submitted with" "$tmp/err" || err "other spec: $(cat "$tmp/err")"
expect 2 release rel --out "$tmp/bad"
ls -d "$tmp"/bad* >/dev/null 2>&1 && err "a refused release left $(ls -d "$tmp"/bad*)"

expect 0 release rel --out "$tmp/rel" --spec "$tmp/run.yaml"
grep -q "released run r1 (rel) step 12" "$tmp/out" || err "release output: $(cat "$tmp/out")"
expect 1 release rel --out "$tmp/rel" --spec "$tmp/run.yaml" --metrics "$tmp/w1.jsonl"
grep -q "already exists" "$tmp/err" || err "taken --out: $(cat "$tmp/err")"
expect 0 export rel --step 12 --out "$tmp/m12"
cmp -s "$tmp/m12/model.safetensors" "$tmp/rel/model.safetensors" ||
    err "release weights differ from the export of step 12"

python3 - "$tmp/rel" "$tmp/run.yaml" <<'PY' || err "release contents: $(ls "$tmp/rel")"
import csv, hashlib, json, os, sys
d, spec = sys.argv[1], sys.argv[2]
for f in ["model.safetensors", "config.json", "spec.yaml", "data_manifest.json", "metrics.jsonl",
          "metrics.csv", "plan_history.json", "ledger.jsonl", "ledger_verification.json",
          "ledger.json", "ledger_signing.pub", "README.md"]:
    assert os.path.getsize(os.path.join(d, f)) > 0, f
assert open(os.path.join(d, "spec.yaml")).read() == open(spec).read()
# the data manifest: the trainer's files (a directory: its regular files by name, not hidden,
# not .dat/.u8), each size and digest as on disk, and the seed
man = json.load(open(os.path.join(d, "data_manifest.json")))
root = "/usr/share/games/fortunes"
want = sorted(os.path.join(root, n) for n in os.listdir(root)
              if not n.startswith(".") and not n.endswith((".dat", ".u8"))
              and os.path.isfile(os.path.join(root, n)))
assert [f["path"] for f in man["files"]] == want, (man["files"][:3], want[:3])
for f in man["files"]:
    data = open(f["path"], "rb").read()
    assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest(), f["path"]
assert man["seed"] == 3 and man["total_bytes"] == sum(f["size"] for f in man["files"]), man
# metrics from the coordinator's history: one row a step, 1..12, with its commit time
# (monotone), finite losses, the same rows in JSONL and CSV
import math
rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
assert [r["step"] for r in rows] == list(range(1, 13)), [r["step"] for r in rows]
assert all(math.isfinite(r["loss"]) and r["loss"] > 0 and r["tokens_per_s"] > 0 for r in rows), rows[0]
times = [r["time_ms"] for r in rows]
assert times[0] > 1.6e12 and all(a <= b for a, b in zip(times, times[1:])), times
c = list(csv.DictReader(open(os.path.join(d, "metrics.csv"))))
assert [int(r["step"]) for r in c] == list(range(1, 13))
assert [int(r["time_ms"]) for r in c] == times
assert all(abs(float(a["loss"]) - b["loss"]) <= 1e-6 * b["loss"] for a, b in zip(c, rows))
# the ledger: as verified, every entry chained to the one before and signed
ledger = [json.loads(l) for l in open(os.path.join(d, "ledger.jsonl"))]
assert json.load(open(os.path.join(d, "ledger.json")))["events"] == ledger
assert all(e.get("sig") for e in ledger), [e["seq"] for e in ledger if not e.get("sig")]
v = json.load(open(os.path.join(d, "ledger_verification.json")))
assert v["ok"] is True and v["entries"] == len(ledger), (v, len(ledger))
for a, b in zip(ledger, ledger[1:]):
    assert b["prev_hash"] == a["hash"], (a["seq"], b["seq"])
kinds = [e["kind"] for e in ledger]
assert "submit" in kinds and "checkpoint" in kinds, kinds
plans = json.load(open(os.path.join(d, "plan_history.json")))
assert plans and [p for p in ledger if p["kind"] == "plan"] == plans, plans
assert plans[0]["detail"]["generation"] == 1 and plans[0]["detail"]["dp"] == 2, plans[0]
# the model card names the run, its data and the weights' digest
card = open(os.path.join(d, "README.md")).read()
w = hashlib.sha256(open(os.path.join(d, "model.safetensors"), "rb").read()).hexdigest()
assert "# rel" in card and "shoalctl replay" in card and w in card, card[:400]
assert man["files"][0]["sha256"] in card and ledger[-1]["hash"] in card
assert "of wall time" in card, card
PY

# the signed ledger checks offline from the release alone (shoalctl, no coordinator), and an
# edited entry fails
grep -q '"ok": true' <(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["signatures"]))' \
    "$tmp/rel/ledger_verification.json") || err "release: signatures not verified: $(cat "$tmp/rel/ledger_verification.json")"
expect 0 verify --ledger "$tmp/rel/ledger.json" --pubkey "$tmp/rel/ledger_signing.pub"
python3 - "$tmp/rel/ledger.json" "$tmp/forged.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["events"][0]["detail"]["steps"] = 13
json.dump(d, open(sys.argv[2], "w"))
PY
expect 1 verify --ledger "$tmp/forged.json" --pubkey "$tmp/rel/ledger_signing.pub"
grep -q "shoalctl verify --ledger ledger.json" "$tmp/rel/README.md" ||
    err "the model card does not say how to check the signatures"

# the release loads in the PyTorch references
for ref in "$refdir/moe_ref.py" $oracle; do
    if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
        echo "SKIP part: /usr/bin/python3 has no torch: the release is not loaded in $ref"
        break
    fi
    /usr/bin/python3 - "$ref" "$tmp/rel" <<'PY' || err "the release does not load in $ref"
import os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import torch, moe_ref as R
cfg, P, b = R.load_model(sys.argv[2], torch.float32)
names = [n for n, _ in R.tensor_shapes(cfg)]
assert len(P) + len(b) == len(names), (len(P), len(b), len(names))
assert all(torch.isfinite(t).all() for t in list(P.values()) + list(b.values()))
print("loaded", len(names), "tensors from the release with", sys.argv[1])
PY
done

# plot of the release
expect 0 plot "$tmp/rel" --out "$tmp/rel.png"
grep -q "plotted 12 step(s) .*(x axis: wall time)" "$tmp/out" || err "plot output: $(cat "$tmp/out")"
python3 "$(dirname "$0")/png_colours.py" "$tmp/rel.png" 1f77b4 ff7f0e >"$tmp/colours" &&
    awk '{ n[$1] = $2 } END { exit !(n["1f77b4"] > 500 && n["ff7f0e"] > 500) }' "$tmp/colours" ||
    err "rel.png lacks a curve: $(cat "$tmp/colours" 2>&1)"

# plot of the run from the coordinator's ledger and the workers' metrics files, as SVG
expect 0 plot rel --metrics "$tmp/w1.jsonl,$tmp/w2.jsonl" --out "$tmp/rel.svg"
grep -q "plotted 12 step(s) and 0 plan change(s)" "$tmp/out" || err "plot RUN: $(cat "$tmp/out")"
grep -q "<svg" "$tmp/rel.svg" || err "rel.svg is not an SVG"
expect 2 plot rel
# the workers' files merged still make a release (rows without time), and plot RUN without
# --metrics reads the coordinator's history: over wall time
expect 0 release rel --out "$tmp/relm" --spec "$tmp/run.yaml" --metrics "$tmp/w1.jsonl,$tmp/w2.jsonl"
[ "$(grep -c '"ranks":2' "$tmp/relm/metrics.jsonl")" = 12 ] || err "release --metrics: $(head -2 "$tmp/relm/metrics.jsonl")"
# the history's rows carry the LR of the spec's schedule: the workers' own figures
python3 - "$tmp/rel/metrics.jsonl" "$tmp/relm/metrics.jsonl" <<'PY' || err "history LR differs from the workers'"
import json, sys
h, m = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
assert [r["step"] for r in h] == [r["step"] for r in m], ([r["step"] for r in h], [r["step"] for r in m])
assert any(r["lr"] > 0 for r in m), m[0]
for a, b in zip(h, m):
    assert abs(a["lr"] - b["lr"]) <= 1e-7 * max(b["lr"], 1e-12), (a["step"], a["lr"], b["lr"])
PY
expect 0 plot rel --out "$tmp/rel-time.png"
grep -q "plotted 12 step(s) and 0 plan change(s) to $tmp/rel-time.png (x axis: wall time)" "$tmp/out" ||
    err "plot RUN from the history: $(cat "$tmp/out")"

# replay on one worker (the run had two): byte for byte
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
"$bin" replay "$tmp/rel" --workers 1 --time-limit 150 >"$tmp/replay.out" 2>&1 ||
    err "replay failed: $(tail -5 "$tmp/replay.out")"
grep -q "model.safetensors byte-identical" "$tmp/replay.out" || err "replay: $(tail -5 "$tmp/replay.out")"
# a data file that is not the published one stops the replay before it trains
cp -r "$tmp/rel" "$tmp/rel2"
python3 - "$tmp/rel2/data_manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["files"][1]["sha256"] = "0" * 64
json.dump(m, open(sys.argv[1], "w"))
PY
expect 1 replay "$tmp/rel2" --workers 1
grep -q "differs from the release's" "$tmp/err" || err "altered manifest: $(cat "$tmp/err")"

[ $fail -eq 0 ] && echo "shoalctl_release: all checks passed"
[ $fail -eq 0 ] || { for f in coord w1 w2; do echo "---- $f.log"; tail -15 "$tmp/$f.log"; done; }
exit $fail
