#!/usr/bin/python3
"""oracle_train.py: `shoal-worker train` against the `train` of a PyTorch reference of
docs/MODEL.md (ORACLE: tests/reference/moe_ref.py, or an outside one with its interface) from the
same initial model and the same data order (data.seed 0 = the oracle's (k·G + j) mod M): per-step losses and the
final parameters must agree (AdamW, clipping, LR schedule, bias update end to end).
With --bench, also prints both tokens/s and their ratio (same config, same thread count).

usage: oracle_train.py SHOAL_WORKER ORACLE [--steps S] [--batch G] [--seq T] [--micro B]
                       [--threads N] [--bench] [--corpus PATH]
Exit 0 pass, 1 fail, 77 skip (no torch)."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("worker")
ap.add_argument("oracle")
ap.add_argument("--steps", type=int, default=6)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--seq", type=int, default=64)
ap.add_argument("--micro", type=int, default=0)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--lr", type=float, default=3e-3)
ap.add_argument("--bench", action="store_true")
ap.add_argument("--repeat", type=int, default=3,
                help="with --bench: runs of each, alternating; the best tokens/s of each counts")
ap.add_argument("--corpus", default="/usr/share/games/fortunes/fortunes")
args = ap.parse_args()
try:
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.oracle)))
    import moe_ref  # noqa: E402
except Exception as e:  # the reference needs Debian's python3-torch
    print(f"SKIP: cannot import the reference {args.oracle}: {e} (apt-get install python3-torch)")
    sys.exit(77)

with tempfile.TemporaryDirectory(prefix="shoal-otrain-") as tmp:
    tok = os.path.join(tmp, "corpus.bin")
    if os.path.exists(args.corpus):
        data = open(args.corpus, "rb").read()
    else:  # no fortunes: any bytes work
        data = bytes((i * 7919) % 251 for i in range(200000))
    with open(tok, "wb") as f:
        f.write(data)
    model = os.path.join(tmp, "init")
    subprocess.run(["/usr/bin/python3", args.oracle, "init", "--config",
                    os.path.join(os.path.dirname(args.oracle), "tiny.json"), "--out", model,
                    "--seed", "1"], check=True, capture_output=True)
    warmup = args.steps // 10
    micro = f"\n  micro_batch: {args.micro}" if args.micro else ""  # else shoal's default
    spec = os.path.join(tmp, "run.yaml")
    with open(spec, "w") as f:
        f.write(f"""name: oracle-compare
model:
  preset: tiny
data:
  files: [{tok}]
  seed: 0
train:
  steps: {args.steps}
  global_batch: {args.batch}
  seq_len: {args.seq}{micro}
  lr: {args.lr}
  min_lr: 0
  warmup_steps: {warmup}
  weight_decay: 0.1
  clip_grad_norm: 1.0
  threads: {args.threads}
  # the oracle sums micro-batch gradients in fp32 as PyTorch does; the exact sums (the default)
  # round differently, and over {args.steps} steps one borderline top-k choice flips a balancing
  # bias by its step (1e-3). Exact sums are checked against the single process bit for bit
  # elsewhere (test_cell_equiv); here the model's mathematics is compared.
  grad_sum: float
checkpoint:
  dir: {os.path.join(tmp, "ckpt")}
  every_steps: 0
  keep: 1
""")
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    o = subprocess.run(["/usr/bin/python3", args.oracle, "train", "--model", model, "--tokens", tok,
                        "--batch", str(args.batch), "--seq", str(args.seq), "--steps",
                        str(args.steps), "--lr", str(args.lr), "--threads", str(args.threads),
                        "--out", os.path.join(tmp, "oracle-out")],
                       check=True, capture_output=True, text=True, env=env)
    s = subprocess.run([args.worker, "train", spec, "--init-model", model, "--threads",
                        str(args.threads), "--export", os.path.join(tmp, "shoal-out")],
                       capture_output=True, text=True, env=env)
    if s.returncode != 0:
        print(s.stdout[-2000:], s.stderr[-2000:])
        print("FAIL: shoal-worker train failed")
        sys.exit(1)
    ol = [float(x) for x in re.findall(r"step\s+\d+\s+loss (\S+)", o.stdout)]
    sl = [float(x) for x in re.findall(r"step\s+\d+/\d+\s+loss (\S+)", s.stdout)]
    if len(ol) != args.steps or len(sl) != args.steps:
        print(f"FAIL: expected {args.steps} losses, got oracle {len(ol)}, shoal {len(sl)}")
        sys.exit(1)
    worst = max(abs(a - b) / abs(b) for a, b in zip(sl, ol))
    print(f"losses: oracle {ol[0]:.5f} -> {ol[-1]:.5f}, shoal {sl[0]:.5f} -> {sl[-1]:.5f}, "
          f"worst relative difference {worst:.2e}")
    _, P_o, b_o = moe_ref.load_model(os.path.join(tmp, "oracle-out"))
    _, P_s, b_s = moe_ref.load_model(os.path.join(tmp, "shoal-out"))
    pw = max(((P_s[n].double() - P_o[n].double()).norm() / P_o[n].double().norm()).item()
             for n in P_o)
    bw = max((b_s[n] - b_o[n]).abs().max().item() for n in b_o)
    print(f"final parameters: worst relative difference {pw:.2e}; biases max abs diff {bw:.2e}")
    ok = worst < 1e-4 * max(1, args.steps / 10) and pw < 1e-3 and bw < 1e-6
    if args.bench:
        rate = lambda out, pat: float(re.search(pat, out).group(1))
        o_pat, s_pat = r"([\d.]+) tokens/s excluding step 0", r"summary: .* ([\d.]+) tokens/s"
        otps, stps = [rate(o.stdout, o_pat)], [rate(s.stdout, s_pat)]
        for _ in range(args.repeat - 1):  # alternate, so background load hits both alike
            otps.append(rate(subprocess.run(o.args, check=True, capture_output=True, text=True,
                                            env=env).stdout, o_pat))
            shutil.rmtree(os.path.join(tmp, "ckpt"), ignore_errors=True)
            stps.append(rate(subprocess.run(s.args, check=True, capture_output=True, text=True,
                                            env=env).stdout, s_pat))
        print(f"bench_train: oracle (PyTorch) {max(otps):.0f} tokens/s, shoal {max(stps):.0f} "
              f"tokens/s, ratio {max(stps) / max(otps):.2f} (best of {args.repeat} alternating "
              f"runs each; all: oracle {[round(x) for x in otps]}, shoal "
              f"{[round(x) for x in stps]}; threads {args.threads}, G {args.batch}, T {args.seq}, "
              f"{args.steps} steps; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')}; "
              f"target >= 1.5)")
        blas = re.search(r"BLAS (\S+)", o.stdout)
        print(f"oracle BLAS: {blas.group(1) if blas else '?'}")
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)
