/* test_rope: tables against known angles and a double recomputation, forward against the
 * rotate-half formula in double (positions restart per sequence, row stride ld respected),
 * backward against finite differences and as the inverse rotation. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kt_util.h"
#include "rope.h"

static uint64_t s_seed;

static void test_rope_tables(void **state)
{
    (void)state;
    enum { T = 128, DH = 32 };
    float c[T * DH / 2], s[T * DH / 2];
    rope_tables(T, DH, 10000.0, c, s);
    /* t = 1, i = 0: φ = 1 */
    assert_true(c[DH / 2] == (float)0.5403023058681398);
    assert_true(s[DH / 2] == (float)0.8414709848078965);
    /* t = 0: identity */
    for (int i = 0; i < DH / 2; i++)
        assert_true(c[i] == 1.0f && s[i] == 0.0f);
    /* every entry against exp/log form in double (may differ by the last double bit, so
     * allow one float ulp) */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < DH / 2; i++) {
            double phi = t * exp(-2.0 * i / DH * log(10000.0));
            assert_true(fabs(c[t * DH / 2 + i] - cos(phi)) <= 1.2e-7);
            assert_true(fabs(s[t * DH / 2 + i] - sin(phi)) <= 1.2e-7);
        }
    /* θ_8 with dh = 32 is 10000^(-1/2) = 0.01: t = 100 gives φ = 1 */
    assert_true(fabs(c[100 * DH / 2 + 8] - 0.5403023058681398) <= 6e-8);
}

typedef struct {
    int B, T, H, dh, ld;
    const float *cos_t, *sin_t;
    float *x, *y, *w;
} rope_case_t;

static double s_loss(void *ctx)
{
    rope_case_t *c = ctx;
    size_t n = (size_t)c->B * c->T * c->ld;
    memcpy(c->y, c->x, n * 4);
    rope_forward(c->y, c->B, c->T, c->H, c->dh, c->ld, c->cos_t, c->sin_t);
    return kt_project(c->w, c->y, n);
}

static void s_run_case(int B, int T, int H, int dh, int pad, double theta, uint64_t seed)
{
    kt_rng_t r = {seed};
    int ld = H * dh + pad, half = dh / 2;
    size_t n = (size_t)B * T * ld;
    float *ct = malloc((size_t)T * half * 4), *st = malloc((size_t)T * half * 4);
    rope_tables(T, dh, theta, ct, st);
    rope_case_t c = {B, T, H, dh, ld, ct, st, malloc(n * 4), malloc(n * 4), malloc(n * 4)};
    double *ref = malloc(n * 8), *num = malloc(n * 8);
    float *dx = malloc(n * 4), *back = malloc(n * 4);
    kt_fill(&r, c.x, n, -1, 1);
    kt_fill(&r, c.w, n, -1, 1);
    printf("case B=%d T=%d H=%d dh=%d ld=%d theta=%g\n", B, T, H, dh, ld, theta);

    /* forward against the formula, angle t·θ_i in double, t restarting at each sequence */
    memcpy(c.y, c.x, n * 4);
    rope_forward(c.y, B, T, H, dh, ld, ct, st);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *xr = c.x + ((size_t)b * T + t) * ld;
            double *rr = ref + ((size_t)b * T + t) * ld;
            for (int j = H * dh; j < ld; j++)
                rr[j] = xr[j]; /* padding untouched */
            for (int h = 0; h < H; h++)
                for (int i = 0; i < half; i++) {
                    double phi = t * pow(theta, -2.0 * i / dh);
                    double x1 = xr[h * dh + i], x2 = xr[h * dh + i + half];
                    rr[h * dh + i] = x1 * cos(phi) - x2 * sin(phi);
                    rr[h * dh + i + half] = x2 * cos(phi) + x1 * sin(phi);
                }
        }
    assert_int_equal(kt_check_close("y", c.y, ref, n, 3e-7, 1e-6), 0);

    /* the backward is the inverse rotation: backward(forward(x)) = x */
    memcpy(back, c.y, n * 4);
    rope_backward(back, B, T, H, dh, ld, ct, st);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(back[i] - c.x[i]) <= 1e-6);

    /* backward: ∂L/∂x from ∂L/∂x' = w */
    memcpy(dx, c.w, n * 4);
    rope_backward(dx, B, T, H, dh, ld, ct, st);
    kt_fd(c.x, n, 1e-2f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dx", num, dx, n, 3e-5, 3e-4), 0);

    free(ct), free(st), free(c.x), free(c.y), free(c.w), free(ref), free(num), free(dx);
    free(back);
}

static void test_rope_cases(void **state)
{
    (void)state;
    s_run_case(2, 5, 2, 8, 3, 10.0, s_seed); /* padded rows: q inside a fused qkv row */
    s_run_case(1, 7, 3, 2, 0, 10000.0, s_seed + 1);
    s_run_case(3, 4, 1, 16, 5, 100.0, s_seed + 2);
}

int main(void)
{
    s_seed = kt_seed("test_rope", 20261128);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope_tables),
        cmocka_unit_test(test_rope_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
