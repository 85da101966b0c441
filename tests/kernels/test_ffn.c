/* test_ffn: SwiGLU FFN forward against the formula in double (beta 0 and 1, M = 0), backward
 * (dx, dWgu, dWd) against central finite differences, dx_beta overwrite/accumulate. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ffn.h"
#include "kt_util.h"

static uint64_t s_seed;

typedef struct {
    int M, d, f;
    float *x, *w_gu, *w_d, *gu, *a, *y, *w;
} ffn_case_t;

static double s_loss(void *ctx)
{
    ffn_case_t *c = ctx;
    ffn_forward(KGEMM_FP32, c->x, c->M, c->d, c->f, c->w_gu, c->w_d, c->gu, c->a, c->y, 0.0f);
    return kt_project(c->w, c->y, (size_t)c->M * c->d);
}

static void s_ref_forward(const ffn_case_t *c, double *ref)
{
    int d = c->d, f = c->f;
    for (int m = 0; m < c->M; m++) {
        for (int i = 0; i < d; i++)
            ref[m * d + i] = 0;
        for (int j = 0; j < f; j++) {
            double zg = 0, zu = 0;
            for (int k = 0; k < d; k++) {
                zg += (double)c->x[m * d + k] * c->w_gu[j * d + k];
                zu += (double)c->x[m * d + k] * c->w_gu[(f + j) * d + k];
            }
            double act = zg / (1 + exp(-zg)) * zu;
            for (int i = 0; i < d; i++)
                ref[m * d + i] += act * c->w_d[i * f + j];
        }
    }
}

static void s_run_case(int M, int d, int f, uint64_t seed)
{
    kt_rng_t r = {seed};
    size_t nx = (size_t)M * d, ngu = (size_t)2 * f * d, nd = (size_t)d * f;
    ffn_case_t c = {M,
                    d,
                    f,
                    malloc(nx * 4),
                    malloc(ngu * 4),
                    malloc(nd * 4),
                    malloc((size_t)M * 2 * f * 4),
                    malloc((size_t)M * f * 4),
                    malloc(nx * 4),
                    malloc(nx * 4)};
    kt_fill(&r, c.x, nx, -1, 1);
    kt_fill(&r, c.w_gu, ngu, -0.6, 0.6);
    kt_fill(&r, c.w_d, nd, -0.6, 0.6);
    kt_fill(&r, c.w, nx, -1, 1);
    printf("case M=%d d=%d f=%d\n", M, d, f);

    double *ref = malloc(nx * 8);
    s_ref_forward(&c, ref);
    ffn_forward(KGEMM_FP32, c.x, M, d, f, c.w_gu, c.w_d, c.gu, c.a, c.y, 0.0f);
    assert_int_equal(kt_check_close("y", c.y, ref, nx, 1e-5, 1e-5), 0);
    /* beta 1 adds the FFN on top of what y holds */
    float *y1 = malloc(nx * 4);
    kt_fill(&r, y1, nx, -1, 1);
    for (size_t i = 0; i < nx; i++)
        ref[i] += y1[i];
    ffn_forward(KGEMM_FP32, c.x, M, d, f, c.w_gu, c.w_d, c.gu, c.a, y1, 1.0f);
    assert_int_equal(kt_check_close("y(beta=1)", y1, ref, nx, 1e-5, 1e-5), 0);

    /* backward into garbage dx (dx_beta 0 overwrites) and zero weight gradients */
    ffn_forward(KGEMM_FP32, c.x, M, d, f, c.w_gu, c.w_d, c.gu, c.a, c.y, 0.0f);
    float *dgu = malloc((size_t)M * 2 * f * 4), *da = malloc((size_t)M * f * 4);
    float *dx = malloc(nx * 4), *dwgu = calloc(ngu, 4), *dwd = calloc(nd, 4);
    for (size_t i = 0; i < nx; i++)
        dx[i] = 1e6f;
    ffn_backward(KGEMM_FP32, c.x, M, d, f, c.w_gu, c.w_d, c.gu, c.a, c.w, dgu, da, dx, 0.0f, dwgu,
                 dwd);

    size_t nmax = ngu > nx ? (ngu > nd ? ngu : nd) : (nx > nd ? nx : nd);
    double *num = malloc(nmax * 8);
    kt_fd(c.x, nx, 4e-3f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dx", num, dx, nx, 1e-3, 1e-3), 0);
    kt_fd(c.w_gu, ngu, 4e-3f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dw_gu", num, dwgu, ngu, 1e-3, 1e-3), 0);
    kt_fd(c.w_d, nd, 4e-3f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dw_d", num, dwd, nd, 1e-3, 1e-3), 0);

    /* accumulate: dx_beta 1 adds to dx; weight gradients always add */
    float *dx2 = malloc(nx * 4), *dwgu2 = malloc(ngu * 4), *dwd2 = malloc(nd * 4);
    float *dx2_0 = malloc(nx * 4), *dwgu2_0 = malloc(ngu * 4), *dwd2_0 = malloc(nd * 4);
    kt_fill(&r, dx2, nx, -1, 1);
    kt_fill(&r, dwgu2, ngu, -1, 1);
    kt_fill(&r, dwd2, nd, -1, 1);
    memcpy(dx2_0, dx2, nx * 4), memcpy(dwgu2_0, dwgu2, ngu * 4), memcpy(dwd2_0, dwd2, nd * 4);
    ffn_forward(KGEMM_FP32, c.x, M, d, f, c.w_gu, c.w_d, c.gu, c.a, c.y, 0.0f);
    ffn_backward(KGEMM_FP32, c.x, M, d, f, c.w_gu, c.w_d, c.gu, c.a, c.w, dgu, da, dx2, 1.0f, dwgu2,
                 dwd2);
    for (size_t i = 0; i < nx; i++)
        assert_true(fabs(dx2[i] - (dx2_0[i] + dx[i])) <= 1e-5);
    for (size_t i = 0; i < ngu; i++)
        assert_true(fabs(dwgu2[i] - (dwgu2_0[i] + dwgu[i])) <= 1e-5);
    for (size_t i = 0; i < nd; i++)
        assert_true(fabs(dwd2[i] - (dwd2_0[i] + dwd[i])) <= 1e-5);

    free(dx2), free(dwgu2), free(dwd2), free(dx2_0), free(dwgu2_0), free(dwd2_0);
    free(ref), free(y1), free(dgu), free(da), free(dx), free(dwgu), free(dwd), free(num);
    free(c.x), free(c.w_gu), free(c.w_d), free(c.gu), free(c.a), free(c.y), free(c.w);
}

static void test_ffn_cases(void **state)
{
    (void)state;
    s_run_case(4, 6, 5, s_seed);
    s_run_case(3, 9, 12, s_seed + 1);
    s_run_case(1, 4, 3, s_seed + 2);
}

static void test_ffn_empty(void **state)
{
    (void)state;
    /* M = 0 (an expert no token selected): nothing read or written, gradients unchanged */
    float w_gu[2 * 3 * 4] = {0}, w_d[4 * 3] = {0}, dwgu[24], dwd[12];
    for (int i = 0; i < 24; i++)
        dwgu[i] = (float)i;
    for (int i = 0; i < 12; i++)
        dwd[i] = (float)-i;
    ffn_forward(KGEMM_FP32, NULL, 0, 4, 3, w_gu, w_d, NULL, NULL, NULL, 0.0f);
    ffn_backward(KGEMM_FP32, NULL, 0, 4, 3, w_gu, w_d, NULL, NULL, NULL, NULL, NULL, NULL, 0.0f,
                 dwgu, dwd);
    for (int i = 0; i < 24; i++)
        assert_true(dwgu[i] == (float)i);
    for (int i = 0; i < 12; i++)
        assert_true(dwd[i] == (float)-i);
}

int main(void)
{
    s_seed = kt_seed("test_ffn", 20261128);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ffn_cases),
        cmocka_unit_test(test_ffn_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
