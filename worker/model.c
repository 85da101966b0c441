/* model.c: forward and backward of the whole model for one micro-batch, composing the kernels. */
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "cross_entropy.h"
#include "embedding.h"
#include "ffn.h"
#include "moe.h"
#include "rmsnorm.h"
#include "rope.h"

shoal_err_t model_layout_init(model_layout_t *lay, const model_config_t *cfg)
{
    memset(lay, 0, sizeof *lay);
    shoal_err_t rc = model_config_validate(cfg);
    if (rc != SHOAL_OK)
        return rc;
    lay->cfg = *cfg;
    lay->n_tensors = model_tensor_list(cfg, NULL, 0);
    lay->tensors = calloc((size_t)lay->n_tensors, sizeof *lay->tensors);
    lay->offsets = calloc((size_t)lay->n_tensors + 1, sizeof *lay->offsets);
    if (!lay->tensors || !lay->offsets) {
        model_layout_fini(lay);
        return shoal_fail(SHOAL_ERR_NOMEM, "model layout: out of memory");
    }
    model_tensor_list(cfg, lay->tensors, lay->n_tensors);
    for (int i = 0; i < lay->n_tensors; i++)
        lay->offsets[i + 1] = lay->offsets[i] + model_tensor_numel(&lay->tensors[i]);
    lay->n_params = lay->offsets[lay->n_tensors];
    for (int l = 0; l < cfg->num_hidden_layers; l++)
        lay->n_moe_layers += model_config_is_moe_layer(cfg, l);
    return SHOAL_OK;
}

void model_layout_fini(model_layout_t *lay)
{
    free(lay->tensors);
    free(lay->offsets);
    lay->tensors = NULL;
    lay->offsets = NULL;
}

int model_layout_find(const model_layout_t *lay, const char *name)
{
    for (int i = 0; i < lay->n_tensors; i++)
        if (strcmp(lay->tensors[i].name, name) == 0)
            return i;
    return -1;
}

/* splitmix64: a tiny, well-mixed generator; the init only needs reproducibility. */
static uint64_t s_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double s_uniform(uint64_t *x)
{
    return ((s_splitmix(x) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

void model_init_params(const model_layout_t *lay, uint64_t seed, float *params)
{
    uint64_t st = seed * 0x2545f4914f6cdd1dULL + 1;
    for (int i = 0; i < lay->n_tensors; i++) {
        const model_tensor_info_t *t = &lay->tensors[i];
        float *p = params + lay->offsets[i];
        const int64_t n = model_tensor_numel(t);
        if (t->is_bias) {
            memset(p, 0, sizeof(float) * (size_t)n);
        } else if (t->ndim == 1) {
            for (int64_t j = 0; j < n; j++)
                p[j] = 1.0f;
        } else {
            for (int64_t j = 0; j < n; j += 2) { /* Box-Muller, two normals per draw */
                const double r = sqrt(-2.0 * log(s_uniform(&st)));
                const double th = 2.0 * M_PI * s_uniform(&st);
                p[j] = (float)(0.02 * r * cos(th));
                if (j + 1 < n)
                    p[j + 1] = (float)(0.02 * r * sin(th));
            }
        }
    }
}

/* Pointers to one layer's tensors inside a flat array (params or grads). */
typedef struct {
    float *ln1, *w_qkv, *w_o, *ln2;
    float *w_gu, *w_d; /* dense FFN */
    moe_weights_t moe; /* MoE layers */
} s_layer_t;

typedef struct {
    float *h_in, *a, *rstd1, *qkv, *p, *o, *h_mid, *u, *rstd2;
    float *gu, *act;   /* dense FFN saved */
    moe_saved_t moe;   /* MoE saved */
    int is_moe;
} s_layer_act_t;

struct model {
    const model_layout_t *lay;
    int max_B, T;
    float *cos_t, *sin_t;
    s_layer_t *pw, *gw;            /* params / grads views, rebuilt per call (no allocation) */
    float **expert_ptrs;           /* 4 · L · N pointers backing pw/gw expert arrays */
    s_layer_act_t *act;
    float *h_final, *rstd_f, *xn, *logits;
    /* backward scratch */
    float *dh, *dtmp, *dobuf, *dqkv, *dp, *dgu, *dact;
    moe_scratch_t msc;
    moe_config_t mcfg;
};

static void s_bind(model_t *m, float *base, s_layer_t *lw, float **eptr)
{
    const model_layout_t *lay = m->lay;
    const model_config_t *c = &lay->cfg;
    const int N = c->n_routed_experts;
    int i = 1; /* tensor 0 is the embedding */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        s_layer_t *w = &lw[l];
        w->ln1 = base + lay->offsets[i++];
        w->w_qkv = base + lay->offsets[i];
        i += 3;
        w->w_o = base + lay->offsets[i++];
        w->ln2 = base + lay->offsets[i++];
        if (!model_config_is_moe_layer(c, l)) {
            w->w_gu = base + lay->offsets[i];
            i += 2;
            w->w_d = base + lay->offsets[i++];
            continue;
        }
        w->moe.router = base + lay->offsets[i++];
        w->moe.bias = base + lay->offsets[i++];
        w->moe.expert_gu = eptr + (size_t)l * 2 * N;
        w->moe.expert_d = eptr + (size_t)l * 2 * N + N;
        for (int e = 0; e < N; e++) {
            w->moe.expert_gu[e] = base + lay->offsets[i];
            i += 2;
            w->moe.expert_d[e] = base + lay->offsets[i++];
        }
        w->moe.shared_gu = w->moe.shared_d = NULL;
        if (c->n_shared_experts > 0) {
            w->moe.shared_gu = base + lay->offsets[i];
            i += 2;
            w->moe.shared_d = base + lay->offsets[i++];
        }
    }
}

static float *s_falloc(size_t n, int *fail)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    if (!p)
        *fail = 1;
    return p;
}

model_t *model_new(const model_layout_t *lay, int max_B, int T)
{
    const model_config_t *c = &lay->cfg;
    if (T < 1 || T > c->max_position_embeddings || max_B < 1) {
        shoal_fail(SHOAL_ERR_INVALID, "model: sequence length %d must be in [1, %d]", T,
                   c->max_position_embeddings);
        return NULL;
    }
    model_t *m = calloc(1, sizeof *m);
    if (!m)
        goto oom;
    const int L = c->num_hidden_layers, d = c->hidden_size, H = c->num_attention_heads;
    const int dh = d / H, N = c->n_routed_experts, K = c->num_experts_per_tok;
    const size_t M = (size_t)max_B * T, f = (size_t)c->intermediate_size;
    const size_t fe = (size_t)c->moe_intermediate_size, V = (size_t)c->vocab_size;
    int fail = 0;
    m->lay = lay;
    m->max_B = max_B;
    m->T = T;
    m->mcfg = (moe_config_t){.d = d,
                             .fe = (int)fe,
                             .fs = c->n_shared_experts * (int)fe,
                             .router = {.N = N,
                                        .K = K,
                                        .n_group = c->n_group,
                                        .topk_group = c->topk_group,
                                        .rsf = (float)c->routed_scaling_factor}};
    m->cos_t = s_falloc((size_t)T * dh / 2, &fail);
    m->sin_t = s_falloc((size_t)T * dh / 2, &fail);
    m->pw = calloc((size_t)L, sizeof *m->pw);
    m->gw = calloc((size_t)L, sizeof *m->gw);
    m->expert_ptrs = calloc((size_t)4 * L * N + 1, sizeof *m->expert_ptrs);
    m->act = calloc((size_t)L, sizeof *m->act);
    if (fail || !m->pw || !m->gw || !m->expert_ptrs || !m->act)
        goto oom;
    rope_tables(T, dh, c->rope_theta, m->cos_t, m->sin_t);
    size_t max_ffn = f;
    for (int l = 0; l < L; l++) {
        s_layer_act_t *a = &m->act[l];
        a->is_moe = model_config_is_moe_layer(c, l);
        a->h_in = s_falloc(M * d, &fail);
        a->a = s_falloc(M * d, &fail);
        a->rstd1 = s_falloc(M, &fail);
        a->qkv = s_falloc(M * 3 * d, &fail);
        a->p = s_falloc((size_t)max_B * H * T * T, &fail);
        a->o = s_falloc(M * d, &fail);
        a->h_mid = s_falloc(M * d, &fail);
        a->u = s_falloc(M * d, &fail);
        a->rstd2 = s_falloc(M, &fail);
        if (a->is_moe) {
            if (moe_saved_alloc(&a->moe, &m->mcfg, (int)M) != 0)
                fail = 1;
        } else {
            a->gu = s_falloc(M * 2 * f, &fail);
            a->act = s_falloc(M * f, &fail);
        }
        if (fail)
            goto oom;
    }
    m->h_final = s_falloc(M * d, &fail);
    m->rstd_f = s_falloc(M, &fail);
    m->xn = s_falloc(M * d, &fail);
    m->logits = s_falloc(M * V, &fail);
    m->dh = s_falloc(M * d, &fail);
    m->dtmp = s_falloc(M * d, &fail);
    m->dobuf = s_falloc(M * d, &fail);
    m->dqkv = s_falloc(M * 3 * d, &fail);
    m->dp = s_falloc((size_t)T * T, &fail);
    m->dgu = s_falloc(M * 2 * max_ffn, &fail);
    m->dact = s_falloc(M * max_ffn, &fail);
    if (fail)
        goto oom;
    if (lay->n_moe_layers > 0 && moe_scratch_alloc(&m->msc, &m->mcfg, (int)M) != 0)
        goto oom;
    return m;
oom:
    model_destroy(&m);
    shoal_fail(SHOAL_ERR_NOMEM, "model: cannot allocate activations for %d x %d tokens", max_B,
               T);
    return NULL;
}

void model_destroy(model_t **mp)
{
    model_t *m = *mp;
    if (!m)
        return;
    if (m->act) {
        for (int l = 0; l < m->lay->cfg.num_hidden_layers; l++) {
            s_layer_act_t *a = &m->act[l];
            free(a->h_in);
            free(a->a);
            free(a->rstd1);
            free(a->qkv);
            free(a->p);
            free(a->o);
            free(a->h_mid);
            free(a->u);
            free(a->rstd2);
            free(a->gu);
            free(a->act);
            moe_saved_free(&a->moe);
        }
    }
    free(m->act);
    free(m->cos_t);
    free(m->sin_t);
    free(m->pw);
    free(m->gw);
    free(m->expert_ptrs);
    free(m->h_final);
    free(m->rstd_f);
    free(m->xn);
    free(m->logits);
    free(m->dh);
    free(m->dtmp);
    free(m->dobuf);
    free(m->dqkv);
    free(m->dp);
    free(m->dgu);
    free(m->dact);
    moe_scratch_free(&m->msc);
    free(m);
    *mp = NULL;
}

double model_forward_backward(model_t *m, const float *params, const int32_t *tok,
                              const int32_t *tgt, int B, float loss_scale, float *grads,
                              int64_t *counts)
{
    const model_layout_t *lay = m->lay;
    const model_config_t *c = &lay->cfg;
    const int L = c->num_hidden_layers, d = c->hidden_size, V = c->vocab_size, T = m->T;
    const int f = c->intermediate_size, N = c->n_routed_experts, M = B * T;
    const float eps = (float)c->rms_norm_eps;
    const attention_shape_t ash = {.B = B, .T = T, .d = d, .H = c->num_attention_heads};
    const int ti_norm = lay->n_tensors - 2, ti_head = lay->n_tensors - 1;
    float *P = (float *)params;
    const float *embed = P, *norm_f = P + lay->offsets[ti_norm], *head = P + lay->offsets[ti_head];
    const int N4 = 2 * L * N;
    s_bind(m, P, m->pw, m->expert_ptrs);
    s_bind(m, grads, m->gw, m->expert_ptrs + N4);

    /* forward */
    embedding_forward(tok, M, embed, d, m->act[0].h_in);
    int moe_i = 0;
    for (int l = 0; l < L; l++) {
        s_layer_act_t *a = &m->act[l];
        const s_layer_t *w = &m->pw[l];
        float *h_out = l + 1 < L ? m->act[l + 1].h_in : m->h_final;
        rmsnorm_forward(a->h_in, w->ln1, M, d, eps, a->a, a->rstd1);
        attention_forward(&ash, a->a, w->w_qkv, w->w_o, m->cos_t, m->sin_t, a->qkv, a->p, a->o,
                          a->h_mid);
        for (int64_t j = 0; j < (int64_t)M * d; j++)
            a->h_mid[j] += a->h_in[j];
        rmsnorm_forward(a->h_mid, w->ln2, M, d, eps, a->u, a->rstd2);
        if (a->is_moe) {
            moe_forward(&m->mcfg, &w->moe, a->u, M, &a->moe, h_out, counts + (size_t)moe_i * N);
            moe_i++;
        } else {
            ffn_forward(a->u, M, d, f, w->w_gu, w->w_d, a->gu, a->act, h_out, 0.0f);
        }
        for (int64_t j = 0; j < (int64_t)M * d; j++)
            h_out[j] += a->h_mid[j];
    }
    rmsnorm_forward(m->h_final, norm_f, M, d, eps, m->xn, m->rstd_f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, V, d, 1.0f, m->xn, d, head, d, 0.0f,
                m->logits, V);
    const double loss_sum =
        cross_entropy_forward_backward(m->logits, tgt, M, V, loss_scale, m->logits);

    /* backward: m->logits now holds dlogits */
    float *g_norm_f = grads + lay->offsets[ti_norm], *g_head = grads + lay->offsets[ti_head];
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, d, M, 1.0f, m->logits, V, m->xn, d,
                1.0f, g_head, d);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, d, V, 1.0f, m->logits, V, head, d,
                0.0f, m->dtmp, d);
    memset(m->dh, 0, sizeof(float) * (size_t)M * d);
    rmsnorm_backward(m->h_final, norm_f, m->rstd_f, m->dtmp, M, d, m->dh, g_norm_f);
    for (int l = L - 1; l >= 0; l--) {
        s_layer_act_t *a = &m->act[l];
        const s_layer_t *w = &m->pw[l];
        const s_layer_t *gw = &m->gw[l];
        /* FFN / MoE: dh is ∂L/∂h_out, which is also ∂L/∂h_mid through the residual */
        if (a->is_moe)
            moe_backward(&m->mcfg, &w->moe, a->u, &a->moe, m->dh, &m->msc, m->dtmp, &gw->moe);
        else
            ffn_backward(a->u, M, d, f, w->w_gu, w->w_d, a->gu, a->act, m->dh, m->dgu, m->dact,
                         m->dtmp, 0.0f, gw->w_gu, gw->w_d);
        rmsnorm_backward(a->h_mid, w->ln2, a->rstd2, m->dtmp, M, d, m->dh, gw->ln2);
        /* attention: dh is now ∂L/∂h_mid = ∂L/∂h_in through the residual */
        attention_backward(&ash, a->a, w->w_qkv, w->w_o, m->cos_t, m->sin_t, a->qkv, a->p, a->o,
                           m->dh, m->dobuf, m->dqkv, m->dp, m->dtmp, gw->w_qkv, gw->w_o);
        rmsnorm_backward(a->h_in, w->ln1, a->rstd1, m->dtmp, M, d, m->dh, gw->ln1);
    }
    embedding_backward(tok, M, m->dh, d, grads);
    return loss_sum;
}
