#!/usr/bin/python3
"""oracle_grads.py: `shoal-worker grads` against a PyTorch reference of docs/MODEL.md (ORACLE:
tests/reference/moe_ref.py, or an outside one with its interface) on model configurations drawn
at random each run (seeded; the seed is printed, and
SHOAL_TEST_SEED=<n> replays a run). Every gradient and the loss must agree within 1e-4 relative;
with K = 1 the normalised gate is constant, so the router's gradient is only rounding noise and
is compared with an absolute tolerance. Exit 0 pass, 1 fail, 77 skip (no torch).

usage: oracle_grads.py SHOAL_WORKER ORACLE [N_CONFIGS]"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

worker, oracle = sys.argv[1], sys.argv[2]
n_cfg = int(sys.argv[3]) if len(sys.argv) > 3 else 6
try:
    sys.path.insert(0, os.path.dirname(os.path.abspath(oracle)))
    import moe_ref  # noqa: E402
    import torch  # noqa: E402,F401
except Exception as e:  # the reference needs Debian's python3-torch
    print(f"SKIP: cannot import the reference {oracle}: {e} (apt-get install python3-torch)")
    sys.exit(77)

seed = int(os.environ.get("SHOAL_TEST_SEED", time.time_ns() % 1_000_000))
print(f"oracle_grads: seed {seed} (replay with SHOAL_TEST_SEED={seed})", flush=True)
rng = random.Random(seed)

# Configurations the issue names explicitly, then random ones.
fixed = [
    dict(n_group=2, topk_group=1, num_experts_per_tok=2, n_routed_experts=8),
    dict(n_shared_experts=0),
    dict(first_k_dense_replace=0),
    dict(first_k_dense_replace=2, num_hidden_layers=3),
    dict(num_experts_per_tok=1),
    dict(num_experts_per_tok=3, n_group=4, topk_group=2, n_routed_experts=8),
    dict(moe_ref.TINY_CONFIG),  # the tiny preset itself, at T = 128
]


def random_config(over):
    H = rng.choice([1, 2, 4])
    dh = rng.choice([4, 8, 16])
    N = rng.choice([4, 6, 8, 12])
    G = rng.choice([g for g in (1, 2, 3, 4) if N % g == 0 and (g == 1 or N // g >= 2)])
    TG = rng.randint(1, G)
    K = rng.randint(1, min(3, TG * (N // G)))
    cfg = dict(vocab_size=256, hidden_size=H * dh, num_hidden_layers=rng.randint(1, 3),
               num_attention_heads=H, intermediate_size=rng.choice([16, 24, 48]),
               moe_intermediate_size=rng.choice([8, 16, 24]), n_routed_experts=N,
               n_shared_experts=rng.choice([0, 1, 2]), num_experts_per_tok=K, n_group=G,
               topk_group=TG, first_k_dense_replace=rng.choice([0, 1, 2]),
               routed_scaling_factor=rng.choice([1.0, 2.5]), rms_norm_eps=1e-6,
               rope_theta=10000.0, max_position_embeddings=128, bias_update_speed=0.001)
    cfg.update(over)
    cfg = moe_ref.validate_config(cfg)
    return cfg


def rel(a, b):
    a, b = a.double(), b.double()
    nb = b.norm().item()
    return (a - b).norm().item() / nb if nb > 0 else (a - b).norm().item()


failures = 0
with tempfile.TemporaryDirectory(prefix="shoal-oracle-") as tmp:
    for i in range(max(n_cfg, len(fixed))):
        over = fixed[i] if i < len(fixed) else {}
        try:
            cfg = random_config(over)
        except ValueError:
            cfg = random_config({})
        B, T = rng.randint(1, 4), rng.choice([8, 16, 33, 64, 100])
        if over is fixed[-1]:  # the tiny preset
            B, T = 2, 128
        case = os.path.join(tmp, f"c{i}")
        os.makedirs(case)
        with open(os.path.join(case, "cfg.json"), "w") as f:
            json.dump(cfg, f)
        tok = os.path.join(case, "tok.bin")
        model = os.path.join(case, "model")
        mine, ref = os.path.join(case, "mine.safetensors"), os.path.join(case, "ref.safetensors")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True, text=True)
        run("/usr/bin/python3", oracle, "tokens", "--out", tok, "--bytes", str(B * (T + 1) + 7),
            "--seed", str(rng.randint(1, 10**6)))
        init = ["/usr/bin/python3", oracle, "init", "--config", os.path.join(case, "cfg.json"),
                "--out", model, "--seed", str(rng.randint(1, 10**6)), "--tokens", tok,
                "--batch", str(B), "--seq", str(T)]
        if rng.random() < 0.3:
            init += ["--shards", "3"]
        run(*init)
        run("/usr/bin/python3", oracle, "grads", "--model", model, "--tokens", tok, "--batch",
            str(B), "--seq", str(T), "--out", ref)
        r = subprocess.run([worker, "grads", "--model", model, "--tokens", tok, "--batch", str(B),
                            "--seq", str(T), "--out", mine], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"case {i}: shoal-worker grads failed: {r.stderr.strip()}")
            failures += 1
            continue
        A, _ = moe_ref.st_read(mine)
        R, _ = moe_ref.st_read(ref)
        worst, worst_name, bad = 0.0, "", []
        if set(A) != set(R):
            bad.append(f"tensor sets differ: only mine {sorted(set(A) - set(R))[:3]}, "
                       f"only oracle {sorted(set(R) - set(A))[:3]}")
        for name in sorted(set(A) & set(R)):
            a, b = A[name].reshape(-1), R[name].reshape(-1)
            if a.shape != b.shape:
                bad.append(f"{name}: shape {list(A[name].shape)} vs {list(R[name].shape)}")
                continue
            if cfg["num_experts_per_tok"] == 1 and name.endswith("mlp.gate.weight"):
                err = (a.double() - b.double()).abs().max().item()
                if err > 1e-6:
                    bad.append(f"{name}: abs err {err:.3e} > 1e-6 (K = 1)")
                continue
            e = rel(a, b)
            if e > worst:
                worst, worst_name = e, name
            if not e < 1e-4:
                bad.append(f"{name}: rel err {e:.3e}")
        desc = (f"d={cfg['hidden_size']} H={cfg['num_attention_heads']} "
                f"L={cfg['num_hidden_layers']} N={cfg['n_routed_experts']} "
                f"K={cfg['num_experts_per_tok']} G={cfg['n_group']}/{cfg['topk_group']} "
                f"ns={cfg['n_shared_experts']} dense={cfg['first_k_dense_replace']} "
                f"rsf={cfg['routed_scaling_factor']} B={B} T={T}")
        status = "ok" if not bad else "FAIL"
        print(f"case {i}: {status}  {desc}  worst {worst:.2e} ({worst_name})", flush=True)
        for b in bad[:10]:
            print(f"    {b}")
        failures += bool(bad)

total = max(n_cfg, len(fixed))
print(f"oracle_grads: {total - failures} of {total} configurations agree (seed {seed})")
sys.exit(1 if failures else 0)
