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
#ifdef __cplusplus
}
#endif
#endif
