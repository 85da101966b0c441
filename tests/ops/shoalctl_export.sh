#!/usr/bin/env bash
# shoalctl_export.sh: `shoalctl export` against a real coordinator and two real workers (DP)
# that train a tiny run with a checkpoint every 10 steps: the f32 export of a committed step is
# the trained model bit for bit (the same bytes as the shard's model.safetensors), bf16 with a
# small --max-shard-bytes writes the sharded index form, an uncommitted step is refused listing
# the committed ones, a taken --out is refused, and a shard altered after the commit is caught.
# Skips (77) while shoal-worker has no daemon mode. Usage: shoalctl_export.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" export
run_holds() {
    "$bin" status exp --json >"$tmp/poll" 2>/dev/null &&
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs'][0]; sys.exit(0 if ($1) else 1)" \
            "$tmp/poll"
}

start_cluster 2 ew
cat >"$tmp/run.yaml" <<YAML
name: exp
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
train:
  steps: 20
  global_batch: 2
  seq_len: 16
  lr: 1e-3
checkpoint:
  every_steps: 10
YAML
workers_active() {
    "$bin" workers --json 2>/dev/null | python3 -c \
        'import json,sys; w=json.load(sys.stdin)["workers"]; sys.exit(0 if len(w) == 2 and all(x["state"] == "active" for x in w) else 1)'
}
poll_until 30 workers_active || err "the two workers did not register"
expect 0 submit "$tmp/run.yaml"
poll_until 200 run_holds 'r["state"] == "done" and r["checkpoint_step"] == 20' ||
    err "run did not finish with checkpoint 20: $(cat "$tmp/poll")"

# f32: the same tensor bytes as the shard (DP: every shard holds the whole model)
expect 0 export exp --step 10 --out "$tmp/m10"
grep -q "exported run r1 step 10" "$tmp/out" || err "export output: $(cat "$tmp/out")"
shard=$(ls -d "$tmp"/w1/runs/*/checkpoints/step-00000010 2>/dev/null | head -1)
[ -n "$shard" ] || err "no step-10 shard under $tmp/w1"
cmp -s "$tmp/m10/model.safetensors" "$shard/model.safetensors" ||
    err "f32 export differs from the shard's model.safetensors"
[ -f "$tmp/m10/config.json" ] && [ ! -e "$tmp/m10/optimizer.safetensors" ] ||
    err "export dir: $(ls "$tmp/m10")"

# bf16, sharded index form: every tensor mapped, files as named, half the bytes of f32
expect 0 export exp --step latest --out "$tmp/m20" --dtype bf16 --max-shard-bytes 1000000 --json
python3 - "$tmp/m20" "$tmp/out" <<'PY' || err "bf16 sharded export: $(ls "$tmp/m20")"
import json, os, struct, sys
d = sys.argv[1]
res = json.load(open(sys.argv[2]))
assert res["step"] == 20 and res["dtype"] == "bf16", res
idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
files = sorted(set(idx["weight_map"].values()))
assert len(files) > 1 and files[0] == "model-00001-of-%05d.safetensors" % len(files), files
assert json.load(open(os.path.join(d, "config.json")))["torch_dtype"] == "bfloat16"
total = 0
for f in files:
    with open(os.path.join(d, f), "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        hdr = json.loads(fh.read(n))
    for name, t in hdr.items():
        if name == "__metadata__":
            continue
        assert idx["weight_map"][name] == f, name
        want = "F32" if name.endswith("e_score_correction_bias") else "BF16"
        assert t["dtype"] == want, (name, t["dtype"])
        total += t["data_offsets"][1] - t["data_offsets"][0]
assert total == idx["metadata"]["total_size"], (total, idx["metadata"])
PY

# refusals: a step not committed (the committed ones listed), a taken --out, bad arguments
expect 1 export exp --step 15 --out "$tmp/m15"
grep -q "committed: 10, 20" "$tmp/err" || err "uncommitted step message: $(cat "$tmp/err")"
[ ! -e "$tmp/m15" ] || err "a refused export left $tmp/m15"
expect 1 export exp --step 10 --out "$tmp/m10"
grep -q "already exists" "$tmp/err" || err "taken --out message: $(cat "$tmp/err")"
expect 2 export exp --step 10 --out "$tmp/x" --dtype f16
expect 2 export exp --out "$tmp/x"
expect 1 export nosuchrun --step 10 --out "$tmp/x"

# a shard altered after the commit: named, nothing written
for w in w1 w2; do
    f=$(ls -d "$tmp"/$w/runs/*/checkpoints/step-00000010)/trainer_state.json
    echo ' ' >>"$f"
done
expect 1 export exp --step 10 --out "$tmp/bad"
grep -q "trainer_state.json" "$tmp/err" || err "altered shard message: $(cat "$tmp/err")"
[ ! -e "$tmp/bad" ] || err "a refused export left $tmp/bad"

[ $fail -eq 0 ] && echo "shoalctl_export: all checks passed"
[ $fail -eq 0 ] || { for f in coord w1 w2; do echo "---- $f.log"; tail -15 "$tmp/$f.log"; done; }
exit $fail
