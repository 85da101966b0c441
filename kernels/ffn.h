/* ffn.h: the SwiGLU feed-forward network y = (silu(x Wg^T) ⊙ (x Wu^T)) Wd^T on M tokens, used
 * for dense layers, each routed expert and the shared experts. Wg [f, d] and Wu [f, d] are
 * adjacent in memory (w_gu = [Wg; Wu], [2f, d]), as in the canonical parameter order, so the
 * two input projections are one GEMM. */
#ifndef SHOAL_KERNELS_FFN_H
#define SHOAL_KERNELS_FFN_H
#include "kernels_common.h"
#include "kgemm.h"
#ifdef SHOAL_HAVE_CUDA
#include <cublas_v2.h>
#endif
#ifdef __cplusplus
extern "C" {
#endif
/* Forward. Saves gu [M, 2f] (pre-activations) and a [M, f] (activations) for backward.
 * y [M, d] = beta·y + FFN(x) (beta 0 overwrites, 1 accumulates). M may be 0. prec: the GEMMs'
 * precision (kgemm.h; KGEMM_FP32 is plain fp32), the same for the backward. */
void ffn_forward(kgemm_prec_t prec, const float *x, int M, int d, int f, const float *w_gu,
                 const float *w_d, float *gu, float *a, float *y, float beta);
/* Backward from dy [M, d]. dgu [M, 2f] is scratch (its da part is also used as scratch).
 * dx_acc [M, d] += ∂L/∂x (or, with dx_beta 0, dx is overwritten); dw_gu_acc [2f, d] and
 * dw_d_acc [d, f] accumulate. */
void ffn_backward(kgemm_prec_t prec, const float *x, int M, int d, int f, const float *w_gu,
                  const float *w_d, const float *gu, const float *a, const float *dy, float *dgu,
                  float *da, float *dx_acc, float dx_beta, float *dw_gu_acc, float *dw_d_acc);
#ifdef SHOAL_HAVE_CUDA
/* CUDA twins on device pointers, same arguments and semantics. `h` is the caller's cuBLAS
 * handle: it is bound to `stream` (cublasSetStream) and to host pointer mode; its math mode is
 * left alone (keep the default: fp32 without TF32, which the parity tests assume). The GEMM
 * reduction order is cuBLAS's: results agree with the CPU within float rounding. */
shoal_err_t ffn_forward_cuda(cublasHandle_t h, const float *x, int M, int d, int f,
                             const float *w_gu, const float *w_d, float *gu, float *a, float *y,
                             float beta, cudaStream_t stream);
shoal_err_t ffn_backward_cuda(cublasHandle_t h, const float *x, int M, int d, int f,
                              const float *w_gu, const float *w_d, const float *gu, const float *a,
                              const float *dy, float *dgu, float *da, float *dx_acc, float dx_beta,
                              float *dw_gu_acc, float *dw_d_acc, cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
