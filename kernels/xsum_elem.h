/* xsum_elem.h: the per-element and per-tensor steps of the exact binned sum (xsum.h) written once
 * for the CUDA twin (kernels/xsum.cu, where they run on the device) and for its CPU check
 * (tests/kernels/test_xsum_twin.c, where they run on the host against xsum.c bit for bit).
 *
 * They compute what xsum.c computes, with operations a GPU does exactly:
 *   - the largest magnitude of a tensor is the maximum of |g|'s bit patterns (an unsigned
 *     integer maximum: exact in any order, no float reduction at all); a pattern at or above
 *     the infinity's means a NaN or an infinity was deposited;
 *   - the window top comes from the exponent field (frexpf's exponent, subnormals included);
 *   - the deposit is xsum.c's double arithmetic (power-of-two scalings and truncations: exact,
 *     FMA or not), with g's value read from its bits and a plain double -> int64 conversion in
 *     place of the magic-number trick (both exact for these integer values below 2^49);
 *   - the result rounds the 128-bit count of low units to float (round to nearest even, as the
 *     compiler's __int128 -> float conversion does) and then scales it by 2^e with a second
 *     rounding only where the result is subnormal (as ldexpf does): both in integer arithmetic.
 * C11 and CUDA C++. */
#ifndef SHOAL_KERNELS_XSUM_ELEM_H
#define SHOAL_KERNELS_XSUM_ELEM_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "xsum.h"

#ifdef __CUDACC__
#define XSUM_HD __host__ __device__ __forceinline__
#else
#define XSUM_HD static inline
#endif

/* Bit pattern of +inf: a |g| pattern at or above it is not finite. */
#define XSUM_INF_BITS 0x7f800000u

/* Per tensor, what one deposit (or an align) does to its counters: move them up `raise` bins
 * first (0: not at all), then deposit at window `dep` (XSUM_EMPTY: deposit nothing). */
typedef struct {
    int64_t raise, dep;
} xsum_step_t;

XSUM_HD uint32_t xsum_abs_bits(float g)
{
    uint32_t b;
    memcpy(&b, &g, sizeof b);
    return b & 0x7fffffffu;
}

XSUM_HD int xsum_clz64(uint64_t v) /* v != 0 */
{
#ifdef __CUDA_ARCH__
    return __clzll((long long)v);
#else
    return __builtin_clzll(v);
#endif
}

/* The bin holding a magnitude with bit pattern m (finite, non-zero): xsum.c's s_top_of, with
 * frexpf's exponent e (m = f·2^e, 0.5 <= f < 1) read from the bits. */
XSUM_HD int64_t xsum_top_of_bits(uint32_t m)
{
    const int biased = (int)(m >> 23);
    const int e = biased ? biased - 126 : (64 - xsum_clz64(m)) - 149;
    return (e + XSUM_GRID_OFFSET + XSUM_BIN_BITS - 1) / XSUM_BIN_BITS - 1;
}

/* One deposit's step for a tensor whose window is `top` and whose values had the largest
 * magnitude pattern m (xsum_vec_deposit_tensors): the new window goes back in *top. */
XSUM_HD xsum_step_t xsum_deposit_step(int64_t *top, uint32_t m)
{
    xsum_step_t s = {0, XSUM_EMPTY};
    if (*top == XSUM_NONFINITE)
        return s;
    if (m >= XSUM_INF_BITS) {
        *top = XSUM_NONFINITE;
        return s;
    }
    if (m == 0)
        return s;
    const int64_t want = xsum_top_of_bits(m);
    if (*top == XSUM_EMPTY)
        *top = want;
    else if (want > *top) {
        s.raise = want - *top;
        *top = want;
    }
    s.dep = *top;
    return s;
}

/* xsum_vec_align's step for a tensor at window *top asked to take window `want`. */
XSUM_HD xsum_step_t xsum_align_step(int64_t *top, int64_t want)
{
    xsum_step_t s = {0, XSUM_EMPTY};
    if (want == XSUM_EMPTY || want == *top)
        return s;
    if (want != XSUM_NONFINITE && *top != XSUM_EMPTY)
        s.raise = want - *top;
    *top = want;
    return s;
}

/* 2^k as a double, for -1022 <= k <= 1023. */
XSUM_HD double xsum_pow2(int k)
{
    const uint64_t b = (uint64_t)(k + 1023) << 52;
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

/* xsum.c's s_raise of one element's (top, low) counters by d bins. */
XSUM_HD void xsum_raise_one(int64_t *bins2, int64_t d)
{
    bins2[1] = d == 1 ? bins2[0] : 0;
    bins2[0] = 0;
}

/* The power of two a deposit at window top scales by: g / u_{T-1} = g · 2^shift. */
XSUM_HD int xsum_deposit_shift(int64_t top)
{
    return (int)(XSUM_GRID_OFFSET - XSUM_BIN_BITS * (top - 1));
}

/* xsum.c's s_deposit of one finite value. q = g · 2^shift is formed from g's bits (integer
 * significand times a power of two, exact) rather than from (double)g, so that a device flushing
 * float subnormals (-ftz, fast math) still deposits them. */
XSUM_HD void xsum_deposit_one(int64_t *bins2, float g, int shift)
{
    uint32_t b;
    memcpy(&b, &g, sizeof b);
    const int ex = (int)((b >> 23) & 0xffu);
    int32_t m = (int32_t)(ex ? (b & 0x7fffffu) | 0x800000u : b & 0x7fffffu);
    if (b >> 31)
        m = -m;
    const double q = (double)m * xsum_pow2((ex ? ex - 150 : -149) + shift);
    const double h = trunc(q * xsum_pow2(-XSUM_BIN_BITS));
    bins2[0] += (int64_t)h;
    bins2[1] += (int64_t)(trunc(q) - h * xsum_pow2(XSUM_BIN_BITS));
}

/* Round-to-nearest-even of the magnitude hi:lo (128 bits, non-zero) to 24 significant bits:
 * *mant (< 2^24) times 2^(return value). */
XSUM_HD int xsum_round24(uint64_t hi, uint64_t lo, uint32_t *mant)
{
    const int nbits = hi ? 128 - xsum_clz64(hi) : 64 - xsum_clz64(lo);
    if (nbits <= 24) {
        *mant = (uint32_t)lo;
        return 0;
    }
    int sh = nbits - 24;
    /* the kept bits, the first dropped bit (half) and whether any bit below it is set */
    uint64_t kept, half, below;
    if (sh >= 64) {
        kept = hi >> (sh - 64);
        half = sh == 64 ? lo >> 63 : (hi >> (sh - 65)) & 1;
        below = sh == 64 ? lo << 1 : (lo | (sh == 65 ? 0 : hi << (129 - sh)));
    } else {
        kept = (lo >> sh) | (hi << (64 - sh));
        half = (lo >> (sh - 1)) & 1;
        below = sh == 1 ? 0 : lo << (65 - sh);
    }
    kept &= 0xffffffu;
    if (half && (below || (kept & 1)))
        kept++;
    if (kept == (1u << 24)) {
        kept >>= 1;
        sh++;
    }
    *mant = (uint32_t)kept;
    return sh;
}

/* The float of xsum.c's result for one element: (float)(hi·2^BITS + lo) (one rounding), then
 * ldexpf by e = BITS·(top − 1) − OFFSET (exact, or a second rounding to a subnormal, or inf).
 * top must be a bin (not EMPTY or NONFINITE). */
XSUM_HD float xsum_result_one(const int64_t *bins2, int64_t top)
{
    const int64_t ch = bins2[0], cl = bins2[1];
    /* v = ch·2^48 + cl as a two's complement 128-bit vh:vl */
    uint64_t vl = (uint64_t)ch << XSUM_BIN_BITS;
    uint64_t vh =
        ((uint64_t)ch >> (64 - XSUM_BIN_BITS)) | (ch < 0 ? ~(uint64_t)0 << XSUM_BIN_BITS : 0);
    const uint64_t sum = vl + (uint64_t)cl;
    vh += (sum < vl ? 1 : 0) + (cl < 0 ? ~(uint64_t)0 : 0);
    vl = sum;
    const uint32_t sign = (int64_t)vh < 0 ? 0x80000000u : 0;
    if (sign) {
        vl = ~vl + 1;
        vh = ~vh + (vl == 0 ? 1 : 0);
    }
    uint32_t out = 0;
    if (vh | vl) {
        uint32_t mant;
        int ex = xsum_round24(vh, vl, &mant) + (int)(XSUM_BIN_BITS * (top - 1) - XSUM_GRID_OFFSET);
        while (mant < (1u << 23)) { /* exact small counts: normalise */
            mant <<= 1;
            ex--;
        }
        const int biased = ex + 150; /* value = 1.f · 2^(ex + 23) */
        if (biased >= 255)
            out = XSUM_INF_BITS;
        else if (biased >= 1)
            out = ((uint32_t)biased << 23) | (mant & 0x7fffffu);
        else { /* subnormal: round mant·2^(biased − 1) to an integer, to nearest even */
            const int s = 1 - biased;
            if (s <= 25) {
                const uint32_t q = mant >> s, r = mant & ((1u << s) - 1), h = 1u << (s - 1);
                out = q + ((r > h || (r == h && (q & 1))) ? 1 : 0);
            }
        }
    }
    out |= sign;
    float f;
    memcpy(&f, &out, sizeof f);
    return f;
}

/* xsum.c's result of an EMPTY (zeros) or NONFINITE (NaN, as math.h's NAN) tensor. */
XSUM_HD float xsum_result_special(int64_t top)
{
    const uint32_t b = top == XSUM_EMPTY ? 0u : 0x7fc00000u;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

#endif
