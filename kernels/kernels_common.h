/* kernels_common.h: conventions shared by every kernel.
 *
 * Layout: activations are row-major [M, width] with M = tokens (B·T, sequence-major: token
 * (b, t) is row b·T + t). Weights are [out, in] row-major and applied as y = x W^T (MODEL.md).
 * Shape arguments come in one fixed order: tokens (M or B, T), then widths (d, f, ...), then
 * experts (N, K). Backward functions ACCUMULATE (+=) into weight gradients and into input
 * gradients named `dx_acc`; outputs named without `_acc` are overwritten.
 * All functions keep fp32 data on the CPU; their GEMMs go through kgemm.h (fp32 OpenBLAS, or bf16
 * inputs on oneDNN where a config says so), single-threaded except inside those libraries. */
#ifndef SHOAL_KERNELS_COMMON_H
#define SHOAL_KERNELS_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* CUDA twins (`<op>_cuda`, built when SHOAL_HAVE_CUDA): the same semantics on device pointers,
 * enqueued on a stream, returning SHOAL_ERR_CUDA (detail in shoal_errmsg()) when the launch
 * fails. Results agree with the CPU within float rounding (different exp, FMA contraction,
 * reduction order), not bitwise, except where a header says so. */
#ifdef SHOAL_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "err.h"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#ifdef SHOAL_HAVE_CUDA
struct cublasContext; /* cublasHandle_t, without pulling cublas_v2.h into every C file */

/* Matrix precision of the CUDA twins' GEMMs issued on handle h: bf16 0 (the default) is plain
 * fp32; bf16 1 lets cuBLAS round the fp32 operands to bf16 with fp32 accumulation
 * (CUBLAS_COMPUTE_32F_FAST_16BF on cublasGemmEx), i.e. bf16 tensor-core arithmetic on fp32
 * storage. Recorded per handle (SHOAL_ERR_NOMEM past 64 handles with bf16 on); forget a handle
 * (bf16 0) before cublasDestroy. Thread-safe. */
shoal_err_t kernels_matmul_bf16_cuda(struct cublasContext *h, int bf16);
int kernels_matmul_is_bf16_cuda(struct cublasContext *h);
#endif

#ifdef __cplusplus
}
#endif
#endif
