/* expert_ep.c: the all-to-all(v) expert exchange of expert_ep.h. */
#include "expert_ep.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* What the holder keeps of one MoE layer's micro-batch for the backward. */
typedef struct {
    int64_t *cnt;       /* [ep · ne] rows from source i for local expert k */
    int64_t *ex_off;    /* [ne + 1] expert-major row offsets */
    float *xs, *gu, *a; /* expert-major rows: [R, d], [R, 2fe], [R, fe] */
} s_held_t;

struct expert_ep {
    const model_layout_t *lay;
    int ep, rank, ne, slots, n_moe;
    int64_t max_rows; /* rows one rank may hold: ep · max_M · K */
    int d, fe;
    int *moe_of_layer;                        /* part layer -> MoE index (-1 dense) */
    s_held_t *held;                           /* [slots · n_moe] */
    float *rx, *tx, *ex_y, *ex_dx, *dgu, *da; /* scratch */
    int64_t *send_cnt;                        /* [ep · ne] */
    size_t *sb, *so, *rb, *ro;                /* [ep] each */
    comm_t *comm;
    uint64_t step;
    double comm_s;
    expert_ep_flush_fn flush; /* exact sums: per-source expert gradients */
    void *flush_ctx;
};

void expert_ep_set_flush(expert_ep_t *x, expert_ep_flush_fn fn, void *ctx)
{
    x->flush = fn;
    x->flush_ctx = ctx;
}

void expert_ep_destroy(expert_ep_t **xp)
{
    expert_ep_t *x = *xp;
    if (!x)
        return;
    if (x->held)
        for (int i = 0; i < x->slots * x->n_moe; i++) {
            free(x->held[i].cnt);
            free(x->held[i].ex_off);
            free(x->held[i].xs);
            free(x->held[i].gu);
            free(x->held[i].a);
        }
    free(x->held);
    free(x->moe_of_layer);
    free(x->rx);
    free(x->tx);
    free(x->ex_y);
    free(x->ex_dx);
    free(x->dgu);
    free(x->da);
    free(x->send_cnt);
    free(x->sb);
    free(x->so);
    free(x->rb);
    free(x->ro);
    free(x);
    *xp = NULL;
}

static void *s_alloc(size_t n, int *fail)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        *fail = 1;
    return p;
}

shoal_err_t expert_ep_new(const model_layout_t *lay, int ep, int ep_rank, int slots, int max_M,
                          expert_ep_t **out)
{
    *out = NULL;
    const model_config_t *c = &lay->cfg;
    const int N = c->n_routed_experts;
    if (ep < 1 || ep_rank < 0 || ep_rank >= ep || N % ep != 0 || slots < 1 || max_M < 1)
        return shoal_fail(SHOAL_ERR_INVALID, "expert exchange: ep rank %d of %d for %d experts",
                          ep_rank, ep, N);
    expert_ep_t *x = calloc(1, sizeof *x);
    if (!x)
        return shoal_fail(SHOAL_ERR_NOMEM, "expert exchange: out of memory");
    int fail = 0;
    x->lay = lay;
    x->ep = ep;
    x->rank = ep_rank;
    x->ne = N / ep;
    x->slots = slots;
    x->n_moe = lay->n_moe_layers;
    x->d = c->hidden_size;
    x->fe = c->moe_intermediate_size;
    x->max_rows = (int64_t)ep * max_M * c->num_experts_per_tok;
    const size_t R = (size_t)x->max_rows, d = (size_t)x->d, fe = (size_t)x->fe;
    x->moe_of_layer = s_alloc(sizeof(int) * (size_t)lay->part.n_layers, &fail);
    x->held = calloc((size_t)slots * (size_t)(x->n_moe ? x->n_moe : 1), sizeof *x->held);
    if (fail || !x->held)
        goto oom;
    for (int k = 0, i = 0; k < lay->part.n_layers; k++)
        x->moe_of_layer[k] = model_config_is_moe_layer(c, lay->part.first_layer + k) ? i++ : -1;
    for (int i = 0; i < slots * x->n_moe; i++) {
        s_held_t *h = &x->held[i];
        h->cnt = s_alloc(sizeof(int64_t) * (size_t)ep * x->ne, &fail);
        h->ex_off = s_alloc(sizeof(int64_t) * (size_t)(x->ne + 1), &fail);
        h->xs = s_alloc(sizeof(float) * R * d, &fail);
        h->gu = s_alloc(sizeof(float) * R * 2 * fe, &fail);
        h->a = s_alloc(sizeof(float) * R * fe, &fail);
    }
    x->rx = s_alloc(sizeof(float) * R * d, &fail);
    x->tx = s_alloc(sizeof(float) * R * d, &fail);
    x->ex_y = s_alloc(sizeof(float) * R * d, &fail);
    x->ex_dx = s_alloc(sizeof(float) * R * d, &fail);
    x->dgu = s_alloc(sizeof(float) * R * 2 * fe, &fail);
    x->da = s_alloc(sizeof(float) * R * fe, &fail);
    x->send_cnt = s_alloc(sizeof(int64_t) * (size_t)ep * x->ne, &fail);
    x->sb = s_alloc(sizeof(size_t) * (size_t)ep, &fail);
    x->so = s_alloc(sizeof(size_t) * (size_t)ep, &fail);
    x->rb = s_alloc(sizeof(size_t) * (size_t)ep, &fail);
    x->ro = s_alloc(sizeof(size_t) * (size_t)ep, &fail);
    if (fail)
        goto oom;
    *out = x;
    return SHOAL_OK;
oom:
    expert_ep_destroy(&x);
    return shoal_fail(SHOAL_ERR_NOMEM, "expert exchange: cannot allocate %lld rows", (long long)R);
}

void expert_ep_bind(expert_ep_t *x, comm_t *ep_comm, uint64_t step)
{
    x->comm = ep_comm;
    x->step = step;
}

double expert_ep_comm_seconds(expert_ep_t *x)
{
    const double s = x->comm_s;
    x->comm_s = 0;
    return s;
}

static shoal_err_t s_a2a(expert_ep_t *x, const void *sbuf, void *rbuf)
{
    const double t0 = clock_mono_s();
    shoal_err_t rc = comm_alltoallv(x->comm, sbuf, x->sb, x->so, rbuf, x->rb, x->ro, x->step);
    x->comm_s += clock_mono_s() - t0;
    return rc;
}

static s_held_t *s_held(expert_ep_t *x, int layer, int slot)
{
    const int mi = x->moe_of_layer[layer - x->lay->part.first_layer];
    return &x->held[(size_t)slot * x->n_moe + mi];
}

/* Block sizes of the row exchange: rows of xs for rank j are this rank's rows of j's experts
 * (contiguous in expert order); rows from source i are h->cnt[i][*]. `width` floats per row. */
static void s_row_blocks(expert_ep_t *x, const int64_t *off, const s_held_t *h, int width,
                         int to_holders)
{
    const size_t w = sizeof(float) * (size_t)width;
    size_t at = 0;
    for (int j = 0; j < x->ep; j++) {
        const size_t mine = (size_t)(off[(j + 1) * x->ne] - off[j * x->ne]);
        int64_t theirs = 0;
        for (int k = 0; k < x->ne; k++)
            theirs += h->cnt[(size_t)j * x->ne + k];
        /* to_holders: send my rows to j, receive j's rows for my experts; back: the reverse */
        size_t *s_b = to_holders ? x->sb : x->rb, *s_o = to_holders ? x->so : x->ro;
        size_t *r_b = to_holders ? x->rb : x->sb, *r_o = to_holders ? x->ro : x->so;
        s_b[j] = mine * w;
        s_o[j] = (size_t)off[j * x->ne] * w;
        r_b[j] = (size_t)theirs * w;
        r_o[j] = at;
        at += (size_t)theirs * w;
    }
}

/* Source-major blocks (source i: its rows expert by expert) <-> expert-major rows (expert k:
 * source 0's rows, then source 1's, ...). */
/* Expert-major row of the block (source i, local expert k): after the sources before i. */
static int64_t s_block_row(const expert_ep_t *x, const s_held_t *h, int i, int k)
{
    int64_t r = h->ex_off[k];
    for (int q = 0; q < i; q++)
        r += h->cnt[(size_t)q * x->ne + k];
    return r;
}

static void s_regroup(const expert_ep_t *x, const s_held_t *h, const float *src, float *dst,
                      int to_expert_major)
{
    const size_t row = sizeof(float) * (size_t)x->d;
    int64_t sm = 0; /* running source-major row */
    for (int i = 0; i < x->ep; i++)
        for (int k = 0; k < x->ne; k++) {
            const int64_t n = h->cnt[(size_t)i * x->ne + k], em = s_block_row(x, h, i, k);
            if (to_expert_major)
                memcpy(dst + em * x->d, src + sm * x->d, row * (size_t)n);
            else
                memcpy(dst + sm * x->d, src + em * x->d, row * (size_t)n);
            sm += n;
        }
}

static shoal_err_t s_forward(void *ctx, int layer, int slot, const moe_config_t *c,
                             const moe_weights_t *w, moe_saved_t *sv)
{
    expert_ep_t *x = ctx;
    s_held_t *h = s_held(x, layer, slot);
    const int ep = x->ep, ne = x->ne;
    const int64_t *off = sv->offsets;
    /* 1. rows per (holder, expert) */
    for (int j = 0; j < ep; j++)
        for (int k = 0; k < ne; k++)
            x->send_cnt[(size_t)j * ne + k] = off[j * ne + k + 1] - off[j * ne + k];
    for (int j = 0; j < ep; j++) {
        x->sb[j] = x->rb[j] = sizeof(int64_t) * (size_t)ne;
        x->so[j] = x->ro[j] = sizeof(int64_t) * (size_t)j * ne;
    }
    shoal_err_t rc = s_a2a(x, x->send_cnt, h->cnt);
    if (rc != SHOAL_OK)
        return rc;
    int64_t total = 0;
    h->ex_off[0] = 0;
    for (int k = 0; k < ne; k++) {
        for (int i = 0; i < ep; i++) {
            const int64_t n = h->cnt[(size_t)i * ne + k];
            if (n < 0 || n > x->max_rows / ep)
                return shoal_fail(SHOAL_ERR_FORMAT,
                                  "expert exchange: rank %d announced %lld "
                                  "rows for one expert",
                                  i, (long long)n);
            total += n;
        }
        h->ex_off[k + 1] = total;
    }
    /* 2. the rows themselves, then run the experts held here */
    s_row_blocks(x, off, h, x->d, 1);
    if ((rc = s_a2a(x, sv->xs, x->rx)) != SHOAL_OK)
        return rc;
    s_regroup(x, h, x->rx, h->xs, 1);
    if (x->flush) {
        /* exact sums: each (source, expert) block alone, the GEMM shapes of the single process
         * (BLAS results depend on the number of rows) */
        for (int i = 0; i < ep; i++)
            for (int k = 0; k < ne; k++) {
                const int64_t r0 = s_block_row(x, h, i, k), d = x->d, fe = x->fe;
                const int64_t blk[2] = {0, h->cnt[(size_t)i * ne + k]};
                moe_experts_forward(c, w, x->rank * ne + k, 1, blk, h->xs + r0 * d,
                                    h->gu + r0 * 2 * fe, h->a + r0 * fe, x->ex_y + r0 * d);
            }
    } else {
        moe_experts_forward(c, w, x->rank * ne, ne, h->ex_off, h->xs, h->gu, h->a, x->ex_y);
    }
    /* 3. outputs back to their sources, into sv->ys in the source's row order */
    s_regroup(x, h, x->ex_y, x->tx, 0);
    s_row_blocks(x, off, h, x->d, 0);
    return s_a2a(x, x->tx, sv->ys);
}

/* The experts' backward one (source, expert) block at a time, handing each source's expert
 * gradients to the flush hook once complete (see expert_ep_set_flush). */
static shoal_err_t s_backward_by_source(expert_ep_t *x, const s_held_t *h, const moe_config_t *c,
                                        const moe_weights_t *w, const moe_weights_t *g)
{
    const int ne = x->ne, e0 = x->rank * ne;
    const int64_t d = x->d, fe = x->fe;
    /* the range of this layer's held expert gradients */
    float *lo = g->expert_gu[e0], *hi = g->expert_gu[e0];
    for (int k = 0; k < ne; k++) {
        float *p[2] = {g->expert_gu[e0 + k], g->expert_d[e0 + k]};
        const int64_t n[2] = {2 * fe * d, d * fe};
        for (int q = 0; q < 2; q++) {
            lo = p[q] < lo ? p[q] : lo;
            hi = p[q] + n[q] > hi ? p[q] + n[q] : hi;
        }
    }
    for (int i = 0; i < x->ep; i++) {
        for (int k = 0; k < ne; k++) {
            const int64_t rows = h->cnt[(size_t)i * ne + k], r0 = s_block_row(x, h, i, k);
            const int64_t off[2] = {0, rows};
            moe_experts_backward(c, w, e0 + k, 1, off, h->xs + r0 * d, h->gu + r0 * 2 * fe,
                                 h->a + r0 * fe, x->ex_y + r0 * d, x->dgu, x->da, x->ex_dx + r0 * d,
                                 g);
        }
        shoal_err_t rc = x->flush(x->flush_ctx, lo, hi);
        if (rc != SHOAL_OK)
            return rc;
    }
    return SHOAL_OK;
}

static shoal_err_t s_backward(void *ctx, int layer, int slot, const moe_config_t *c,
                              const moe_weights_t *w, const moe_saved_t *sv, const float *dys,
                              float *dxs, const moe_weights_t *g)
{
    expert_ep_t *x = ctx;
    s_held_t *h = s_held(x, layer, slot);
    s_row_blocks(x, sv->offsets, h, x->d, 1);
    shoal_err_t rc = s_a2a(x, dys, x->rx);
    if (rc != SHOAL_OK)
        return rc;
    s_regroup(x, h, x->rx, x->ex_y, 1); /* ex_y now holds the gated output gradients */
    if (x->flush)
        rc = s_backward_by_source(x, h, c, w, g);
    else
        moe_experts_backward(c, w, x->rank * x->ne, x->ne, h->ex_off, h->xs, h->gu, h->a, x->ex_y,
                             x->dgu, x->da, x->ex_dx, g);
    if (rc != SHOAL_OK)
        return rc;
    s_regroup(x, h, x->ex_dx, x->tx, 0);
    s_row_blocks(x, sv->offsets, h, x->d, 0);
    return s_a2a(x, x->tx, dxs);
}

model_expert_exchange_t expert_ep_exchange(expert_ep_t *x)
{
    return (model_expert_exchange_t){.ctx = x, .forward = s_forward, .backward = s_backward};
}
