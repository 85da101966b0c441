/* embedding.c: token embedding lookup and its (deterministic, token-ordered) gradient. */
#include "embedding.h"

#include <string.h>

void embedding_forward(const int32_t *tok, int M, const float *E, int d, float *out)
{
    for (int m = 0; m < M; m++)
        memcpy(out + (size_t)m * d, E + (size_t)tok[m] * d, (size_t)d * sizeof(float));
}

void embedding_backward(const int32_t *tok, int M, const float *dout, int d, float *dE_acc)
{
    for (int m = 0; m < M; m++) {
        float *restrict dst = dE_acc + (size_t)tok[m] * d;
        const float *restrict src = dout + (size_t)m * d;
        for (int j = 0; j < d; j++)
            dst[j] += src[j];
    }
}
