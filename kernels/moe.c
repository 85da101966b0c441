/* moe.c: MoE layer forward/backward on the CPU. Routed FLOPs forward 6·M·K·d·fe as per-expert
 * GEMMs (M·K/N rows each on average), plus 2·M·N·d for the router. The experts' GEMMs run in
 * c->prec; the router's stay fp32 whatever it is: top-K is a discrete choice that bf16 logits
 * would flip on near ties, and the router is N/(3·K·fe) of the layer's work. */
#include "moe.h"

#include <stdlib.h>
#include <string.h>

#include "ffn.h"
#include "kgemm.h"
#include "kpar.h"
#include "vexp.h" /* SHOAL_VECTOR_CLONES_512 */
#include "model_config.h"

static void *s_alloc(size_t n)
{
    return n ? malloc(n) : malloc(1);
}

int moe_saved_alloc(moe_saved_t *sv, const moe_config_t *c, int max_M)
{
    const size_t M = (size_t)max_M, N = (size_t)c->router.N, K = (size_t)c->router.K;
    const size_t d = (size_t)c->d, fe = (size_t)c->fe, fs = (size_t)c->fs;
    memset(sv, 0, sizeof *sv);
    sv->s = s_alloc(sizeof(float) * M * N);
    sv->idx = s_alloc(sizeof(int32_t) * M * K);
    sv->gates = s_alloc(sizeof(float) * M * K);
    sv->pair_of_row = s_alloc(sizeof(int32_t) * M * K);
    sv->row_of_pair = s_alloc(sizeof(int32_t) * M * K);
    sv->offsets = s_alloc(sizeof(int64_t) * (N + 1));
    sv->xs = s_alloc(sizeof(float) * M * K * d);
    sv->gu = s_alloc(sizeof(float) * M * K * 2 * fe);
    sv->a = s_alloc(sizeof(float) * M * K * fe);
    sv->ys = s_alloc(sizeof(float) * M * K * d);
    sv->sh_gu = s_alloc(sizeof(float) * M * 2 * fs);
    sv->sh_a = s_alloc(sizeof(float) * M * fs);
    if (!sv->s || !sv->idx || !sv->gates || !sv->pair_of_row || !sv->row_of_pair ||
        !sv->offsets || !sv->xs ||
        !sv->gu || !sv->a || !sv->ys || !sv->sh_gu || !sv->sh_a) {
        moe_saved_free(sv);
        return -1;
    }
    return 0;
}

void moe_saved_free(moe_saved_t *sv)
{
    free(sv->s);
    free(sv->idx);
    free(sv->gates);
    free(sv->pair_of_row);
    free(sv->row_of_pair);
    free(sv->offsets);
    free(sv->xs);
    free(sv->gu);
    free(sv->a);
    free(sv->ys);
    free(sv->sh_gu);
    free(sv->sh_a);
    memset(sv, 0, sizeof *sv);
}

int moe_scratch_alloc(moe_scratch_t *sc, const moe_config_t *c, int max_M)
{
    const size_t M = (size_t)max_M, N = (size_t)c->router.N, K = (size_t)c->router.K;
    const size_t d = (size_t)c->d, fe = (size_t)c->fe, fs = (size_t)c->fs;
    memset(sc, 0, sizeof *sc);
    sc->dys = s_alloc(sizeof(float) * M * K * d);
    sc->dgu = s_alloc(sizeof(float) * M * K * 2 * fe);
    sc->da = s_alloc(sizeof(float) * M * K * fe);
    sc->dxs = s_alloc(sizeof(float) * M * K * d);
    sc->dgates = s_alloc(sizeof(float) * M * K);
    sc->dlogits = s_alloc(sizeof(float) * M * N);
    sc->sh_dgu = s_alloc(sizeof(float) * M * 2 * fs);
    sc->sh_da = s_alloc(sizeof(float) * M * fs);
    if (!sc->dys || !sc->dgu || !sc->da || !sc->dxs || !sc->dgates || !sc->dlogits ||
        !sc->sh_dgu || !sc->sh_da) {
        moe_scratch_free(sc);
        return -1;
    }
    return 0;
}

void moe_scratch_free(moe_scratch_t *sc)
{
    free(sc->dys);
    free(sc->dgu);
    free(sc->da);
    free(sc->dxs);
    free(sc->dgates);
    free(sc->dlogits);
    free(sc->sh_dgu);
    free(sc->sh_da);
    memset(sc, 0, sizeof *sc);
}

/* rows this far ahead of a pass over rows in random order are prefetched */
#define S_AHEAD 4

static void s_prefetch_row(const float *row, int d)
{
    for (int j = 0; j < d; j += 16) /* one 64-byte line each */
        __builtin_prefetch(row + j);
}

/* moe_route's per-token work on the kpar threads: affinities, selection and gates of tokens
 * [m0, m1), and the gather of expert rows [r0, r1); each token's or row's own outputs only. */
typedef struct {
    const router_config_t *rc;
    const float *bias, *u;
    int d;
    moe_saved_t *sv;
    int64_t row0; /* the gather's first row: its ranges are relative to it */
} s_route_t;

static void s_route_tokens(void *arg, int64_t m0, int64_t m1, void *scratch)
{
    (void)scratch;
    const s_route_t *a = arg;
    const int N = a->rc->N, K = a->rc->K, n = (int)(m1 - m0);
    float *s = a->sv->s + m0 * N;
    int32_t *idx = a->sv->idx + m0 * K;
    router_sigmoid(s, (int64_t)n * N);
    router_select(a->rc, s, a->bias, n, idx);
    router_gates_forward(a->rc, s, idx, n, a->sv->gates + m0 * K);
}

static void s_gather_rows(void *arg, int64_t r0, int64_t r1, void *scratch)
{
    (void)scratch;
    const s_route_t *a = arg;
    const int64_t K = a->rc->K, d = a->d, end = a->row0 + r1;
    const int32_t *pair = a->sv->pair_of_row;
    for (int64_t row = a->row0 + r0; row < end; row++) {
        if (row + S_AHEAD < end) /* the token rows are in random order: fetch ahead */
            s_prefetch_row(a->u + (pair[row + S_AHEAD] / K) * d, (int)d);
        memcpy(a->sv->xs + row * d, a->u + (pair[row] / K) * d, sizeof(float) * (size_t)d);
    }
}

/* xs rows [r0, r1) from their tokens' rows of u */
static void s_gather(const moe_config_t *c, const float *u, moe_saved_t *sv, int64_t r0,
                     int64_t r1)
{
    const int d = c->d;
    s_route_t job = {&c->router, NULL, u, d, sv, r0};
    kpar_for(r1 - r0, 16384 / (d > 0 ? d : 1) + 1, 0, s_gather_rows, &job);
}

/* moe_route without the gather */
static void s_route_select(const moe_config_t *c, const moe_weights_t *w, const float *u, int M,
                           moe_saved_t *sv, int64_t *counts_acc)
{
    const int N = c->router.N, K = c->router.K, d = c->d;
    const int64_t P = (int64_t)M * K;
    sv->M = M;
    kgemm(KGEMM_FP32, 0, 1, M, N, d, 1.0f, u, d, w->router, d, 0.0f, sv->s, N);
    s_route_t job = {&c->router, w->bias, u, d, sv, 0};
    kpar_for(M, 4096 / (N > 0 ? N : 1) + 1, 0, s_route_tokens, &job);

    /* counting sort of the pairs by expert; stable in pair order */
    int64_t *off = sv->offsets;
    memset(off, 0, sizeof(int64_t) * (size_t)(N + 1));
    for (int64_t p = 0; p < P; p++)
        off[sv->idx[p] + 1]++;
    for (int e = 0; e < N; e++) {
        counts_acc[e] += off[e + 1];
        off[e + 1] += off[e];
    }
    int64_t fill[MODEL_MAX_EXPERTS];
    memcpy(fill, off, sizeof(int64_t) * (size_t)N);
    for (int64_t p = 0; p < P; p++) {
        const int64_t row = fill[sv->idx[p]]++;
        sv->pair_of_row[row] = (int32_t)p;
        sv->row_of_pair[p] = (int32_t)row;
    }
}

void moe_route(const moe_config_t *c, const moe_weights_t *w, const float *u, int M,
               moe_saved_t *sv, int64_t *counts_acc)
{
    s_route_select(c, w, u, M, sv, counts_acc);
    s_gather(c, u, sv, 0, (int64_t)M * c->router.K);
}

void moe_experts_forward(const moe_config_t *c, const moe_weights_t *w, int e0, int ne,
                         const int64_t *off, const float *xs, float *gu, float *a, float *ys)
{
    const int d = c->d, fe = c->fe;
    for (int k = 0; k < ne; k++) {
        const int64_t r0 = off[k], rows = off[k + 1] - off[k];
        ffn_forward(c->prec, xs + r0 * d, (int)rows, d, fe, w->expert_gu[e0 + k],
                    w->expert_d[e0 + k], gu + r0 * 2 * fe, a + r0 * fe, ys + r0 * d, 0.0f);
    }
}

/* Tokens [m0, m1) of the scatter back from expert rows: out[m] += gate · src[row] (gates NULL:
 * 1) over token m's K rows in increasing row order, the order of a pass over all rows, so each
 * element gets the same additions in the same order wherever its token runs (kpar). */
typedef struct {
    int K, d;
    const int32_t *row_of_pair;
    const float *gates, *src;
    float *out;
} s_scatter_t;

SHOAL_VECTOR_CLONES_512
static void s_scatter_tokens(void *arg, int64_t m0, int64_t m1, void *scratch)
{
    (void)scratch;
    const s_scatter_t *a = arg;
    const int K = a->K, d = a->d;
    int64_t rows[MODEL_MAX_EXPERTS], pairs[MODEL_MAX_EXPERTS];
    for (int64_t m = m0; m < m1; m++) {
        if (m + S_AHEAD < m1) /* the expert rows are in random order: fetch ahead */
            for (int k = 0; k < K; k++)
                s_prefetch_row(a->src + (int64_t)a->row_of_pair[(m + S_AHEAD) * K + k] * d, d);
        for (int k = 0; k < K; k++) { /* insertion sort of the K pairs by row (K is small) */
            const int64_t p = m * K + k, r = a->row_of_pair[p];
            int i = k;
            for (; i > 0 && rows[i - 1] > r; i--) {
                rows[i] = rows[i - 1];
                pairs[i] = pairs[i - 1];
            }
            rows[i] = r;
            pairs[i] = p;
        }
        float *restrict om = a->out + m * d;
        for (int k = 0; k < K; k++) {
            const float *restrict src = a->src + rows[k] * d;
            if (a->gates) {
                const float g = a->gates[pairs[k]];
                for (int j = 0; j < d; j++)
                    om[j] += g * src[j];
            } else {
                for (int j = 0; j < d; j++)
                    om[j] += src[j];
            }
        }
    }
}

void moe_combine(const moe_config_t *c, const moe_weights_t *w, const float *u,
                 moe_saved_t *sv, float *y)
{
    const int K = c->router.K, d = c->d, M = sv->M;
    /* shared experts write y; routed outputs are added in expert-row order */
    if (c->fs > 0)
        ffn_forward(c->prec, u, M, d, c->fs, w->shared_gu, w->shared_d, sv->sh_gu, sv->sh_a, y,
                    0.0f);
    else
        memset(y, 0, sizeof(float) * (size_t)M * d);
    s_scatter_t job = {K, d, sv->row_of_pair, sv->gates, sv->ys, y};
    kpar_for(M, 16384 / (K * d > 0 ? K * d : 1) + 1, 0, s_scatter_tokens, &job);
}

/* moe_route, moe_experts_forward, moe_combine, but each expert's rows gathered just before its
 * GEMMs, which then read them from cache: the same values (each row is a copy). */
void moe_forward(const moe_config_t *c, const moe_weights_t *w, const float *u, int M,
                 moe_saved_t *sv, float *y, int64_t *counts_acc)
{
    s_route_select(c, w, u, M, sv, counts_acc);
    for (int e = 0; e < c->router.N; e++) {
        s_gather(c, u, sv, sv->offsets[e], sv->offsets[e + 1]);
        moe_experts_forward(c, w, e, 1, sv->offsets + e, sv->xs, sv->gu, sv->a, sv->ys);
    }
    moe_combine(c, w, u, sv, y);
}

/* Expert rows [r0, r1) of moe_backward_gates: dgates[p] = dy[m]·ys[row] (8 lanes, then the
 * lanes in order: vectorised, the same bits wherever the row runs) and dys[row] = gate·dy[m].
 * Each row writes its own outputs: ranges run on the kernels' threads (kpar). */
typedef struct {
    int K, d;
    const int32_t *pair_of_row;
    const float *gates, *ys, *dy;
    float *dys, *dgates;
    int64_t row0; /* ranges are relative to it */
} s_gates_t;

SHOAL_VECTOR_CLONES
static void s_gates_rows(void *arg, int64_t r0, int64_t r1, void *scratch)
{
    (void)scratch;
    const s_gates_t *a = arg;
    const int K = a->K, d = a->d;
    const int64_t end = a->row0 + r1;
    for (int64_t row = a->row0 + r0; row < end; row++) {
        const int32_t p = a->pair_of_row[row];
        const float *restrict dym = a->dy + (int64_t)(p / K) * d;
        if (row + S_AHEAD < end) /* the dy rows are in random order: fetch ahead */
            s_prefetch_row(a->dy + (int64_t)(a->pair_of_row[row + S_AHEAD] / K) * d, d);
        const float *restrict ys = a->ys + row * d;
        float *restrict dys = a->dys + row * d;
        const float gt = a->gates[p];
        float lane[8] = {0};
        int j = 0;
        for (; j + 8 <= d; j += 8)
            for (int k = 0; k < 8; k++) {
                lane[k] += dym[j + k] * ys[j + k];
                dys[j + k] = gt * dym[j + k];
            }
        float dot = 0.0f;
        for (; j < d; j++) {
            dot += dym[j] * ys[j];
            dys[j] = gt * dym[j];
        }
        for (int k = 0; k < 8; k++)
            dot += lane[k];
        a->dgates[p] = dot;
    }
}

/* gate gradients and gated output gradients of expert rows [r0, r1) */
static void s_gates(const moe_config_t *c, const moe_saved_t *sv, const float *dy,
                    moe_scratch_t *sc, int64_t r0, int64_t r1)
{
    const int d = c->d;
    s_gates_t job = {c->router.K, d, sv->pair_of_row, sv->gates, sv->ys, dy, sc->dys, sc->dgates,
                     r0};
    kpar_for(r1 - r0, 16384 / (d > 0 ? d : 1) + 1, 0, s_gates_rows, &job);
}

/* the shared experts' backward: du = their input gradient (or 0) */
static void s_shared_backward(const moe_config_t *c, const moe_weights_t *w, const float *u,
                              const moe_saved_t *sv, const float *dy, moe_scratch_t *sc,
                              float *du, const moe_weights_t *g)
{
    const int d = c->d, M = sv->M;
    if (c->fs > 0)
        ffn_backward(c->prec, u, M, d, c->fs, w->shared_gu, w->shared_d, sv->sh_gu, sv->sh_a, dy,
                     sc->sh_dgu, sc->sh_da, du, 0.0f, g->shared_gu, g->shared_d);
    else
        memset(du, 0, sizeof(float) * (size_t)M * d);
}

void moe_backward_gates(const moe_config_t *c, const moe_weights_t *w, const float *u,
                        const moe_saved_t *sv, const float *dy, moe_scratch_t *sc, float *du,
                        const moe_weights_t *g)
{
    s_shared_backward(c, w, u, sv, dy, sc, du, g);
    s_gates(c, sv, dy, sc, 0, (int64_t)sv->M * c->router.K);
}

void moe_experts_backward(const moe_config_t *c, const moe_weights_t *w, int e0, int ne,
                          const int64_t *off, const float *xs, const float *gu, const float *a,
                          const float *dys, float *dgu, float *da, float *dxs,
                          const moe_weights_t *g)
{
    const int d = c->d, fe = c->fe;
    for (int k = 0; k < ne; k++) {
        const int64_t r0 = off[k], rows = off[k + 1] - off[k];
        ffn_backward(c->prec, xs + r0 * d, (int)rows, d, fe, w->expert_gu[e0 + k],
                     w->expert_d[e0 + k], gu + r0 * 2 * fe, a + r0 * fe, dys + r0 * d, dgu, da,
                     dxs + r0 * d, 0.0f, g->expert_gu[e0 + k], g->expert_d[e0 + k]);
    }
}

void moe_backward_finish(const moe_config_t *c, const moe_weights_t *w, const float *u,
                         const moe_saved_t *sv, moe_scratch_t *sc, float *du,
                         const moe_weights_t *g)
{
    const int N = c->router.N, K = c->router.K, d = c->d, M = sv->M;
    s_scatter_t job = {K, d, sv->row_of_pair, NULL, sc->dxs, du};
    kpar_for(M, 16384 / (K * d > 0 ? K * d : 1) + 1, 0, s_scatter_tokens, &job);
    /* router: through the gates and the sigmoid to the logits, then to Wr and u */
    router_gates_backward(&c->router, sv->s, sv->idx, sc->dgates, M, sc->dlogits);
    kgemm(KGEMM_FP32, 1, 0, N, d, M, 1.0f, sc->dlogits, N, u, d, 1.0f, g->router, d);
    kgemm(KGEMM_FP32, 0, 0, M, d, N, 1.0f, sc->dlogits, N, w->router, d, 1.0f, du, d);
}

/* moe_backward_gates, moe_experts_backward, moe_backward_finish, but each expert's gated dy
 * rows made just before its GEMMs, which then read them from cache: the same values (each row
 * is its own). */
void moe_backward(const moe_config_t *c, const moe_weights_t *w, const float *u,
                  const moe_saved_t *sv, const float *dy, moe_scratch_t *sc, float *du,
                  const moe_weights_t *g)
{
    s_shared_backward(c, w, u, sv, dy, sc, du, g);
    for (int e = 0; e < c->router.N; e++) {
        s_gates(c, sv, dy, sc, sv->offsets[e], sv->offsets[e + 1]);
        moe_experts_backward(c, w, e, 1, sv->offsets + e, sv->xs, sv->gu, sv->a, sc->dys,
                             sc->dgu, sc->da, sc->dxs, g);
    }
    moe_backward_finish(c, w, u, sv, sc, du, g);
}
