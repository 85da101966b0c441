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
#ifdef SHOAL_HAVE_CUDA
shoal_err_t embedding_forward_cuda(const int32_t *tok, int M, const float *E, int d, float *out,
                                   cudaStream_t stream);
/* Deterministic and bitwise equal to embedding_backward: one thread per (vocab row, feature)
 * adds the matching tokens in token order. Costs V·d·M comparisons: meant for small V (the
 * 256 byte tokens of v1). */
shoal_err_t embedding_backward_cuda(const int32_t *tok, int M, const float *dout, int d, int V,
                                    float *dE_acc, cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
