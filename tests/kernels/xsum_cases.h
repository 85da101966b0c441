/* xsum_cases.h: the cases a twin of the exact binned sum (xsum.h) must reproduce bit for bit, run
 * against xsum.c through a small table of operations. Shared by test_xsum_twin (the twin's
 * element arithmetic, xsum_elem.h, run on the host) and tests/gpu/test_gpu_parity_xsum (the CUDA
 * twin on a device).
 *
 * xsum_twin_check: fresh random gradients over tensors of every kind (ordinary, the whole float
 * range with subnormals and near-overflow values, empty, all zeros, subnormals raised by a
 * 1e30-larger deposit, one element, a raise by exactly one bin, an infinity, a NaN on one rank,
 * per-deposit scales that give the ranks different windows), several chunks per large tensor;
 * deposits spread round-robin over 1-4 "ranks", some whole, some as two tensor ranges; then the
 * windows max-reduced, every rank aligned, the counters summed as int64 and the result taken.
 * Windows, counters and results are compared bitwise after each stage.
 * xsum_twin_check_results: random counters and windows set directly (every window of the grid,
 * the special ones, exact ties of both roundings of the result, subnormal and overflowing
 * results), then the results compared bitwise. Both return the number of mismatches (the first
 * ones printed). */
#ifndef SHOAL_XSUM_CASES_H
#define SHOAL_XSUM_CASES_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kt_util.h"
#include "xsum.h"

/* A twin's operations on host arrays (a device twin copies in and out). */
typedef struct {
    const char *name;
    void *(*make)(const int64_t *offsets, int n_tensors);
    void (*drop)(void *v);
    void (*deposit)(void *v, const float *g);
    void (*deposit_tensors)(void *v, const float *g, int t0, int t1);
    void (*align)(void *v, const int64_t *top, int t0, int t1);
    void (*result)(void *v, float *out, int t0, int t1);
    void (*get)(void *v, int64_t *top, int64_t *bins);
    void (*set)(void *v, const int64_t *top, const int64_t *bins);
} xsum_twin_ops_t;

#define XC_NT 10
#define XC_NV 24 /* deposits per trial */
#define XC_MAX_RANKS 4
static const int64_t xc_offsets[XC_NT + 1] = {0,     10000, 15000, 15000, 15300, 16000,
                                              16001, 20098, 20148, 20198, 22198};
#define XC_NE 22198

static float xc_bits_float(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* Deposit k of a trial, fresh from r (see the file comment for the tensors' kinds). */
static void xc_fill(kt_rng_t *r, int k, int ranks, float *g)
{
    const int64_t *o = xc_offsets;
    for (int64_t i = o[0]; i < o[1]; i++)
        g[i] = (float)kt_uniform(r, -1e-3, 1e-3);
    for (int64_t i = o[1]; i < o[2]; i++) { /* any finite pattern but the largest exponents */
        const uint32_t b = (uint32_t)kt_next(r) & 0xfeffffffu;
        g[i] = xc_bits_float(b);
    }
    for (int64_t i = o[3]; i < o[4]; i++)
        g[i] = 0.0f;
    for (int64_t i = o[4]; i < o[5]; i++) {
        const float sub = xc_bits_float(((uint32_t)kt_next(r) & 0x807fffffu));
        g[i] = k == 5 ? sub * 1e30f : sub;
    }
    g[o[5]] = (float)kt_uniform(r, -8, 8) * (k == XC_NV - 1 ? 1e6f : 1.0f);
    for (int64_t i = o[6]; i < o[7]; i++)
        g[i] = (float)kt_uniform(r, -4, 4) * (k == XC_NV / 2 && i == o[6] + 7 ? 0x1p50f : 1.0f);
    for (int64_t i = o[7]; i < o[8]; i++)
        g[i] = (float)kt_uniform(r, -1, 1) * (k == 9 && i == o[7] + 3 ? INFINITY : 1.0f);
    for (int64_t i = o[8]; i < o[9]; i++) /* a NaN on one rank of several */
        g[i] = k == 3 && ranks > 1 && i == o[8] ? NAN : (float)kt_uniform(r, -1, 1);
    const float scale = ldexpf(1.0f, kt_randint(r, 121) - 60);
    for (int64_t i = o[9]; i < o[10]; i++)
        g[i] = (float)kt_uniform(r, -1, 1) * scale;
}

/* The first mismatches of n values of `size` bytes each (printed as hex). */
static int xc_compare(const char *what, const void *twin, const void *ref, int64_t n, size_t size,
                      int *printed)
{
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *a = (const char *)twin + (size_t)i * size,
                   *b = (const char *)ref + (size_t)i * size;
        if (memcmp(a, b, size) == 0)
            continue;
        bad++;
        if ((*printed)++ < 10) {
            uint64_t va = 0, vb = 0;
            memcpy(&va, a, size);
            memcpy(&vb, b, size);
            fprintf(stderr, "  MISMATCH %s [%lld]: twin 0x%llx, cpu 0x%llx\n", what, (long long)i,
                    (unsigned long long)va, (unsigned long long)vb);
        }
    }
    return bad;
}

/* Windows and counters of a twin vector against the CPU's. */
static int xc_compare_state(const xsum_twin_ops_t *ops, void *v, const xsum_vec_t *x,
                            const char *stage, int *printed)
{
    int64_t *top = malloc(sizeof(int64_t) * XC_NT), *bins = malloc(sizeof(int64_t) * 2 * XC_NE);
    ops->get(v, top, bins);
    char what[96];
    snprintf(what, sizeof what, "%s: window", stage);
    int bad = xc_compare(what, top, x->top, XC_NT, sizeof(int64_t), printed);
    snprintf(what, sizeof what, "%s: counter", stage);
    bad += xc_compare(what, bins, x->bins, 2 * XC_NE, sizeof(int64_t), printed);
    free(top);
    free(bins);
    return bad;
}

static int xc_compare_result(const xsum_twin_ops_t *ops, void *v, const xsum_vec_t *x,
                             const char *stage, int *printed)
{
    float *a = malloc(sizeof(float) * XC_NE), *b = malloc(sizeof(float) * XC_NE);
    const int mid = XC_NT / 2; /* two calls: the ranges must stay apart */
    memset(a, 0x5a, sizeof(float) * XC_NE);
    ops->result(v, a, 0, mid);
    ops->result(v, a, mid, XC_NT);
    xsum_vec_result(x, b, 0, XC_NT);
    char what[96];
    snprintf(what, sizeof what, "%s: result", stage);
    const int bad = xc_compare(what, a, b, XC_NE, sizeof(float), printed);
    free(a);
    free(b);
    return bad;
}

static int xsum_twin_check(const xsum_twin_ops_t *ops, kt_rng_t *r, int trials)
{
    int bad = 0, printed = 0;
    float *g = malloc(sizeof(float) * XC_NE);
    for (int trial = 0; trial < trials; trial++) {
        const int ranks = 1 + trial % XC_MAX_RANKS, mid = 1 + kt_randint(r, XC_NT - 1);
        xsum_vec_t x[XC_MAX_RANKS];
        void *v[XC_MAX_RANKS];
        for (int q = 0; q < ranks; q++) {
            if (xsum_vec_init(&x[q], xc_offsets, XC_NT) != 0) {
                fprintf(stderr, "xsum_vec_init: out of memory\n");
                exit(1);
            }
            v[q] = ops->make(xc_offsets, XC_NT);
        }
        for (int k = 0; k < XC_NV; k++) {
            const int q = k % ranks;
            xc_fill(r, k, ranks, g);
            if (k % 2 == 0) {
                if (xsum_vec_deposit(&x[q], g) != 0) {
                    fprintf(stderr, "xsum_vec_deposit refused deposit %d\n", k);
                    exit(1);
                }
                ops->deposit(v[q], g);
            } else { /* two ranges, the later first: each tensor is still one deposit */
                xsum_vec_deposit_tensors(&x[q], g, mid, XC_NT);
                xsum_vec_deposit_tensors(&x[q], g, 0, mid);
                ops->deposit_tensors(v[q], g, mid, XC_NT);
                ops->deposit_tensors(v[q], g, 0, mid);
            }
        }
        char stage[64];
        for (int q = 0; q < ranks; q++) {
            snprintf(stage, sizeof stage, "trial %d rank %d/%d deposits", trial, q, ranks);
            bad += xc_compare_state(ops, v[q], &x[q], stage, &printed);
            bad += xc_compare_result(ops, v[q], &x[q], stage, &printed);
        }
        int64_t top[XC_NT];
        for (int t = 0; t < XC_NT; t++) {
            top[t] = XSUM_EMPTY;
            for (int q = 0; q < ranks; q++)
                top[t] = x[q].top[t] > top[t] ? x[q].top[t] : top[t];
        }
        for (int q = 0; q < ranks; q++) {
            xsum_vec_align(&x[q], top, 0, XC_NT);
            ops->align(v[q], top, 0, mid);
            ops->align(v[q], top, mid, XC_NT);
            snprintf(stage, sizeof stage, "trial %d rank %d/%d aligned", trial, q, ranks);
            bad += xc_compare_state(ops, v[q], &x[q], stage, &printed);
        }
        /* the int64 all-reduce, into rank 0 of each side */
        int64_t *sum = malloc(sizeof(int64_t) * 2 * XC_NE),
                *bins = malloc(sizeof(int64_t) * 2 * XC_NE);
        int64_t tt[XC_NT];
        ops->get(v[0], tt, sum);
        for (int q = 1; q < ranks; q++) {
            ops->get(v[q], tt, bins);
            for (int64_t i = 0; i < 2 * XC_NE; i++) {
                sum[i] = (int64_t)((uint64_t)sum[i] + (uint64_t)bins[i]);
                x[0].bins[i] += x[q].bins[i];
            }
        }
        ops->set(v[0], top, sum);
        snprintf(stage, sizeof stage, "trial %d, %d ranks summed", trial, ranks);
        bad += xc_compare_result(ops, v[0], &x[0], stage, &printed);
        free(sum);
        free(bins);
        for (int q = 0; q < ranks; q++) {
            xsum_vec_fini(&x[q]);
            ops->drop(v[q]);
        }
    }
    free(g);
    return bad;
}

__extension__ typedef __int128 xc_i128; /* gcc and clang on 64-bit targets, as xsum.c */
__extension__ typedef unsigned __int128 xc_u128;

/* A counter pair whose 128-bit value sits at (or next to) a tie of a rounding at bit a. */
static void xc_tie_counters(kt_rng_t *r, int64_t *bins2)
{
    const int a = 1 + kt_randint(r, 100);
    const int mbits = a + 24 < 110 ? 24 : 110 - a;
    xc_u128 v = (xc_u128)(kt_next(r) & ((UINT64_C(1) << mbits) - 1)) << a;
    v += (xc_u128)1 << (a - 1);
    const int64_t deltas[5] = {0, 1, -1, a > 6 ? (INT64_C(1) << (a - 6 < 60 ? a - 6 : 60)) : 0,
                               a > 6 ? -(INT64_C(1) << (a - 6 < 60 ? a - 6 : 60)) : 0};
    v += (xc_u128)(xc_i128)deltas[kt_randint(r, 5)];
    xc_i128 s = (xc_i128)v;
    if (kt_next(r) & 1)
        s = -s;
    /* hi·2^48 + lo with lo of either sign */
    int64_t hi = (int64_t)(s >> 48), lo = (int64_t)(s - (xc_i128)hi * ((xc_i128)1 << 48));
    if (kt_next(r) & 1) {
        hi += 1;
        lo -= INT64_C(1) << 48;
    }
    bins2[0] = hi;
    bins2[1] = lo;
}

static int xsum_twin_check_results(const xsum_twin_ops_t *ops, kt_rng_t *r)
{
    /* tensors at windows 1..7 (all the grid finite floats reach), then EMPTY and NONFINITE */
    enum { NT = 9, PER = 30000 };
    int64_t off[NT + 1];
    for (int t = 0; t <= NT; t++)
        off[t] = (int64_t)t * PER;
    xsum_vec_t x;
    if (xsum_vec_init(&x, off, NT) != 0) {
        fprintf(stderr, "xsum_vec_init: out of memory\n");
        exit(1);
    }
    for (int t = 0; t < NT; t++)
        x.top[t] = t < 7 ? t + 1 : t == 7 ? XSUM_EMPTY : XSUM_NONFINITE;
    for (int64_t i = 0; i < off[NT]; i++) {
        int64_t *b = x.bins + 2 * i;
        switch (i % 4) {
        case 0: /* anything a counter can hold */
            b[0] = (int64_t)kt_next(r) >> kt_randint(r, 64);
            b[1] = (int64_t)kt_next(r) >> kt_randint(r, 64);
            break;
        case 1: /* small counts */
            b[0] = kt_randint(r, 5) - 2;
            b[1] = (int64_t)kt_next(r) >> (40 + kt_randint(r, 24));
            break;
        default:
            xc_tie_counters(r, b);
        }
    }
    void *v = ops->make(off, NT);
    ops->set(v, x.top, x.bins);
    float *a = malloc(sizeof(float) * (size_t)off[NT]),
          *b = malloc(sizeof(float) * (size_t)off[NT]);
    ops->result(v, a, 0, NT);
    xsum_vec_result(&x, b, 0, NT);
    int printed = 0;
    const int bad = xc_compare("set counters: result", a, b, off[NT], sizeof(float), &printed);
    /* and the cases are not all alike: some results are subnormal, some infinite, some ties */
    int sub = 0, inf = 0;
    for (int64_t i = 0; i < off[NT]; i++) {
        sub += fpclassify(b[i]) == FP_SUBNORMAL;
        inf += isinf(b[i]) != 0;
    }
    free(a);
    free(b);
    ops->drop(v);
    xsum_vec_fini(&x);
    if (sub == 0 || inf == 0) {
        fprintf(stderr, "  the result cases miss subnormals (%d) or infinities (%d)\n", sub, inf);
        return bad + 1;
    }
    return bad;
}

#endif
