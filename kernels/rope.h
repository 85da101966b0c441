/* rope.h: rotary position embedding, rotate-half layout (MODEL.md): for i < dh/2,
 * x'[i] = x[i] cos φ − x[i+dh/2] sin φ, x'[i+dh/2] = x[i+dh/2] cos φ + x[i] sin φ, φ = t·θ_i,
 * θ_i = theta^(−2i/dh), angles in float64, cos/sin rounded to float. */
#ifndef SHOAL_KERNELS_ROPE_H
#define SHOAL_KERNELS_ROPE_H
#include "kernels_common.h"
#ifdef __cplusplus
extern "C" {
#endif
/* cos_t, sin_t: [T, dh/2]. */
void rope_tables(int T, int dh, double theta, float *cos_t, float *sin_t);
/* In place on x [B·T, H·dh] (row = token, head h uses features [h·dh, (h+1)·dh)). The row
 * stride is `ld` floats (≥ H·dh), so q and k can live inside a fused [M, 3d] qkv buffer. */
void rope_forward(float *x, int B, int T, int H, int dh, int ld, const float *cos_t,
                  const float *sin_t);
/* In place: turns ∂L/∂x' into ∂L/∂x (the transposed rotation). */
void rope_backward(float *dx, int B, int T, int H, int dh, int ld, const float *cos_t,
                   const float *sin_t);
#ifdef SHOAL_HAVE_CUDA
/* cos_t, sin_t: device copies of rope_tables() (computed once on the host). */
shoal_err_t rope_forward_cuda(float *x, int B, int T, int H, int dh, int ld, const float *cos_t,
                              const float *sin_t, cudaStream_t stream);
shoal_err_t rope_backward_cuda(float *dx, int B, int T, int H, int dh, int ld,
                               const float *cos_t, const float *sin_t, cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
