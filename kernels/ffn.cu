/* ffn.cu: CUDA twin of ffn.c: the same three cuBLAS GEMMs each way (row-major through the
 * transpose trick, fp32, no TF32) around the swiglu CUDA kernels. FLOPs forward 6·M·d·f,
 * backward 12·M·d·f; at the tiny model's shapes (d 128, f 384) each call is launch-bound. */
#include "ffn.h"
#include "kblas.cuh"
#include "swiglu.h"

extern "C" shoal_err_t ffn_forward_cuda(cublasHandle_t h, const float *x, int M, int d, int f,
                                        const float *w_gu, const float *w_d, float *gu, float *a,
                                        float *y, float beta, cudaStream_t stream)
{
    if (M == 0)
        return SHOAL_OK;
    shoal_err_t rc = kblas_bind(h, stream, "ffn_forward_cuda");
    /* gu [M, 2f] = x [M, d] · w_gu^T */
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, true, M, 2 * f, d, 1.0f, x, d, w_gu, d, 0.0f, gu, 2 * f,
                        "ffn_forward_cuda (gu)");
    if (rc == SHOAL_OK)
        rc = swiglu_forward_cuda(gu, M, f, a, stream);
    /* y [M, d] = beta·y + a [M, f] · w_d^T */
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, true, M, d, f, 1.0f, a, f, w_d, f, beta, y, d,
                        "ffn_forward_cuda (y)");
    return rc;
}

extern "C" shoal_err_t ffn_backward_cuda(cublasHandle_t h, const float *x, int M, int d, int f,
                                         const float *w_gu, const float *w_d, const float *gu,
                                         const float *a, const float *dy, float *dgu, float *da,
                                         float *dx_acc, float dx_beta, float *dw_gu_acc,
                                         float *dw_d_acc, cudaStream_t stream)
{
    if (M == 0)
        return SHOAL_OK;
    shoal_err_t rc = kblas_bind(h, stream, "ffn_backward_cuda");
    /* dw_d [d, f] += dy^T [d, M] · a [M, f] */
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, true, false, d, f, M, 1.0f, dy, d, a, f, 1.0f, dw_d_acc, f,
                        "ffn_backward_cuda (dw_d)");
    /* da [M, f] = dy [M, d] · w_d [d, f] */
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, false, M, f, d, 1.0f, dy, d, w_d, f, 0.0f, da, f,
                        "ffn_backward_cuda (da)");
    if (rc == SHOAL_OK)
        rc = swiglu_backward_cuda(gu, da, M, f, dgu, stream);
    /* dw_gu [2f, d] += dgu^T [2f, M] · x [M, d] */
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, true, false, 2 * f, d, M, 1.0f, dgu, 2 * f, x, d, 1.0f, dw_gu_acc, d,
                        "ffn_backward_cuda (dw_gu)");
    /* dx [M, d] (+)= dgu [M, 2f] · w_gu [2f, d] */
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, false, M, d, 2 * f, 1.0f, dgu, 2 * f, w_gu, d, dx_beta, dx_acc, d,
                        "ffn_backward_cuda (dx)");
    return rc;
}
