#!/usr/bin/python3
"""bench_cpu.py: training tokens/s of `shoal-worker train` (tiny preset) against the PyTorch
reference's `train` (ORACLE: tests/reference/moe_ref.py or an outside one with its interface),
same model, data, batch and sequence, measured in one run, alternating so load hits both alike:

  matched t   both with the kernel set shoal selects (OPENBLAS_CORETYPE; PyTorch loads the same
              libopenblas, which it uses for fp32 matmuls, so this is the same sgemm), t threads
              for both (--threads t, OMP/OPENBLAS_NUM_THREADS=t), for t = 1 .. --threads-max;
  default     each as a user starts it: the inherited environment (this machine's
              OPENBLAS_CORETYPE, if any), no --threads (shoal: train.threads 1, with its own
              selection at start; PyTorch: its own thread default).

Tokens/s exclude step 0 for both (shoal: its per-step metrics; the oracle: its own figure).
Before timing, the first-step losses of the two must agree (1e-4 relative), else FAIL.
Prints a table, the ratios and shoal's speed-up at t threads over 1.

usage: bench_cpu.py SHOAL_WORKER ORACLE [--steps S] [--batch G] [--seq T] [--repeat R]
                    [--threads-max N] [--corpus PATH]
Exit 0 measured, 1 failed, 77 skip (no torch)."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("worker")
ap.add_argument("oracle")
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--seq", type=int, default=128)
ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each; best counts")
ap.add_argument("--threads-max", type=int, default=os.cpu_count() or 1)
ap.add_argument("--corpus", default="/usr/share/games/fortunes/fortunes")
args = ap.parse_args()
PY = "/usr/bin/python3"
if subprocess.run([PY, "-c", "import torch"], capture_output=True).returncode != 0:
    print(f"SKIP: {PY} cannot import torch (apt-get install python3-torch)")
    sys.exit(77)

BASE_ENV = {k: v for k, v in os.environ.items()
            if k not in ("SHOAL_BLAS_SELECTED", "SHOAL_BLAS_TEST_CORENAME")}


def blas_line(env):
    """shoal-worker's own account of its BLAS under env: (kernel set, whole line)."""
    out = subprocess.run([args.worker, "--version"], env=env, capture_output=True, text=True,
                         check=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("BLAS ")), "BLAS ?")
    m = re.search(r"kernels (\S+),", line)
    return (m.group(1) if m else "?"), line


def run_shoal(spec, model, env, threads):
    metrics = spec + ".metrics.jsonl"
    if os.path.exists(metrics):
        os.unlink(metrics)
    shutil.rmtree(os.path.join(os.path.dirname(spec), "ckpt"), ignore_errors=True)  # no resume
    cmd = [args.worker, "train", spec, "--init-model", model, "--metrics", metrics, "--quiet"]
    if threads:
        cmd += ["--threads", str(threads)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: shoal-worker train: {r.stderr[-2000:]}")
    steps = [json.loads(ln) for ln in open(metrics)]
    rest = steps[1:]
    tps = len(rest) * args.batch * args.seq / sum(s["step_seconds"] for s in rest)
    kern = re.search(r"BLAS \S+ \S+.*?, kernels (\S+), threads (\d+)", r.stderr)
    return tps, steps[0]["loss"], (kern.group(1), int(kern.group(2))) if kern else ("?", 0)


def run_torch(model, tok, env, threads):
    cmd = [PY, args.oracle, "train", "--model", model, "--tokens", tok, "--batch",
           str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps), "--lr", "3e-3"]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    tps = float(re.search(r"([\d.]+) tokens/s excluding step 0", out).group(1))
    loss0 = float(re.search(r"step\s+0\s+loss (\S+)", out).group(1))
    th = re.search(r"threads (\d+), BLAS (\S+)", out)
    return tps, loss0, (int(th.group(1)), th.group(2)) if th else (0, "?")


with tempfile.TemporaryDirectory(prefix="shoal-bench-cpu-") as tmp:
    tok = os.path.join(tmp, "corpus.bin")
    data = open(args.corpus, "rb").read() if os.path.exists(args.corpus) else \
        bytes((i * 7919) % 251 for i in range(200000))
    open(tok, "wb").write(data)
    model = os.path.join(tmp, "init")
    subprocess.run([PY, args.oracle, "init", "--config",
                    os.path.join(os.path.dirname(os.path.abspath(args.oracle)), "tiny.json"),
                    "--out", model, "--seed", "1"], check=True, capture_output=True)
    spec = os.path.join(tmp, "run.yaml")
    # the oracle's schedule (warmup steps // 10, min_lr 0) and its fp32 micro-batch sums
    open(spec, "w").write(f"""name: bench-cpu
model:
  preset: tiny
data:
  files: [{tok}]
  seed: 0
train:
  steps: {args.steps}
  global_batch: {args.batch}
  seq_len: {args.seq}
  lr: 3e-3
  min_lr: 0
  warmup_steps: {args.steps // 10}
  weight_decay: 0.1
  clip_grad_norm: 1.0
  grad_sum: float
checkpoint:
  dir: {os.path.join(tmp, "ckpt")}
  every_steps: 0
  keep: 1
""")
    unset = {k: v for k, v in BASE_ENV.items() if k != "OPENBLAS_CORETYPE"}
    selected, sel_line = blas_line(unset)
    default_kernels, def_line = blas_line(BASE_ENV)
    print(f"bench_cpu: tiny preset, G {args.batch}, T {args.seq}, {args.steps} steps, best of "
          f"{args.repeat} alternating runs; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"  shoal selects (OPENBLAS_CORETYPE unset): {sel_line}")
    print(f"  default environment (OPENBLAS_CORETYPE="
          f"{BASE_ENV.get('OPENBLAS_CORETYPE', '(unset)')}): {def_line}")
    cases = []
    for t in range(1, args.threads_max + 1):
        env = dict(BASE_ENV, OPENBLAS_CORETYPE=selected, OMP_NUM_THREADS=str(t),
                   OPENBLAS_NUM_THREADS=str(t))
        cases.append((f"matched {t}", env, t))
    cases.append(("default", BASE_ENV, 0))
    rows, failed = [], False
    for name, env, t in cases:
        best_s = best_t = 0.0
        for _ in range(args.repeat):
            s_tps, s_loss0, s_info = run_shoal(spec, model, env, t)
            t_tps, t_loss0, t_info = run_torch(model, tok, env, t)
            best_s, best_t = max(best_s, s_tps), max(best_t, t_tps)
        if abs(s_loss0 - t_loss0) > 1e-4 * abs(t_loss0):
            print(f"FAIL: {name}: step-0 losses differ: shoal {s_loss0}, PyTorch {t_loss0}")
            failed = True
        rows.append((name, s_info, t_info, best_s, best_t))
    print(f"  {'case':<10} {'shoal kernels/threads':<22} {'PyTorch threads':<16} "
          f"{'shoal tok/s':>11} {'PyTorch tok/s':>13} {'ratio':>6}")
    for name, (sk, sth), (tth, tblas), s, o in rows:
        print(f"  {name:<10} {sk + ' / ' + str(sth):<22} {tth:<16} {s:>11.0f} {o:>13.0f} "
              f"{s / o:>6.2f}")
    print(f"  PyTorch BLAS: {rows[0][2][1]}")
    one = rows[0]
    for name, _, _, s, o in rows[1:-1]:
        print(f"  speed-up {name} over matched 1: shoal {s / one[3]:.2f}, PyTorch {o / one[4]:.2f}")
    print("  target: matched ratio >= 2 (fp32)")
    print("FAIL" if failed else "PASS (measured)")
    sys.exit(1 if failed else 0)
