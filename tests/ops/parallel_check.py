#!/usr/bin/env python3
"""parallel_check.py: what the split-run tests compare against a single-process run of the
same spec (TMP/single.jsonl from `shoal-worker train --metrics`, TMP/single-model from
--export), reading the cluster workers' TMP/w*.jsonl metrics and checkpoint shards.

  parallel_check.py losses TMP CELLS FROM   every step >= FROM that CELLS workers trained (the
      last report of each step wins: a step trained again after a rollback replaces the
      abandoned one) matches the single process within 1e-4 relative
  parallel_check.py export TMP STEP SHARDS [exact]  TMP/mSTEP (shoalctl export) equals
      TMP/single-model within 1e-4 (with `exact`: byte for byte, what train.grad_sum exact
      promises without expert parallelism); the step's SHARDS checkpoint shards each hold only
      part
  parallel_check.py experts FILE STEP TOTAL [SLOTS]  FILE (shoalctl experts --json of a tiny
      run: MoE layers 1-3) holds every MoE layer's loads up to STEP, each layer's newest counts
      summing to TOTAL (global_batch x seq_len x top-k: the whole batch, every replica and ep
      rank); with SLOTS, the placement's copies fill that many slots
"""
import glob
import json
import os
import struct
import sys


def single_losses(tmp):
    out = {}
    for line in open(os.path.join(tmp, "single.jsonl")):
        j = json.loads(line)
        out[j["step"] + 1] = j["loss"]  # 0-based there, the daemon counts steps from 1
    return out


def check_losses(tmp, cells, first):
    single = single_losses(tmp)
    trained = {}
    for f in sorted(glob.glob(os.path.join(tmp, "w*.jsonl"))):
        losses = {}
        for line in open(f):
            j = json.loads(line)
            if j.get("run") and j["step"] >= first:
                losses[j["step"]] = j["loss"]
        if losses:
            trained[f] = losses
    steps = set()
    worst = 0.0
    for f, losses in trained.items():
        for k, v in losses.items():
            steps.add(k)
            rel = abs(v - single[k]) / abs(single[k])
            worst = max(worst, rel)
            assert rel <= 1e-4, "%s step %d: %.9g vs single %.9g" % (f, k, v, single[k])
    want = set(k for k in single if k >= first)
    assert steps == want, "steps trained %s, expected %s" % (sorted(steps), sorted(want))
    assert len(trained) >= cells, "workers that trained: %s" % sorted(trained)
    print("%d workers, steps %d..%d: worst relative loss difference %.2e"
          % (len(trained), first, max(want), worst))


def tensors(path, raw_bytes=False):
    out = {}
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        hdr = json.loads(fh.read(n))
        base = 8 + n
        for name, t in hdr.items():
            if name == "__metadata__":
                continue
            a, b = t["data_offsets"]
            fh.seek(base + a)
            raw = fh.read(b - a)
            out[name] = raw if raw_bytes else struct.unpack("<%df" % (len(raw) // 4), raw)
    return out


def check_export(tmp, step, n_shards, exact=False):
    pattern = "w*/runs/*/checkpoints/step-%08d/model.safetensors" % step
    shards = glob.glob(os.path.join(tmp, pattern))
    assert len(shards) == n_shards, shards
    sizes = [len(tensors(s)) for s in shards]
    got = tensors(os.path.join(tmp, "m%d" % step, "model.safetensors"))
    assert max(sizes) < len(got), ("a shard holds everything", sizes, len(got))
    want = tensors(os.path.join(tmp, "single-model", "model.safetensors"))
    assert sorted(got) == sorted(want), "tensor names differ"
    worst = 0.0
    for name in want:
        for x, y in zip(got[name], want[name]):
            worst = max(worst, abs(x - y))
    assert worst <= 1e-4, worst
    print("export: %d tensors from %d shards (%s tensors each), worst difference %.2e"
          % (len(got), len(shards), sizes, worst))
    if exact:
        got_b = tensors(os.path.join(tmp, "m%d" % step, "model.safetensors"), True)
        want_b = tensors(os.path.join(tmp, "single-model", "model.safetensors"), True)
        differ = [n for n in sorted(want_b) if got_b[n] != want_b[n]]
        assert not differ, "%d of %d tensors differ in their bytes from the single process: %s" % (
            len(differ), len(want_b), differ[:5])
        print("export: byte-identical to the single process (%d tensors)" % len(want_b))


def check_experts(path, step, total, slots=None):
    doc = json.load(open(path))
    layers = {l["layer"]: l for l in doc["layers"]}
    assert sorted(layers) == [1, 2, 3], sorted(layers)
    assert doc["dropped"] == 0, doc
    for l in layers.values():
        assert l["step"] == step and 1 <= l["folded"] <= step, l
        assert l["last_total"] == total == sum(l["last"]), l
        assert len(l["load"]) == doc["n_experts"] and sum(l["load"]) >= total, l
        if slots is not None:
            assert sum(l["eplb"]["replicas"]) == slots, l["eplb"]


if __name__ == "__main__":
    if sys.argv[1] == "losses":
        check_losses(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "experts":
        check_experts(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                      int(sys.argv[5]) if len(sys.argv) > 5 else None)
    else:
        check_export(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                     len(sys.argv) > 5 and sys.argv[5] == "exact")
