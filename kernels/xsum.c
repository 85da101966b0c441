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

void xsum_vec_clear(xsum_vec_t *x)
{
    for (int t = 0; t < x->n_tensors; t++)
        x->top[t] = XSUM_EMPTY;
    memset(x->bins, 0, sizeof(int64_t) * 2 * (size_t)x->offsets[x->n_tensors]);
    x->deposits = 0;
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

SHOAL_VECTOR_CLONES
static void s_deposit(int64_t *restrict bins, const float *restrict g, int64_t n, int64_t top)
{
    /* q = g / u_{T-1}; |g| < 2^W·u_T, so |q| < 2^(2W) and both counters stay below 2^W */
    const double s = ldexp(1.0, (int)(XSUM_GRID_OFFSET - W * (top - 1)));
    const double inv = ldexp(1.0, -W), two_w = ldexp(1.0, W);
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
        if (!finite) {
            x->top[t] = XSUM_NONFINITE;
            continue;
        }
        if (m == 0.0f)
            continue;
        const int64_t want = s_top_of(m);
        if (x->top[t] == XSUM_EMPTY)
            x->top[t] = want;
        else if (want > x->top[t]) {
            s_raise(x->bins, lo, hi, want - x->top[t]);
            x->top[t] = want;
        }
        s_deposit(x->bins + 2 * lo, g + lo, hi - lo, x->top[t]);
    }
}

void xsum_vec_align(xsum_vec_t *x, const int64_t *top, int t0, int t1)
{
    for (int t = t0; t < t1; t++) {
        const int64_t want = top[t];
        if (want == XSUM_EMPTY || want == x->top[t])
            continue;
        if (want != XSUM_NONFINITE && x->top[t] != XSUM_EMPTY)
            s_raise(x->bins, x->offsets[t], x->offsets[t + 1], want - x->top[t]);
        /* an empty tensor's counters are zero: it only takes the window */
        x->top[t] = want;
    }
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
        /* the count of low units as one 128-bit integer, rounded once to float (correctly, by
         * the compiler's conversion), then scaled by a power of two: no expression a compiler
         * could contract differently */
        const int e = (int)(W * (top - 1) - XSUM_GRID_OFFSET);
        for (int64_t i = lo; i < hi; i++) {
            const s_i128 v = (s_i128)x->bins[2 * i] * ((s_i128)1 << W) + x->bins[2 * i + 1];
            out[i] = ldexpf((float)v, e);
        }
    }
}
