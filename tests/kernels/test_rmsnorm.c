/* test_rmsnorm: forward against the double-precision formula, backward (dx, dg) against
 * central finite differences of a random projection loss, accumulate semantics. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kt_util.h"
#include "rmsnorm.h"

static uint64_t s_seed;

typedef struct {
    int M, d;
    float eps;
    float *x, *g, *y, *w;
} rms_case_t;

static double s_loss(void *ctx)
{
    rms_case_t *c = ctx;
    rmsnorm_forward(c->x, c->g, c->M, c->d, c->eps, c->y, NULL);
    return kt_project(c->w, c->y, (size_t)c->M * c->d);
}

static void s_run_case(int M, int d, float eps, uint64_t seed)
{
    kt_rng_t r = {seed};
    size_t n = (size_t)M * d;
    rms_case_t c = {M, d, eps, malloc(n * 4), malloc((size_t)d * 4), malloc(n * 4), malloc(n * 4)};
    float *rstd = malloc((size_t)M * 4), *dx = calloc(n, 4), *dg = calloc((size_t)d, 4);
    double *ref = malloc(n * 8), *num = malloc((n > (size_t)d ? n : (size_t)d) * 8);
    kt_fill(&r, c.x, n, -2, 2);
    kt_fill(&r, c.g, (size_t)d, 0.5, 1.5);
    kt_fill(&r, c.w, n, -1, 1);
    printf("case M=%d d=%d eps=%g\n", M, d, (double)eps);

    /* forward vs formula in double */
    rmsnorm_forward(c.x, c.g, M, d, eps, c.y, rstd);
    for (int m = 0; m < M; m++) {
        double ss = 0;
        for (int j = 0; j < d; j++)
            ss += (double)c.x[m * d + j] * c.x[m * d + j];
        double rr = 1.0 / sqrt(ss / d + eps);
        assert_true(fabs(rstd[m] - rr) <= 1e-6 * rr);
        for (int j = 0; j < d; j++)
            ref[m * d + j] = c.x[m * d + j] * rr * c.g[j];
    }
    assert_int_equal(kt_check_close("y", c.y, ref, n, 1e-6, 1e-6), 0);

    /* backward vs finite differences */
    rmsnorm_backward(c.x, c.g, rstd, c.w, M, d, dx, dg);
    kt_fd(c.x, n, 4e-3f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dx", num, dx, n, 1e-3, 1e-3), 0);
    kt_fd(c.g, (size_t)d, 4e-3f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dg", num, dg, (size_t)d, 1e-3, 1e-3), 0);

    /* accumulate: a second call into non-zero buffers adds exactly the same amounts */
    float *dx2 = malloc(n * 4), *dg2 = malloc((size_t)d * 4);
    kt_fill(&r, dx2, n, -1, 1);
    kt_fill(&r, dg2, (size_t)d, -1, 1);
    float *dx2_0 = malloc(n * 4), *dg2_0 = malloc((size_t)d * 4);
    memcpy(dx2_0, dx2, n * 4);
    memcpy(dg2_0, dg2, (size_t)d * 4);
    rmsnorm_backward(c.x, c.g, rstd, c.w, M, d, dx2, dg2);
    for (size_t i = 0; i < n; i++)
        assert_true(dx2[i] == dx2_0[i] + dx[i]);
    /* dg sums over rows, so only an approximate check is meaningful */
    for (int j = 0; j < d; j++)
        assert_true(fabs(dg2[j] - (dg2_0[j] + dg[j])) <= 1e-5 * (1 + fabs(dg[j])));

    free(dx2), free(dg2), free(dx2_0), free(dg2_0);
    free(c.x), free(c.g), free(c.y), free(c.w), free(rstd), free(dx), free(dg), free(ref);
    free(num);
}

static void test_rmsnorm_shapes(void **state)
{
    (void)state;
    s_run_case(4, 16, 1e-6f, s_seed);
    s_run_case(3, 13, 1e-6f, s_seed + 1); /* tail after the 8-wide lanes */
    s_run_case(2, 37, 1e-6f, s_seed + 2);
    s_run_case(5, 3, 0.5f, s_seed + 3); /* eps large enough to matter */
}

static void test_rmsnorm_rstd_optional(void **state)
{
    (void)state;
    kt_rng_t r = {s_seed + 10};
    float x[24], g[8], y1[24], y2[24], rs[3];
    kt_fill(&r, x, 24, -1, 1);
    kt_fill(&r, g, 8, -1, 1);
    rmsnorm_forward(x, g, 3, 8, 1e-6f, y1, rs);
    rmsnorm_forward(x, g, 3, 8, 1e-6f, y2, NULL);
    assert_memory_equal(y1, y2, sizeof y1);
}

int main(void)
{
    s_seed = kt_seed("test_rmsnorm", 20261128);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_shapes),
        cmocka_unit_test(test_rmsnorm_rstd_optional),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
