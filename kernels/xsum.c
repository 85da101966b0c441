/* xsum.c: exact binned sums (see xsum.h). Every arithmetic step below is exact (power-of-two
 * scalings, truncations and differences of integer-valued doubles whose results are
 * representable), so the AVX2 clone, the baseline code and any FMA contraction give the same
 * bits. */
#include "xsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vexp.h"

#define W XSUM_BIN_BITS

__extension__ typedef __int128 s_i128; /* gcc and clang on 64-bit targets */

int xsum_vec_init(xsum_vec_t *x, const int64_t *offsets, int n_tensors)
{
    memset(x, 0, sizeof *x);
    const int64_t n = offsets[n_tensors];
    x->n_tensors = n_tensors;
    x->offsets = malloc(sizeof(int64_t) * ((size_t)n_tensors + 1));
    x->top = malloc(sizeof(int64_t) * ((size_t)n_tensors + 1));
    x->bins = malloc(sizeof(int64_t) * (2 * (size_t)n + 1));
    if (!x->offsets || !x->top || !x->bins) {
        xsum_vec_fini(x);
        return -1;
    }
    memcpy(x->offsets, offsets, sizeof(int64_t) * ((size_t)n_tensors + 1));
    memset(x->bins, 0, sizeof(int64_t) * 2 * (size_t)n); /* xsum_vec_clear leaves them */
    xsum_vec_clear(x);
    return 0;
}

void xsum_vec_fini(xsum_vec_t *x)
{
    free(x->offsets);
    free(x->top);
    free(x->bins);
    memset(x, 0, sizeof *x);
}

/* Every tensor back to EMPTY, in O(tensors): an EMPTY tensor's counters are not read, its first
 * deposit writes them (s_deposit with first set) and xsum_vec_align zeroes them before they can
 * be summed over ranks. Clearing them here cost a 16-byte-per-parameter memset every step. */
void xsum_vec_clear(xsum_vec_t *x)
{
    for (int t = 0; t < x->n_tensors; t++)
        x->top[t] = XSUM_EMPTY;
    x->deposits = 0;
}

static void s_zero_counters(xsum_vec_t *x, int t)
{
    const int64_t lo = x->offsets[t], hi = x->offsets[t + 1];
    memset(x->bins + 2 * lo, 0, sizeof(int64_t) * 2 * (size_t)(hi - lo));
}

/* An integer-valued double of magnitude below 2^51 as int64 (adding 1.5·2^52 puts it in the
 * low mantissa bits): vectorises where a cast would not (no double -> int64 before AVX-512). */
static inline int64_t s_to_i64(double v)
{
    const double t = v + 6755399441055744.0;
    int64_t r;
    memcpy(&r, &t, sizeof r);
    return r - INT64_C(0x4338000000000000);
}

/* Largest |g| of [0, n), and whether every element is finite (g·0 is NaN for inf and NaN). */
SHOAL_VECTOR_CLONES
static float s_maxabs(const float *restrict g, int64_t n, int *finite)
{
    float m = 0.0f, z = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float a = fabsf(g[i]);
        m = a > m ? a : m;
        z += g[i] * 0.0f;
    }
    *finite = z == 0.0f;
    return m;
}

/* The bin holding a magnitude below 2^e: the least T with 2^e <= 2^(W·(T+1) - OFFSET). */
static int64_t s_top_of(float m)
{
    int e;
    frexpf(m, &e);
    return (e + XSUM_GRID_OFFSET + W - 1) / W - 1;
}

/* Moves counters of [lo, hi) up by d bins (the low counter drops out). */
static void s_raise(int64_t *restrict bins, int64_t lo, int64_t hi, int64_t d)
{
    for (int64_t i = lo; i < hi; i++) {
        bins[2 * i + 1] = d == 1 ? bins[2 * i] : 0;
        bins[2 * i] = 0;
    }
}

/* first: the tensor's first deposit since the clear, which writes the counters (the sum of
 * one deposit) instead of adding to stale ones */
SHOAL_VECTOR_CLONES
static void s_deposit(int64_t *restrict bins, const float *restrict g, int64_t n, int64_t top,
                      int first)
{
    /* q = g / u_{T-1}; |g| < 2^W·u_T, so |q| < 2^(2W) and both counters stay below 2^W */
    const double s = ldexp(1.0, (int)(XSUM_GRID_OFFSET - W * (top - 1)));
    const double inv = ldexp(1.0, -W), two_w = ldexp(1.0, W);
    if (first) {
        for (int64_t i = 0; i < n; i++) {
            const double q = (double)g[i] * s;
            const double h = trunc(q * inv);
            bins[2 * i] = s_to_i64(h);
            bins[2 * i + 1] = s_to_i64(trunc(q) - h * two_w);
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        const double q = (double)g[i] * s;
        const double h = trunc(q * inv);
        bins[2 * i] += s_to_i64(h);
        bins[2 * i + 1] += s_to_i64(trunc(q) - h * two_w);
    }
}

int xsum_vec_deposit(xsum_vec_t *x, const float *g)
{
    if (x->deposits >= XSUM_MAX_DEPOSITS)
        return -1;
    x->deposits++;
    xsum_vec_deposit_tensors(x, g, 0, x->n_tensors);
    return 0;
}

void xsum_vec_deposit_tensors(xsum_vec_t *x, const float *g, int t0, int t1)
{
    for (int t = t0; t < t1; t++) {
        const int64_t lo = x->offsets[t], hi = x->offsets[t + 1];
        if (x->top[t] == XSUM_NONFINITE)
            continue;
        int finite;
        const float m = s_maxabs(g + lo, hi - lo, &finite);
        const int first = x->top[t] == XSUM_EMPTY;
        if (!finite) {
            if (first) /* its counters may be summed over ranks: real (zero) ones */
                s_zero_counters(x, t);
            x->top[t] = XSUM_NONFINITE;
            continue;
        }
        if (m == 0.0f)
            continue;
        const int64_t want = s_top_of(m);
        if (first)
            x->top[t] = want;
        else if (want > x->top[t]) {
            s_raise(x->bins, lo, hi, want - x->top[t]);
            x->top[t] = want;
        }
        s_deposit(x->bins + 2 * lo, g + lo, hi - lo, x->top[t], first);
    }
}

void xsum_vec_align(xsum_vec_t *x, const int64_t *top, int t0, int t1)
{
    for (int t = t0; t < t1; t++) {
        const int64_t want = top[t];
        /* an empty tensor's counters are stale (xsum_vec_clear): zero before they are summed */
        if (x->top[t] == XSUM_EMPTY)
            s_zero_counters(x, t);
        if (want == XSUM_EMPTY || want == x->top[t])
            continue;
        if (want != XSUM_NONFINITE && x->top[t] != XSUM_EMPTY)
            s_raise(x->bins, x->offsets[t], x->offsets[t + 1], want - x->top[t]);
        /* an empty tensor's counters are now zero: it only takes the window */
        x->top[t] = want;
    }
}

/* hi·2^W + lo rounded once to float, as (float) of the 128-bit integer would (round to nearest
 * even). Both parts are exact doubles when |.| <= 2^53; their sum s is rounded once, with error
 * err (TwoSum, exact). float(s) is then float(hi·2^W + lo), unless s lies exactly halfway
 * between two floats (its 29 bits below float precision are 1000...0) and err is not 0: there,
 * and for larger parts, the 128-bit conversion (libgcc's __floattisf, ~10x the cost). */
static inline float s_round_counters(int64_t hi, int64_t lo)
{
    const int64_t lim = INT64_C(1) << 53;
    if (hi >= -lim && hi <= lim && lo >= -lim && lo <= lim) {
        const double a = (double)hi * (double)((int64_t)1 << W), b = (double)lo;
        const double s = a + b, bb = s - a, err = (a - (s - bb)) + (b - bb);
        uint64_t u;
        memcpy(&u, &s, sizeof u);
        if (err == 0.0 || (u & 0x1fffffffu) != 0x10000000u)
            return (float)s;
    }
    const s_i128 v = (s_i128)hi * ((s_i128)1 << W) + lo;
    return (float)v;
}

void xsum_vec_result(const xsum_vec_t *x, float *out, int t0, int t1)
{
    for (int t = t0; t < t1; t++) {
        const int64_t lo = x->offsets[t], hi = x->offsets[t + 1], top = x->top[t];
        if (top == XSUM_EMPTY || top == XSUM_NONFINITE) {
            const float v = top == XSUM_EMPTY ? 0.0f : NAN;
            for (int64_t i = lo; i < hi; i++)
                out[i] = v;
            continue;
        }
        /* the count of low units rounded once to float (s_round_counters), then scaled by 2^e:
         * the double product is exact, and its conversion rounds it as ldexpf did (that only
         * rounds where the result is subnormal, both to nearest even) */
        const int e = (int)(W * (top - 1) - XSUM_GRID_OFFSET);
        const double scale = ldexp(1.0, e);
        for (int64_t i = lo; i < hi; i++) {
            const float f = s_round_counters(x->bins[2 * i], x->bins[2 * i + 1]);
            out[i] = (float)((double)f * scale);
        }
    }
}
