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
/* The residual add fused into the norm after it: x += res, then rmsnorm_forward(x) (x is
 * updated in place: it is the residual stream the backward needs). */
void rmsnorm_residual_forward(float *x, const float *res, const float *g, int M, int d, float eps,
                              float *y, float *rstd);
/* dx_acc[M, d] += ∂L/∂x; dg_acc[d] += ∂L/∂g, given dy = ∂L/∂y and the forward's rstd. */
void rmsnorm_backward(const float *x, const float *g, const float *rstd, const float *dy, int M,
                      int d, float *dx_acc, float *dg_acc);
#ifdef SHOAL_HAVE_CUDA
shoal_err_t rmsnorm_forward_cuda(const float *x, const float *g, int M, int d, float eps, float *y,
                                 float *rstd, cudaStream_t stream);
/* rmsnorm_residual_forward in one pass over the rows (the add rounds as the CPU's). */
shoal_err_t rmsnorm_residual_forward_cuda(float *x, const float *res, const float *g, int M, int d,
                                          float eps, float *y, float *rstd, cudaStream_t stream);
/* Deterministic (fixed reduction order for dg over rows). */
shoal_err_t rmsnorm_backward_cuda(const float *x, const float *g, const float *rstd,
                                  const float *dy, int M, int d, float *dx_acc, float *dg_acc,
                                  cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
