/* kgemm.h: the one CPU GEMM entry point of the kernels. Every matrix product of the CPU model
 * goes through kgemm(), which runs it in the precision its caller was configured with: fp32 on
 * OpenBLAS (cblas_sgemm, bit for bit what the kernels computed before this module existed), or
 * bf16 inputs with fp32 accumulation and output on oneDNN's matmul primitive. */
#ifndef SHOAL_KERNELS_KGEMM_H
#define SHOAL_KERNELS_KGEMM_H
#include <stdint.h>

#include "err.h"
#ifdef __cplusplus
extern "C" {
#endif

/* Matrix precision. FP32 (0, the default of every zeroed config) is OpenBLAS sgemm. BF16 rounds
 * both operands to bf16 (nearest even) as they are read, multiplies and accumulates in fp32 and
 * writes fp32: parameters, gradients and optimizer state stay fp32, only the products' inputs
 * lose precision (8 significant bits; relative error of a K-term dot product ≲ 2^-8·√K in
 * practice). FP32_ONEDNN is fp32 on oneDNN, for measuring it against OpenBLAS (bench_bf16);
 * the trainer never selects it. */
typedef enum { KGEMM_FP32 = 0, KGEMM_BF16 = 1, KGEMM_FP32_ONEDNN = 2 } kgemm_prec_t;

/* C [M, N] = alpha · op(A) · op(B) + beta · C, all row-major; op(X) = X^T when trans_x is
 * nonzero. A is [M, K] (trans_a 0) or [K, M] (1) with row stride lda; B is [K, N] or [N, K]
 * with ldb; C has row stride ldc. beta 0 overwrites C (NaN in C is not propagated). M, N or K
 * may be 0. Thread-safe: concurrent calls from different threads are allowed.
 * FP32: with OpenBLAS on one thread (blas_select_set_threads), C is cut into blocks by the
 * shape alone (kgemm_fp32_blocks) and the blocks run on kpar's threads, each one cblas_sgemm
 * on its part of C: the same bits at any thread count, and those of a single cblas_sgemm call
 * with the same arguments when the shape is one block. With OpenBLAS threaded (a process that
 * never set its threads), one cblas_sgemm call.
 * BF16 and FP32_ONEDNN need kgemm_check(prec) == SHOAL_OK first; should oneDNN fail on a call
 * (out of memory), that call runs in fp32 on OpenBLAS instead and one error line is logged.
 * BF16 is cut the same way (the operand every block reads whole rounded once), each block one
 * oneDNN call on one OpenMP thread: the same bits at any thread count too. Unconfigured (OpenBLAS
 * threaded), oneDNN runs the whole GEMM on kpar_threads() OpenMP threads. */
void kgemm(kgemm_prec_t prec, int trans_a, int trans_b, int M, int N, int K, float alpha,
           const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* How an fp32 GEMM of this shape is cut: C in `blocks` blocks of `block` rows (by_rows 1) or
 * columns (0), the last one shorter. The shape alone decides: blocks of 256 along C's longer
 * side, unless that leaves a block under 2^20 multiply-adds (then fewer, longer ones, multiples
 * of 32; one block for a small GEMM). Each block is one single-threaded
 * GEMM (cblas_sgemm, or oneDNN for bf16) when OpenBLAS runs on one thread. */
void kgemm_fp32_blocks(int M, int N, int K, int *by_rows, int *block, int *blocks);

/* Whether `prec` can run on this machine: SHOAL_OK for FP32 always; for BF16 when shoal was
 * built with oneDNN and the CPU has AVX512_BF16 or AMX-BF16 (cpuid); for FP32_ONEDNN when built
 * with oneDNN. Otherwise SHOAL_ERR_INVALID with a message saying which is missing. */
shoal_err_t kgemm_check(kgemm_prec_t prec);

/* "fp32", "bf16" or "fp32-onednn". */
const char *kgemm_prec_name(kgemm_prec_t prec);

/* Whether the CPU can multiply bf16 natively (AVX512_BF16 or AMX-BF16, and the OS saves the
 * AVX-512 state), from cpuid; independent of how shoal was built. */
int kgemm_cpu_has_bf16(void);

/* Whether train.precision bf16 can run here: built with oneDNN and kgemm_cpu_has_bf16(). Does
 * not start oneDNN (kgemm_check does): a worker declares it at registration ("cpu bf16"). */
int kgemm_bf16_available(void);

/* dst[i] = src[i] rounded to bf16 (nearest even; NaN stays NaN), as the bf16 bit pattern. */
void kgemm_round_bf16(const float *src, uint16_t *dst, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
