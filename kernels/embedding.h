/* embedding.h: token embedding lookup h = E[tok] and its gradient. */
#ifndef SHOAL_KERNELS_EMBEDDING_H
#define SHOAL_KERNELS_EMBEDDING_H
#include "kernels_common.h"
#ifdef __cplusplus
extern "C" {
#endif
/* out[m, :] = E[tok[m], :]; tok values must be in [0, V) (checked by the caller). */
void embedding_forward(const int32_t *tok, int M, const float *E, int d, float *out);
/* dE[tok[m], :] += dout[m, :], in token order (deterministic). */
void embedding_backward(const int32_t *tok, int M, const float *dout, int d, float *dE_acc);
#ifdef __cplusplus
}
#endif
#endif
