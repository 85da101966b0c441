/* test_xsum: the binned exact sum gives the same bits however the deposits are ordered and split
 * over "ranks" (aligned windows + int64 sums), is as accurate as its grid promises, raises its
 * window exactly, and reports NaN/inf, empty tensors and exhausted capacity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "kt_util.h"
#include "xsum.h"

#define NT 6
#define NV 24 /* deposits (micro-batches) */

/* 6 tensors: ordinary gradients, a wide dynamic range (1e-30 .. 1e3), an all-zero one, one
 * with subnormals (and one deposit 1e30 larger: a window raise by two bins), a single element,
 * and values of a few units with one deposit of 2^50 (a raise by one bin, after which the
 * fractions of the small values decide what the moved counters hold). */
#define NE 2201
static const int64_t s_offsets[NT + 1] = {0, 1000, 1700, 1800, 2100, 2101, NE};
static float s_vals[NV][NE];

static void s_fill(kt_rng_t *r)
{
    for (int k = 0; k < NV; k++) {
        for (int i = 0; i < 1000; i++)
            s_vals[k][i] = (float)kt_uniform(r, -1e-3, 1e-3);
        for (int i = 1000; i < 1700; i++)
            s_vals[k][i] = (float)(kt_uniform(r, -1, 1) * pow(10.0, kt_uniform(r, -30, 3)));
        for (int i = 1700; i < 1800; i++)
            s_vals[k][i] = 0.0f;
        for (int i = 1800; i < 2100; i++)
            s_vals[k][i] = (float)(kt_uniform(r, -1, 1) * 1e-38 * (k == 7 ? 1e30 : 1.0));
        s_vals[k][2100] = (float)kt_uniform(r, -8, 8) * (k == NV - 1 ? 1e6f : 1.0f);
        for (int i = 2101; i < NE; i++)
            s_vals[k][i] =
                (float)kt_uniform(r, -4, 4) * (k == NV / 2 && i == 2101 ? 0x1p50f : 1.0f);
    }
}

/* The deposits `order[0..n)` split round-robin over `ranks` vectors, then aligned (maximum of
 * the windows) and summed as int64: what workers do. */
static void s_sum_ranks(const int *order, int n, int ranks, float *out)
{
    xsum_vec_t x[8];
    for (int q = 0; q < ranks; q++)
        assert_int_equal(xsum_vec_init(&x[q], s_offsets, NT), 0);
    for (int k = 0; k < n; k++)
        assert_int_equal(xsum_vec_deposit(&x[k % ranks], s_vals[order[k]]), 0);
    int64_t top[NT];
    for (int t = 0; t < NT; t++) {
        top[t] = XSUM_EMPTY;
        for (int q = 0; q < ranks; q++)
            top[t] = x[q].top[t] > top[t] ? x[q].top[t] : top[t];
    }
    for (int q = 0; q < ranks; q++)
        xsum_vec_align(&x[q], top, 0, NT);
    for (int q = 1; q < ranks; q++)
        for (int64_t i = 0; i < 2 * s_offsets[NT]; i++)
            x[0].bins[i] += x[q].bins[i];
    xsum_vec_result(&x[0], out, 0, NT);
    for (int q = 0; q < ranks; q++)
        xsum_vec_fini(&x[q]);
}

static void test_order_and_split_independent(void **state)
{
    (void)state;
    kt_rng_t r = {kt_seed("xsum_order", 11)};
    s_fill(&r);
    int order[NV];
    for (int k = 0; k < NV; k++)
        order[k] = k;
    float want[NE], got[NE];
    s_sum_ranks(order, NV, 1, want);
    for (int trial = 0; trial < 20; trial++) {
        for (int k = NV - 1; k > 0; k--) { /* Fisher-Yates */
            int j = (int)(kt_next(&r) % (uint64_t)(k + 1)), t = order[k];
            order[k] = order[j];
            order[j] = t;
        }
        const int ranks = 1 + trial % 5;
        s_sum_ranks(order, NV, ranks, got);
        if (memcmp(want, got, sizeof want) != 0) {
            for (int i = 0; i < NE; i++)
                if (memcmp(&want[i], &got[i], sizeof(float)))
                    fail_msg("trial %d, %d ranks: element %d: %a vs %a", trial, ranks, i,
                             (double)want[i], (double)got[i]);
        }
    }
    /* and a plain float sum does depend on the order (else this test proves nothing) */
    float a = 0.0f, b = 0.0f;
    for (int k = 0; k < NV; k++)
        a += s_vals[k][0];
    for (int k = NV - 1; k >= 0; k--)
        b += s_vals[order[k]][0];
    int differs = 0;
    for (int i = 0; i < 1000 && !differs; i++) {
        a = b = 0.0f;
        for (int k = 0; k < NV; k++)
            a += s_vals[k][i];
        for (int k = 0; k < NV; k++)
            b += s_vals[order[k]][i];
        differs = memcmp(&a, &b, sizeof a) != 0;
    }
    assert_true(differs);
}

static void test_accuracy(void **state)
{
    (void)state;
    kt_rng_t r = {kt_seed("xsum_accuracy", 12)};
    s_fill(&r);
    int order[NV];
    for (int k = 0; k < NV; k++)
        order[k] = k;
    float got[NE];
    s_sum_ranks(order, NV, 3, got);
    for (int t = 0; t < NT; t++) {
        double maxabs = 0.0;
        for (int k = 0; k < NV; k++)
            for (int64_t i = s_offsets[t]; i < s_offsets[t + 1]; i++)
                maxabs = fmax(maxabs, fabs((double)s_vals[k][i]));
        for (int64_t i = s_offsets[t]; i < s_offsets[t + 1]; i++) {
            long double exact = 0.0L;
            for (int k = 0; k < NV; k++)
                exact += (long double)s_vals[k][i];
            /* truncation: < one low unit (<= 2^-48 of the maximum) per deposit; then one
             * float rounding of the result */
            const double tol = NV * ldexp(maxabs, -47) + fabs((double)exact) * 0x1p-24;
            if (fabs((double)(got[i] - exact)) > tol)
                fail_msg("tensor %d element %lld: %.9g vs exact %.9Lg (tol %g)", t, (long long)i,
                         (double)got[i], exact, tol);
        }
    }
    for (int64_t i = 1700; i < 1800; i++) /* the all-zero tensor */
        assert_true(got[i] == 0.0f);
}

/* Small values first then a large one (raising the window twice over) equals large first. */
static void test_window_raise(void **state)
{
    (void)state;
    const int64_t off[2] = {0, 3};
    const float small[3] = {3.0e-20f, -7.0e-21f, 1.0f}, mid[3] = {2.5e-5f, 1.0f, -1.0f},
                big[3] = {1.0e15f, 3.0f, 0.5f};
    const float *seqs[2][3] = {{small, mid, big}, {big, mid, small}};
    float out[2][3];
    for (int s = 0; s < 2; s++) {
        xsum_vec_t x;
        assert_int_equal(xsum_vec_init(&x, off, 1), 0);
        for (int k = 0; k < 3; k++)
            assert_int_equal(xsum_vec_deposit(&x, seqs[s][k]), 0);
        xsum_vec_result(&x, out[s], 0, 1);
        xsum_vec_fini(&x);
    }
    assert_memory_equal(out[0], out[1], sizeof out[0]);
    assert_true(out[0][0] == 1.0e15f);
    assert_true(out[0][1] == 4.0f); /* 1 + 1 + 3: element 1 survives the 1e15 window */
}

static void test_nonfinite_empty_capacity(void **state)
{
    (void)state;
    const int64_t off[3] = {0, 2, 4};
    float g[4] = {1.0f, INFINITY, 2.0f, 3.0f}, out[4];
    xsum_vec_t x;
    assert_int_equal(xsum_vec_init(&x, off, 2), 0);
    xsum_vec_result(&x, out, 0, 2); /* nothing deposited: zeros */
    for (int i = 0; i < 4; i++)
        assert_true(out[i] == 0.0f);
    assert_int_equal(xsum_vec_deposit(&x, g), 0);
    g[1] = 1.0f;
    assert_int_equal(xsum_vec_deposit(&x, g), 0);
    xsum_vec_result(&x, out, 0, 2);
    assert_true(isnan(out[0]) && isnan(out[1])); /* once non-finite, stays NaN */
    assert_true(out[2] == 4.0f && out[3] == 6.0f);
    /* a window maximum keeps NONFINITE over any finite window */
    int64_t top[2] = {XSUM_NONFINITE, x.top[1]};
    xsum_vec_align(&x, top, 0, 2);
    assert_true(x.top[0] == XSUM_NONFINITE);
    x.deposits = XSUM_MAX_DEPOSITS;
    assert_int_equal(xsum_vec_deposit(&x, g), -1);
    xsum_vec_fini(&x);
}

/* The result's rounding: counters set by hand (a window and (top, low) pairs, including sums
 * exactly halfway between two floats with and without a remainder below, parts beyond 2^53,
 * results that are subnormal or overflow) against the 128-bit integer rounded by the compiler's
 * conversion and scaled by ldexpf, which is the definition (xsum.h). */
__extension__ typedef __int128 s_i128; /* gcc and clang on 64-bit targets */

static void test_result_rounding(void **state)
{
    (void)state;
    kt_rng_t r = {kt_seed("xsum_round", 5)};
    enum { N = 4096 };
    const int64_t off[2] = {0, N};
    const int64_t tops[] = {1, 2, 4, 5, 6, 7};
    xsum_vec_t x;
    assert_int_equal(xsum_vec_init(&x, off, 1), 0);
    float out[N];
    for (size_t k = 0; k < sizeof tops / sizeof tops[0]; k++) {
        x.top[0] = tops[k];
        for (int i = 0; i < N; i++) {
            int64_t hi = (int64_t)(kt_next(&r) >> (16 + kt_randint(&r, 48))) *
                         (kt_randint(&r, 2) ? 1 : -1);
            int64_t lo = (int64_t)(kt_next(&r) >> (12 + kt_randint(&r, 52))) *
                         (kt_randint(&r, 2) ? 1 : -1);
            switch (i % 8) {
            case 0: /* hi·2^48 = m·2^55 + 2^54 (m of 24 bits): exactly halfway between two
                     * floats; lo 0 (a tie, to even) or ±1, lost in a double's rounding */
            case 1:
                hi = (int64_t)((kt_next(&r) >> 40) | (1u << 23)) * 128 + 64;
                lo = i % 8 == 0 ? 0 : kt_randint(&r, 2) ? 1 : -1;
                break;
            case 2: /* parts beyond 2^53 (many deposits) */
                hi = (int64_t)(kt_next(&r) >> 2) * (kt_randint(&r, 2) ? 1 : -1);
                break;
            default:
                break;
            }
            x.bins[2 * i] = hi;
            x.bins[2 * i + 1] = lo;
        }
        xsum_vec_result(&x, out, 0, 1);
        const int e = (int)(XSUM_BIN_BITS * (tops[k] - 1) - XSUM_GRID_OFFSET);
        for (int i = 0; i < N; i++) {
            const s_i128 v = (s_i128)x.bins[2 * i] * ((s_i128)1 << XSUM_BIN_BITS) + x.bins[2 * i + 1];
            const float want = ldexpf((float)v, e);
            if (memcmp(&want, &out[i], sizeof want) != 0)
                fail_msg("top %lld counters (%lld, %lld): %a, want %a", (long long)tops[k],
                         (long long)x.bins[2 * i], (long long)x.bins[2 * i + 1], out[i], want);
        }
    }
    xsum_vec_fini(&x);
}

/* A cleared vector (counters left stale) sums like a fresh one, alone and over two ranks with a
 * tensor only one rank deposited into and one nobody did. */
static void test_clear_reuse(void **state)
{
    (void)state;
    kt_rng_t r = {kt_seed("xsum_clear", 9)};
    s_fill(&r);
    int order[NV];
    for (int k = 0; k < NV; k++)
        order[k] = k;
    float fresh[NE], reused[NE];
    s_sum_ranks(order, NV, 1, fresh);
    xsum_vec_t x[2];
    for (int q = 0; q < 2; q++) {
        assert_int_equal(xsum_vec_init(&x[q], s_offsets, NT), 0);
        for (int k = 0; k < 5; k++) /* stale counters from an earlier step */
            assert_int_equal(xsum_vec_deposit(&x[q], s_vals[NV - 1 - k]), 0);
        xsum_vec_clear(&x[q]);
    }
    for (int k = 0; k < NV; k++)
        assert_int_equal(xsum_vec_deposit(&x[0], s_vals[k]), 0);
    xsum_vec_result(&x[0], reused, 0, NT);
    assert_memory_equal(fresh, reused, sizeof fresh);
    /* rank 1 deposits into tensor 2 only; tensor 4 gets nothing anywhere */
    static float g[NE];
    memcpy(g + s_offsets[2], s_vals[0] + s_offsets[2],
           sizeof(float) * (size_t)(s_offsets[3] - s_offsets[2]));
    xsum_vec_deposit_tensors(&x[1], g, 2, 3);
    int64_t top[NT];
    for (int t = 0; t < NT; t++)
        top[t] = x[0].top[t] > x[1].top[t] ? x[0].top[t] : x[1].top[t];
    xsum_vec_clear(&x[0]); /* rank 0: everything but tensors 2 and 4 */
    for (int k = 0; k < NV; k++) {
        xsum_vec_deposit_tensors(&x[0], s_vals[k], 0, 2);
        xsum_vec_deposit_tensors(&x[0], s_vals[k], 3, 4);
        xsum_vec_deposit_tensors(&x[0], s_vals[k], 5, NT);
    }
    for (int t = 0; t < NT; t++)
        top[t] = x[0].top[t] > x[1].top[t] ? x[0].top[t] : x[1].top[t];
    for (int q = 0; q < 2; q++)
        xsum_vec_align(&x[q], top, 0, NT);
    for (int64_t i = 0; i < 2 * s_offsets[NT]; i++)
        x[0].bins[i] += x[1].bins[i];
    xsum_vec_result(&x[0], reused, 0, NT);
    for (int64_t i = 0; i < NE; i++) {
        const float want = i >= s_offsets[4] && i < s_offsets[5] ? 0.0f
                           : i >= s_offsets[2] && i < s_offsets[3] ? s_vals[0][i]
                                                                    : fresh[i];
        if (memcmp(&want, &reused[i], sizeof want) != 0)
            fail_msg("element %lld: %a, want %a", (long long)i, reused[i], want);
    }
    for (int q = 0; q < 2; q++)
        xsum_vec_fini(&x[q]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_split_independent),
        cmocka_unit_test(test_accuracy),
        cmocka_unit_test(test_window_raise),
        cmocka_unit_test(test_nonfinite_empty_capacity),
        cmocka_unit_test(test_result_rounding),
        cmocka_unit_test(test_clear_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
