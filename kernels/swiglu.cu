/* swiglu.cu: CUDA twin of swiglu.c; one thread per (token, hidden unit). */
#include "kcuda.cuh"
#include "swiglu.h"

__global__ void k_swiglu_forward(const float *__restrict__ gu, int M, int f, float *__restrict__ a)
{
    const int64_t n = (int64_t)M * f;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = i / f, j = i % f;
        const float z = gu[m * 2 * f + j], u = gu[m * 2 * f + f + j];
        a[i] = z / (1.0f + expf(-z)) * u;
    }
}

/* silu'(z) = σ(z)(1 + z(1 − σ(z))) */
__global__ void k_swiglu_backward(const float *__restrict__ gu, const float *__restrict__ da, int M,
                                  int f, float *__restrict__ dgu)
{
    const int64_t n = (int64_t)M * f;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = i / f, j = i % f;
        const float z = gu[m * 2 * f + j], u = gu[m * 2 * f + f + j], g = da[i];
        const float sig = 1.0f / (1.0f + expf(-z));
        dgu[m * 2 * f + f + j] = g * z * sig;
        dgu[m * 2 * f + j] = g * u * sig * (1.0f + z * (1.0f - sig));
    }
}

extern "C" shoal_err_t swiglu_forward_cuda(const float *gu, int M, int f, float *a,
                                           cudaStream_t stream)
{
    const int64_t n = (int64_t)M * f;
    if (n == 0)
        return SHOAL_OK;
    k_swiglu_forward<<<kcuda_blocks(n, 256), 256, 0, stream>>>(gu, M, f, a);
    return kcuda_check("swiglu_forward_cuda");
}

extern "C" shoal_err_t swiglu_backward_cuda(const float *gu, const float *da, int M, int f,
                                            float *dgu, cudaStream_t stream)
{
    const int64_t n = (int64_t)M * f;
    if (n == 0)
        return SHOAL_OK;
    k_swiglu_backward<<<kcuda_blocks(n, 256), 256, 0, stream>>>(gu, da, M, f, dgu);
    return kcuda_check("swiglu_backward_cuda");
}
