/* test_optim: AdamW against a double re-derivation of the PyTorch formula over several
 * steps (with and without decay), the global norm, the clip coefficient, the LR schedule at its
 * corners and the integer-exact balancing bias update (ties, sign(0) = 0). */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kt_util.h"
#include "optim.h"

static uint64_t s_seed;

static void s_adamw_case(int decay)
{
    kt_rng_t r = {s_seed + (uint64_t)decay};
    enum { N = 203, STEPS = 6 };
    adamw_hparams_t hp = {0.9f, 0.95f, 1e-8f, 0.1f};
    float p[N], g[N], m[N] = {0}, v[N] = {0};
    double pd[N], md[N] = {0}, vd[N] = {0};
    kt_fill(&r, p, N, -1, 1);
    for (int i = 0; i < N; i++)
        pd[i] = p[i];
    g[0] = 0.0f;
    for (int t = 1; t <= STEPS; t++) {
        kt_fill(&r, g, N, -3, 3);
        if (t == 2)
            g[5] = 0.0f; /* a zero gradient: only eps keeps the division finite */
        double lr = 1e-2 * t / STEPS;
        adamw_update(p, g, m, v, N, (float)lr, decay, t, &hp);
        double b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps, wd = hp.weight_decay;
        double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
        for (int i = 0; i < N; i++) {
            if (decay)
                pd[i] -= (double)(float)lr * wd * pd[i];
            md[i] = b1 * md[i] + (1 - b1) * g[i];
            vd[i] = b2 * vd[i] + (1 - b2) * (double)g[i] * g[i];
            pd[i] -= (double)(float)lr / bc1 * md[i] / (sqrt(vd[i]) / sqrt(bc2) + eps);
        }
        for (int i = 0; i < N; i++) {
            assert_true(fabs(m[i] - md[i]) <= 1e-6 * (1 + fabs(md[i])));
            assert_true(fabs(v[i] - vd[i]) <= 1e-6 * (1 + fabs(vd[i])));
            if (!(fabs(p[i] - pd[i]) <= 2e-7 * (1 + fabs(pd[i])))) {
                printf("step %d p[%d] %.9g ref %.9g\n", t, i, (double)p[i], pd[i]);
                fail();
            }
        }
    }
}

static void test_adamw_decay(void **state)
{
    (void)state;
    s_adamw_case(1);
}

static void test_adamw_no_decay(void **state)
{
    (void)state;
    s_adamw_case(0);
}

static void test_adamw_first_step_is_sign_step(void **state)
{
    (void)state;
    /* at t = 1 with bias correction, m̂/sqrt(v̂) = g/|g|: each p moves by lr (eps aside) */
    adamw_hparams_t hp = {0.9f, 0.95f, 1e-8f, 0.0f};
    float p[3] = {1, 1, 1}, g[3] = {0.5f, -2.0f, 1e-3f}, m[3] = {0}, v[3] = {0};
    adamw_update(p, g, m, v, 3, 0.01f, 1, 1, &hp);
    assert_true(fabs(p[0] - 0.99) < 1e-6 && fabs(p[1] - 1.01) < 1e-6 && fabs(p[2] - 0.99) < 1e-5);
}

static void test_grad_norm_and_clip(void **state)
{
    (void)state;
    kt_rng_t r = {s_seed + 7};
    enum { N = 1001 };
    float g[N], g0[N];
    kt_fill(&r, g, N, -2, 2);
    memcpy(g0, g, sizeof g);
    double ref = 0;
    for (int i = 0; i < N; i++)
        ref += (double)g[i] * g[i];
    double ss = grad_sum_squares(g, N);
    assert_true(fabs(ss - ref) <= 1e-12 * ref);
    assert_true(grad_sum_squares(g, 0) == 0.0);
    /* clip_grad_norm_: coefficient max/(norm + 1e-6), only when below 1 */
    assert_true(clip_coefficient(2.0, 1.0) == 1.0 / (2.0 + 1e-6));
    assert_true(clip_coefficient(0.5, 1.0) == 1.0);
    assert_true(clip_coefficient(1.0, 1.0) == 1.0 / (1.0 + 1e-6)); /* norm == max still clips */
    assert_true(clip_coefficient(0.0, 1.0) == 1.0);
    double norm = sqrt(ss), coef = clip_coefficient(norm, 1.0);
    grad_scale(g, N, (float)coef);
    for (int i = 0; i < N; i++)
        assert_true(g[i] == g0[i] * (float)coef);
    assert_true(fabs(sqrt(grad_sum_squares(g, N)) - 1.0) < 1e-5);
}

static void test_lr_schedule(void **state)
{
    (void)state;
    /* the oracle's selfcheck: lr_at(k, 200, 1.0, 20, 0.1) */
    assert_true(lr_at(0, 200, 1.0, 20, 0.1) == 0.0);
    assert_true(fabs(lr_at(10, 200, 1.0, 20, 0.1) - 0.5) < 1e-12);
    assert_true(lr_at(20, 200, 1.0, 20, 0.1) == 1.0);
    assert_true(fabs(lr_at(199, 200, 1.0, 20, 0.1) - 0.1) < 1e-12);
    for (int k = 20; k < 199; k++)
        assert_true(lr_at(k, 200, 1.0, 20, 0.1) >= lr_at(k + 1, 200, 1.0, 20, 0.1));
    /* mid-cosine value: p = 0.5 -> min + (lr - min)/2 */
    assert_true(fabs(lr_at(110, 211, 3e-4, 10, 3e-5) - (3e-5 + 0.5 * (3e-4 - 3e-5))) < 1e-15);
    /* bit-exact values printed by the oracle (moe_ref.lr_at(...).hex()) */
    assert_true(lr_at(7, 200, 1.0, 20, 0.1) == 0x1.6666666666666p-2);
    assert_true(lr_at(150, 200, 3e-4, 20, 3e-5) == 0x1.42a0078df3966p-14);
    /* no warmup: step 0 already at lr; a single step (span 0) is the last step: min_lr */
    assert_true(lr_at(0, 100, 1.0, 0, 0.0) == 1.0);
    assert_true(lr_at(0, 1, 1.0, 0, 0.25) == 0.25);
}

static void test_moe_bias_update(void **state)
{
    (void)state;
    /* the oracle's case: counts 3 1 2 2, mean 2 */
    float b[4] = {0, 0, 0, 0};
    int64_t c[4] = {3, 1, 2, 2};
    moe_bias_update(b, c, 4, 0.001f);
    assert_true(b[0] == -0.001f && b[1] == 0.001f && b[2] == 0.0f && b[3] == 0.0f);
    /* non-integer mean (7/3): sign decided exactly in integers */
    float b2[3] = {0.5f, -0.25f, 0.125f};
    int64_t c2[3] = {2, 3, 2};
    moe_bias_update(b2, c2, 3, 0.01f);
    assert_true(b2[0] == 0.5f + 0.01f && b2[1] == -0.25f - 0.01f && b2[2] == 0.125f + 0.01f);
    /* all equal: sign(0) = 0 everywhere, the bias does not move */
    float b3[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    int64_t c3[4] = {5, 5, 5, 5};
    moe_bias_update(b3, c3, 4, 0.001f);
    assert_true(b3[0] == 0.1f && b3[1] == 0.2f && b3[2] == 0.3f && b3[3] == 0.4f);
    /* huge counts where c̄ in float would round: 2^40 + 1 vs 2^40 */
    float b4[2] = {0, 0};
    int64_t c4[2] = {((int64_t)1 << 40) + 1, (int64_t)1 << 40};
    moe_bias_update(b4, c4, 2, 1.0f);
    assert_true(b4[0] == -1.0f && b4[1] == 1.0f);
}

int main(void)
{
    s_seed = kt_seed("test_optim", 20261128);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_decay),
        cmocka_unit_test(test_adamw_no_decay),
        cmocka_unit_test(test_adamw_first_step_is_sign_step),
        cmocka_unit_test(test_grad_norm_and_clip),
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_moe_bias_update),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
