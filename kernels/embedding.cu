/* embedding.cu: CUDA twin of embedding.c. The backward is deterministic: each thread owns one
 * (vocab row, feature) of dE and adds the tokens' rows in token order, as the CPU does. */
#include "embedding.h"
#include "kcuda.cuh"

__global__ void k_embedding_forward(const int32_t *__restrict__ tok, int M,
                                    const float *__restrict__ E, int d, float *__restrict__ out)
{
    const int64_t n = (int64_t)M * d;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = i / d, j = i % d;
        out[i] = E[(int64_t)tok[m] * d + j];
    }
}

#define EMB_TILE 1024

/* block (32 features, 8 vocab rows); tokens staged through shared memory in tiles */
__global__ void k_embedding_backward(const int32_t *__restrict__ tok, int M,
                                     const float *__restrict__ dout, int d, int V,
                                     float *__restrict__ dE_acc)
{
    __shared__ int32_t s_tok[EMB_TILE];
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int v = blockIdx.y * blockDim.y + threadIdx.y;
    const bool mine = j < d && v < V;
    float acc = mine ? dE_acc[(int64_t)v * d + j] : 0.0f;
    const int nthr = blockDim.x * blockDim.y, tid = threadIdx.y * blockDim.x + threadIdx.x;
    for (int m0 = 0; m0 < M; m0 += EMB_TILE) {
        const int cnt = min(EMB_TILE, M - m0);
        __syncthreads();
        for (int i = tid; i < cnt; i += nthr)
            s_tok[i] = tok[m0 + i];
        __syncthreads();
        if (mine)
            for (int i = 0; i < cnt; i++)
                if (s_tok[i] == v)
                    acc += dout[(int64_t)(m0 + i) * d + j];
    }
    if (mine)
        dE_acc[(int64_t)v * d + j] = acc;
}

extern "C" shoal_err_t embedding_forward_cuda(const int32_t *tok, int M, const float *E, int d,
                                              float *out, cudaStream_t stream)
{
    if ((int64_t)M * d == 0)
        return SHOAL_OK;
    k_embedding_forward<<<kcuda_blocks((int64_t)M * d, 256), 256, 0, stream>>>(tok, M, E, d, out);
    return kcuda_check("embedding_forward_cuda");
}

extern "C" shoal_err_t embedding_backward_cuda(const int32_t *tok, int M, const float *dout, int d,
                                               int V, float *dE_acc, cudaStream_t stream)
{
    if (M == 0 || d == 0 || V == 0)
        return SHOAL_OK;
    dim3 block(32, 8), grid((unsigned)((d + 31) / 32), (unsigned)((V + 7) / 8));
    k_embedding_backward<<<grid, block, 0, stream>>>(tok, M, dout, d, V, dE_acc);
    return kcuda_check("embedding_backward_cuda");
}
