#!/usr/bin/python3
"""selfcheck.py: the reference checks itself (run by `moe_ref.py selfcheck`, ctest
reference_selfcheck), so that the tests do not take its word for anything:
  1. the vectorised forward (moe_ref.model_loss) equals a naive one written here per token and
     per key with plain Python loops, in f64, on a small model exercising every feature
     (dense + MoE layers, shared experts, group-limited routing, routed_scaling_factor);
  2. every gradient from autograd matches central finite differences along a random direction;
  3. routing ties go to the lower index (experts and groups), masked groups are never chosen;
  4. the LR schedule's fixed points; the bias update's sign; safetensors round trips.
Prints one line per check and PASS/FAIL; exit 0/1."""

import math
import os
import sys
import tempfile

import torch

SMALL = dict(vocab_size=16, hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
             intermediate_size=12, moe_intermediate_size=6, n_routed_experts=6, n_shared_experts=1,
             num_experts_per_tok=2, n_group=3, topk_group=2, first_k_dense_replace=1,
             routed_scaling_factor=2.5, max_position_embeddings=8)


def _naive_rms(x, g, eps):
    return [x[j] / math.sqrt(sum(v * v for v in x) / len(x) + eps) * g[j] for j in range(len(x))]


def _matvec(W, x):  # W [out, in] as nested lists
    return [sum(w * v for w, v in zip(row, x)) for row in W]


def _naive_swiglu(x, P, p):
    g, u = _matvec(P[p + "gate_proj.weight"], x), _matvec(P[p + "up_proj.weight"], x)
    return _matvec(P[p + "down_proj.weight"], [a / (1 + math.exp(-a)) * b for a, b in zip(g, u)])


def _naive_route(sb, cfg):
    """Lists sorted by (-value, index): ties to the lower index, written independently."""
    N, K, G, TG = (cfg[k] for k in ("n_routed_experts", "num_experts_per_tok", "n_group",
                                    "topk_group"))
    allowed = set(range(N))
    if G > 1:
        per = N // G
        score = []
        for g in range(G):
            top = sorted(sb[g * per:(g + 1) * per], reverse=True)
            score.append(top[0] + top[1])
        kept = sorted(range(G), key=lambda g: (-score[g], g))[:TG]
        allowed = {e for g in kept for e in range(g * per, (g + 1) * per)}
    return sorted(allowed, key=lambda e: (-sb[e], e))[:K]


def naive_loss(R, cfg, P, biases, tok, tgt):
    P = {n: t.tolist() for n, t in P.items()}
    b_all = {n: t.double().tolist() for n, t in biases.items()}
    d, H, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["rms_norm_eps"]
    dh, total = d // H, 0.0
    for b in range(len(tok)):
        T = len(tok[b])
        hs = [list(P["model.embed_tokens.weight"][tok[b][t]]) for t in range(T)]
        for layer in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            a = [_naive_rms(h, P[p + "input_layernorm.weight"], eps) for h in hs]
            qkv = {m: [_matvec(P[p + f"self_attn.{m}_proj.weight"], x) for x in a] for m in "qkv"}

            def rope(vec, t):
                out = list(vec)
                for h in range(H):
                    for i in range(dh // 2):
                        phi = t * cfg["rope_theta"] ** (-2.0 * i / dh)
                        x1, x2 = vec[h * dh + i], vec[h * dh + i + dh // 2]
                        out[h * dh + i] = x1 * math.cos(phi) - x2 * math.sin(phi)
                        out[h * dh + i + dh // 2] = x2 * math.cos(phi) + x1 * math.sin(phi)
                return out

            q = [rope(qkv["q"][t], t) for t in range(T)]
            k = [rope(qkv["k"][t], t) for t in range(T)]
            new = []
            for t in range(T):
                o = [0.0] * d
                for h in range(H):
                    sl = slice(h * dh, (h + 1) * dh)
                    sc = [sum(x * y for x, y in zip(q[t][sl], k[s][sl])) / math.sqrt(dh)
                          for s in range(t + 1)]
                    m = max(sc)
                    w = [math.exp(v - m) for v in sc]
                    for s in range(t + 1):
                        for j in range(dh):
                            o[h * dh + j] += w[s] / sum(w) * qkv["v"][s][h * dh + j]
                att = _matvec(P[p + "self_attn.o_proj.weight"], o)
                new.append([x + y for x, y in zip(hs[t], att)])
            hs = new
            for t in range(T):
                u = _naive_rms(hs[t], P[p + "post_attention_layernorm.weight"], eps)
                if not R.is_moe_layer(cfg, layer):
                    y = _naive_swiglu(u, P, p + "mlp.")
                else:
                    s = [1 / (1 + math.exp(-z)) for z in _matvec(P[p + "mlp.gate.weight"], u)]
                    bias = b_all[p + "mlp.gate.e_score_correction_bias"]
                    chosen = _naive_route([x + y for x, y in zip(s, bias)], cfg)
                    y = _naive_swiglu(u, P, p + "mlp.shared_experts.") if cfg["n_shared_experts"] \
                        else [0.0] * d
                    for e in chosen:
                        gate = cfg["routed_scaling_factor"] * s[e] / sum(s[c] for c in chosen)
                        ye = _naive_swiglu(u, P, p + f"mlp.experts.{e}.")
                        y = [a + gate * c for a, c in zip(y, ye)]
                hs[t] = [x + z for x, z in zip(hs[t], y)]
        for t in range(T):
            z = _matvec(P["lm_head.weight"], _naive_rms(hs[t], P["model.norm.weight"], eps))
            m = max(z)
            total += m + math.log(sum(math.exp(v - m) for v in z)) - z[tgt[b][t]]
    return total / (len(tok) * len(tok[0]))


def _case(R, seed):
    """A small f64 model with weights large enough to matter, biases re-drawn until routing has
    no near tie (so that finite differences never cross a routing decision)."""
    cfg = R.validate_config(SMALL)
    gen = torch.Generator().manual_seed(seed)
    P = {n: torch.randn(s, generator=gen, dtype=torch.float64) * (0.4 if len(s) == 2 else 0.3) +
         (0.0 if len(s) == 2 else 1.0) for n, s in R.tensor_shapes(cfg) if not R.is_bias_name(n)}
    tok = torch.randint(0, cfg["vocab_size"], (2, 7), generator=gen)
    tgt = torch.randint(0, cfg["vocab_size"], (2, 7), generator=gen)
    for _ in range(500):
        biases = R.random_biases(cfg, gen, scale=0.3)
        stats = []
        with torch.no_grad():
            R.model_loss(cfg, P, biases, tok, tgt, stats)
        if min(st["gap"] for st in stats) > 1e-3:
            return cfg, P, biases, tok, tgt
    raise RuntimeError("selfcheck: no tie-free routing found")


def run(R, threads=0):
    if threads:
        torch.set_num_threads(threads)
    ok = True

    def check(name, good, detail):
        nonlocal ok
        ok &= bool(good)
        print(f"{'ok  ' if good else 'FAIL'} {name}: {detail}", flush=True)

    cfg, P, biases, tok, tgt = _case(R, 7)
    with torch.no_grad():
        fast = R.model_loss(cfg, P, biases, tok, tgt).item()
    slow = naive_loss(R, cfg, P, biases, tok.tolist(), tgt.tolist())
    check("forward vs naive loop", abs(fast - slow) <= 1e-12 * abs(slow),
          f"{fast:.15g} vs {slow:.15g}")

    loss, grads = R.gradients(cfg, P, biases, tok, tgt)
    gen = torch.Generator().manual_seed(3)
    worst, worst_name = 0.0, ""
    for name in P:
        v = torch.randn(P[name].shape, generator=gen, dtype=torch.float64)
        h = 1e-6
        with torch.no_grad():
            up = R.model_loss(cfg, dict(P, **{name: P[name] + h * v}), biases, tok, tgt).item()
            dn = R.model_loss(cfg, dict(P, **{name: P[name] - h * v}), biases, tok, tgt).item()
        fd, an = (up - dn) / (2 * h), (grads[name] * v).sum().item()
        err = abs(fd - an) / max(abs(an), 1e-8)
        if err > worst:
            worst, worst_name = err, name
    check("gradients vs finite differences", worst < 1e-5,
          f"{len(P)} tensors, worst relative error {worst:.2e} ({worst_name})")

    tie_cfg = dict(cfg, n_routed_experts=6, num_experts_per_tok=2, n_group=3, topk_group=2)
    sb = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.9, 0.1]], dtype=torch.float64)
    idx, _ = R.select_experts(sb, tie_cfg)
    # group scores 1.0, 1.0, 1.0: groups 0 and 1 kept; experts 0..3 tie at 0.5: 0 and 1 win
    check("ties go to the lower index", idx.tolist() == [[0, 1]], f"selected {idx.tolist()}")
    sb = torch.tensor([[-0.2, -0.3, -0.9, -0.8, 0.0, -5.0]], dtype=torch.float64)
    idx, _ = R.select_experts(sb, dict(tie_cfg, topk_group=1, num_experts_per_tok=2))
    check("masked groups never chosen", idx.tolist() == [[0, 1]],
          f"selected {idx.tolist()} (group 0 best, its -0.2, -0.3 beat group 2's 0.0 masked)")

    lrs = [R.lr_at(k, 11, 1.0, 2, 0.1) for k in range(11)]
    check("LR schedule", lrs[0] == 0.0 and lrs[1] == 0.5 and lrs[2] == 1.0 and
          abs(lrs[10] - 0.1) < 1e-15 and all(a >= b for a, b in zip(lrs[2:], lrs[3:])),
          " ".join(f"{x:.3f}" for x in lrs))

    b = {"model.layers.1.mlp.gate.e_score_correction_bias": torch.zeros(3)}
    R.balance_biases(dict(cfg, n_routed_experts=3, bias_update_speed=0.5), b,
                     [{"layer": 1, "counts": torch.tensor([1, 2, 3])}])
    got = b["model.layers.1.mlp.gate.e_score_correction_bias"].tolist()
    check("bias update", got == [0.5, 0.0, -0.5], f"counts 1 2 3 -> {got}")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.safetensors")
        T = {"f64": torch.tensor([1e300, -0.5], dtype=torch.float64),
             "bf16": torch.tensor([[1.0, -3.140625]], dtype=torch.bfloat16),
             "f16": torch.tensor([-65504.0], dtype=torch.float16),
             "i64": torch.tensor([-(2 ** 40)]), "u8": torch.tensor([0, 255], dtype=torch.uint8),
             "f32": torch.tensor([0.1]), "i32": torch.tensor([[7]], dtype=torch.int32)}
        R.st_write(path, T, {"k": "v"})
        back, meta = R.st_read(path)
        same = meta == {"k": "v"} and set(back) == set(T) and all(
            back[n].dtype == t.dtype and torch.equal(back[n], t) for n, t in T.items())
        check("safetensors round trip", same, f"{len(T)} dtypes")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import moe_ref
    sys.exit(run(moe_ref))
