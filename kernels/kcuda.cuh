/* kcuda.cuh: private helpers of the CUDA twins (launch checking, grid sizing, warp reductions).
 * Included only by the kernels/ .cu files. */
#ifndef SHOAL_KERNELS_KCUDA_CUH
#define SHOAL_KERNELS_KCUDA_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "err.h"

/* After every launch: turn a launch error into a shoal_err_t naming the kernel. */
static inline shoal_err_t kcuda_check(const char *what)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return shoal_fail(SHOAL_ERR_CUDA, "%s: launch failed: %s", what, cudaGetErrorString(e));
    return SHOAL_OK;
}

/* Blocks for n elements at `threads` per block, capped (the kernels use grid-stride loops). */
static inline unsigned kcuda_blocks(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b > 65535LL * 16)
        b = 65535LL * 16;
    return (unsigned)(b < 1 ? 1 : b);
}

__device__ __forceinline__ float kcuda_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double kcuda_warp_sum_d(double v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float kcuda_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
