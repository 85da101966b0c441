#!/usr/bin/python3
"""moe_ref.py: shoal's own PyTorch reference of the shoal-moe v1 model (docs/MODEL.md).

The oracle tests (tests/worker/oracle_grads.py, oracle_train.py, bad_input.sh,
tests/checkpoint/test_oracle_interop.c) hold shoal's C code to this file. It is written from
docs/MODEL.md alone, with autograd for the gradients and torch.optim.AdamW for the optimizer, so
that it shares no code and no derivation with kernels/ and worker/. An outside reference with the
same interface can be plugged into the same tests (CMake -DSHOAL_ORACLE=PATH/moe_ref.py).

Needs Debian's python3-torch (1.13) and numpy, nothing else; run it with the system interpreter:

  R=tests/reference/moe_ref.py
  $R init --config tests/reference/tiny.json --out m --seed 1 [--dtype f32|f64|bf16|f16]
          [--shards N] [--tokens FILE --batch B --seq T [--min-gap 1e-6]]
  $R tokens --out tok.bin --bytes 100000 --seed 2        # random bytes (any file is a token file)
  $R grads --model m --tokens tok.bin --batch 8 --seq 128 --out g.safetensors [--dtype f64]
  $R compare MINE.safetensors REF.safetensors [--tol 1e-4]
  $R train --model m --tokens FILE --batch 16 --seq 128 --steps 200 --lr 3e-3 [--out DIR]
  $R selfcheck                                           # finite differences + a naive loop

As a module (the tests import it from its directory): TINY_CONFIG, validate_config,
tensor_shapes, is_bias_name, st_read, st_write, load_model, save_model, lr_at, main(argv).

Conventions: a matrix W is stored [out, in] and applied as x W^T (F.linear); P maps tensor name
-> trained tensor; biases maps name -> F32 e_score_correction_bias, never seen by autograd.
"""

import argparse
import json
import math
import os
import struct
import sys
import time


def _thread_env_from_argv(argv):
    """`--threads K` must reach OpenBLAS/OpenMP before they load, i.e. before torch is imported.
    With K > 1 OpenMP threads must not spin between regions: they would starve OpenBLAS's."""
    for i, a in enumerate(argv):
        val = a[len("--threads="):] if a.startswith("--threads=") else (
            argv[i + 1] if a == "--threads" and i + 1 < len(argv) else "")
        if val.isdigit() and int(val) > 0:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = val
            if int(val) > 1:
                os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


if __name__ == "__main__":
    _thread_env_from_argv(sys.argv[1:])

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# ---------------------------------------------------------------------------------------------
# safetensors (own reader/writer): u64 LE header length, JSON header, raw little-endian data.
# ---------------------------------------------------------------------------------------------

# name -> (numpy dtype of the raw bytes, torch dtype); BF16 travels as raw uint16.
ST_TYPES = {
    "F64": ("<f8", torch.float64),
    "F32": ("<f4", torch.float32),
    "F16": ("<f2", torch.float16),
    "BF16": ("<u2", torch.bfloat16),
    "I64": ("<i8", torch.int64),
    "I32": ("<i4", torch.int32),
    "U8": ("u1", torch.uint8),
}
ST_NAME_OF = {tdt: name for name, (_, tdt) in ST_TYPES.items()}


def st_read(path):
    """-> ({name: tensor}, {metadata key: value}). Raises ValueError on a malformed file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: {len(blob)} bytes, too short for safetensors")
    n = struct.unpack("<Q", blob[:8])[0]
    if n > len(blob) - 8:
        raise ValueError(f"{path}: header of {n} bytes does not fit in the file")
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", None) or {}
    body = memoryview(blob)[8 + n:]
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in ST_TYPES:
            raise ValueError(f"{path}: {name}: dtype {info['dtype']} not supported")
        npdt, tdt = ST_TYPES[info["dtype"]]
        npdt = np.dtype(npdt)
        shape = [int(x) for x in info["shape"]]
        lo, hi = (int(x) for x in info["data_offsets"])
        if not 0 <= lo <= hi <= len(body) or hi - lo != math.prod(shape) * npdt.itemsize:
            raise ValueError(f"{path}: {name}: data_offsets [{lo}, {hi}] do not fit "
                             f"{info['dtype']}{shape}")
        raw = np.frombuffer(body[lo:hi], dtype=npdt).reshape(shape)
        if tdt is torch.bfloat16:  # a bf16 is the high half of an f32: widening is exact
            wide = (raw.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = torch.from_numpy(wide.copy()).to(torch.bfloat16)
        else:
            tensors[name] = torch.from_numpy(raw.astype(npdt.newbyteorder("="), copy=True))
    return tensors, meta


def st_write(path, tensors, metadata=None):
    """Writes {name: tensor} (+ string metadata) atomically (temp file, then rename)."""
    header, chunks, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in ST_NAME_OF:
            raise ValueError(f"{name}: torch dtype {t.dtype} has no safetensors name")
        st = ST_NAME_OF[t.dtype]
        if t.dtype is torch.bfloat16:
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raw = t.numpy().astype(ST_TYPES[st][0]).tobytes()
        header[name] = {"dtype": st, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Configuration and tensor list (docs/MODEL.md "Configuration", "Tensor names")
# ---------------------------------------------------------------------------------------------

TINY_CONFIG = {
    "vocab_size": 256, "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
    "intermediate_size": 384, "moe_intermediate_size": 128, "n_routed_experts": 8,
    "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
    "first_k_dense_replace": 1, "routed_scaling_factor": 1.0, "norm_topk_prob": True,
    "scoring_func": "sigmoid", "topk_method": "noaux_tc", "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0, "max_position_embeddings": 128, "bias_update_speed": 0.001,
    "tie_word_embeddings": False,
}


def validate_config(cfg):
    """Missing keys take the tiny value; raises ValueError listing every broken constraint."""
    c = dict(TINY_CONFIG, **cfg)
    d, H = c["hidden_size"], c["num_attention_heads"]
    N, K, G, TG = c["n_routed_experts"], c["num_experts_per_tok"], c["n_group"], c["topk_group"]
    problems = []
    if H < 1 or d % H or (d // H) % 2:
        problems.append(f"hidden_size {d} must split into {H} heads of even size")
    if G < 1 or N % G:
        problems.append(f"n_routed_experts {N} must be a multiple of n_group {G}")
    elif G > 1 and N // G < 2:
        problems.append("n_group > 1 needs at least 2 experts per group")
    elif not 1 <= K <= TG * (N // G):
        problems.append(f"num_experts_per_tok {K} must be in [1, topk_group * N / n_group]")
    if not 1 <= TG <= G:
        problems.append(f"topk_group {TG} must be in [1, n_group {G}]")
    if c["n_shared_experts"] < 0 or c["first_k_dense_replace"] < 0:
        problems.append("n_shared_experts and first_k_dense_replace must be >= 0")
    fixed = {"norm_topk_prob": True, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
             "tie_word_embeddings": False}
    problems += [f"{k} must be {v!r} in v1" for k, v in fixed.items() if c[k] != v]
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
    return c


def is_moe_layer(cfg, layer):
    return layer >= cfg["first_k_dense_replace"]


def is_bias_name(name):
    return name.endswith(".mlp.gate.e_score_correction_bias")


def tensor_shapes(cfg):
    """[(name, shape)] of every tensor of a model directory, in docs/MODEL.md order."""
    V, d, f = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    fe, N = cfg["moe_intermediate_size"], cfg["n_routed_experts"]
    fs = cfg["n_shared_experts"] * fe

    def ffn(prefix, width):
        return [(prefix + "gate_proj.weight", [width, d]), (prefix + "up_proj.weight", [width, d]),
                (prefix + "down_proj.weight", [d, width])]

    out = [("model.embed_tokens.weight", [V, d])]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out.append((p + "input_layernorm.weight", [d]))
        out += [(p + f"self_attn.{x}_proj.weight", [d, d]) for x in "qkvo"]
        out.append((p + "post_attention_layernorm.weight", [d]))
        if not is_moe_layer(cfg, layer):
            out += ffn(p + "mlp.", f)
            continue
        out += [(p + "mlp.gate.weight", [N, d]), (p + "mlp.gate.e_score_correction_bias", [N])]
        for e in range(N):
            out += ffn(p + f"mlp.experts.{e}.", fe)
        if fs:
            out += ffn(p + "mlp.shared_experts.", fs)
    return out + [("model.norm.weight", [d]), ("lm_head.weight", [V, d])]


DTYPES = {"f32": torch.float32, "f64": torch.float64, "bf16": torch.bfloat16, "f16": torch.float16}

# ---------------------------------------------------------------------------------------------
# Model directories and random models
# ---------------------------------------------------------------------------------------------


def save_model(path, cfg, P, biases, shards=1):
    """DIR/config.json + model.safetensors, or `shards` HF-style files and their index."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    names = [n for n, _ in tensor_shapes(cfg)]
    every = {n: (biases[n].float() if is_bias_name(n) else P[n]).detach() for n in names}
    if shards <= 1:
        st_write(os.path.join(path, "model.safetensors"), every, {"format": "pt"})
        return
    weight_map, size = {}, 0
    bounds = [round(i * len(names) / shards) for i in range(shards + 1)]
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: every[n] for n in names[bounds[i]:bounds[i + 1]]}
        st_write(os.path.join(path, fname), part, {"format": "pt"})
        for n, t in part.items():
            weight_map[n] = fname
            size += t.numel() * t.element_size()
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": size}, "weight_map": weight_map}, f, indent=2)


def load_model(path, dtype=torch.float32):
    """DIR -> (cfg, P in `dtype`, biases in F32); single file or sharded layout."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = validate_config(json.load(f))
    found = {}
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(os.path.join(path, "model.safetensors")):
        found, _ = st_read(os.path.join(path, "model.safetensors"))
    elif os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        for fname in sorted(set(weight_map.values())):
            part, _ = st_read(os.path.join(path, fname))
            found.update({n: t for n, t in part.items() if weight_map.get(n) == fname})
    else:
        raise FileNotFoundError(f"{path}: neither model.safetensors nor "
                                "model.safetensors.index.json")
    want = tensor_shapes(cfg)
    missing = sorted(set(n for n, _ in want) - set(found))
    extra = sorted(set(found) - set(n for n, _ in want))
    if missing or extra:
        raise ValueError(f"{path}: missing {missing[:4]}, unexpected {extra[:4]}")
    P, biases = {}, {}
    for name, shape in want:
        t = found[name]
        if list(t.shape) != shape:
            raise ValueError(f"{path}: {name} is {list(t.shape)}, expected {shape}")
        if is_bias_name(name):
            biases[name] = t.to(torch.float32)
        else:
            P[name] = t.to(dtype)
    return cfg, P, biases


def random_biases(cfg, gen, scale=0.05):
    """Balancing biases U(-scale, scale), drawn in f64 and stored F32."""
    return {n: ((torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale).float()
            for n, shape in tensor_shapes(cfg) if is_bias_name(n)}


def random_model(cfg, seed, dtype=torch.float32):
    """One f64 stream of torch.Generator(seed) over the canonical order: matrices N(0, 0.02^2),
    norm weights 1 + N(0, 0.05^2) (not 1, so that their gradients are tested), then the biases.
    Returns (P, biases, gen); gen continues the stream for re-drawn biases."""
    gen = torch.Generator().manual_seed(int(seed))
    P = {}
    for name, shape in tensor_shapes(cfg):
        if is_bias_name(name):
            continue
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        P[name] = (z * 0.02 if len(shape) == 2 else 1.0 + 0.05 * z).to(dtype)
    return P, random_biases(cfg, gen), gen


# ---------------------------------------------------------------------------------------------
# The forward pass (docs/MODEL.md "Forward pass")
# ---------------------------------------------------------------------------------------------


def rmsnorm(x, g, eps):
    return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps) * g


def rope_cos_sin(T, dh, theta, dtype):
    """cos/sin [T, dh/2] of the angles t * theta^(-2i/dh), taken in f64, rounded to dtype."""
    inv = torch.tensor([theta ** (-2.0 * i / dh) for i in range(dh // 2)], dtype=torch.float64)
    ang = torch.arange(T, dtype=torch.float64).unsqueeze(1) * inv
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rotate(x, cos, sin):
    """Rotate-half RoPE on [..., T, dh]: pairs (i, i + dh/2) turn by the angle of (t, i)."""
    lo, hi = x.chunk(2, dim=-1)
    return torch.cat((lo * cos - hi * sin, hi * cos + lo * sin), dim=-1)


def self_attention(a, P, p, H, cos, sin):
    B, T, d = a.shape
    dh = d // H

    def heads(x):  # [B, T, d] -> [B, H, T, dh]; head h is features [h dh, (h+1) dh)
        return x.view(B, T, H, dh).transpose(1, 2)

    q = rotate(heads(F.linear(a, P[p + "self_attn.q_proj.weight"])), cos, sin)
    k = rotate(heads(F.linear(a, P[p + "self_attn.k_proj.weight"])), cos, sin)
    v = heads(F.linear(a, P[p + "self_attn.v_proj.weight"]))
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(dh)
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
    att = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, d)
    return F.linear(o, P[p + "self_attn.o_proj.weight"])


def swiglu(x, P, p):
    gate = F.linear(x, P[p + "gate_proj.weight"])
    return F.linear(F.silu(gate) * F.linear(x, P[p + "up_proj.weight"]), P[p + "down_proj.weight"])


def descending(x):
    """Stable descending sort along the last dim: among equal values the lower index first."""
    return torch.sort(x, dim=-1, descending=True, stable=True)


def select_experts(sb, cfg):
    """Top-K of s + b [M, N] after group limiting; returns (idx [M, K], routing facts)."""
    M, N = sb.shape
    K, G, TG = cfg["num_experts_per_tok"], cfg["n_group"], cfg["topk_group"]
    facts = {"gap": math.inf, "margin": math.inf}
    if N > 1:
        srt = descending(sb).values
        facts["gap"] = (srt[:, :-1] - srt[:, 1:]).min().item()
    if G > 1:
        per = N // G
        best2 = descending(sb.view(M, G, per)).values[..., :2]
        gscore = best2[..., 0] + best2[..., 1]
        gsrt = descending(gscore)
        if TG < G:
            gm = (gsrt.values[:, TG - 1] - gsrt.values[:, TG]).min().item()
            facts["margin"], facts["gap"] = gm, min(facts["gap"], gm)
        kept = torch.zeros(M, G, dtype=torch.bool)
        kept.scatter_(1, gsrt.indices[:, :TG], True)
        sb = sb.masked_fill(~kept.repeat_interleave(per, dim=1), float("-inf"))
    order = descending(sb)
    if K < N:
        edge = order.values[:, K - 1] - order.values[:, K]
        facts["margin"] = min(facts["margin"], edge[torch.isfinite(edge)].min().item()
                              if torch.isfinite(edge).any() else math.inf)
    return order.indices[:, :K], facts


def moe(u, P, p, bias, cfg, stats):
    B, T, d = u.shape
    x = u.reshape(B * T, d)
    s = torch.sigmoid(F.linear(x, P[p + "mlp.gate.weight"]))
    with torch.no_grad():  # selection is piecewise constant: no gradient through it
        idx, facts = select_experts(s.detach() + bias.to(s.dtype), cfg)
    chosen = s.gather(1, idx)
    gates = cfg["routed_scaling_factor"] * (chosen / chosen.sum(dim=1, keepdim=True))
    y = swiglu(x, P, p + "mlp.shared_experts.") if cfg["n_shared_experts"] else torch.zeros_like(x)
    for e in range(cfg["n_routed_experts"]):
        rows, slot = (idx == e).nonzero(as_tuple=True)
        if rows.numel():
            out = swiglu(x[rows], P, p + f"mlp.experts.{e}.") * gates[rows, slot].unsqueeze(1)
            y = y.index_add(0, rows, out)
    if stats is not None:
        counts = torch.bincount(idx.reshape(-1), minlength=cfg["n_routed_experts"])
        stats.append(dict(facts, layer=int(p.split(".")[2]), counts=counts))
    return y.view(B, T, d)


def model_loss(cfg, P, biases, tok, tgt, stats=None):
    """Mean cross-entropy over all B*T positions; `stats` collects each MoE layer's expert
    counts and routing gaps."""
    B, T = tok.shape
    d, H, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["rms_norm_eps"]
    h = F.embedding(tok, P["model.embed_tokens.weight"])
    cos, sin = rope_cos_sin(T, d // H, cfg["rope_theta"], h.dtype)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = h + self_attention(rmsnorm(h, P[p + "input_layernorm.weight"], eps), P, p, H, cos, sin)
        u = rmsnorm(h, P[p + "post_attention_layernorm.weight"], eps)
        if is_moe_layer(cfg, layer):
            h = h + moe(u, P, p, biases[p + "mlp.gate.e_score_correction_bias"], cfg, stats)
        else:
            h = h + swiglu(u, P, p + "mlp.")
    logits = F.linear(rmsnorm(h, P["model.norm.weight"], eps), P["lm_head.weight"])
    return F.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(B * T))


def gradients(cfg, P, biases, tok, tgt, stats=None):
    """(loss, {name: gradient}); an expert no token chose gets zeros."""
    names = list(P)
    leaves = [P[n].detach().clone().requires_grad_(True) for n in names]
    loss = model_loss(cfg, dict(zip(names, leaves)), biases, tok, tgt, stats)
    gs = torch.autograd.grad(loss, leaves, allow_unused=True)
    return loss.detach(), {n: torch.zeros_like(w) if g is None else g
                           for n, w, g in zip(names, leaves, gs)}


# ---------------------------------------------------------------------------------------------
# Data and the training step (docs/MODEL.md "Training step")
# ---------------------------------------------------------------------------------------------


def read_tokens(path, vocab_size=256):
    data = np.fromfile(path, dtype=np.uint8)
    if data.size and int(data.max()) >= vocab_size:
        raise ValueError(f"{path}: byte {int(data.max())} is not a token of a vocabulary of "
                         f"{vocab_size}")
    return data


def batch_of_step(data, B, T, k=0):
    """Step k's (inputs, targets) [B, T]: sequence j is number (k B + j) mod M of the file, i.e.
    bytes [n (T+1), (n+1)(T+1)); step 0 is the verification batch (the first B (T+1) bytes)."""
    M = data.size // (T + 1)
    if M < (B if k == 0 else 1):
        raise ValueError(f"token file of {data.size} bytes: step {k} needs "
                         f"{B if k == 0 else 1} sequence(s) of {T + 1} bytes")
    seqs = [(k * B + j) % M for j in range(B)]
    rows = torch.from_numpy(np.stack([data[n * (T + 1):(n + 1) * (T + 1)] for n in seqs]))
    rows = rows.long()
    return rows[:, :T].contiguous(), rows[:, 1:].contiguous()


def lr_at(k, steps, lr, warmup, min_lr):
    """Step k (0-based): lr k/warmup while k < warmup (step 0 runs at 0), then a half cosine
    from lr at k = warmup down to min_lr at k = steps - 1."""
    if k < warmup:
        return lr * k / warmup
    span = steps - 1 - warmup
    frac = (k - warmup) / span if span > 0 else 1.0
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * frac))


def balance_biases(cfg, biases, stats):
    """b_i += gamma sign(mean(c) - c_i), the sign taken exactly as sign(sum(c) - N c_i)."""
    N, gamma = cfg["n_routed_experts"], cfg["bias_update_speed"]
    for st in stats:
        name = f"model.layers.{st['layer']}.mlp.gate.e_score_correction_bias"
        c = st["counts"].long()
        biases[name] = biases[name] + gamma * torch.sign(c.sum() - N * c).float()


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _routing_summary(stats):
    gap = min((st["gap"] for st in stats), default=math.inf)
    margin = min((st["margin"] for st in stats), default=math.inf)
    return gap, margin


def cmd_init(a):
    with open(a.config) as f:
        cfg = validate_config(json.load(f))
    P, biases, gen = random_model(cfg, a.seed, DTYPES[a.dtype])
    if a.tokens:  # re-draw the biases until this batch's routing has no near ties (f64)
        tok, tgt = batch_of_step(read_tokens(a.tokens, cfg["vocab_size"]), a.batch, a.seq)
        P64 = {n: t.double() for n, t in P.items()}
        for attempt in range(1, 201):
            stats = []
            with torch.no_grad():
                model_loss(cfg, P64, biases, tok, tgt, stats)
            gap, margin = _routing_summary(stats)
            print(f"init: attempt {attempt}: smallest s+b gap {gap:.3e}, decision margin "
                  f"{margin:.3e}", file=sys.stderr)
            if gap >= a.min_gap:
                break
            biases = random_biases(cfg, gen)
        else:
            raise SystemExit(f"init: no biases with every s+b gap >= {a.min_gap:g} in 200 draws")
    save_model(a.out, cfg, P, biases, a.shards)
    print(f"init: wrote {a.out} ({sum(t.numel() for t in P.values())} trained parameters, "
          f"{a.dtype}, seed {a.seed})")


def cmd_tokens(a):
    data = np.random.default_rng(a.seed).integers(0, 256, size=a.bytes, dtype=np.uint8)
    data.tofile(a.out)
    print(f"tokens: wrote {a.bytes} random bytes to {a.out}")


def cmd_grads(a):
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg, P, biases = load_model(a.model, DTYPES[a.dtype])
    tok, tgt = batch_of_step(read_tokens(a.tokens, cfg["vocab_size"]), a.batch, a.seq)
    stats = []
    loss, grads = gradients(cfg, P, biases, tok, tgt, stats)
    grads["loss"] = loss.float().reshape(1)
    st_write(a.out, grads, {"producer": "tests/reference/moe_ref.py grads", "dtype": a.dtype,
                            "batch": a.batch, "seq": a.seq})
    for st in stats:
        print(f"grads: layer {st['layer']} expert counts {st['counts'].tolist()}", file=sys.stderr)
    gap, margin = _routing_summary(stats)
    print(f"grads: smallest s+b gap {gap:.3e}, decision margin {margin:.3e}", file=sys.stderr)
    if gap < 1e-6:
        print("grads: WARNING: s+b values closer than 1e-6: outside the verification contract, "
              "another implementation may route differently", file=sys.stderr)
    print(f"loss {loss.item():.10g}")


def cmd_compare(a):
    A, _ = st_read(a.a)
    R, _ = st_read(a.b)
    rows, bad = [], []
    for name in sorted(set(A) | set(R)):
        if name not in A or name not in R:
            bad.append(f"{name}: only in {'B' if name not in A else 'A'}")
            continue
        x, r = A[name].double().reshape(-1), R[name].double().reshape(-1)
        if list(A[name].shape) != list(R[name].shape) and not (name == "loss" and
                                                               x.numel() == r.numel() == 1):
            bad.append(f"{name}: shape {list(A[name].shape)} vs {list(R[name].shape)}")
            continue
        if not (torch.isfinite(x).all() and torch.isfinite(r).all()):
            bad.append(f"{name}: not finite")
            continue
        ref, diff = r.norm().item(), (x - r).norm().item()
        err = diff / ref if ref > 0 else diff  # an all-zero reference: absolute error
        rows.append((err, name, ref))
        if err > a.tol:
            bad.append(f"{name}: error {err:.3e} > {a.tol:g}")
    rows.sort(reverse=True)
    for err, name, ref in rows[:a.show]:
        print(f"{err:10.3e}  |ref| {ref:10.3e}  {name}")
    for msg in bad:
        print("FAIL " + msg)
    worst = f"worst {rows[0][0]:.3e} ({rows[0][1]})" if rows else "nothing compared"
    print(f"{'FAIL' if bad else 'PASS'}: {len(rows)} tensors, {worst}, tol {a.tol:g}")
    return 1 if bad else 0


def _blas_in_use():
    try:
        with open("/proc/self/maps") as f:
            libs = {os.path.realpath(line.split()[-1]) for line in f
                    if any(k in line.rsplit("/", 1)[-1] for k in ("blas", "mkl", "blis"))}
    except OSError:
        libs = set()
    return ",".join(sorted(libs)) or "unknown"


def cmd_train(a):
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg, P, biases = load_model(a.model, DTYPES[a.dtype])
    data = read_tokens(a.tokens, cfg["vocab_size"])
    names = list(P)
    params = {n: P[n].detach().clone().requires_grad_(True) for n in names}
    decayed = [params[n] for n in names if params[n].dim() == 2]
    plain = [params[n] for n in names if params[n].dim() != 2]
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": a.weight_decay},
                             {"params": plain, "weight_decay": 0.0}],
                            lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps)
    warmup = a.steps // 10 if a.warmup is None else a.warmup
    print(f"train: {sum(p.numel() for p in params.values())} parameters, {a.steps} steps of "
          f"{a.batch}x{a.seq} tokens, lr {a.lr:g} warmup {warmup} min_lr {a.min_lr:g}, threads "
          f"{torch.get_num_threads()}, BLAS {_blas_in_use()}")
    t_start = time.perf_counter()
    t_after_first = t_start
    for k in range(a.steps):
        tok, tgt = batch_of_step(data, a.batch, a.seq, k)
        stats = []
        opt.zero_grad(set_to_none=True)
        loss = model_loss(cfg, params, biases, tok, tgt, stats)
        loss.backward()
        for p in params.values():  # an expert no token chose still takes its AdamW step
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        gnorm = torch.nn.utils.clip_grad_norm_(list(params.values()), a.clip) if a.clip > 0 \
            else torch.sqrt(sum(p.grad.double().square().sum() for p in params.values()))
        lr = lr_at(k, a.steps, a.lr, warmup, a.min_lr)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        balance_biases(cfg, biases, stats)
        if k == 0:
            t_after_first = time.perf_counter()
        print(f"step {k:5d}  loss {loss.item():.7f}  lr {lr:.4e}  gnorm {float(gnorm):.5f}",
              flush=True)
    t_end = time.perf_counter()
    ntok = a.batch * a.seq
    rest = (a.steps - 1) * ntok / (t_end - t_after_first) if a.steps > 1 else 0.0
    print(f"train: {t_end - t_start:.2f} s, {a.steps * ntok / (t_end - t_start):.1f} tokens/s "
          f"overall, {rest:.1f} tokens/s excluding step 0")
    if a.out:
        save_model(a.out, cfg, {n: p.detach() for n, p in params.items()}, biases)
        print(f"train: wrote {a.out}")


def _selfcheck(a):
    """The checks live in selfcheck.py beside this file (they need a second, naive model)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import selfcheck
    return selfcheck.run(sys.modules[__name__], a.threads)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="moe_ref.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="a random model directory")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--dtype", choices=list(DTYPES), default="f32", help="storage dtype")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--tokens", help="re-draw the biases until this file's batch routes clearly")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--min-gap", type=float, default=1e-6)
    p.set_defaults(run=cmd_init)
    p = sub.add_parser("tokens", help="a file of random bytes")
    p.add_argument("--out", required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.set_defaults(run=cmd_tokens)
    p = sub.add_parser("grads", help="loss and gradients of the mean loss of one batch")
    for flag in ("--model", "--tokens", "--out"):
        p.add_argument(flag, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--dtype", choices=["f32", "f64"], default="f32", help="compute dtype")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(run=cmd_grads)
    p = sub.add_parser("compare", help="||A - B|| / ||B|| per tensor, B the reference")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--show", type=int, default=10)
    p.set_defaults(run=cmd_compare)
    p = sub.add_parser("train", help="the training loop of docs/MODEL.md, data.seed 0 order")
    for flag in ("--model", "--tokens"):
        p.add_argument(flag, required=True)
    for flag in ("--batch", "--seq", "--steps"):
        p.add_argument(flag, type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--min-lr", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=None, help="default: steps // 10")
    p.add_argument("--clip", type=float, default=1.0, help="0: no clipping")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    p.add_argument("--out")
    p.set_defaults(run=cmd_train)
    p = sub.add_parser("selfcheck", help="finite differences and a naive per-token loop")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(run=_selfcheck)
    a = ap.parse_args(argv)
    return a.run(a) or 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"moe_ref.py: {e}")
