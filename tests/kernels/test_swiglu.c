/* test_swiglu: forward against silu(g)·u in double, backward against finite differences,
 * dgu overwritten (not accumulated). */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kt_util.h"
#include "swiglu.h"

static uint64_t s_seed;

typedef struct {
    int M, f;
    float *gu, *a, *w;
} sw_case_t;

static double s_loss(void *ctx)
{
    sw_case_t *c = ctx;
    swiglu_forward(c->gu, c->M, c->f, c->a);
    return kt_project(c->w, c->a, (size_t)c->M * c->f);
}

static void s_run_case(int M, int f, double range, uint64_t seed)
{
    kt_rng_t r = {seed};
    size_t n2 = (size_t)M * 2 * f, n = (size_t)M * f;
    sw_case_t c = {M, f, malloc(n2 * 4), malloc(n * 4), malloc(n * 4)};
    double *ref = malloc(n * 8), *num = malloc(n2 * 8);
    float *dgu = malloc(n2 * 4);
    kt_fill(&r, c.gu, n2, -range, range);
    kt_fill(&r, c.w, n, -1, 1);
    printf("case M=%d f=%d range %g\n", M, f, range);

    swiglu_forward(c.gu, M, f, c.a);
    for (int m = 0; m < M; m++)
        for (int j = 0; j < f; j++) {
            double z = c.gu[(size_t)m * 2 * f + j], u = c.gu[(size_t)m * 2 * f + f + j];
            ref[(size_t)m * f + j] = z / (1.0 + exp(-z)) * u;
        }
    assert_int_equal(kt_check_close("a", c.a, ref, n, 1e-6, 1e-5), 0);

    for (size_t i = 0; i < n2; i++)
        dgu[i] = 12345.0f; /* must be overwritten, not added to */
    swiglu_backward(c.gu, c.w, M, f, dgu);
    kt_fd(c.gu, n2, 4e-3f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dgu", num, dgu, n2, 1e-3, 1e-3), 0);

    free(c.gu), free(c.a), free(c.w), free(ref), free(num), free(dgu);
}

static void test_swiglu_cases(void **state)
{
    (void)state;
    s_run_case(3, 8, 3.0, s_seed);
    s_run_case(2, 11, 8.0, s_seed + 1); /* saturated sigmoid on both sides */
}

int main(void)
{
    s_seed = kt_seed("test_swiglu", 20261128);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_swiglu_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
