/* cross_entropy.h: softmax cross-entropy fused with its gradient. */
#ifndef SHOAL_KERNELS_CROSS_ENTROPY_H
#define SHOAL_KERNELS_CROSS_ENTROPY_H
#include "kernels_common.h"
#ifdef __cplusplus
extern "C" {
#endif
/* logits: [M, V]; tgt: [M] in [0, V). Returns Σ_m −log softmax(logits[m])[tgt[m]] (in double).
 * If dlogits is not NULL it receives scale·(softmax − onehot(tgt)); dlogits may equal logits
 * (in place). Use scale = 1/(total positions) for the gradient of the mean. */
double cross_entropy_forward_backward(const float *logits, const int32_t *tgt, int M, int V,
                                      float scale, float *dlogits);
#ifdef SHOAL_HAVE_CUDA
/* As cross_entropy_forward_backward, but the per-row losses −log softmax(logits[m])[tgt[m]]
 * go to row_loss [M] (device, double; may be NULL) for the caller to reduce, since the launch
 * is asynchronous. dlogits may be NULL or equal logits. */
shoal_err_t cross_entropy_forward_backward_cuda(const float *logits, const int32_t *tgt, int M,
                                                int V, float scale, float *dlogits,
                                                double *row_loss, cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
