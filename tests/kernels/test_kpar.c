/* test_kpar: the kernels' parallel loop (kernels/kpar.c). Each index runs exactly once, in
 * contiguous ranges that do not depend on timing; helpers get their own scratch; a nested call
 * and a call from a second thread while a loop runs complete (alone); and the kernels threaded
 * with it (attention's per-head core, SwiGLU) give the same bits at 1, 2 and 3 loop threads, the
 * GEMMs staying on one OpenBLAS thread; so do RoPE (inside attention),
 * AdamW and RMSNorm's forward. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cblas.h>
#include <pthread.h>

#include "attention.h"
#include "kpar.h"
#include "kt_util.h"
#include "optim.h"
#include "rmsnorm.h"
#include "rope.h"
#include "swiglu.h"

static uint64_t s_seed;

typedef struct {
    int *hits;      /* per index */
    int64_t *owner; /* per index: lo of the range that ran it */
    int scratch_ok; /* 0 once a helper's scratch was missing or shared */
    size_t scratch_bytes;
    int nested;     /* run a kpar_for inside each range */
    int *nested_hits;
} s_count_t;

static void s_nested(void *arg, int64_t lo, int64_t hi, void *scratch)
{
    (void)scratch;
    int *hits = arg;
    for (int64_t i = lo; i < hi; i++)
        __atomic_add_fetch(&hits[i], 1, __ATOMIC_RELAXED);
}

static void s_count(void *arg, int64_t lo, int64_t hi, void *scratch)
{
    s_count_t *c = arg;
    if (scratch) {
        /* a helper's scratch is its own: fill it and find it unchanged after the range */
        unsigned char *b = scratch;
        memset(b, (int)(lo & 0xff), c->scratch_bytes);
        for (int64_t i = lo; i < hi; i++)
            c->hits[i]++, c->owner[i] = lo;
        for (size_t k = 0; k < c->scratch_bytes; k++)
            if (b[k] != (unsigned char)(lo & 0xff))
                __atomic_store_n(&c->scratch_ok, 0, __ATOMIC_RELAXED);
    } else {
        for (int64_t i = lo; i < hi; i++)
            c->hits[i]++, c->owner[i] = lo;
    }
    if (c->nested)
        kpar_for(10, 1, 0, s_nested, c->nested_hits);
}

/* Every index once; ranges are [n·w/T, n·(w+1)/T) for the T in use, whatever the timing. */
static void test_ranges(void **state)
{
    (void)state;
    const int64_t sizes[] = {1, 2, 3, 7, 64, 1000, 4097};
    for (int threads = 1; threads <= 4; threads++) {
        kpar_set_threads(threads);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            const int64_t n = sizes[s];
            s_count_t c = {.hits = calloc((size_t)n, sizeof(int)),
                           .owner = calloc((size_t)n, sizeof(int64_t)),
                           .scratch_ok = 1,
                           .scratch_bytes = 4096};
            assert_non_null(c.hits);
            kpar_for(n, 1, c.scratch_bytes, s_count, &c);
            const int workers = threads < n ? threads : (int)n;
            for (int64_t i = 0; i < n; i++) {
                assert_int_equal(c.hits[i], 1);
                int64_t lo = 0;
                for (int w = 0; w < workers; w++)
                    if (n * w / workers <= i)
                        lo = n * w / workers;
                assert_int_equal(c.owner[i], lo);
            }
            assert_int_equal(c.scratch_ok, 1);
            free(c.hits);
            free(c.owner);
        }
    }
    kpar_set_threads(0);
}

/* grain: no range smaller than it (a 3-index loop with grain 2 runs on one thread) */
static void test_grain(void **state)
{
    (void)state;
    kpar_set_threads(4);
    int hits[8] = {0};
    int64_t owner[8] = {0};
    s_count_t c = {.hits = hits, .owner = owner, .scratch_ok = 1};
    kpar_for(3, 2, 0, s_count, &c);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(hits[i], 1);
        assert_int_equal(owner[i], 0);
    }
    kpar_set_threads(0);
}

/* A kpar_for inside a range runs alone on that thread and completes. */
static void test_nested(void **state)
{
    (void)state;
    kpar_set_threads(2);
    int hits[64] = {0}, nested_hits[10] = {0};
    int64_t owner[64];
    s_count_t c = {.hits = hits, .owner = owner, .scratch_ok = 1, .nested = 1,
                   .nested_hits = nested_hits};
    kpar_for(64, 1, 0, s_count, &c);
    for (int i = 0; i < 64; i++)
        assert_int_equal(hits[i], 1);
    for (int i = 0; i < 10; i++) /* one nested loop of 10 per range, two ranges */
        assert_int_equal(nested_hits[i], 2);
    kpar_set_threads(0);
}

/* Two threads calling kpar_for at once: both complete, each index once. */
static void *s_caller(void *arg)
{
    s_count_t *c = arg;
    for (int r = 0; r < 200; r++)
        kpar_for(1000, 1, 0, s_count, c);
    return NULL;
}

static void test_two_callers(void **state)
{
    (void)state;
    kpar_set_threads(2);
    s_count_t c[2];
    pthread_t th[2];
    for (int k = 0; k < 2; k++) {
        c[k] = (s_count_t){.hits = calloc(1000, sizeof(int)),
                           .owner = calloc(1000, sizeof(int64_t)), .scratch_ok = 1};
        assert_int_equal(pthread_create(&th[k], NULL, s_caller, &c[k]), 0);
    }
    for (int k = 0; k < 2; k++) {
        pthread_join(th[k], NULL);
        for (int i = 0; i < 1000; i++)
            assert_int_equal(c[k].hits[i], 200);
        free(c[k].hits);
        free(c[k].owner);
    }
    kpar_set_threads(0);
}

/* attention forward + backward and SwiGLU at `threads` loop threads into out (concatenated) */
typedef struct {
    attention_shape_t s;
    float *a, *w_qkv, *w_o, *cos_t, *sin_t, *dout, *gu, *da;
    size_t n_out;
} s_kcase_t;

static float *s_run_kernels(const s_kcase_t *k, int threads)
{
    kpar_set_threads(threads);
    const int B = k->s.B, T = k->s.T, d = k->s.d, H = k->s.H, M = B * T, f = 160;
    float *qkv = calloc((size_t)M * 3 * d, sizeof(float));
    float *p = calloc((size_t)B * H * T * T, sizeof(float));
    float *o = calloc((size_t)M * d, sizeof(float)), *out = calloc((size_t)M * d, sizeof(float));
    float *dobuf = calloc((size_t)M * d, sizeof(float));
    float *dqkv = calloc((size_t)M * 3 * d, sizeof(float));
    float *dp = calloc((size_t)T * T, sizeof(float)), *da = calloc((size_t)M * d, sizeof(float));
    float *res = calloc(k->n_out, sizeof(float));
    assert_non_null(res);
    attention_forward(&k->s, k->a, k->w_qkv, k->w_o, k->cos_t, k->sin_t, qkv, p, o, out);
    float *dwq = res, *dwo = dwq + (size_t)3 * d * d;
    attention_backward(&k->s, k->a, k->w_qkv, k->w_o, k->cos_t, k->sin_t, qkv, p, o, k->dout,
                       dobuf, dqkv, dp, da, dwq, dwo);
    float *rest = dwo + (size_t)d * d;
    memcpy(rest, out, sizeof(float) * (size_t)M * d);
    rest += (size_t)M * d;
    memcpy(rest, da, sizeof(float) * (size_t)M * d);
    rest += (size_t)M * d;
    memcpy(rest, p, sizeof(float) * (size_t)B * H * T * T);
    rest += (size_t)B * H * T * T;
    swiglu_forward(k->gu, M, f, rest);
    rest += (size_t)M * f;
    swiglu_backward(k->gu, k->da, M, f, rest);
    rest += (size_t)M * 2 * f;
    /* AdamW over a vector long enough for 3 ranges: parameters and both moments */
    const int64_t np = 3 * 32768 + 5;
    float *pm = rest, *mm = pm + np, *vm = mm + np;
    for (int64_t i = 0; i < np; i++) {
        pm[i] = k->gu[i % ((int64_t)M * 2 * f)];
        mm[i] = 0.1f * k->da[i % ((int64_t)M * f)];
        vm[i] = 0.01f * fabsf(k->gu[(i * 7) % ((int64_t)M * 2 * f)]);
    }
    float *gm = malloc(sizeof(float) * (size_t)np);
    assert_non_null(gm);
    for (int64_t i = 0; i < np; i++)
        gm[i] = 0.5f * k->da[(i * 3) % ((int64_t)M * f)];
    const adamw_hparams_t hp = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    adamw_update(pm, gm, mm, vm, np, 3e-3f, 1, 3, &hp);
    free(gm);
    rest = vm + np;
    /* RMSNorm with its residual add over [M, 2f] rows: the sum, the output and 1/rms */
    const size_t nx = (size_t)M * 2 * f;
    float *xr = rest, *yr = xr + nx, *rs = yr + nx, *resid = malloc(sizeof(float) * nx);
    assert_non_null(resid);
    for (size_t i = 0; i < nx; i++) {
        xr[i] = k->gu[i];
        resid[i] = k->gu[nx - 1 - i];
    }
    rmsnorm_residual_forward(xr, resid, k->da, M, 2 * f, 1e-5f, yr, rs);
    free(resid);
    free(qkv), free(p), free(o), free(out), free(dobuf), free(dqkv), free(dp), free(da);
    kpar_set_threads(0);
    return res;
}

static void test_kernels_any_threads(void **state)
{
    (void)state;
    kt_rng_t r = {s_seed};
    openblas_set_num_threads(1);
    s_kcase_t k = {.s = {.B = 5, .T = 70, .d = 32, .H = 4}};
    const int B = k.s.B, T = k.s.T, d = k.s.d, M = B * T, f = 160, dh = d / k.s.H;
    k.a = malloc(sizeof(float) * (size_t)M * d);
    k.w_qkv = malloc(sizeof(float) * (size_t)3 * d * d);
    k.w_o = malloc(sizeof(float) * (size_t)d * d);
    k.cos_t = malloc(sizeof(float) * (size_t)T * dh);
    k.sin_t = malloc(sizeof(float) * (size_t)T * dh);
    k.dout = malloc(sizeof(float) * (size_t)M * d);
    k.gu = malloc(sizeof(float) * (size_t)M * 2 * f);
    k.da = malloc(sizeof(float) * (size_t)M * f);
    kt_fill(&r, k.a, (size_t)M * d, -1, 1);
    kt_fill(&r, k.w_qkv, (size_t)3 * d * d, -0.3, 0.3);
    kt_fill(&r, k.w_o, (size_t)d * d, -0.3, 0.3);
    kt_fill(&r, k.dout, (size_t)M * d, -1, 1);
    kt_fill(&r, k.gu, (size_t)M * 2 * f, -4, 4);
    kt_fill(&r, k.da, (size_t)M * f, -1, 1);
    rope_tables(T, dh, 10000.0, k.cos_t, k.sin_t);
    k.n_out = (size_t)4 * d * d + 2 * (size_t)M * d + (size_t)B * k.s.H * T * T + 3 * (size_t)M * f +
              3 * (size_t)(3 * 32768 + 5) + 2 * (size_t)M * 2 * f + (size_t)M;
    float *one = s_run_kernels(&k, 1);
    /* repeated: a range sharing another's buffers shows only when the two overlap in time */
    for (int run = 0; run < 6; run++) {
        const int threads = 2 + run % 2;
        float *many = s_run_kernels(&k, threads);
        size_t first = k.n_out;
        for (size_t i = 0; i < k.n_out && first == k.n_out; i++)
            if (memcmp(&one[i], &many[i], sizeof(float)) != 0)
                first = i;
        if (first < k.n_out)
            fail_msg("%d threads: output %zu of %zu differs: %.9g, 1 thread %.9g", threads, first,
                     k.n_out, many[first], one[first]);
        free(many);
    }
    /* and the outputs are not trivially equal: something was computed */
    double mag = 0;
    for (size_t i = 0; i < k.n_out; i++)
        mag += fabs(one[i]);
    assert_true(mag > 1.0);
    free(one);
    free(k.a), free(k.w_qkv), free(k.w_o), free(k.cos_t), free(k.sin_t), free(k.dout);
    free(k.gu), free(k.da);
}

int main(void)
{
    s_seed = kt_seed("test_kpar", 23);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_grain),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_two_callers),
        cmocka_unit_test(test_kernels_any_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
