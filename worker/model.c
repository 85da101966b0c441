/* model.c: the parameter layout of a part of the model, its initialisation, and the forward and
 * backward of one micro-batch through it, composing the kernels. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "cross_entropy.h"
#include "embedding.h"
#include "ffn.h"
#include "kgemm.h"
#include "moe.h"
#include "rmsnorm.h"
#include "rope.h"

void model_part_whole(const model_config_t *cfg, model_part_t *part)
{
    *part = (model_part_t){.first_layer = 0,
                           .n_layers = cfg->num_hidden_layers,
                           .has_embedding = 1,
                           .has_head = 1,
                           .expert_first = 0,
                           .expert_count = cfg->n_routed_experts};
}

/* Where a canonical tensor belongs: its layer (-1 embedding, L final norm and head) and, for a
 * routed expert's tensor, its expert (else -1). One walk of the canonical structure. */
typedef struct {
    int layer, expert;
} s_place_t;

static void s_places(const model_config_t *c, s_place_t *pl)
{
    const int N = c->n_routed_experts;
    int i = 0;
    pl[i++] = (s_place_t){-1, -1};
    for (int l = 0; l < c->num_hidden_layers; l++) {
        for (int k = 0; k < 6; k++) /* ln1, q, k, v, o, ln2 */
            pl[i++] = (s_place_t){l, -1};
        if (!model_config_is_moe_layer(c, l)) {
            for (int k = 0; k < 3; k++)
                pl[i++] = (s_place_t){l, -1};
            continue;
        }
        pl[i++] = (s_place_t){l, -1}; /* router */
        pl[i++] = (s_place_t){l, -1}; /* bias */
        for (int e = 0; e < N; e++)
            for (int k = 0; k < 3; k++)
                pl[i++] = (s_place_t){l, e};
        if (c->n_shared_experts > 0)
            for (int k = 0; k < 3; k++)
                pl[i++] = (s_place_t){l, -1};
    }
    pl[i++] = (s_place_t){c->num_hidden_layers, -1};
    pl[i++] = (s_place_t){c->num_hidden_layers, -1};
}

static int s_holds(const model_config_t *c, const model_part_t *p, s_place_t at)
{
    if (at.layer < 0)
        return p->has_embedding;
    if (at.layer >= c->num_hidden_layers)
        return p->has_head;
    if (at.layer < p->first_layer || at.layer >= p->first_layer + p->n_layers)
        return 0;
    return at.expert < 0 ||
           (at.expert >= p->expert_first && at.expert < p->expert_first + p->expert_count);
}

static shoal_err_t s_part_check(const model_config_t *c, const model_part_t *p)
{
    const int L = c->num_hidden_layers, N = c->n_routed_experts;
    if (p->first_layer < 0 || p->n_layers < 1 || p->first_layer + p->n_layers > L)
        return shoal_fail(SHOAL_ERR_INVALID, "model part: layers %d..%d outside the model's %d",
                          p->first_layer, p->first_layer + p->n_layers - 1, L);
    if (p->has_embedding && p->first_layer != 0)
        return shoal_fail(SHOAL_ERR_INVALID, "model part: the embedding needs layer 0");
    if (p->has_head && p->first_layer + p->n_layers != L)
        return shoal_fail(SHOAL_ERR_INVALID, "model part: the head needs the last layer");
    if (p->expert_first < 0 || p->expert_count < 0 || p->expert_first + p->expert_count > N)
        return shoal_fail(SHOAL_ERR_INVALID, "model part: experts %d..%d outside the model's %d",
                          p->expert_first, p->expert_first + p->expert_count - 1, N);
    return SHOAL_OK;
}

shoal_err_t model_layout_init_part(model_layout_t *lay, const model_config_t *cfg,
                                   const model_part_t *part)
{
    memset(lay, 0, sizeof *lay);
    shoal_err_t rc = model_config_validate(cfg);
    if (rc != SHOAL_OK || (rc = s_part_check(cfg, part)) != SHOAL_OK)
        return rc;
    lay->cfg = *cfg;
    lay->part = *part;
    const int n_all = model_tensor_list(cfg, NULL, 0);
    model_tensor_info_t *all = calloc((size_t)n_all, sizeof *all);
    s_place_t *pl = calloc((size_t)n_all, sizeof *pl);
    lay->tensors = calloc((size_t)n_all, sizeof *lay->tensors);
    lay->offsets = calloc((size_t)n_all + 1, sizeof *lay->offsets);
    int *is_expert = calloc((size_t)n_all, sizeof *is_expert);
    if (!all || !pl || !lay->tensors || !lay->offsets || !is_expert) {
        free(all);
        free(pl);
        free(is_expert);
        model_layout_fini(lay);
        return shoal_fail(SHOAL_ERR_NOMEM, "model layout: out of memory");
    }
    model_tensor_list(cfg, all, n_all);
    s_places(cfg, pl);
    for (int i = 0; i < n_all; i++) {
        if (!s_holds(cfg, part, pl[i]))
            continue;
        is_expert[lay->n_tensors] = pl[i].expert >= 0;
        lay->tensors[lay->n_tensors++] = all[i];
    }
    /* canonical order, or the shared tensors first when only some experts are held */
    const int split = part->expert_count < cfg->n_routed_experts;
    int64_t at = 0;
    for (int pass = 0; pass < 1 + split; pass++) {
        for (int i = 0; i < lay->n_tensors; i++) {
            if (split && is_expert[i] != pass)
                continue;
            lay->offsets[i] = at;
            at += model_tensor_numel(&lay->tensors[i]);
        }
        if (pass == 0)
            lay->n_shared_params = at;
    }
    lay->n_params = at;
    lay->offsets[lay->n_tensors] = at;
    if (!split)
        lay->n_shared_params = at;
    for (int l = part->first_layer; l < part->first_layer + part->n_layers; l++)
        lay->n_moe_layers += model_config_is_moe_layer(cfg, l);
    free(all);
    free(pl);
    free(is_expert);
    return SHOAL_OK;
}

shoal_err_t model_layout_init(model_layout_t *lay, const model_config_t *cfg)
{
    model_part_t whole;
    model_part_whole(cfg, &whole);
    return model_layout_init_part(lay, cfg, &whole);
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

/* Draws of s_uniform a tensor's init takes (Box-Muller: two per pair of elements). */
static int64_t s_init_draws(const model_tensor_info_t *t)
{
    return t->is_bias || t->ndim == 1 ? 0 : (model_tensor_numel(t) + 1) / 2 * 2;
}

shoal_err_t model_init_params(const model_layout_t *lay, uint64_t seed, float *params)
{
    /* The generator runs over the whole model in canonical order; a tensor the part does not
     * hold only advances it (splitmix64 state moves by a constant per draw), so every part
     * holds exactly the values of the whole model. */
    uint64_t st = seed * 0x2545f4914f6cdd1dULL + 1;
    const int n_all = model_tensor_list(&lay->cfg, NULL, 0);
    model_tensor_info_t *all = calloc((size_t)n_all, sizeof *all);
    if (!all)
        return shoal_fail(SHOAL_ERR_NOMEM, "model init: out of memory");
    model_tensor_list(&lay->cfg, all, n_all);
    int held = 0;
    for (int k = 0; k < n_all && held < lay->n_tensors; k++) {
        const model_tensor_info_t *t = &lay->tensors[held];
        if (strcmp(all[k].name, t->name) != 0) {
            st += (uint64_t)s_init_draws(&all[k]) * 0x9e3779b97f4a7c15ULL;
            continue;
        }
        float *p = params + lay->offsets[held++];
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
    free(all);
    return SHOAL_OK;
}

/* Pointers to one layer's tensors inside a flat array (params or grads). */
typedef struct {
    float *ln1, *w_qkv, *w_o, *ln2;
    float *w_gu, *w_d; /* dense FFN */
    moe_weights_t moe; /* MoE layers (expert pointers NULL for experts held elsewhere) */
} s_layer_t;

typedef struct {
    float *h_in, *a, *rstd1, *qkv, *p, *o, *h_mid, *u, *rstd2;
    float *gu, *act;   /* dense FFN saved */
    moe_saved_t moe;   /* MoE saved */
    int is_moe;
} s_layer_act_t;

/* One micro-batch in flight: the activations of every layer of the part. */
typedef struct {
    s_layer_act_t *act; /* n_layers of the part */
    int B;
    const int32_t *tok;  /* the embedding's input (the caller keeps it until the backward) */
} s_slot_t;

struct model {
    const model_layout_t *lay;
    int max_B, T, n_slots;
    float *cos_t, *sin_t;
    s_layer_t *pw, *gw;            /* params / grads views of the part's layers */
    float **expert_ptrs;           /* 4 · n_layers · N pointers backing pw/gw expert arrays */
    s_slot_t *slots;
    float *h_final, *rstd_f, *xn, *logits; /* head part: logits hold dlogits after the forward */
    /* backward scratch */
    float *dh, *dtmp, *dobuf, *dqkv, *dp, *dgu, *dact;
    moe_scratch_t msc;
    moe_config_t mcfg;
    model_expert_exchange_t xchg;
    int has_xchg;
};

/* Walks the part's tensors (canonical order) and points each layer's views into `base`. */
static void s_bind(model_t *m, float *base, s_layer_t *lw, float **eptr)
{
    const model_layout_t *lay = m->lay;
    const model_config_t *c = &lay->cfg;
    const model_part_t *pt = &lay->part;
    const int N = c->n_routed_experts;
    int i = pt->has_embedding ? 1 : 0;
    for (int k = 0; k < pt->n_layers; k++) {
        const int l = pt->first_layer + k;
        s_layer_t *w = &lw[k];
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
        w->moe.expert_gu = eptr + (size_t)k * 2 * N;
        w->moe.expert_d = eptr + (size_t)k * 2 * N + N;
        for (int e = 0; e < N; e++) {
            const int held = e >= pt->expert_first && e < pt->expert_first + pt->expert_count;
            w->moe.expert_gu[e] = held ? base + lay->offsets[i] : NULL;
            w->moe.expert_d[e] = held ? base + lay->offsets[i + 2] : NULL;
            i += held ? 3 : 0;
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

static void s_slot_free(const model_t *m, s_slot_t *sl)
{
    if (!sl->act)
        return;
    for (int k = 0; k < m->lay->part.n_layers; k++) {
        s_layer_act_t *a = &sl->act[k];
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
    free(sl->act);
    sl->act = NULL;
}

static int s_slot_alloc(const model_t *m, s_slot_t *sl)
{
    const model_config_t *c = &m->lay->cfg;
    const int nl = m->lay->part.n_layers, d = c->hidden_size, H = c->num_attention_heads;
    const size_t M = (size_t)m->max_B * m->T, f = (size_t)c->intermediate_size;
    int fail = 0;
    sl->act = calloc((size_t)nl, sizeof *sl->act);
    if (!sl->act)
        return -1;
    for (int k = 0; k < nl && !fail; k++) {
        s_layer_act_t *a = &sl->act[k];
        a->is_moe = model_config_is_moe_layer(c, m->lay->part.first_layer + k);
        a->h_in = s_falloc(M * d, &fail);
        a->a = s_falloc(M * d, &fail);
        a->rstd1 = s_falloc(M, &fail);
        a->qkv = s_falloc(M * 3 * d, &fail);
        a->p = s_falloc((size_t)m->max_B * H * m->T * m->T, &fail);
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
    }
    return fail ? -1 : 0;
}

model_t *model_new_slots(const model_layout_t *lay, int max_B, int T, int n_slots)
{
    const model_config_t *c = &lay->cfg;
    if (T < 1 || T > c->max_position_embeddings || max_B < 1 || n_slots < 1) {
        shoal_fail(SHOAL_ERR_INVALID, "model: sequence length %d must be in [1, %d]", T,
                   c->max_position_embeddings);
        return NULL;
    }
    model_t *m = calloc(1, sizeof *m);
    if (!m)
        goto oom;
    const int nl = lay->part.n_layers, d = c->hidden_size, H = c->num_attention_heads;
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
    m->pw = calloc((size_t)nl, sizeof *m->pw);
    m->gw = calloc((size_t)nl, sizeof *m->gw);
    m->expert_ptrs = calloc((size_t)4 * nl * N + 1, sizeof *m->expert_ptrs);
    m->slots = calloc((size_t)n_slots, sizeof *m->slots);
    if (fail || !m->pw || !m->gw || !m->expert_ptrs || !m->slots)
        goto oom;
    m->n_slots = n_slots;
    rope_tables(T, dh, c->rope_theta, m->cos_t, m->sin_t);
    for (int k = 0; k < n_slots; k++)
        if (s_slot_alloc(m, &m->slots[k]) != 0)
            goto oom;
    if (lay->part.has_head) {
        m->h_final = s_falloc(M * d, &fail);
        m->rstd_f = s_falloc(M, &fail);
        m->xn = s_falloc(M * d, &fail);
        m->logits = s_falloc(M * V, &fail);
    }
    m->dh = s_falloc(M * d, &fail);
    m->dtmp = s_falloc(M * d, &fail);
    m->dobuf = s_falloc(M * d, &fail);
    m->dqkv = s_falloc(M * 3 * d, &fail);
    m->dp = s_falloc((size_t)T * T, &fail);
    m->dgu = s_falloc(M * 2 * f, &fail);
    m->dact = s_falloc(M * f, &fail);
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

model_t *model_new(const model_layout_t *lay, int max_B, int T)
{
    return model_new_slots(lay, max_B, T, 1);
}

void model_destroy(model_t **mp)
{
    model_t *m = *mp;
    if (!m)
        return;
    if (m->slots)
        for (int k = 0; k < m->n_slots; k++)
            s_slot_free(m, &m->slots[k]);
    free(m->slots);
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

void model_set_expert_exchange(model_t *m, const model_expert_exchange_t *x)
{
    m->has_xchg = x != NULL;
    if (x)
        m->xchg = *x;
}

void model_set_precision(model_t *m, kgemm_prec_t prec)
{
    m->mcfg.prec = prec;
}

const moe_config_t *model_moe_config(const model_t *m)
{
    return &m->mcfg;
}

static shoal_err_t s_moe_forward(model_t *m, int k, int slot, const s_layer_t *w,
                                 s_layer_act_t *a, int M, float *h_out, int64_t *counts)
{
    if (!m->has_xchg) {
        moe_forward(&m->mcfg, &w->moe, a->u, M, &a->moe, h_out, counts);
        return SHOAL_OK;
    }
    moe_route(&m->mcfg, &w->moe, a->u, M, &a->moe, counts);
    shoal_err_t rc = m->xchg.forward(m->xchg.ctx, m->lay->part.first_layer + k, slot, &m->mcfg,
                                     &w->moe, &a->moe);
    if (rc == SHOAL_OK)
        moe_combine(&m->mcfg, &w->moe, a->u, &a->moe, h_out);
    return rc;
}

static shoal_err_t s_moe_backward(model_t *m, int k, int slot, const s_layer_t *w,
                                  const s_layer_act_t *a, const s_layer_t *gw)
{
    if (!m->has_xchg) {
        moe_backward(&m->mcfg, &w->moe, a->u, &a->moe, m->dh, &m->msc, m->dtmp, &gw->moe);
        return SHOAL_OK;
    }
    moe_backward_gates(&m->mcfg, &w->moe, a->u, &a->moe, m->dh, &m->msc, m->dtmp, &gw->moe);
    shoal_err_t rc = m->xchg.backward(m->xchg.ctx, m->lay->part.first_layer + k, slot, &m->mcfg,
                                      &w->moe, &a->moe, m->msc.dys, m->msc.dxs, &gw->moe);
    if (rc == SHOAL_OK)
        moe_backward_finish(&m->mcfg, &w->moe, a->u, &a->moe, &m->msc, m->dtmp, &gw->moe);
    return rc;
}

static int s_tensor_head(const model_layout_t *lay)
{
    return lay->n_tensors - 1;
}

shoal_err_t model_part_forward(model_t *m, int slot, const float *params, const int32_t *tok,
                               const float *h_in, const int32_t *tgt, int B, float loss_scale,
                               float *h_out, double *loss_sum, int64_t *counts)
{
    const model_layout_t *lay = m->lay;
    const model_config_t *c = &lay->cfg;
    const model_part_t *pt = &lay->part;
    const int nl = pt->n_layers, d = c->hidden_size, V = c->vocab_size, T = m->T;
    const int f = c->intermediate_size, N = c->n_routed_experts, M = B * T;
    const float eps = (float)c->rms_norm_eps;
    const attention_shape_t ash = {
        .B = B, .T = T, .d = d, .H = c->num_attention_heads, .prec = m->mcfg.prec};
    if (slot < 0 || slot >= m->n_slots || B < 1 || B > m->max_B)
        return shoal_fail(SHOAL_ERR_INVALID, "model: slot %d of %d, micro-batch %d of %d", slot,
                          m->n_slots, B, m->max_B);
    s_slot_t *sl = &m->slots[slot];
    sl->B = B;
    sl->tok = tok;
    float *P = (float *)params;
    s_bind(m, P, m->pw, m->expert_ptrs);

    if (pt->has_embedding)
        embedding_forward(tok, M, P, d, sl->act[0].h_in);
    else
        memcpy(sl->act[0].h_in, h_in, sizeof(float) * (size_t)M * d);
    int moe_i = 0;
    shoal_err_t rc = SHOAL_OK;
    for (int k = 0; k < nl; k++) {
        s_layer_act_t *a = &sl->act[k];
        const s_layer_t *w = &m->pw[k];
        float *out = k + 1 < nl ? sl->act[k + 1].h_in : pt->has_head ? m->h_final : h_out;
        rmsnorm_forward(a->h_in, w->ln1, M, d, eps, a->a, a->rstd1);
        attention_forward(&ash, a->a, w->w_qkv, w->w_o, m->cos_t, m->sin_t, a->qkv, a->p, a->o,
                          a->h_mid);
        for (int64_t j = 0; j < (int64_t)M * d; j++)
            a->h_mid[j] += a->h_in[j];
        rmsnorm_forward(a->h_mid, w->ln2, M, d, eps, a->u, a->rstd2);
        if (a->is_moe) {
            rc = s_moe_forward(m, k, slot, w, a, M, out, counts + (size_t)moe_i * N);
            if (rc != SHOAL_OK)
                return rc;
            moe_i++;
        } else {
            ffn_forward(m->mcfg.prec, a->u, M, d, f, w->w_gu, w->w_d, a->gu, a->act, out, 0.0f);
        }
        for (int64_t j = 0; j < (int64_t)M * d; j++)
            out[j] += a->h_mid[j];
    }
    if (!pt->has_head)
        return SHOAL_OK;
    const int ti_head = s_tensor_head(lay);
    const float *norm_f = P + lay->offsets[ti_head - 1], *head = P + lay->offsets[ti_head];
    rmsnorm_forward(m->h_final, norm_f, M, d, eps, m->xn, m->rstd_f);
    kgemm(m->mcfg.prec, 0, 1, M, V, d, 1.0f, m->xn, d, head, d, 0.0f, m->logits, V);
    *loss_sum = cross_entropy_forward_backward(m->logits, tgt, M, V, loss_scale, m->logits);
    return SHOAL_OK;
}

shoal_err_t model_part_backward(model_t *m, int slot, const float *params, const float *dh_out,
                                float *grads, float *dh_in)
{
    const model_layout_t *lay = m->lay;
    const model_config_t *c = &lay->cfg;
    const model_part_t *pt = &lay->part;
    const int nl = pt->n_layers, d = c->hidden_size, V = c->vocab_size, T = m->T;
    const int f = c->intermediate_size, N = c->n_routed_experts;
    if (slot < 0 || slot >= m->n_slots)
        return shoal_fail(SHOAL_ERR_INVALID, "model: slot %d of %d", slot, m->n_slots);
    s_slot_t *sl = &m->slots[slot];
    const int B = sl->B, M = B * T;
    const attention_shape_t ash = {
        .B = B, .T = T, .d = d, .H = c->num_attention_heads, .prec = m->mcfg.prec};
    float *P = (float *)params;
    s_bind(m, P, m->pw, m->expert_ptrs);
    s_bind(m, grads, m->gw, m->expert_ptrs + (size_t)2 * nl * N);

    if (pt->has_head) { /* m->logits holds dlogits */
        const int ti_head = s_tensor_head(lay);
        const float *norm_f = P + lay->offsets[ti_head - 1], *head = P + lay->offsets[ti_head];
        float *g_norm_f = grads + lay->offsets[ti_head - 1], *g_head = grads + lay->offsets[ti_head];
        kgemm(m->mcfg.prec, 1, 0, V, d, M, 1.0f, m->logits, V, m->xn, d, 1.0f, g_head, d);
        kgemm(m->mcfg.prec, 0, 0, M, d, V, 1.0f, m->logits, V, head, d, 0.0f, m->dtmp, d);
        memset(m->dh, 0, sizeof(float) * (size_t)M * d);
        rmsnorm_backward(m->h_final, norm_f, m->rstd_f, m->dtmp, M, d, m->dh, g_norm_f);
    } else {
        memcpy(m->dh, dh_out, sizeof(float) * (size_t)M * d);
    }
    for (int k = nl - 1; k >= 0; k--) {
        s_layer_act_t *a = &sl->act[k];
        const s_layer_t *w = &m->pw[k];
        const s_layer_t *gw = &m->gw[k];
        /* FFN / MoE: dh is ∂L/∂h_out, which is also ∂L/∂h_mid through the residual */
        if (a->is_moe) {
            shoal_err_t rc = s_moe_backward(m, k, slot, w, a, gw);
            if (rc != SHOAL_OK)
                return rc;
        } else {
            ffn_backward(m->mcfg.prec, a->u, M, d, f, w->w_gu, w->w_d, a->gu, a->act, m->dh, m->dgu,
                         m->dact, m->dtmp, 0.0f, gw->w_gu, gw->w_d);
        }
        rmsnorm_backward(a->h_mid, w->ln2, a->rstd2, m->dtmp, M, d, m->dh, gw->ln2);
        /* attention: dh is now ∂L/∂h_mid = ∂L/∂h_in through the residual */
        attention_backward(&ash, a->a, w->w_qkv, w->w_o, m->cos_t, m->sin_t, a->qkv, a->p, a->o,
                           m->dh, m->dobuf, m->dqkv, m->dp, m->dtmp, gw->w_qkv, gw->w_o);
        rmsnorm_backward(a->h_in, w->ln1, a->rstd1, m->dtmp, M, d, m->dh, gw->ln1);
    }
    if (pt->has_embedding)
        embedding_backward(sl->tok, M, m->dh, d, grads);
    else if (dh_in)
        memcpy(dh_in, m->dh, sizeof(float) * (size_t)M * d);
    return SHOAL_OK;
}

double model_forward_backward(model_t *m, const float *params, const int32_t *tok,
                              const int32_t *tgt, int B, float loss_scale, float *grads,
                              int64_t *counts)
{
    double loss_sum = 0.0;
    /* without an expert exchange neither call can fail on valid arguments */
    if (model_part_forward(m, 0, params, tok, NULL, tgt, B, loss_scale, NULL, &loss_sum,
                           counts) != SHOAL_OK ||
        model_part_backward(m, 0, params, NULL, grads, NULL) != SHOAL_OK)
        return NAN;
    return loss_sum;
}
