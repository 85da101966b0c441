/* swiglu.c: a = silu(gate) ⊙ up on fused [M, 2f] rows, and its gradient. */
#include "swiglu.h"

#include "vexp.h"

SHOAL_VECTOR_CLONES
void swiglu_forward(const float *gu, int M, int f, float *a)
{
    for (int m = 0; m < M; m++) {
        const float *restrict gr = gu + (size_t)m * 2 * f;
        const float *restrict ur = gr + f;
        float *restrict ar = a + (size_t)m * f;
        for (int j = 0; j < f; j++) {
            float z = gr[j];
            ar[j] = z / (1.0f + vexp(-z)) * ur[j];
        }
    }
}

/* silu'(z) = σ(z)(1 + z(1 − σ(z))). */
SHOAL_VECTOR_CLONES
void swiglu_backward(const float *gu, const float *da, int M, int f, float *dgu)
{
    for (int m = 0; m < M; m++) {
        const float *restrict gr = gu + (size_t)m * 2 * f;
        const float *restrict ur = gr + f;
        const float *restrict dar = da + (size_t)m * f;
        float *restrict dg = dgu + (size_t)m * 2 * f;
        float *restrict du = dg + f;
        for (int j = 0; j < f; j++) {
            float z = gr[j];
            float sig = 1.0f / (1.0f + vexp(-z));
            du[j] = dar[j] * z * sig;
            dg[j] = dar[j] * ur[j] * sig * (1.0f + z * (1.0f - sig));
        }
    }
}
