/* test_xsum_twin: the arithmetic of the CUDA twin of the exact sum (kernels/xsum_elem.h, which
 * kernels/xsum.cu runs on the device) run here on the host, in the twin's own steps (a window
 * from the maximum |g| bit pattern, one step per tensor, then raise + deposit per element), against
 * xsum.c: windows, counters and results bit for bit on the cases of xsum_cases.h. What this cannot
 * show is the device itself (its double and integer arithmetic, the launches): that is
 * tests/gpu/test_gpu_parity_xsum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "kt_util.h"
#include "xsum_cases.h"
#include "xsum_elem.h"

/* The twin's steps on host arrays, in xsum.cu's order. */
typedef struct {
    int nt;
    int64_t off[64];
    int64_t top[64];
    int64_t *bins;
    xsum_step_t steps[64];
} host_twin_t;

static void *s_make(const int64_t *offsets, int nt)
{
    host_twin_t *h = calloc(1, sizeof *h);
    assert_non_null(h);
    assert_true(nt < 64);
    h->nt = nt;
    memcpy(h->off, offsets, sizeof(int64_t) * ((size_t)nt + 1));
    h->bins = calloc(2 * (size_t)offsets[nt] + 1, sizeof(int64_t));
    assert_non_null(h->bins);
    for (int t = 0; t < nt; t++)
        h->top[t] = XSUM_EMPTY;
    return h;
}

static void s_drop(void *v)
{
    host_twin_t *h = v;
    free(h->bins);
    free(h);
}

/* k_apply: raise each element's counters, then deposit g (NULL: raise only). */
static void s_apply(host_twin_t *h, const float *g, int t0, int t1)
{
    for (int t = t0; t < t1; t++) {
        const xsum_step_t st = h->steps[t];
        const int deposit = g && st.dep != XSUM_EMPTY;
        const int shift = deposit ? xsum_deposit_shift(st.dep) : 0;
        for (int64_t i = h->off[t]; i < h->off[t + 1]; i++) {
            if (st.raise != 0)
                xsum_raise_one(h->bins + 2 * i, st.raise);
            if (deposit)
                xsum_deposit_one(h->bins + 2 * i, g[i], shift);
        }
    }
}

static void s_deposit_tensors(void *v, const float *g, int t0, int t1)
{
    host_twin_t *h = v;
    for (int t = t0; t < t1; t++) { /* k_maxbits + k_deposit_steps */
        uint32_t m = 0;
        for (int64_t i = h->off[t]; i < h->off[t + 1]; i++) {
            const uint32_t a = xsum_abs_bits(g[i]);
            m = a > m ? a : m;
        }
        h->steps[t] = xsum_deposit_step(&h->top[t], m);
    }
    s_apply(h, g, t0, t1);
}

static void s_deposit(void *v, const float *g)
{
    s_deposit_tensors(v, g, 0, ((host_twin_t *)v)->nt);
}

static void s_align(void *v, const int64_t *top, int t0, int t1)
{
    host_twin_t *h = v;
    for (int t = t0; t < t1; t++)
        h->steps[t] = xsum_align_step(&h->top[t], top[t]);
    s_apply(h, NULL, t0, t1);
}

static void s_result(void *v, float *out, int t0, int t1)
{
    host_twin_t *h = v;
    for (int t = t0; t < t1; t++) {
        const int64_t tp = h->top[t];
        const int special = tp == XSUM_EMPTY || tp == XSUM_NONFINITE;
        for (int64_t i = h->off[t]; i < h->off[t + 1]; i++)
            out[i] = special ? xsum_result_special(tp) : xsum_result_one(h->bins + 2 * i, tp);
    }
}

static void s_get(void *v, int64_t *top, int64_t *bins)
{
    host_twin_t *h = v;
    memcpy(top, h->top, sizeof(int64_t) * (size_t)h->nt);
    memcpy(bins, h->bins, sizeof(int64_t) * 2 * (size_t)h->off[h->nt]);
}

static void s_set(void *v, const int64_t *top, const int64_t *bins)
{
    host_twin_t *h = v;
    memcpy(h->top, top, sizeof(int64_t) * (size_t)h->nt);
    memcpy(h->bins, bins, sizeof(int64_t) * 2 * (size_t)h->off[h->nt]);
}

static const xsum_twin_ops_t s_host_ops = {"host",  s_make,   s_drop, s_deposit, s_deposit_tensors,
                                           s_align, s_result, s_get,  s_set};

/* Every exponent (and every subnormal length) against xsum.c's frexpf-based window. */
static void test_window_of_every_exponent(void **state)
{
    (void)state;
    const int64_t off[2] = {0, 1};
    xsum_vec_t x;
    assert_int_equal(xsum_vec_init(&x, off, 1), 0);
    for (uint32_t ex = 0; ex < 255; ex++)
        for (uint32_t mant = 1; mant < (1u << 23); mant = mant * 2 + (ex & 1)) {
            const uint32_t bits = ex ? ex << 23 | (mant & 0x7fffffu) : mant;
            float g;
            memcpy(&g, &bits, sizeof g);
            xsum_vec_clear(&x);
            assert_int_equal(xsum_vec_deposit(&x, &g), 0);
            if (x.top[0] != xsum_top_of_bits(bits))
                fail_msg("pattern 0x%08x: window %lld, cpu %lld", bits,
                         (long long)xsum_top_of_bits(bits), (long long)x.top[0]);
        }
    xsum_vec_fini(&x);
}

static void test_deposits_align_sum(void **state)
{
    (void)state;
    kt_rng_t r = {kt_seed("xsum_twin", 24)};
    assert_int_equal(xsum_twin_check(&s_host_ops, &r, 8), 0);
}

static void test_results_of_set_counters(void **state)
{
    (void)state;
    kt_rng_t r = {kt_seed("xsum_twin_results", 25)};
    assert_int_equal(xsum_twin_check_results(&s_host_ops, &r), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_of_every_exponent),
        cmocka_unit_test(test_deposits_align_sum),
        cmocka_unit_test(test_results_of_set_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
