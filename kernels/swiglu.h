/* swiglu.h: the SwiGLU activation a = silu(g) ⊙ u, silu(z) = z·sigmoid(z), on a fused
 * [M, 2f] buffer whose row holds the gate pre-activation (first f) then the up one (last f). */
#ifndef SHOAL_KERNELS_SWIGLU_H
#define SHOAL_KERNELS_SWIGLU_H
#include "kernels_common.h"
#ifdef __cplusplus
extern "C" {
#endif
/* gu: [M, 2f]; a: [M, f]. */
void swiglu_forward(const float *gu, int M, int f, float *a);
/* Given da [M, f], writes dgu [M, 2f] (gate part then up part). */
void swiglu_backward(const float *gu, const float *da, int M, int f, float *dgu);
#ifdef SHOAL_HAVE_CUDA
shoal_err_t swiglu_forward_cuda(const float *gu, int M, int f, float *a, cudaStream_t stream);
shoal_err_t swiglu_backward_cuda(const float *gu, const float *da, int M, int f, float *dgu,
                                 cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
