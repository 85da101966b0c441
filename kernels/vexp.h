/* vexp.h: exp(x) for float written so that GCC vectorises loops calling it (libm's expf is a
 * scalar call). Cephes-style: x = n·ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial,
 * 2^n by exponent bits. Relative error ~2 ulp for |x| < 87; far below, 0; far above, inf.
 * Arguments must be finite and |x| < 2^30 (the kernels pass max-subtracted scores and
 * activations). */
#ifndef SHOAL_KERNELS_VEXP_H
#define SHOAL_KERNELS_VEXP_H

#include <stdint.h>
#include <string.h>

/* Kernels whose loops use vexp are compiled for AVX2+FMA and for baseline x86-64; the loader
 * picks the best clone for the CPU at run time. SHOAL_HAVE_TARGET_CLONES comes from the build
 * (cmake/ShoalTargetClones.cmake): clang 14 compiles the attribute but its clones do not link
 * from other files, so there the kernels are baseline code. */
#if defined(SHOAL_HAVE_TARGET_CLONES) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define SHOAL_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
/* with an AVX-512 clone too: the MoE layer's own passes (SwiGLU, gates, scatter), measured 1.9x
 * faster than AVX2 on SwiGLU. The build is ISO C (-std=c11: no FMA contraction), so elementwise
 * results are the same bits in every clone. */
#define SHOAL_VECTOR_CLONES_512 \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SHOAL_VECTOR_CLONES
#define SHOAL_VECTOR_CLONES_512
#endif

static inline float vexp(float x)
{
    /* round to nearest by the 1.5·2^23 trick: branch-free and vectorisable without SSE4.1 */
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;      /* ln2 split in two for an exact product */
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* saturate in the integer domain (float selects would block vectorisation): below 2^-126
     * the result is 0, above 2^127 it is inf */
    int32_t ni = (int32_t)n;
    ni = ni < -127 ? -127 : ni;
    ni = ni > 128 ? 128 : ni;
    const int32_t bits = (ni + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#endif
