/* test_attention: causal MHA forward against a naive per-token/per-head/per-key loop in double
 * (RoPE angles in double), backward (da, dWqkv, dWo) against central finite differences, da
 * overwritten and weight gradients accumulated. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "attention.h"
#include "kt_util.h"
#include "rope.h"

static uint64_t s_seed;

typedef struct {
    attention_shape_t s;
    double theta;
    float *a, *w_qkv, *w_o, *cos_t, *sin_t, *qkv, *p, *o, *out, *w;
} att_case_t;

static double s_loss(void *ctx)
{
    att_case_t *c = ctx;
    attention_forward(&c->s, c->a, c->w_qkv, c->w_o, c->cos_t, c->sin_t, c->qkv, c->p, c->o,
                      c->out);
    return kt_project(c->w, c->out, (size_t)c->s.B * c->s.T * c->s.d);
}

/* rotate-half RoPE of one head vector in double */
static void s_rope_ref(double *x, int dh, int t, double theta)
{
    for (int i = 0; i < dh / 2; i++) {
        double phi = t * pow(theta, -2.0 * i / dh), x1 = x[i], x2 = x[i + dh / 2];
        x[i] = x1 * cos(phi) - x2 * sin(phi);
        x[i + dh / 2] = x2 * cos(phi) + x1 * sin(phi);
    }
}

static void s_ref_forward(const att_case_t *c, double *ref)
{
    int B = c->s.B, T = c->s.T, d = c->s.d, H = c->s.H, dh = d / H;
    double *q = malloc((size_t)T * d * 8), *k = malloc((size_t)T * d * 8);
    double *v = malloc((size_t)T * d * 8), *o = malloc((size_t)d * 8), *sc = malloc((size_t)T * 8);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *ar = c->a + ((size_t)b * T + t) * d;
            for (int i = 0; i < d; i++) {
                double sq = 0, sk = 0, sv = 0;
                for (int j = 0; j < d; j++) {
                    sq += (double)c->w_qkv[(size_t)i * d + j] * ar[j];
                    sk += (double)c->w_qkv[(size_t)(d + i) * d + j] * ar[j];
                    sv += (double)c->w_qkv[(size_t)(2 * d + i) * d + j] * ar[j];
                }
                q[t * d + i] = sq, k[t * d + i] = sk, v[t * d + i] = sv;
            }
            for (int h = 0; h < H; h++) {
                s_rope_ref(q + t * d + h * dh, dh, t, c->theta);
                s_rope_ref(k + t * d + h * dh, dh, t, c->theta);
            }
        }
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < H; h++) {
                double mx = -INFINITY, z = 0;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int i = 0; i < dh; i++)
                        s += q[t * d + h * dh + i] * k[j * d + h * dh + i];
                    sc[j] = s / sqrt((double)dh);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= t; j++)
                    z += (sc[j] = exp(sc[j] - mx));
                for (int i = 0; i < dh; i++) {
                    double acc = 0;
                    for (int j = 0; j <= t; j++)
                        acc += sc[j] / z * v[j * d + h * dh + i];
                    o[h * dh + i] = acc;
                }
            }
            for (int i = 0; i < d; i++) {
                double acc = 0;
                for (int j = 0; j < d; j++)
                    acc += (double)c->w_o[(size_t)i * d + j] * o[j];
                ref[((size_t)b * T + t) * d + i] = acc;
            }
        }
    }
    free(q), free(k), free(v), free(o), free(sc);
}

static void s_run_case(int B, int T, int d, int H, double theta, uint64_t seed)
{
    kt_rng_t r = {seed};
    int M = B * T, dh = d / H;
    size_t na = (size_t)M * d, nqkv = (size_t)3 * d * d, no = (size_t)d * d;
    att_case_t c = {{B, T, d, H, KGEMM_FP32},
                    theta,
                    malloc(na * 4),
                    malloc(nqkv * 4),
                    malloc(no * 4),
                    malloc((size_t)T * dh / 2 * 4),
                    malloc((size_t)T * dh / 2 * 4),
                    malloc((size_t)M * 3 * d * 4),
                    malloc((size_t)B * H * T * T * 4),
                    malloc(na * 4),
                    malloc(na * 4),
                    malloc(na * 4)};
    rope_tables(T, dh, theta, c.cos_t, c.sin_t);
    kt_fill(&r, c.a, na, -1, 1);
    kt_fill(&r, c.w_qkv, nqkv, -0.7, 0.7);
    kt_fill(&r, c.w_o, no, -0.5, 0.5);
    kt_fill(&r, c.w, na, -1, 1);
    printf("case B=%d T=%d d=%d H=%d theta=%g\n", B, T, d, H, theta);

    double *ref = malloc(na * 8);
    s_ref_forward(&c, ref);
    attention_forward(&c.s, c.a, c.w_qkv, c.w_o, c.cos_t, c.sin_t, c.qkv, c.p, c.o, c.out);
    assert_int_equal(kt_check_close("out", c.out, ref, na, 2e-6, 2e-5), 0);
    /* saved probabilities: causal (0 above the diagonal), rows sum to 1 */
    for (int bh = 0; bh < B * H; bh++)
        for (int i = 0; i < T; i++) {
            double sum = 0;
            for (int j = 0; j < T; j++) {
                float pv = c.p[((size_t)bh * T + i) * T + j];
                if (j > i)
                    assert_true(pv == 0.0f);
                sum += pv;
            }
            assert_true(fabs(sum - 1) < 1e-6);
        }

    float *dobuf = malloc(na * 4), *dqkv = malloc((size_t)M * 3 * d * 4);
    float *dp = malloc((size_t)T * T * 4), *da = malloc(na * 4);
    float *dwqkv = calloc(nqkv, 4), *dwo = calloc(no, 4);
    for (size_t i = 0; i < na; i++)
        da[i] = 1e6f; /* overwritten */
    attention_backward(&c.s, c.a, c.w_qkv, c.w_o, c.cos_t, c.sin_t, c.qkv, c.p, c.o, c.w, dobuf,
                       dqkv, dp, da, dwqkv, dwo);

    double *num = malloc((nqkv > na ? nqkv : na) * 8);
    kt_fd(c.a, na, 2e-3f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("da", num, da, na, 1e-3, 1e-3), 0);
    kt_fd(c.w_qkv, nqkv, 2e-3f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dw_qkv", num, dwqkv, nqkv, 1e-3, 1e-3), 0);
    kt_fd(c.w_o, no, 2e-3f, s_loss, &c, num);
    assert_int_equal(kt_check_grad("dw_o", num, dwo, no, 1e-3, 1e-3), 0);

    /* weight gradients accumulate: a second backward adds the same amounts again */
    float *dwqkv2 = malloc(nqkv * 4), *dwo2 = malloc(no * 4);
    memcpy(dwqkv2, dwqkv, nqkv * 4), memcpy(dwo2, dwo, no * 4);
    attention_forward(&c.s, c.a, c.w_qkv, c.w_o, c.cos_t, c.sin_t, c.qkv, c.p, c.o, c.out);
    attention_backward(&c.s, c.a, c.w_qkv, c.w_o, c.cos_t, c.sin_t, c.qkv, c.p, c.o, c.w, dobuf,
                       dqkv, dp, da, dwqkv2, dwo2);
    for (size_t i = 0; i < nqkv; i++)
        assert_true(fabs(dwqkv2[i] - 2 * dwqkv[i]) <= 1e-5 * (1 + fabs(dwqkv[i])));
    for (size_t i = 0; i < no; i++)
        assert_true(fabs(dwo2[i] - 2 * dwo[i]) <= 1e-5 * (1 + fabs(dwo[i])));

    free(dwqkv2), free(dwo2);
    free(ref), free(dobuf), free(dqkv), free(dp), free(da), free(dwqkv), free(dwo), free(num);
    free(c.a), free(c.w_qkv), free(c.w_o), free(c.cos_t), free(c.sin_t), free(c.qkv), free(c.p);
    free(c.o), free(c.out), free(c.w);
}

static void test_attention_cases(void **state)
{
    (void)state;
    s_run_case(2, 5, 8, 2, 10.0, s_seed);
    s_run_case(1, 7, 12, 3, 10000.0, s_seed + 1);
    s_run_case(3, 1, 4, 1, 10000.0, s_seed + 2); /* T = 1: attention is v itself */
    /* T past the kernel's causal query blocking (64 rows), two sequences */
    s_run_case(2, 70, 8, 2, 10000.0, s_seed + 3);
}

int main(void)
{
    s_seed = kt_seed("test_attention", 20261128);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
