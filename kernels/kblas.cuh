/* kblas.cuh: private cuBLAS helpers of the CUDA twins: row-major GEMMs (plain and strided
 * batched) in the CPU's cblas_sgemm argument order, in the handle's matmul precision
 * (kernels_matmul_bf16_cuda: fp32, or bf16 arithmetic with fp32 accumulation), and cuBLAS
 * status → shoal_err_t. */
#ifndef SHOAL_KERNELS_KBLAS_CUH
#define SHOAL_KERNELS_KBLAS_CUH

#include <cublas_v2.h>

#include "kcuda.cuh"
#include "kernels_common.h"

/* A cuBLAS status as a shoal_err_t naming the call. */
static inline shoal_err_t kblas_check(cublasStatus_t st, const char *what)
{
    if (st != CUBLAS_STATUS_SUCCESS)
        return shoal_fail(SHOAL_ERR_CUDA, "%s: cuBLAS failed: %s (%d)", what,
                          cublasGetStatusString(st), (int)st);
    return SHOAL_OK;
}

/* Binds the caller's handle to `stream` with host scalars (alpha/beta below live on the host).
 * The default math mode is kept: plain fp32, no TF32, as the CPU computes. */
static inline shoal_err_t kblas_bind(cublasHandle_t h, cudaStream_t stream, const char *what)
{
    shoal_err_t rc = kblas_check(cublasSetStream(h, stream), what);
    if (rc == SHOAL_OK)
        rc = kblas_check(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST), what);
    return rc;
}

/* Row-major C[M, N] = alpha·op(A)·op(B) + beta·C exactly like
 * cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, ...): a row-major matrix is the column-major
 * transpose, so cuBLAS computes C^T = op(B)^T·op(A)^T with the operands swapped. */
static inline shoal_err_t kblas_gemm(cublasHandle_t h, bool ta, bool tb, int M, int N, int K,
                                     float alpha, const float *A, int lda, const float *B, int ldb,
                                     float beta, float *C, int ldc, const char *what)
{
    if (M == 0 || N == 0)
        return SHOAL_OK;
    if (kernels_matmul_is_bf16_cuda(h))
        return kblas_check(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                        ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                                        CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F,
                                        ldc, CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT),
                           what);
    return kblas_check(cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb, A, lda,
                                   &beta, C, ldc),
                       what);
}

/* kblas_gemm over `batch` matrices at element strides sA, sB, sC. */
static inline shoal_err_t kblas_gemm_strided(cublasHandle_t h, bool ta, bool tb, int M, int N,
                                             int K, float alpha, const float *A, int lda,
                                             long long sA, const float *B, int ldb, long long sB,
                                             float beta, float *C, int ldc, long long sC, int batch,
                                             const char *what)
{
    if (M == 0 || N == 0 || batch == 0)
        return SHOAL_OK;
    if (kernels_matmul_is_bf16_cuda(h))
        return kblas_check(cublasGemmStridedBatchedEx(
                               h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N,
                               M, K, &alpha, B, CUDA_R_32F, ldb, sB, A, CUDA_R_32F, lda, sA, &beta,
                               C, CUDA_R_32F, ldc, sC, batch, CUBLAS_COMPUTE_32F_FAST_16BF,
                               CUBLAS_GEMM_DEFAULT),
                           what);
    return kblas_check(cublasSgemmStridedBatched(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                 ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                                                 ldb, sB, A, lda, sA, &beta, C, ldc, sC, batch),
                       what);
}

#endif
