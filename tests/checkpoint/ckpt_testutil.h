/* ckpt_testutil.h: helpers shared by the checkpoint tests (temp dirs, small configs,
 * deterministic parameter patterns, writing model files tensor by tensor). */
#ifndef SHOAL_CKPT_TESTUTIL_H
#define SHOAL_CKPT_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "fsutil.h"
#include "model_config.h"
#include "model_dir.h"
#include "safetensors.h"

/* A small valid model (~40K parameters) so that tests stay fast. */
static inline void tu_small_config(model_config_t *c)
{
    model_config_tiny(c);
    c->vocab_size = 64;
    c->hidden_size = 32;
    c->num_hidden_layers = 2;
    c->num_attention_heads = 2;
    c->intermediate_size = 48;
    c->moe_intermediate_size = 16;
    c->n_routed_experts = 4;
    c->num_experts_per_tok = 2;
    c->max_position_embeddings = 32;
}

/* Deterministic, non-trivial floats (distinct per index and seed). */
static inline void tu_fill(float *p, int64_t n, uint32_t seed)
{
    uint64_t s = 0x9e3779b97f4a7c15ull * (seed + 1);
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0) * 0.5f;
    }
}

static inline char *tu_mkdtemp(const char *tag)
{
    char *d = malloc(128);
    snprintf(d, 128, "/tmp/shoal-%s-XXXXXX", tag);
    if (!mkdtemp(d)) {
        free(d);
        return NULL;
    }
    return d;
}

/* How tu_write_model deviates from a correct model file. */
typedef struct {
    const char *drop;      /* leave out this tensor */
    const char *bad_shape; /* write this tensor with its dims swapped / one longer */
    const char *extra;     /* add an extra tensor of this name */
    const char *as_i64;    /* write this tensor as I64 */
    st_dtype_t dtype;      /* ST_F32, ST_F64, ST_BF16 or ST_F16 for all float tensors */
    int first, count;      /* write canonical tensors [first, first+count) only (count 0: all) */
} tu_variant_t;

/* Writes `path` from params (flat layout), deviating as `v` says. */
static inline shoal_err_t tu_write_model(const char *path, const model_config_t *cfg,
                                         const float *params, const tu_variant_t *v)
{
    int n = model_tensor_list(cfg, NULL, 0);
    model_tensor_info_t *t = calloc((size_t)n, sizeof *t);
    st_tensor_t *st = calloc((size_t)n + 1, sizeof *st);
    void **bufs = calloc((size_t)n + 1, sizeof *bufs);
    model_tensor_list(cfg, t, n);
    int k = 0;
    int64_t off = 0;
    int last = v->count ? v->first + v->count : n;
    for (int i = 0; i < n; i++) {
        int64_t numel = model_tensor_numel(&t[i]);
        const float *src = params + off;
        off += numel;
        if (i < v->first || i >= last || (v->drop && strcmp(v->drop, t[i].name) == 0))
            continue;
        st_tensor_t *x = &st[k];
        x->name = t[i].name;
        x->ndim = t[i].ndim;
        x->shape[0] = t[i].shape[0];
        x->shape[1] = t[i].shape[1];
        x->dtype = v->dtype;
        if (v->as_i64 && strcmp(v->as_i64, t[i].name) == 0)
            x->dtype = ST_I64;
        size_t isz = st_dtype_size(x->dtype);
        uint8_t *b = malloc((size_t)numel * isz);
        for (int64_t j = 0; j < numel; j++) {
            float f = src[j];
            if (x->dtype == ST_F32) {
                memcpy(b + 4 * j, &f, 4);
            } else if (x->dtype == ST_F64) {
                double d = f;
                memcpy(b + 8 * j, &d, 8);
            } else if (x->dtype == ST_I64) {
                int64_t q = (int64_t)(f * 1000);
                memcpy(b + 8 * j, &q, 8);
            } else {
                uint16_t h = x->dtype == ST_BF16 ? st_f32_to_bf16(f) : st_f32_to_f16(f);
                memcpy(b + 2 * j, &h, 2);
            }
        }
        if (v->bad_shape && strcmp(v->bad_shape, t[i].name) == 0) {
            if (x->ndim == 2 && t[i].shape[0] == t[i].shape[1]) {
                x->ndim = 1;
                x->shape[0] = numel;
            } else if (x->ndim == 2) {
                x->shape[0] = t[i].shape[1];
                x->shape[1] = t[i].shape[0];
            } else {
                x->ndim = 2;
                x->shape[0] = 1;
                x->shape[1] = t[i].shape[0];
            }
        }
        x->data = b;
        bufs[k++] = b;
    }
    float extra[3] = {1, 2, 3};
    if (v->extra)
        st[k++] = (st_tensor_t){v->extra, ST_F32, 1, {3}, extra};
    static const char *const meta[] = {"format", "pt", NULL};
    shoal_err_t rc = st_write_file(path, st, k, meta);
    for (int i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(st);
    free(t);
    return rc;
}

/* The cell (stage, ep_rank) of a 2-stage x 2-ep run that holds tensor `name`: layer 0 and the
 * embedding on stage 0, layer 1, the norm and the head on stage 1; experts 0-1 on ep rank 0,
 * 2-3 on ep rank 1; non-expert tensors replicated over the ep ranks. */
static inline int tu_in_cell(const char *name, int stage, int ep_rank)
{
    int layer = -1, e = -1;
    if (sscanf(name, "model.layers.%d.", &layer) == 1) {
        const char *x = strstr(name, ".mlp.experts.");
        if (x && sscanf(x, ".mlp.experts.%d.", &e) == 1 && e / 2 != ep_rank)
            return 0;
        return (layer >= 1) == (stage == 1);
    }
    return strcmp(name, "model.embed_tokens.weight") == 0 ? stage == 0 : stage == 1;
}

/* The tensors of one cell over the flat arrays p, m, v (infos from `info`); returns how many. */
static inline int tu_cell_tensors(const model_tensor_info_t *info, int n, float *p, float *m,
                                  float *v, int stage, int ep_rank, ckpt_tensor_t *out)
{
    ckpt_tensor_t *all = calloc((size_t)n, sizeof *all);
    ckpt_tensors_flat(info, n, p, m, v, all);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (tu_in_cell(info[i].name, stage, ep_rank))
            out[k++] = all[i];
    free(all);
    return k;
}

#endif
