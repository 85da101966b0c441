/* rmsnorm.h: y = x · (mean_j x_j² + eps)^(-1/2) · g over the last dimension. */
#ifndef SHOAL_KERNELS_RMSNORM_H
#define SHOAL_KERNELS_RMSNORM_H
#include "kernels_common.h"
#ifdef __cplusplus
extern "C" {
#endif
/* x, y: [M, d]; g: [d]; rstd: [M] saved for backward (may be NULL when not needed). */
void rmsnorm_forward(const float *x, const float *g, int M, int d, float eps, float *y,
                     float *rstd);
/* dx_acc[M, d] += ∂L/∂x; dg_acc[d] += ∂L/∂g, given dy = ∂L/∂y and the forward's rstd. */
void rmsnorm_backward(const float *x, const float *g, const float *rstd, const float *dy, int M,
                      int d, float *dx_acc, float *dg_acc);
#ifdef SHOAL_HAVE_CUDA
shoal_err_t rmsnorm_forward_cuda(const float *x, const float *g, int M, int d, float eps, float *y,
                                 float *rstd, cudaStream_t stream);
/* Deterministic (fixed reduction order for dg over rows). */
shoal_err_t rmsnorm_backward_cuda(const float *x, const float *g, const float *rstd,
                                  const float *dy, int M, int d, float *dx_acc, float *dg_acc,
                                  cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
