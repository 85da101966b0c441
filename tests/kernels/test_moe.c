/* test_moe: the MoE layer against a naive per-token double-precision loop (sigmoid routing,
 * group-limited top-K, normalised gates, shared experts), the expert counts, and the backward
 * (du, router, every expert, shared experts) against central finite differences with inputs
 * drawn so that no FD step changes the selection (checked at every x ± h). An expert that no
 * token selected keeps an all-zero gradient. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kpar.h"
#include "kt_util.h"
#include "moe.h"

static uint64_t s_seed;

enum { MOE_M = 7 };

typedef struct {
    moe_config_t c;
    moe_weights_t w;
    float *u, *y, *proj;
    moe_saved_t sv;
    int32_t *idx0;
    int64_t counts[64];
    int flipped;
} moe_case_t;

static size_t s_n_gu(const moe_case_t *k)
{
    return (size_t)2 * k->c.fe * k->c.d;
}

static void s_weights_alloc(moe_weights_t *w, const moe_config_t *c)
{
    int N = c->router.N;
    size_t ngu = (size_t)2 * c->fe * c->d, nd = (size_t)c->d * c->fe;
    w->router = calloc((size_t)N * c->d, 4);
    w->bias = calloc((size_t)N, 4);
    w->expert_gu = calloc((size_t)N, sizeof(float *));
    w->expert_d = calloc((size_t)N, sizeof(float *));
    for (int e = 0; e < N; e++)
        w->expert_gu[e] = calloc(ngu, 4), w->expert_d[e] = calloc(nd, 4);
    w->shared_gu = c->fs ? calloc((size_t)2 * c->fs * c->d, 4) : NULL;
    w->shared_d = c->fs ? calloc((size_t)c->d * c->fs, 4) : NULL;
}

static void s_weights_free(moe_weights_t *w, const moe_config_t *c)
{
    for (int e = 0; e < c->router.N; e++)
        free(w->expert_gu[e]), free(w->expert_d[e]);
    free(w->expert_gu), free(w->expert_d), free(w->router), free(w->bias);
    free(w->shared_gu), free(w->shared_d);
}

static double s_loss(void *ctx)
{
    moe_case_t *k = ctx;
    int64_t cnt[64] = {0};
    moe_forward(&k->c, &k->w, k->u, MOE_M, &k->sv, k->y, cnt);
    if (!kt_same_selection(k->sv.idx, k->idx0, MOE_M, k->c.router.K))
        k->flipped = 1;
    return kt_project(k->proj, k->y, (size_t)MOE_M * k->c.d);
}

/* SwiGLU of one token in double: w_gu [2f, d], w_d [d, f]; y += scale · FFN(x). */
static void s_ffn_ref(const float *x, int d, int f, const float *w_gu, const float *w_d,
                      double scale, double *y)
{
    for (int j = 0; j < f; j++) {
        double zg = 0, zu = 0;
        for (int i = 0; i < d; i++) {
            zg += (double)w_gu[j * d + i] * x[i];
            zu += (double)w_gu[(f + j) * d + i] * x[i];
        }
        double act = zg / (1 + exp(-zg)) * zu;
        for (int i = 0; i < d; i++)
            y[i] += scale * act * w_d[i * f + j];
    }
}

/* Reference forward; returns the smallest routing margin over the tokens. */
static double s_ref_forward(const moe_case_t *k, double *ref, int32_t *ref_idx)
{
    const moe_config_t *c = &k->c;
    int N = c->router.N, K = c->router.K, d = c->d;
    double margin = INFINITY;
    for (int m = 0; m < MOE_M; m++) {
        const float *x = k->u + (size_t)m * d;
        double s[64], sb[64];
        int sel[64];
        for (int i = 0; i < N; i++) {
            double z = 0;
            for (int j = 0; j < d; j++)
                z += (double)k->w.router[i * d + j] * x[j];
            s[i] = 1 / (1 + exp(-z));
            sb[i] = s[i] + k->w.bias[i];
        }
        margin = fmin(margin, kt_route_ref(c->router.N, c->router.K, c->router.n_group,
                                           c->router.topk_group, sb, sel));
        double sum = 0;
        for (int j = 0; j < K; j++)
            sum += s[sel[j]], ref_idx[m * K + j] = sel[j];
        double *y = ref + (size_t)m * d;
        for (int i = 0; i < d; i++)
            y[i] = 0;
        for (int j = 0; j < K; j++)
            s_ffn_ref(x, d, c->fe, k->w.expert_gu[sel[j]], k->w.expert_d[sel[j]],
                      c->router.rsf * s[sel[j]] / sum, y);
        if (c->fs)
            s_ffn_ref(x, d, c->fs, k->w.shared_gu, k->w.shared_d, 1.0, y);
    }
    return margin;
}

static void s_fill_weights(kt_rng_t *r, moe_case_t *k, int dead)
{
    const moe_config_t *c = &k->c;
    int N = c->router.N, d = c->d;
    kt_fill(r, k->u, (size_t)MOE_M * d, -1, 1);
    kt_fill(r, k->w.router, (size_t)N * d, -1.5, 1.5);
    for (int e = 0; e < N; e++) {
        kt_fill(r, k->w.expert_gu[e], s_n_gu(k), -0.6, 0.6);
        kt_fill(r, k->w.expert_d[e], (size_t)d * c->fe, -0.6, 0.6);
    }
    if (c->fs) {
        kt_fill(r, k->w.shared_gu, (size_t)2 * c->fs * d, -0.6, 0.6);
        kt_fill(r, k->w.shared_d, (size_t)d * c->fs, -0.6, 0.6);
    }
    kt_fill(r, k->w.bias, (size_t)N, -0.05, 0.05);
    /* optionally the last expert can never be selected: its gradient must stay exactly zero */
    if (dead)
        k->w.bias[N - 1] = -10.0f;
}

static int s_grad_check(const char *what, moe_case_t *k, float *param, const float *grad, size_t n)
{
    double *num = malloc(n * 8);
    kt_fd(param, n, 2e-3f, s_loss, k, num);
    int bad = kt_check_grad(what, num, grad, n, 1e-3, 1e-3);
    free(num);
    return bad;
}

static void s_run_case(int d, int fe, int fs, router_config_t rc, int dead, uint64_t seed)
{
    kt_rng_t r = {seed};
    moe_case_t k = {.c = {d, fe, fs, rc, KGEMM_FP32}};
    int N = rc.N, K = rc.K;
    s_weights_alloc(&k.w, &k.c);
    k.u = malloc((size_t)MOE_M * d * 4), k.y = malloc((size_t)MOE_M * d * 4);
    k.proj = malloc((size_t)MOE_M * d * 4);
    k.idx0 = malloc((size_t)MOE_M * K * 4);
    assert_int_equal(moe_saved_alloc(&k.sv, &k.c, MOE_M), 0);
    double *ref = malloc((size_t)MOE_M * d * 8);
    int32_t *ref_idx = malloc((size_t)MOE_M * K * 4);
    printf("case d=%d fe=%d fs=%d N=%d K=%d n_group=%d topk_group=%d rsf=%g\n", d, fe, fs, N, K,
           rc.n_group, rc.topk_group, (double)rc.rsf);

    /* draw until every routing decision has a clear margin */
    double margin = 0;
    int tries = 0;
    do {
        s_fill_weights(&r, &k, dead);
        margin = s_ref_forward(&k, ref, ref_idx);
        tries++;
    } while (margin < 5e-3 && tries < 1000);
    printf("  routing margin %.3g after %d draws\n", margin, tries);
    assert_true(margin >= 5e-3);

    /* forward against the naive loop; counts accumulate */
    for (int e = 0; e < N; e++)
        k.counts[e] = 100 + e;
    moe_forward(&k.c, &k.w, k.u, MOE_M, &k.sv, k.y, k.counts);
    assert_memory_equal(k.sv.idx, ref_idx, (size_t)MOE_M * K * 4);
    assert_int_equal(kt_check_close("y", k.y, ref, (size_t)MOE_M * d, 1e-5, 1e-5), 0);
    int64_t tally[64] = {0}, total = 0;
    for (int p = 0; p < MOE_M * K; p++)
        tally[ref_idx[p]]++;
    for (int e = 0; e < N; e++) {
        assert_int_equal(k.counts[e], 100 + e + tally[e]);
        total += tally[e];
    }
    assert_int_equal(total, MOE_M * K);
    if (dead)
        assert_int_equal(tally[N - 1], 0);
    memcpy(k.idx0, k.sv.idx, (size_t)MOE_M * K * 4);

    /* backward */
    moe_weights_t g;
    moe_scratch_t sc;
    s_weights_alloc(&g, &k.c);
    assert_int_equal(moe_scratch_alloc(&sc, &k.c, MOE_M), 0);
    kt_fill(&r, k.proj, (size_t)MOE_M * d, -1, 1);
    float *du = malloc((size_t)MOE_M * d * 4);
    for (int i = 0; i < MOE_M * d; i++)
        du[i] = 1e6f; /* overwritten */
    moe_forward(&k.c, &k.w, k.u, MOE_M, &k.sv, k.y, k.counts);
    moe_backward(&k.c, &k.w, k.u, &k.sv, k.proj, &sc, du, &g);

    int bad = 0;
    bad += s_grad_check("du", &k, k.u, du, (size_t)MOE_M * d);
    bad += s_grad_check("d_router", &k, k.w.router, g.router, (size_t)N * d);
    for (int e = 0; e < N; e++) {
        char nm[64];
        snprintf(nm, sizeof nm, "d_expert%d_gu", e);
        bad += s_grad_check(nm, &k, k.w.expert_gu[e], g.expert_gu[e], s_n_gu(&k));
        snprintf(nm, sizeof nm, "d_expert%d_d", e);
        bad += s_grad_check(nm, &k, k.w.expert_d[e], g.expert_d[e], (size_t)d * fe);
    }
    if (fs) {
        bad += s_grad_check("d_shared_gu", &k, k.w.shared_gu, g.shared_gu, (size_t)2 * fs * d);
        bad += s_grad_check("d_shared_d", &k, k.w.shared_d, g.shared_d, (size_t)d * fs);
    }
    assert_false(k.flipped);
    assert_int_equal(bad, 0);
    for (int e = 0; e < N; e++) {
        if (tally[e])
            continue;
        printf("  expert %d selected by no token: gradient must be exactly zero\n", e);
        for (size_t i = 0; i < s_n_gu(&k); i++)
            assert_true(g.expert_gu[e][i] == 0.0f);
        for (size_t i = 0; i < (size_t)d * fe; i++)
            assert_true(g.expert_d[e][i] == 0.0f);
    }

    /* a second backward accumulates into the weight gradients (and overwrites du) */
    float *r0 = malloc((size_t)N * d * 4), *e0 = malloc(s_n_gu(&k) * 4);
    float *du0 = malloc((size_t)MOE_M * d * 4);
    memcpy(r0, g.router, (size_t)N * d * 4), memcpy(e0, g.expert_gu[0], s_n_gu(&k) * 4);
    memcpy(du0, du, (size_t)MOE_M * d * 4);
    moe_forward(&k.c, &k.w, k.u, MOE_M, &k.sv, k.y, k.counts);
    moe_backward(&k.c, &k.w, k.u, &k.sv, k.proj, &sc, du, &g);
    for (int i = 0; i < N * d; i++)
        assert_true(fabs(g.router[i] - 2 * r0[i]) <= 1e-5 * (1 + fabs(r0[i])));
    for (size_t i = 0; i < s_n_gu(&k); i++)
        assert_true(fabs(g.expert_gu[0][i] - 2 * e0[i]) <= 1e-5 * (1 + fabs(e0[i])));
    for (int i = 0; i < MOE_M * d; i++)
        assert_true(fabs(du[i] - du0[i]) <= 1e-6 * (1 + fabs(du0[i])));

    free(r0), free(e0), free(du0), free(du);
    moe_scratch_free(&sc);
    s_weights_free(&g, &k.c);
    moe_saved_free(&k.sv);
    s_weights_free(&k.w, &k.c);
    free(k.u), free(k.y), free(k.proj), free(k.idx0), free(ref), free(ref_idx);
}

static void test_moe_grouped_shared(void **state)
{
    (void)state;
    /* the oracle's selfcheck MoE: 4 experts in 2 groups, 1 group kept, K 2, rsf 2.5 */
    s_run_case(8, 4, 8, (router_config_t){4, 2, 2, 1, 2.5f}, 0, s_seed);
}

static void test_moe_k3_no_shared(void **state)
{
    (void)state;
    s_run_case(8, 4, 0, (router_config_t){6, 3, 1, 1, 1.0f}, 1, s_seed + 1);
}

static void test_moe_k3_four_groups(void **state)
{
    (void)state;
    s_run_case(6, 5, 10, (router_config_t){8, 3, 4, 2, 1.0f}, 1, s_seed + 2);
}

static void test_moe_k1(void **state)
{
    (void)state;
    s_run_case(5, 3, 3, (router_config_t){4, 1, 1, 1, 1.0f}, 0, s_seed + 3);
}

/* One layer's forward and backward outputs: y, du and every gradient. */
typedef struct {
    moe_weights_t g;
    float *y, *du;
    int64_t counts[64];
} moe_run_t;

static void s_run_alloc(moe_run_t *o, const moe_config_t *c, int M)
{
    s_weights_alloc(&o->g, c);
    o->y = malloc((size_t)M * c->d * 4), o->du = malloc((size_t)M * c->d * 4);
    memset(o->counts, 0, sizeof o->counts);
}

static void s_run_equal(const moe_run_t *a, const moe_run_t *b, const moe_config_t *c, int M)
{
    const int N = c->router.N, d = c->d;
    assert_memory_equal(a->y, b->y, (size_t)M * d * 4);
    assert_memory_equal(a->du, b->du, (size_t)M * d * 4);
    assert_memory_equal(a->g.router, b->g.router, (size_t)N * d * 4);
    for (int e = 0; e < N; e++) {
        assert_memory_equal(a->g.expert_gu[e], b->g.expert_gu[e], (size_t)2 * c->fe * d * 4);
        assert_memory_equal(a->g.expert_d[e], b->g.expert_d[e], (size_t)d * c->fe * 4);
    }
    if (c->fs) {
        assert_memory_equal(a->g.shared_gu, b->g.shared_gu, (size_t)2 * c->fs * d * 4);
        assert_memory_equal(a->g.shared_d, b->g.shared_d, (size_t)d * c->fs * 4);
    }
    assert_memory_equal(a->counts, b->counts, (size_t)N * 8);
}

static void s_run_free(moe_run_t *o, const moe_config_t *c)
{
    s_weights_free(&o->g, c);
    free(o->y), free(o->du);
}

/* moe_forward and moe_backward (which gather and gate each expert's rows just before its GEMMs)
 * against their pieces run one after the other as expert parallelism runs them (moe_route,
 * moe_experts_forward over all experts, moe_combine; moe_backward_gates, moe_experts_backward,
 * moe_backward_finish): the same bits, with the kernels' loops on 1 and on 2 threads, twice
 * (the weight gradients accumulate). 1024 tokens: each expert's rows span several kpar ranges. */
static void s_pieces_case(int fs)
{
    enum { M = 1024 };
    kt_rng_t r = {s_seed + 10 + (uint64_t)fs};
    const moe_config_t c = {64, 24, fs, (router_config_t){4, 2, 1, 1, 1.0f}, KGEMM_FP32};
    const int N = c.router.N, d = c.d;
    moe_weights_t w;
    s_weights_alloc(&w, &c);
    kt_fill(&r, w.router, (size_t)N * d, -1.5, 1.5);
    kt_fill(&r, w.bias, (size_t)N, -0.05, 0.05);
    for (int e = 0; e < N; e++) {
        kt_fill(&r, w.expert_gu[e], (size_t)2 * c.fe * d, -0.6, 0.6);
        kt_fill(&r, w.expert_d[e], (size_t)d * c.fe, -0.6, 0.6);
    }
    if (fs) {
        kt_fill(&r, w.shared_gu, (size_t)2 * fs * d, -0.6, 0.6);
        kt_fill(&r, w.shared_d, (size_t)d * fs, -0.6, 0.6);
    }
    float *u = malloc((size_t)M * d * 4), *dy = malloc((size_t)M * d * 4);
    kt_fill(&r, u, (size_t)M * d, -1, 1);
    kt_fill(&r, dy, (size_t)M * d, -1, 1);
    moe_saved_t sv;
    moe_scratch_t sc;
    assert_int_equal(moe_saved_alloc(&sv, &c, M), 0);
    assert_int_equal(moe_scratch_alloc(&sc, &c, M), 0);
    for (int threads = 1; threads <= 2; threads++) {
        kpar_set_threads(threads);
        moe_run_t whole, pieces;
        s_run_alloc(&whole, &c, M);
        s_run_alloc(&pieces, &c, M);
        for (int rep = 0; rep < 2; rep++) {
            moe_forward(&c, &w, u, M, &sv, whole.y, whole.counts);
            moe_backward(&c, &w, u, &sv, dy, &sc, whole.du, &whole.g);
            moe_route(&c, &w, u, M, &sv, pieces.counts);
            moe_experts_forward(&c, &w, 0, N, sv.offsets, sv.xs, sv.gu, sv.a, sv.ys);
            moe_combine(&c, &w, u, &sv, pieces.y);
            moe_backward_gates(&c, &w, u, &sv, dy, &sc, pieces.du, &pieces.g);
            moe_experts_backward(&c, &w, 0, N, sv.offsets, sv.xs, sv.gu, sv.a, sc.dys, sc.dgu,
                                 sc.da, sc.dxs, &pieces.g);
            moe_backward_finish(&c, &w, u, &sv, &sc, pieces.du, &pieces.g);
            s_run_equal(&whole, &pieces, &c, M);
        }
        for (int e = 0; e < N; e++) /* every expert had rows: the comparison covered them */
            assert_true(whole.counts[e] > 0);
        s_run_free(&whole, &c);
        s_run_free(&pieces, &c);
    }
    kpar_set_threads(0);
    moe_scratch_free(&sc);
    moe_saved_free(&sv);
    s_weights_free(&w, &c);
    free(u), free(dy);
}

static void test_moe_pieces_bitwise(void **state)
{
    (void)state;
    s_pieces_case(24);
    s_pieces_case(0);
}

int main(void)
{
    s_seed = kt_seed("test_moe", 20261128);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moe_grouped_shared),
        cmocka_unit_test(test_moe_k3_no_shared),
        cmocka_unit_test(test_moe_k3_four_groups),
        cmocka_unit_test(test_moe_k1),
        cmocka_unit_test(test_moe_pieces_bitwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
