/* test_kgemm: the CPU GEMM entry point.
 *   - fp32 is cblas_sgemm bit for bit (every transpose pair, alpha, beta, padded strides);
 *   - fp32 GEMMs large enough to be cut (kgemm_fp32_blocks) give the same bits at 1, 2 and 3
 *     threads, those of one cblas_sgemm per block, and the cut covers C exactly once;
 *   - kgemm_round_bf16 rounds as common/safetensors' st_f32_to_bf16 (nearest even, NaN, ±inf);
 *   - bf16 (skipped, 77, where kgemm_check refuses it: no AVX512_BF16/AMX or no oneDNN):
 *     (a) within fp32 accumulation rounding of the exact product of the bf16-rounded inputs:
 *         |C - C_exact(bf16(A), bf16(B))| ≤ (K + 2)·2^-24·Σ_k|a_ik·b_kj| + 2^-24·|beta·c|,
 *         which also proves the inputs really were rounded to bf16 (fp32 inputs miss it);
 *     (b) within the stated bf16 tolerance of the fp32 product:
 *         |C - C_exact(A, B)| ≤ 2^-7·Σ_k|a_ik·b_kj| (each product of two inputs rounded to 8
 *         significant bits is off by at most 2^-8 relative; 2^-7 leaves room for (a));
 *     over every transpose pair, alpha ≠ 1, beta 0 and 1, padded strides, a row count that
 *     changes from call to call (one cached primitive serves all), and from two threads at once;
 *     shapes cut into blocks (one operand rounded once for all blocks) within the same bounds
 *     and with the same bits at 1, 2 and 3 threads.
 */
/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kgemm.h"
#include "kpar.h"
#include "kt_util.h"
#include "safetensors.h"

typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float alpha, beta;
    float *A, *B, *C0; /* inputs and C's initial value */
} s_case_t;

static float s_bf16(float x)
{
    return st_bf16_to_f32(st_f32_to_bf16(x));
}

static s_case_t s_case_new(kt_rng_t *r, int ta, int tb, int M, int N, int K, int pad, float alpha,
                           float beta)
{
    s_case_t c = {ta, tb, M, N, K, 0, 0, N + pad, alpha, beta, NULL, NULL, NULL};
    const int a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
    c.lda = a_cols + pad;
    c.ldb = b_cols + pad;
    c.A = malloc(sizeof(float) * ((size_t)a_rows * c.lda + 1));
    c.B = malloc(sizeof(float) * ((size_t)b_rows * c.ldb + 1));
    c.C0 = malloc(sizeof(float) * ((size_t)M * c.ldc + 1));
    for (size_t i = 0; i < (size_t)a_rows * c.lda; i++)
        c.A[i] = (float)kt_uniform(r, -1.0, 1.0);
    for (size_t i = 0; i < (size_t)b_rows * c.ldb; i++)
        c.B[i] = (float)kt_uniform(r, -1.0, 1.0);
    for (size_t i = 0; i < (size_t)M * c.ldc; i++)
        c.C0[i] = (float)kt_uniform(r, -1.0, 1.0);
    return c;
}

static void s_case_free(s_case_t *c)
{
    free(c->A);
    free(c->B);
    free(c->C0);
}

static float s_a(const s_case_t *c, int i, int k)
{
    return c->ta ? c->A[(size_t)k * c->lda + i] : c->A[(size_t)i * c->lda + k];
}

static float s_b(const s_case_t *c, int k, int j)
{
    return c->tb ? c->B[(size_t)j * c->ldb + k] : c->B[(size_t)k * c->ldb + j];
}

static float *s_run(const s_case_t *c, kgemm_prec_t prec)
{
    float *C = malloc(sizeof(float) * ((size_t)c->M * c->ldc + 1));
    memcpy(C, c->C0, sizeof(float) * (size_t)c->M * c->ldc);
    kgemm(prec, c->ta, c->tb, c->M, c->N, c->K, c->alpha, c->A, c->lda, c->B, c->ldb, c->beta, C,
          c->ldc);
    return C;
}

/* fp32: the same bits as cblas_sgemm, padding between rows untouched. */
static void test_fp32_is_sgemm(void **state)
{
    (void)state;
    kt_rng_t r = {11};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int v = 0; v < 3; v++) {
                const float alpha = v == 2 ? 0.17677669f : 1.0f, beta = v == 1 ? 1.0f : 0.0f;
                s_case_t c = s_case_new(&r, ta, tb, 37, 29, 45, v, alpha, beta);
                float *got = s_run(&c, KGEMM_FP32);
                float *want = malloc(sizeof(float) * (size_t)c.M * c.ldc);
                memcpy(want, c.C0, sizeof(float) * (size_t)c.M * c.ldc);
                cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                            tb ? CblasTrans : CblasNoTrans, c.M, c.N, c.K, alpha, c.A, c.lda, c.B,
                            c.ldb, beta, want, c.ldc);
                assert_memory_equal(got, want, sizeof(float) * (size_t)c.M * c.ldc);
                free(got);
                free(want);
                s_case_free(&c);
            }
}

/* The cut of a few shapes: blocks of 256 along the longer side, fewer for little work. */
static void test_fp32_block_rule(void **state)
{
    (void)state;
    static const struct {
        int M, N, K, by_rows, block, blocks;
    } want[] = {
        {2048, 128, 128, 1, 256, 8}, /* tiny's token-row GEMMs */
        {128, 2048, 64, 0, 256, 8},  /* columns when N > M */
        {37, 29, 45, 1, 64, 1},      /* small: one call */
        {300, 64, 128, 1, 256, 2},   /* 256 + 44 */
        {2048, 32, 32, 1, 1024, 2},  /* 2.1M multiply-adds: two blocks, not eight */
        {1030, 96, 64, 1, 256, 5},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int by_rows, block, blocks;
        kgemm_fp32_blocks(want[i].M, want[i].N, want[i].K, &by_rows, &block, &blocks);
        const int side = by_rows ? want[i].M : want[i].N;
        assert_int_equal(by_rows, want[i].by_rows);
        assert_int_equal(blocks, want[i].blocks);
        if (blocks > 1)
            assert_int_equal(block, want[i].block);
        assert_true((int64_t)block * blocks >= side && (int64_t)block * (blocks - 1) < side);
    }
}

/* c in prec at from_threads .. 3 kernel threads gives exactly want. */
static void s_same_bits_at(const s_case_t *c, kgemm_prec_t prec, const float *want,
                           int from_threads)
{
    for (int threads = from_threads; threads <= 3; threads++) {
        kpar_set_threads(threads);
        float *got = s_run(c, prec);
        assert_memory_equal(got, want, sizeof(float) * (size_t)c->M * c->ldc);
        free(got);
    }
    kpar_set_threads(0);
}

/* Cut GEMMs: the same bits at any thread count, each block one cblas_sgemm on its part of C. */
static void test_fp32_blocks_same_bits(void **state)
{
    (void)state;
    static const int shapes[][3] = {{1030, 96, 64}, {40, 700, 300}, {300, 64, 128}, {520, 520, 33}};
    kt_rng_t r = {12};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const float alpha = tb ? 0.5f : 1.0f, beta = ta ? 1.0f : 0.0f;
                s_case_t c = s_case_new(&r, ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 3,
                                        alpha, beta);
                int by_rows, block, blocks;
                kgemm_fp32_blocks(c.M, c.N, c.K, &by_rows, &block, &blocks);
                assert_true(blocks > 1);
                const size_t bytes = sizeof(float) * (size_t)c.M * c.ldc;
                float *want = malloc(bytes);
                memcpy(want, c.C0, bytes);
                for (int b = 0; b < blocks; b++) {
                    const int a = b * block, side = by_rows ? c.M : c.N;
                    const int n = side - a < block ? side - a : block;
                    if (by_rows)
                        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                                    tb ? CblasTrans : CblasNoTrans, n, c.N, c.K, alpha,
                                    ta ? c.A + a : c.A + (size_t)a * c.lda, c.lda, c.B, c.ldb, beta,
                                    want + (size_t)a * c.ldc, c.ldc);
                    else
                        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                                    tb ? CblasTrans : CblasNoTrans, c.M, n, c.K, alpha, c.A, c.lda,
                                    tb ? c.B + (size_t)a * c.ldb : c.B + a, c.ldb, beta, want + a,
                                    c.ldc);
                }
                s_same_bits_at(&c, KGEMM_FP32, want, 1);
                free(want);
                s_case_free(&c);
            }
}

static void test_round_bf16(void **state)
{
    (void)state;
    const float special[] = {0.0f,
                             -0.0f,
                             1.0f,
                             -1.0f,
                             INFINITY,
                             -INFINITY,
                             NAN,
                             -NAN,
                             1e-40f,
                             -3e-39f,
                             3.4e38f,
                             -3.4e38f,
                             1.00390625f /* tie below: 1 + 2^-8 */,
                             1.01171875f /* tie above */,
                             65504.0f,
                             1e-30f};
    const int ns = (int)(sizeof special / sizeof special[0]);
    kt_rng_t r = {kt_seed("round_bf16", 5)};
    const int n = ns + 100000;
    float *x = malloc(sizeof(float) * n);
    uint16_t *got = malloc(sizeof(uint16_t) * n);
    memcpy(x, special, sizeof special);
    for (int i = ns; i < n; i++) {
        uint32_t u = (uint32_t)kt_next(&r);
        memcpy(&x[i], &u, sizeof u); /* every bit pattern class: normals, subnormals, NaNs */
    }
    kgemm_round_bf16(x, got, n);
    int bad = 0;
    for (int i = 0; i < n && bad < 10; i++) {
        const uint16_t want = st_f32_to_bf16(x[i]);
        const int both_nan =
            isnan(x[i]) && (got[i] & 0x7fff) > 0x7f80 && (got[i] >> 15) == (want >> 15);
        if (got[i] != want && !both_nan) {
            fprintf(stderr, "round_bf16(%a) = 0x%04x, want 0x%04x\n", (double)x[i], got[i], want);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
    free(x);
    free(got);
}

/* Checks C (from kgemm bf16) element by element; returns the number of violations (≤ 10 shown).
 * worst_rel: the largest |C - C_fp32| / Σ|a·b| seen, for the log. */
static int s_check_bf16(const s_case_t *c, const float *C, double *worst_rel)
{
    int bad = 0;
    for (int i = 0; i < c->M; i++)
        for (int j = 0; j < c->N; j++) {
            double exact = 0, exact_rounded = 0, mag = 0;
            for (int k = 0; k < c->K; k++) {
                const double a = s_a(c, i, k), b = s_b(c, k, j);
                exact += a * b;
                exact_rounded += (double)s_bf16((float)a) * (double)s_bf16((float)b);
                mag += fabs(a * b);
            }
            const double c0 = c->beta != 0.0f ? (double)c->beta * c->C0[(size_t)i * c->ldc + j] : 0;
            const double alpha = c->alpha, got = C[(size_t)i * c->ldc + j];
            const double want_r = alpha * exact_rounded + c0, want = alpha * exact + c0;
            const double tol_r = (c->K + 2) * ldexp(1.0, -24) * fabs(alpha) * mag * 1.02 +
                                 ldexp(1.0, -23) * fabs(c0) + 1e-30;
            const double tol = ldexp(1.0, -7) * fabs(alpha) * mag + ldexp(1.0, -23) * fabs(c0);
            const double rel = fabs(got - want) / (fabs(alpha) * mag + 1e-30);
            *worst_rel = rel > *worst_rel ? rel : *worst_rel;
            if (!(fabs(got - want_r) <= tol_r) || !(fabs(got - want) <= tol)) {
                if (bad < 10)
                    fprintf(stderr,
                            "bf16 ta %d tb %d %dx%dx%d C[%d,%d] = %.9g: bf16-exact %.9g (tol "
                            "%.3g), fp32-exact %.9g (tol %.3g)\n",
                            c->ta, c->tb, c->M, c->N, c->K, i, j, got, want_r, tol_r, want, tol);
                bad++;
            }
        }
    return bad;
}

static int s_bf16_setup(void **state)
{
    (void)state;
    if (kgemm_check(KGEMM_BF16) != SHOAL_OK) {
        printf("SKIP: bf16 GEMMs unavailable here: %s\n", shoal_errmsg());
        exit(77);
    }
    return 0;
}

static void test_bf16_parity(void **state)
{
    (void)state;
    kt_rng_t r = {kt_seed("bf16_parity", 23)};
    double worst = 0;
    int bad = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int v = 0; v < 3; v++) {
                const float alpha = v == 2 ? 0.17677669f : 1.0f, beta = v == 1 ? 1.0f : 0.0f;
                /* the row count changes from case to case on the same cached primitive */
                s_case_t c = s_case_new(&r, ta, tb, 33 + 17 * v, 40, 70 + v, v, alpha, beta);
                float *C = s_run(&c, KGEMM_BF16);
                bad += s_check_bf16(&c, C, &worst);
                /* the padding between rows is never written */
                for (int i = 0; i < c.M; i++)
                    for (int j = c.N; j < c.ldc; j++)
                        bad += C[(size_t)i * c.ldc + j] != c.C0[(size_t)i * c.ldc + j];
                free(C);
                s_case_free(&c);
            }
    /* shapes cut into blocks that share one operand rounded once: B for row blocks, A for
     * column blocks (kgemm_fp32_blocks) */
    static const int cut[][3] = {{1030, 96, 64}, {40, 700, 300}};
    for (int s = 0; s < 2; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                s_case_t c = s_case_new(&r, ta, tb, cut[s][0], cut[s][1], cut[s][2], 2, 1.0f,
                                        tb ? 1.0f : 0.0f);
                float *C = s_run(&c, KGEMM_BF16);
                bad += s_check_bf16(&c, C, &worst);
                free(C);
                s_case_free(&c);
            }
    printf("bf16 vs fp32: worst |C - C_fp32| / sum|a b| = %.3g (bound 2^-7 = %.3g)\n", worst,
           ldexp(1.0, -7));
    assert_int_equal(bad, 0);
}

/* bf16 GEMMs cut into blocks give the same bits at 1, 2 and 3 threads (each block one oneDNN
 * call on one thread). */
static void test_bf16_blocks_same_bits(void **state)
{
    (void)state;
    static const int shapes[][3] = {{1030, 96, 64}, {40, 700, 300}};
    kt_rng_t r = {13};
    for (int s = 0; s < 2; s++)
        for (int ta = 0; ta < 2; ta++) {
            s_case_t c =
                s_case_new(&r, ta, !ta, shapes[s][0], shapes[s][1], shapes[s][2], 1, 1.0f, 0.0f);
            kpar_set_threads(1);
            float *want = s_run(&c, KGEMM_BF16);
            s_same_bits_at(&c, KGEMM_BF16, want, 2);
            free(want);
            s_case_free(&c);
        }
}

/* Empty shapes: M or N 0 touch nothing; K 0 gives beta·C. */
static void test_bf16_empty(void **state)
{
    (void)state;
    float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8}, C[4] = {1, 2, 3, 4};
    kgemm(KGEMM_BF16, 0, 0, 0, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    kgemm(KGEMM_BF16, 0, 0, 2, 0, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    assert_true(C[0] == 1 && C[3] == 4);
    kgemm(KGEMM_BF16, 0, 0, 2, 2, 0, 1.0f, A, 2, B, 2, 0.5f, C, 2);
    assert_true(C[0] == 0.5f && C[1] == 1.0f && C[2] == 1.5f && C[3] == 2.0f);
}

typedef struct {
    s_case_t *c;
    float *out[20];
} s_thread_arg_t;

static void *s_thread_main(void *p)
{
    s_thread_arg_t *a = p;
    for (int i = 0; i < 20; i++)
        a->out[i] = s_run(a->c, KGEMM_BF16);
    return NULL;
}

/* Two threads at once get what one thread gets, bit for bit (per-thread scratch and streams). */
static void test_bf16_threads(void **state)
{
    (void)state;
    kt_rng_t r = {99};
    s_case_t c1 = s_case_new(&r, 0, 1, 64, 96, 128, 0, 1.0f, 0.0f);
    s_case_t c2 = s_case_new(&r, 1, 0, 96, 64, 80, 1, 1.0f, 1.0f);
    float *want1 = s_run(&c1, KGEMM_BF16), *want2 = s_run(&c2, KGEMM_BF16);
    s_thread_arg_t a1 = {&c1, {0}}, a2 = {&c2, {0}};
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, s_thread_main, &a1), 0);
    assert_int_equal(pthread_create(&t2, NULL, s_thread_main, &a2), 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    for (int i = 0; i < 20; i++) {
        assert_memory_equal(a1.out[i], want1, sizeof(float) * (size_t)c1.M * c1.ldc);
        assert_memory_equal(a2.out[i], want2, sizeof(float) * (size_t)c2.M * c2.ldc);
        free(a1.out[i]);
        free(a2.out[i]);
    }
    free(want1);
    free(want2);
    s_case_free(&c1);
    s_case_free(&c2);
}

int main(void)
{
    openblas_set_num_threads(1);
    const struct CMUnitTest always[] = {
        cmocka_unit_test(test_fp32_is_sgemm),
        cmocka_unit_test(test_fp32_block_rule),
        cmocka_unit_test(test_fp32_blocks_same_bits),
        cmocka_unit_test(test_round_bf16),
    };
    const struct CMUnitTest bf16[] = {
        cmocka_unit_test(test_bf16_parity),
        cmocka_unit_test(test_bf16_empty),
        cmocka_unit_test(test_bf16_threads),
        cmocka_unit_test(test_bf16_blocks_same_bits),
    };
    int failed = cmocka_run_group_tests(always, NULL, NULL);
    return failed ? failed : cmocka_run_group_tests(bf16, s_bf16_setup, NULL);
}
