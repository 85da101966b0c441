/* cross_entropy.cu: CUDA twin of cross_entropy.c; one block per row: max, Σexp (double), then
 * the gradient written over the row (logits and dlogits may alias: every read of the row is
 * finished at the reductions' barriers before the first write). */
#include <math.h>

#include "cross_entropy.h"
#include "kcuda.cuh"

#define CE_THREADS 256

__global__ void k_cross_entropy(const float *logits, const int32_t *__restrict__ tgt, int M, int V,
                                float scale, float *dlogits, double *__restrict__ row_loss)
{
    __shared__ float s_max[CE_THREADS / 32];
    __shared__ double s_sum[CE_THREADS / 32];
    const int m = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float *z = logits + (int64_t)m * V;
    const int t = tgt[m];
    const float zt = z[t];

    float mx = -INFINITY;
    for (int j = tid; j < V; j += CE_THREADS)
        mx = fmaxf(mx, z[j]);
    mx = kcuda_warp_max(mx);
    if (lane == 0)
        s_max[warp] = mx;
    __syncthreads();
    mx = s_max[0];
    for (int w = 1; w < CE_THREADS / 32; w++)
        mx = fmaxf(mx, s_max[w]);

    double sum = 0.0;
    for (int j = tid; j < V; j += CE_THREADS)
        sum += (double)expf(z[j] - mx);
    sum = kcuda_warp_sum_d(sum);
    if (lane == 0)
        s_sum[warp] = sum;
    __syncthreads();
    sum = 0.0;
    for (int w = 0; w < CE_THREADS / 32; w++)
        sum += s_sum[w];

    if (dlogits) {
        float *dz = dlogits + (int64_t)m * V;
        const float k = (float)((double)scale / sum);
        for (int j = tid; j < V; j += CE_THREADS) {
            float e = expf(z[j] - mx) * k;
            if (j == t)
                e -= scale;
            dz[j] = e;
        }
    }
    if (row_loss && tid == 0)
        row_loss[m] = log(sum) + (double)mx - (double)zt;
}

extern "C" shoal_err_t cross_entropy_forward_backward_cuda(const float *logits, const int32_t *tgt,
                                                           int M, int V, float scale,
                                                           float *dlogits, double *row_loss,
                                                           cudaStream_t stream)
{
    if (M == 0)
        return SHOAL_OK;
    k_cross_entropy<<<(unsigned)M, CE_THREADS, 0, stream>>>(logits, tgt, M, V, scale, dlogits,
                                                            row_loss);
    return kcuda_check("cross_entropy_forward_backward_cuda");
}
