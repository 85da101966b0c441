/* model_gpu_plan.c: the device model's tensor offsets (found by canonical name in the layout, so
 * they follow model_layout_t whatever its order) and its fused AdamW segments. */
#include "model_gpu_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Offset of the tensor named by the format, or -1 (recorded in *missing) when absent. */
static int64_t s_at(const model_layout_t *lay, int *missing, const char *fmt, int l, int e)
{
    char name[96];
    if (e >= 0)
        snprintf(name, sizeof name, fmt, l, e);
    else
        snprintf(name, sizeof name, fmt, l);
    const int i = model_layout_find(lay, name);
    if (i < 0) {
        *missing = 1;
        return -1;
    }
    return lay->offsets[i];
}

static void s_layer(const model_layout_t *lay, int l, int N, model_gpu_layer_t *w, int *missing)
{
    const model_config_t *c = &lay->cfg;
    w->is_moe = model_config_is_moe_layer(c, l);
    w->ln1 = s_at(lay, missing, "model.layers.%d.input_layernorm.weight", l, -1);
    /* q, k, v are adjacent (canonical order): w_qkv [3d, d] starts at q */
    w->w_qkv = s_at(lay, missing, "model.layers.%d.self_attn.q_proj.weight", l, -1);
    w->w_o = s_at(lay, missing, "model.layers.%d.self_attn.o_proj.weight", l, -1);
    w->ln2 = s_at(lay, missing, "model.layers.%d.post_attention_layernorm.weight", l, -1);
    w->w_gu = w->w_d = w->router = w->bias = w->shared_gu = w->shared_d = -1;
    if (!w->is_moe) {
        w->w_gu = s_at(lay, missing, "model.layers.%d.mlp.gate_proj.weight", l, -1);
        w->w_d = s_at(lay, missing, "model.layers.%d.mlp.down_proj.weight", l, -1);
        return;
    }
    w->router = s_at(lay, missing, "model.layers.%d.mlp.gate.weight", l, -1);
    w->bias = s_at(lay, missing, "model.layers.%d.mlp.gate.e_score_correction_bias", l, -1);
    for (int e = 0; e < N; e++) {
        w->expert_gu[e] = s_at(lay, missing, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, e);
        w->expert_d[e] = s_at(lay, missing, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
    }
    if (c->n_shared_experts > 0) {
        w->shared_gu = s_at(lay, missing, "model.layers.%d.mlp.shared_experts.gate_proj.weight", l, -1);
        w->shared_d = s_at(lay, missing, "model.layers.%d.mlp.shared_experts.down_proj.weight", l, -1);
    }
}

/* Trainable tensors (not the balancing biases) in layout order, adjacent ones with the same
 * decay flag (2-D tensors decay) merged into one segment. */
static int s_segments(const model_layout_t *lay, adamw_segment_t *out)
{
    int n = 0;
    int64_t packed = 0;
    for (int i = 0; i < lay->n_tensors; i++) {
        const model_tensor_info_t *t = &lay->tensors[i];
        if (t->is_bias)
            continue;
        const int decay = t->ndim == 2;
        const int64_t o = lay->offsets[i], len = model_tensor_numel(t);
        if (n > 0 && out[n - 1].decay == decay && out[n - 1].start + out[n - 1].n == o) {
            out[n - 1].n += len;
        } else {
            out[n] = (adamw_segment_t){.start = o, .n = len, .packed = packed, .decay = decay};
            n++;
        }
        packed += len;
    }
    return n;
}

shoal_err_t model_gpu_plan_init(model_gpu_plan_t *p, const model_layout_t *lay)
{
    const model_config_t *c = &lay->cfg;
    memset(p, 0, sizeof *p);
    if (!lay->part.has_embedding || !lay->part.has_head || lay->n_params != lay->n_shared_params ||
        lay->part.n_layers != c->num_hidden_layers)
        return shoal_fail(SHOAL_ERR_INVALID, "device model: holds the whole model only (no "
                          "pipeline stages or expert parallelism on the GPU path yet)");
    const int L = c->num_hidden_layers, N = c->n_routed_experts;
    p->n_layers = L;
    p->N = N;
    p->layers = calloc((size_t)L, sizeof *p->layers);
    p->bias_of_moe = calloc((size_t)L + 1, sizeof *p->bias_of_moe);
    p->segments = calloc((size_t)lay->n_tensors + 1, sizeof *p->segments);
    int fail = !p->layers || !p->bias_of_moe || !p->segments;
    for (int l = 0; l < L && !fail; l++) {
        p->layers[l].expert_gu = calloc((size_t)N + 1, sizeof(int64_t));
        p->layers[l].expert_d = calloc((size_t)N + 1, sizeof(int64_t));
        fail = !p->layers[l].expert_gu || !p->layers[l].expert_d;
    }
    if (fail) {
        model_gpu_plan_fini(p);
        return shoal_fail(SHOAL_ERR_NOMEM, "device model plan: out of memory");
    }
    int missing = 0;
    p->embed = s_at(lay, &missing, "model.embed_tokens.weight", 0, -1);
    for (int l = 0; l < L; l++) {
        s_layer(lay, l, N, &p->layers[l], &missing);
        if (p->layers[l].is_moe)
            p->bias_of_moe[p->n_moe++] = p->layers[l].bias;
    }
    p->norm_f = s_at(lay, &missing, "model.norm.weight", 0, -1);
    p->head = s_at(lay, &missing, "lm_head.weight", 0, -1);
    if (missing) {
        model_gpu_plan_fini(p);
        return shoal_fail(SHOAL_ERR_STATE, "device model plan: a canonical tensor is missing "
                          "from the layout");
    }
    p->n_segments = s_segments(lay, p->segments);
    for (int i = 0; i < p->n_segments; i++)
        p->n_trainable += p->segments[i].n;
    return SHOAL_OK;
}

void model_gpu_plan_fini(model_gpu_plan_t *p)
{
    if (p->layers)
        for (int l = 0; l < p->n_layers; l++) {
            free(p->layers[l].expert_gu);
            free(p->layers[l].expert_d);
        }
    free(p->layers);
    free(p->bias_of_moe);
    free(p->segments);
    memset(p, 0, sizeof *p);
}
