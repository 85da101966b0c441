/* plan_cost.c: what the planner weighs: FLOPs per token of each layer, the stage split that
 * minimises the costliest stage, and the bytes one cell needs (MODEL.md shapes, worker/model.c
 * buffers). Napkin math: estimates to place by, not a measurement. */
#include "plan.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

/* Parameter counts by where they live, from the canonical tensor list (one home for shapes). */
typedef struct {
    double *dense;   /* per layer: every tensor but the routed experts (incl. the router) */
    double *experts; /* per layer: all N routed experts */
    double embed, head; /* embed_tokens; final norm + lm_head */
    double bias;        /* untrained (e_score_correction_bias): 4 bytes each, no optimizer */
} s_params_t;

static void s_params_fini(s_params_t *c)
{
    free(c->dense);
    free(c->experts);
}

static shoal_err_t s_params_count(const model_config_t *m, s_params_t *c);

/* The counts come from naming every tensor (DeepSeek-V3: 44,544 of them, ~10 ms) and the planner
 * asks once per stage and attempt: the last model's counts are kept, one copy per thread. */
static _Thread_local struct {
    int valid;
    model_config_t m;
    s_params_t c;
} s_memo;

static shoal_err_t s_params(const model_config_t *m, s_params_t *c)
{
    if (!s_memo.valid || !model_config_equal(&s_memo.m, m)) {
        s_params_fini(&s_memo.c);
        s_memo.valid = 0;
        shoal_err_t rc = s_params_count(m, &s_memo.c);
        if (rc != SHOAL_OK)
            return rc;
        s_memo.m = *m;
        s_memo.valid = 1;
    }
    const size_t L = (size_t)m->num_hidden_layers + 1;
    *c = s_memo.c;
    c->dense = malloc(L * sizeof *c->dense);
    c->experts = malloc(L * sizeof *c->experts);
    if (!c->dense || !c->experts) {
        s_params_fini(c);
        return shoal_fail(SHOAL_ERR_NOMEM, "plan: parameter counts");
    }
    memcpy(c->dense, s_memo.c.dense, L * sizeof *c->dense);
    memcpy(c->experts, s_memo.c.experts, L * sizeof *c->experts);
    return SHOAL_OK;
}

static shoal_err_t s_params_count(const model_config_t *m, s_params_t *c)
{
    memset(c, 0, sizeof *c);
    int n = model_tensor_list(m, NULL, 0);
    model_tensor_info_t *t = calloc((size_t)n + 1, sizeof *t);
    c->dense = calloc((size_t)m->num_hidden_layers + 1, sizeof *c->dense);
    c->experts = calloc((size_t)m->num_hidden_layers + 1, sizeof *c->experts);
    if (!t || !c->dense || !c->experts) {
        free(t);
        s_params_fini(c);
        return shoal_fail(SHOAL_ERR_NOMEM, "plan: parameter counts");
    }
    model_tensor_list(m, t, n);
    for (int i = 0; i < n; i++) {
        double numel = (double)model_tensor_numel(&t[i]);
        int layer;
        if (t[i].is_bias)
            c->bias += numel;
        else if (strncmp(t[i].name, "model.embed_tokens.", 19) == 0)
            c->embed += numel;
        else if (sscanf(t[i].name, "model.layers.%d.", &layer) == 1 && layer >= 0 &&
                 layer < m->num_hidden_layers)
            *(strstr(t[i].name, ".mlp.experts.") ? &c->experts[layer] : &c->dense[layer]) += numel;
        else
            c->head += numel;
    }
    free(t);
    return SHOAL_OK;
}

/* The FLOPs of a layer from its parameter counts: 2 per weight per token, a routed expert only
 * for the K of N tokens routed to it; causal attention's QK^T and AV cost 2·T·d per token. */
static double s_layer_flops(const model_config_t *m, const s_params_t *c, uint32_t l, uint32_t T)
{
    double k_of_n = m->n_routed_experts ? (double)m->num_experts_per_tok / m->n_routed_experts : 0;
    return 2.0 * c->dense[l] + 2.0 * c->experts[l] * k_of_n + 2.0 * T * m->hidden_size;
}

double plan_layer_flops(const model_config_t *m, uint32_t l, uint32_t seq_len)
{
    s_params_t c;
    if (l >= (uint32_t)m->num_hidden_layers || s_params(m, &c) != SHOAL_OK)
        return 0;
    double f = s_layer_flops(m, &c, l, seq_len);
    s_params_fini(&c);
    return f;
}

/* a lookup forward, a scatter-add backward: about one multiply-add per element */
double plan_embed_flops(const model_config_t *m)
{
    return 2.0 * m->hidden_size;
}

/* final RMSNorm (~4d), lm_head (2Vd), softmax and cross-entropy (~5V) */
double plan_head_flops(const model_config_t *m)
{
    return 4.0 * m->hidden_size + 2.0 * m->vocab_size * m->hidden_size + 5.0 * m->vocab_size;
}

shoal_err_t plan_balance_stages(plan_t *p, const model_config_t *m, uint32_t seq_len)
{
    const uint32_t L = (uint32_t)m->num_hidden_layers, pp = p->pp;
    if (pp == 0 || pp > L)
        return shoal_fail(SHOAL_ERR_INVALID, "plan: pp %u outside 1..%u layers", pp, L);
    s_params_t c;
    shoal_err_t rc = s_params(m, &c);
    if (rc != SHOAL_OK)
        return rc;
    /* prefix[i]: cost of layers [0, i); best[s][i]: least costliest-stage for layers [0, i) in
     * s + 1 stages; cut[s][i]: where its last stage starts. O(pp · L²), L is small. */
    double *prefix = calloc(L + 1, sizeof *prefix);
    double *best = calloc((size_t)pp * (L + 1), sizeof *best);
    uint32_t *cut = calloc((size_t)pp * (L + 1), sizeof *cut);
    if (!prefix || !best || !cut) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "plan: stage balance");
        goto out;
    }
    for (uint32_t l = 0; l < L; l++)
        prefix[l + 1] = prefix[l] + s_layer_flops(m, &c, l, seq_len);
    const double embed = plan_embed_flops(m), head = plan_head_flops(m);
#define S_COST(a, b) (prefix[b] - prefix[a] + ((a) == 0 ? embed : 0) + ((b) == L ? head : 0))
    for (uint32_t i = 1; i <= L; i++)
        best[i] = S_COST(0, i);
    for (uint32_t s = 1; s < pp; s++)
        for (uint32_t i = s + 1; i <= L; i++) {
            double b = DBL_MAX;
            for (uint32_t j = s; j < i; j++) { /* stage s holds [j, i) */
                double prev = best[(s - 1) * (L + 1) + j], here = S_COST(j, i);
                double worst = prev > here ? prev : here;
                if (worst < b) { /* strict: the earliest split wins a tie */
                    b = worst;
                    cut[s * (L + 1) + i] = j;
                }
            }
            best[s * (L + 1) + i] = b;
        }
#undef S_COST
    uint32_t end = L;
    for (uint32_t s = pp; s-- > 0;) {
        uint32_t first = s ? cut[s * (L + 1) + end] : 0;
        p->stages[s] = (plan_stage_t){first, end - first, s == 0, s == pp - 1};
        end = first;
    }
out:
    free(prefix);
    free(best);
    free(cut);
    s_params_fini(&c);
    return rc;
}

/* Floats one layer saves per micro-batch of M = B·T tokens (worker/model.c model_new, kernels/
 * moe.c moe_saved_alloc): h_in, a, o, h_mid, u (5·M·d), qkv (3·M·d), rstd1/2 (2·M), attention
 * probabilities (B·H·T·T); the dense FFN's gu and act (3·M·f) or the MoE's scores (M·N), routing
 * (3·M·K), expert rows xs, ys (2·M·K·d), gu, a (3·M·K·fe), shared experts (3·M·fs), plus up to
 * ep·M·K rows of d received by the all-to-all when ep > 1. */
static double s_layer_act(const model_config_t *m, uint32_t l, double B, double T, uint32_t ep)
{
    const double M = B * T, d = m->hidden_size, H = m->num_attention_heads;
    double f = 8 * M * d + 2 * M + B * H * T * T;
    if (!model_config_is_moe_layer(m, (int)l))
        return f + 3 * M * m->intermediate_size;
    const double K = m->num_experts_per_tok, N = m->n_routed_experts;
    const double fe = m->moe_intermediate_size, fs = (double)m->n_shared_experts * fe;
    f += M * N + 3 * M * K + 2 * (N + 1) + 2 * M * K * d + 3 * M * K * fe + 3 * M * fs;
    if (ep > 1)
        f += ep * M * K * d;
    return f;
}

uint64_t plan_cell_bytes(const plan_t *p, const plan_request_t *req, uint32_t stage)
{
    const model_config_t *m = req->model;
    const plan_stage_t *st = &p->stages[stage];
    s_params_t c;
    if (s_params(m, &c) != SHOAL_OK)
        return UINT64_MAX; /* cannot estimate: fits nothing declared, said by the caller */
    const double B = req->micro_batch, T = req->seq_len, M = B * T, d = m->hidden_size;
    const double N = m->n_routed_experts, K = m->num_experts_per_tok;
    const double fs = (double)m->n_shared_experts * m->moe_intermediate_size;
    /* micro-batches 1F1B keeps in flight: pp - stage, at most the cell's share of a step */
    uint64_t n_micro = req->micro_batch ? req->global_batch / req->micro_batch : 1;
    uint64_t share = n_micro / ((uint64_t)p->dp * p->ep);
    double in_flight = (double)(p->pp - stage);
    if (share >= 1 && (double)share < in_flight)
        in_flight = (double)share;
    double params = 0, bias = 0, act = 0, max_ffn = 0;
    int has_moe = 0;
    for (uint32_t l = st->first_layer; l < st->first_layer + st->n_layers; l++) {
        params += c.dense[l] + c.experts[l] / p->ep;
        act += s_layer_act(m, l, B, T, p->ep);
        if (model_config_is_moe_layer(m, (int)l)) {
            has_moe = 1;
            if (fs > max_ffn)
                max_ffn = fs;
        } else if (m->intermediate_size > max_ffn)
            max_ffn = m->intermediate_size;
    }
    if (has_moe && c.bias > 0)
        bias = c.bias * st->n_layers / m->num_hidden_layers; /* N per MoE layer, a few bytes */
    if (st->has_embedding)
        params += c.embed;
    /* backward scratch, once per cell: dh, dtmp, dobuf, dqkv, dp, dgu, dact, RoPE tables, and
     * the MoE's (dys, dxs, dgu, da, dgates, dlogits, shared) */
    double scratch = 6 * M * d + T * T + 3 * M * max_ffn + T * d / m->num_attention_heads;
    if (has_moe)
        scratch += M * K * (2 * d + 3 * m->moe_intermediate_size + 1) + M * N + 3 * M * fs;
    if (st->has_head) {
        params += c.head;
        scratch += M * (2 * d + 1) + M * m->vocab_size; /* h_final, rstd_f, xn, logits */
    }
    s_params_fini(&c);
    /* fp32 parameter, gradient, Adam m and v: 16 bytes a parameter */
    return (uint64_t)(16.0 * params + 4.0 * bias + 4.0 * (in_flight * act + scratch));
}
