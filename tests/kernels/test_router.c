/* test_router: sigmoid, selection against hand-worked cases (the oracle's selfcheck rows: ties
 * to the lower index for experts and groups, ineligible groups never selected) and against a
 * naive rank-by-(−value, index) selection on random rows (K = 1, 2, 3, n_group > 1), gates
 * against the formula, and the gate backward against finite differences with the selection
 * checked unchanged at every x ± h. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kt_util.h"
#include "router.h"

static uint64_t s_seed;

static void test_router_sigmoid(void **state)
{
    (void)state;
    float x[5] = {0.0f, 1.0f, -3.0f, 30.0f, -100.0f};
    router_sigmoid(x, 5);
    assert_true(x[0] == 0.5f);
    assert_true(fabs(x[1] - 1 / (1 + exp(-1.0))) < 6e-8);
    assert_true(fabs(x[2] - 1 / (1 + exp(3.0))) < 1e-8);
    assert_true(x[3] == 1.0f && x[4] >= 0.0f && x[4] < 1e-40);
}

/* Selection by definition: groups ranked by (−top-2 sum, g), experts by (−(s+b), i). */
static void s_naive_select(const router_config_t *c, const float *s, const float *bias,
                           int32_t *idx)
{
    int N = c->N, G = c->n_group, per = N / G, elig[256], ord[256];
    float sb[256], gs[256];
    for (int i = 0; i < N; i++)
        sb[i] = s[i] + bias[i], elig[i] = 1;
    if (G > 1) {
        for (int g = 0; g < G; g++) {
            float a = -INFINITY, b = -INFINITY;
            for (int i = g * per; i < (g + 1) * per; i++) {
                if (sb[i] > a)
                    b = a, a = sb[i];
                else if (sb[i] > b)
                    b = sb[i];
            }
            gs[g] = a + b;
        }
        for (int g = 0; g < G; g++) {
            int rank = 0; /* groups strictly better, or equal with a lower index */
            for (int h = 0; h < G; h++)
                rank += gs[h] > gs[g] || (gs[h] == gs[g] && h < g);
            for (int i = g * per; i < (g + 1) * per; i++)
                elig[i] = rank < c->topk_group;
        }
    }
    int n = 0;
    for (int i = 0; i < N; i++)
        if (elig[i])
            ord[n++] = i;
    for (int a = 1; a < n; a++) /* stable insertion sort, descending */
        for (int b = a; b > 0 && sb[ord[b]] > sb[ord[b - 1]]; b--) {
            int t = ord[b];
            ord[b] = ord[b - 1], ord[b - 1] = t;
        }
    for (int k = 0; k < c->K; k++)
        idx[k] = ord[k];
}

typedef struct {
    router_config_t c;
    int rows;
    float v[3][8];
    int32_t want[3][3];
} sel_case_t;

static void test_router_select_hand_cases(void **state)
{
    (void)state;
    const sel_case_t cases[] = {
        {{4, 2, 1, 1, 1.0f},
         3,
         {{0.5f, 0.5f, 0.5f, 0.5f},
          {0.125f, 0.375f, 0.375f, 0.375f},
          {0.25f, 0.125f, 0.25f, 0.25f}},
         {{0, 1}, {1, 2}, {0, 2}}},
        /* second row: group scores all 0.375, groups 0 and 1 kept */
        {{8, 3, 4, 2, 1.0f},
         3,
         {{0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f},
          {0.125f, 0.25f, 0.375f, 0.0f, 0.25f, 0.125f, 0.375f, 0.0f},
          {0.0f, 0.0f, 0.875f, 0.875f, 0.375f, 0.5f, 0.875f, 0.875f}},
         {{0, 1, 2}, {2, 1, 0}, {2, 3, 6}}},
        /* second row: 3-way group tie -> group 0, although experts 2 and 4 score higher */
        {{6, 2, 3, 1, 1.0f},
         3,
         {{-0.25f, -0.25f, 0.0f, 0.0f, -0.125f, -0.375f},
          {-0.0625f, -0.0625f, 0.25f, -0.375f, 0.0f, -0.125f},
          {0.125f, 0.0f, 0.0625f, 0.0f, -0.25f, -0.25f}},
         {{2, 3}, {0, 1}, {0, 1}}},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const sel_case_t *k = &cases[ci];
        int N = k->c.N, K = k->c.K;
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            /* split each value into s + b exactly (dyadic), so the bias takes part */
            float s[3 * 8], b[8];
            for (int i = 0; i < N; i++)
                b[i] = with_bias ? 0.0625f * (float)(i % 3) - 0.0625f : 0.0f;
            for (int m = 0; m < k->rows; m++)
                for (int i = 0; i < N; i++)
                    s[m * N + i] = k->v[m][i] - b[i];
            int32_t idx[3 * 3], nv[3];
            router_select(&k->c, s, b, k->rows, idx);
            for (int m = 0; m < k->rows; m++) {
                s_naive_select(&k->c, s + m * N, b, nv);
                for (int j = 0; j < K; j++) {
                    if (idx[m * K + j] != k->want[m][j] || nv[j] != k->want[m][j]) {
                        printf("case %zu row %d slot %d: got %d naive %d want %d\n", ci, m, j,
                               idx[m * K + j], nv[j], k->want[m][j]);
                        fail();
                    }
                }
            }
        }
    }
}

static void test_router_select_random(void **state)
{
    (void)state;
    kt_rng_t r = {s_seed};
    const router_config_t cfgs[] = {
        {8, 1, 1, 1, 1.0f},  {8, 2, 1, 1, 1.0f},  {8, 3, 1, 1, 2.5f}, {8, 3, 4, 2, 1.0f},
        {12, 2, 3, 1, 1.0f}, {16, 4, 4, 3, 1.0f}, {6, 6, 1, 1, 1.0f}, {8, 4, 2, 1, 1.0f},
    };
    enum { M = 200 };
    for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++) {
        const router_config_t *c = &cfgs[ci];
        float *s = malloc((size_t)M * c->N * 4), b[16];
        int32_t *idx = malloc((size_t)M * c->K * 4), nv[16];
        kt_fill(&r, s, (size_t)M * c->N, 0, 1);
        /* every fourth row quantised to 1/8 so that exact ties happen often */
        for (int m = 0; m < M; m += 4)
            for (int i = 0; i < c->N; i++)
                s[m * c->N + i] = floorf(s[m * c->N + i] * 8) / 8;
        kt_fill(&r, b, (size_t)c->N, -0.1, 0.1);
        if (ci % 2)
            memset(b, 0, sizeof b);
        router_select(c, s, b, M, idx);
        for (int m = 0; m < M; m++) {
            s_naive_select(c, s + (size_t)m * c->N, b, nv);
            for (int k = 0; k < c->K; k++)
                if (idx[m * c->K + k] != nv[k]) {
                    printf("cfg %zu (N %d K %d G %d TG %d) row %d slot %d: got %d want %d\n", ci,
                           c->N, c->K, c->n_group, c->topk_group, m, k, idx[m * c->K + k], nv[k]);
                    fail();
                }
        }
        free(s), free(idx);
    }
}

typedef struct {
    router_config_t c;
    int M;
    float *logits, *s, *bias, *gates, *w;
    int32_t *idx0, *idx;
    int flipped;
} gate_case_t;

static double s_gate_loss(void *ctx)
{
    gate_case_t *g = ctx;
    size_t n = (size_t)g->M * g->c.N;
    memcpy(g->s, g->logits, n * 4);
    router_sigmoid(g->s, (int64_t)n);
    router_select(&g->c, g->s, g->bias, g->M, g->idx);
    if (!kt_same_selection(g->idx, g->idx0, g->M, g->c.K))
        g->flipped = 1;
    router_gates_forward(&g->c, g->s, g->idx0, g->M, g->gates);
    return kt_project(g->w, g->gates, (size_t)g->M * g->c.K);
}

static void s_gate_case(router_config_t c, uint64_t seed)
{
    kt_rng_t r = {seed};
    enum { M = 6 };
    size_t n = (size_t)M * c.N, nk = (size_t)M * c.K;
    gate_case_t g = {c,
                     M,
                     malloc(n * 4),
                     malloc(n * 4),
                     malloc((size_t)c.N * 4),
                     malloc(nk * 4),
                     malloc(nk * 4),
                     malloc(nk * 4),
                     malloc(nk * 4),
                     0};
    /* logits on a grid 0.25 apart plus small noise, so that after the sigmoid every pair of
     * s + b is far apart compared to an FD step; redrawn until the group scores are too */
    double margin = 0;
    int tries = 0;
    do {
        for (int m = 0; m < M; m++) {
            for (int i = 0; i < c.N; i++) /* a random permutation of grid points */
                g.logits[m * c.N + i] = (float)(0.25 * (i - c.N / 2));
            for (int i = c.N - 1; i > 0; i--) {
                int j = kt_randint(&r, i + 1);
                float t = g.logits[m * c.N + i];
                g.logits[m * c.N + i] = g.logits[m * c.N + j], g.logits[m * c.N + j] = t;
            }
            for (int i = 0; i < c.N; i++)
                g.logits[m * c.N + i] += (float)kt_uniform(&r, -0.02, 0.02);
        }
        margin = INFINITY;
        for (int m = 0; m < M; m++) {
            double sb[64];
            int sel[64];
            for (int i = 0; i < c.N; i++)
                sb[i] = 1 / (1 + exp(-(double)g.logits[m * c.N + i]));
            margin = fmin(margin, kt_route_ref(c.N, c.K, c.n_group, c.topk_group, sb, sel));
        }
    } while (margin < 0.01 && ++tries < 1000);
    assert_true(margin >= 0.01);
    memset(g.bias, 0, (size_t)c.N * 4);
    kt_fill(&r, g.w, nk, -1, 1);
    printf("gates case N=%d K=%d n_group=%d topk_group=%d rsf=%g\n", c.N, c.K, c.n_group,
           c.topk_group, (double)c.rsf);

    memcpy(g.s, g.logits, n * 4);
    router_sigmoid(g.s, (int64_t)n);
    router_select(&c, g.s, g.bias, M, g.idx0);
    router_gates_forward(&c, g.s, g.idx0, M, g.gates);
    for (int m = 0; m < M; m++) {
        double sum = 0, tot = 0;
        for (int k = 0; k < c.K; k++)
            sum += g.s[m * c.N + g.idx0[m * c.K + k]];
        for (int k = 0; k < c.K; k++) {
            double want = c.rsf * g.s[m * c.N + g.idx0[m * c.K + k]] / sum;
            assert_true(fabs(g.gates[m * c.K + k] - want) <= 1e-6 * (1 + want));
            tot += g.gates[m * c.K + k];
        }
        assert_true(fabs(tot - c.rsf) <= 1e-6 * c.rsf);
    }

    float *dl = malloc(n * 4);
    double *num = malloc(n * 8);
    for (size_t i = 0; i < n; i++)
        dl[i] = 1e6f; /* overwritten, also where the expert is not selected */
    router_gates_backward(&c, g.s, g.idx0, g.w, M, dl);
    kt_fd(g.logits, n, 5e-3f, s_gate_loss, &g, num);
    assert_false(g.flipped);
    assert_int_equal(kt_check_grad("dlogits", num, dl, n, 3e-4, 1e-3), 0);
    for (int m = 0; m < M; m++) /* unselected experts get exactly zero */
        for (int i = 0; i < c.N; i++) {
            int sel = 0;
            for (int k = 0; k < c.K; k++)
                sel |= g.idx0[m * c.K + k] == i;
            if (!sel)
                assert_true(dl[m * c.N + i] == 0.0f);
        }
    free(dl), free(num);
    free(g.logits), free(g.s), free(g.bias), free(g.gates), free(g.w), free(g.idx0), free(g.idx);
}

static void test_router_gates(void **state)
{
    (void)state;
    s_gate_case((router_config_t){8, 2, 1, 1, 1.0f}, s_seed + 1);
    s_gate_case((router_config_t){8, 1, 1, 1, 1.0f}, s_seed + 2); /* K = 1: gate ≡ rsf */
    s_gate_case((router_config_t){8, 3, 4, 2, 2.5f}, s_seed + 3);
    s_gate_case((router_config_t){6, 3, 1, 1, 1.0f}, s_seed + 4);
}

int main(void)
{
    s_seed = kt_seed("test_router", 20261128);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_router_sigmoid),
        cmocka_unit_test(test_router_select_hand_cases),
        cmocka_unit_test(test_router_select_random),
        cmocka_unit_test(test_router_gates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
