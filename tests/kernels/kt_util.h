/* kt_util.h: shared helpers of the kernel tests: a seeded RNG (seed printed, overridable with
 * SHOAL_TEST_SEED), central finite differences in double, and gradient comparison that prints
 * the first mismatches (llm.c style). Header-only so each test stays one executable. */
#ifndef SHOAL_KT_UTIL_H
#define SHOAL_KT_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t s;
} kt_rng_t;

/* The test's seed: SHOAL_TEST_SEED if set, else `dflt`; always printed so a failure can be
 * replayed. */
static inline uint64_t kt_seed(const char *test, uint64_t dflt)
{
    const char *env = getenv("SHOAL_TEST_SEED");
    uint64_t seed = env && *env ? strtoull(env, NULL, 0) : dflt;
    printf("[%s] seed %llu (set SHOAL_TEST_SEED to replay)\n", test, (unsigned long long)seed);
    return seed;
}

static inline uint64_t kt_next(kt_rng_t *r)
{ /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline double kt_uniform(kt_rng_t *r, double lo, double hi)
{
    return lo + (hi - lo) * (double)(kt_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static inline void kt_fill(kt_rng_t *r, float *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)kt_uniform(r, lo, hi);
}

static inline int kt_randint(kt_rng_t *r, int n)
{
    return (int)(kt_next(r) % (uint64_t)n);
}

/* Σ w·y in double: the random projection loss L whose gradient w.r.t. y is w. */
static inline double kt_project(const float *w, const float *y, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)w[i] * (double)y[i];
    return s;
}

typedef double (*kt_loss_fn)(void *ctx);

/* Central differences of loss(ctx) w.r.t. each of the n floats of x (perturbed in place and
 * restored): num[i] = (L(x_i + h) − L(x_i − h)) / (actual float step). */
static inline void kt_fd(float *x, size_t n, float h, kt_loss_fn loss, void *ctx, double *num)
{
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i];
        float xp = x0 + h, xm = x0 - h;
        x[i] = xp;
        double lp = loss(ctx);
        x[i] = xm;
        double lm = loss(ctx);
        x[i] = x0;
        num[i] = (lp - lm) / ((double)xp - (double)xm);
    }
}

/* Compares analytic `ana` against numeric `num`: each element must satisfy
 * |num − ana| <= atol + rtol·|ana|. Prints the first 10 mismatches and the worst error;
 * returns the number of mismatches. */
static inline int kt_check_grad(const char *what, const double *num, const float *ana, size_t n,
                                double atol, double rtol)
{
    int bad = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double a = (double)ana[i], e = fabs(num[i] - a);
        double lim = atol + rtol * fabs(a);
        if (e / lim > worst)
            worst = e / lim;
        if (!(e <= lim)) {
            if (bad < 10)
                printf("  %s[%zu]: numeric %.8g analytic %.8g (|diff| %.3g > %.3g)\n", what, i,
                       num[i], a, e, lim);
            bad++;
        }
    }
    printf("  %s: %zu elements, worst error %.3f of tolerance%s\n", what, n, worst,
           bad ? " FAIL" : "");
    return bad;
}

/* Compares float `got` with double `ref`: |got − ref| <= atol + rtol·|ref|. */
static inline int kt_check_close(const char *what, const float *got, const double *ref, size_t n,
                                 double atol, double rtol)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (!(e <= atol + rtol * fabs(ref[i]))) {
            if (bad < 10)
                printf("  %s[%zu]: got %.9g ref %.9g\n", what, i, (double)got[i], ref[i]);
            bad++;
        }
    }
    return bad;
}

/* The part of acc_after that a backward added on top of acc_before (for accumulate tests). */
static inline void kt_sub(const float *after, const float *before, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = after[i] - before[i];
}

/* 1 if rows of idx and ref (M rows of K experts) select the same sets (order within a row is
 * by value and may legitimately swap under a perturbation; the set may not). */
static inline int kt_same_selection(const int32_t *idx, const int32_t *ref, int M, int K)
{
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) {
            int found = 0;
            for (int j = 0; j < K; j++)
                found |= idx[m * K + k] == ref[m * K + j];
            if (!found)
                return 0;
        }
    return 1;
}

/* Naive routing of one token (N experts, K per token, G groups, TG kept) in double, from
 * the definition; ties to the lower index; returns the smallest decision margin (K-th vs the
 * next eligible s + b, and topk_group-th vs the next group score). */
static inline double kt_route_ref(int N, int K, int G, int TG, const double *sb, int *sel)
{
    int per = N / G, elig[64], ord[64], n = 0;
    double gs[64], margin = INFINITY;
    for (int i = 0; i < N; i++)
        elig[i] = 1;
    if (G > 1) {
        int gord[64];
        for (int g = 0; g < G; g++) {
            double a = -INFINITY, b = -INFINITY;
            for (int i = g * per; i < (g + 1) * per; i++) {
                if (sb[i] > a)
                    b = a, a = sb[i];
                else if (sb[i] > b)
                    b = sb[i];
            }
            gs[g] = a + b, gord[g] = g;
        }
        for (int a = 1; a < G; a++)
            for (int b = a; b > 0 && gs[gord[b]] > gs[gord[b - 1]]; b--) {
                int t = gord[b];
                gord[b] = gord[b - 1], gord[b - 1] = t;
            }
        if (TG < G)
            margin = gs[gord[TG - 1]] - gs[gord[TG]];
        for (int i = 0; i < N; i++)
            elig[i] = 0;
        for (int t = 0; t < TG; t++)
            for (int i = gord[t] * per; i < (gord[t] + 1) * per; i++)
                elig[i] = 1;
    }
    for (int i = 0; i < N; i++)
        if (elig[i])
            ord[n++] = i;
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && sb[ord[b]] > sb[ord[b - 1]]; b--) {
            int t = ord[b];
            ord[b] = ord[b - 1], ord[b - 1] = t;
        }
    if (K < n)
        margin = fmin(margin, sb[ord[K - 1]] - sb[ord[K]]);
    for (int k = 0; k < K; k++)
        sel[k] = ord[k];
    return margin;
}

#endif
