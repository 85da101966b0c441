/* test_cross_entropy: loss against logsumexp in double (also with huge logits, where an
 * unshifted exp overflows), gradient against finite differences, in-place and NULL dlogits. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cross_entropy.h"
#include "kt_util.h"

static uint64_t s_seed;

typedef struct {
    int M, V;
    const int32_t *tgt;
    float *z;
    float scale;
} ce_case_t;

static double s_loss(void *ctx)
{
    ce_case_t *c = ctx;
    return c->scale * cross_entropy_forward_backward(c->z, c->tgt, c->M, c->V, 1.0f, NULL);
}

static double s_ref_loss(const float *z, const int32_t *tgt, int M, int V)
{
    double tot = 0;
    for (int m = 0; m < M; m++) {
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < V; j++)
            mx = fmax(mx, z[(size_t)m * V + j]);
        for (int j = 0; j < V; j++)
            s += exp(z[(size_t)m * V + j] - mx);
        tot += mx + log(s) - z[(size_t)m * V + tgt[m]];
    }
    return tot;
}

static void s_run_case(int M, int V, double lo, double hi, uint64_t seed)
{
    kt_rng_t r = {seed};
    size_t n = (size_t)M * V;
    int32_t *tgt = malloc((size_t)M * 4);
    float *z = malloc(n * 4), *dz = malloc(n * 4), *zin = malloc(n * 4);
    double *num = malloc(n * 8);
    kt_fill(&r, z, n, lo, hi);
    for (int m = 0; m < M; m++)
        tgt[m] = kt_randint(&r, V);
    tgt[0] = V - 1; /* last class as a target */
    printf("case M=%d V=%d logits in [%g, %g)\n", M, V, lo, hi);

    double ref = s_ref_loss(z, tgt, M, V);
    double loss = cross_entropy_forward_backward(z, tgt, M, V, 1.0f / M, dz);
    printf("  loss %.12g ref %.12g\n", loss, ref);
    assert_true(isfinite(loss));
    assert_true(fabs(loss - ref) <= 1e-6 * fmax(1.0, fabs(ref)));
    assert_true(cross_entropy_forward_backward(z, tgt, M, V, 1.0f / M, NULL) == loss);

    ce_case_t c = {M, V, tgt, z, 1.0f / M};
    kt_fd(z, n, 1e-3f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dlogits", num, dz, n, 2e-4, 2e-3), 0);

    /* each row of the gradient sums to zero (softmax − onehot) */
    for (int m = 0; m < M; m++) {
        double s = 0;
        for (int j = 0; j < V; j++)
            s += dz[(size_t)m * V + j];
        assert_true(fabs(s) <= 1e-6);
    }

    /* in place over the logits gives the same loss and the same gradient bits */
    memcpy(zin, z, n * 4);
    double loss2 = cross_entropy_forward_backward(zin, tgt, M, V, 1.0f / M, zin);
    assert_true(loss2 == loss);
    assert_memory_equal(zin, dz, n * 4);

    free(tgt), free(z), free(dz), free(zin), free(num);
}

static void test_cross_entropy_cases(void **state)
{
    (void)state;
    s_run_case(4, 10, -3, 3, s_seed);
    s_run_case(3, 37, -1, 1, s_seed + 1);
}

static void test_cross_entropy_large_logits(void **state)
{
    (void)state;
    kt_rng_t r = {s_seed + 2};
    enum { M = 3, V = 256 };
    float z[M * V], dz[M * V];
    int32_t tgt[M] = {0, 100, 255};
    kt_fill(&r, z, M * V, 1000, 1010); /* expf(1000) overflows without the max shift */
    double ref = s_ref_loss(z, tgt, M, V);
    double loss = cross_entropy_forward_backward(z, tgt, M, V, 1.0f, dz);
    assert_true(isfinite(loss));
    assert_true(fabs(loss - ref) <= 1e-5 * fabs(ref));
    for (int i = 0; i < M * V; i++)
        assert_true(isfinite(dz[i]));
}

static void test_cross_entropy_known_value(void **state)
{
    (void)state;
    /* uniform logits: loss = log V per row, gradient 1/V − onehot */
    float z[8] = {0}, dz[8];
    int32_t tgt[2] = {1, 3};
    double loss = cross_entropy_forward_backward(z, tgt, 2, 4, 1.0f, dz);
    assert_true(fabs(loss - 2 * log(4.0)) <= 1e-12);
    assert_true(dz[0] == 0.25f && dz[1] == -0.75f && dz[7] == -0.75f && dz[6] == 0.25f);
}

int main(void)
{
    s_seed = kt_seed("test_cross_entropy", 20261128);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_entropy_cases),
        cmocka_unit_test(test_cross_entropy_large_logits),
        cmocka_unit_test(test_cross_entropy_known_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
