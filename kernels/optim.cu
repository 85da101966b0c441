/* optim.cu: CUDA twins of the optimizer pieces in optim.c. The AdamW scalars are formed on the
 * host exactly as adamw_update forms them; the element formula is the same. */
#include <math.h>

#include "kcuda.cuh"
#include "optim.h"

typedef struct {
    float b1, b2, omb1, omb2, sbc2, step, keep, eps;
} adamw_scalars_t;

/* One element of AdamW; explicit round-to-nearest ops: no FMA contraction, so the result is
 * bitwise the CPU's. */
__device__ __forceinline__ void s_adamw_element(float *__restrict__ p, float gi,
                                                float *__restrict__ m, float *__restrict__ v,
                                                int64_t i, const adamw_scalars_t &s, float keep)
{
    const float pi = __fmul_rn(p[i], keep);
    const float mi = __fadd_rn(__fmul_rn(m[i], s.b1), __fmul_rn(s.omb1, gi));
    const float vi = __fadd_rn(__fmul_rn(v[i], s.b2), __fmul_rn(__fmul_rn(s.omb2, gi), gi));
    m[i] = mi;
    v[i] = vi;
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.sbc2), s.eps);
    p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(s.step, mi), denom));
}

__global__ void k_adamw(float *__restrict__ p, const float *__restrict__ g, float *__restrict__ m,
                        float *__restrict__ v, int64_t n, adamw_scalars_t s)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        s_adamw_element(p, g[i], m, v, i, s, s.keep);
}

/* The scalars adamw_update forms on the CPU, formed the same way (keep for decay = 1). */
static adamw_scalars_t s_adamw_scalars(float lr, int decay, int64_t t, const adamw_hparams_t *hp)
{
    const double b1 = hp->beta1, b2 = hp->beta2;
    const double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    adamw_scalars_t s;
    s.b1 = hp->beta1;
    s.b2 = hp->beta2;
    s.omb1 = (float)(1.0 - b1);
    s.omb2 = (float)(1.0 - b2);
    s.sbc2 = (float)sqrt(bc2);
    s.step = (float)(-(double)lr / bc1);
    s.keep = decay ? (float)(1.0 - (double)lr * (double)hp->weight_decay) : 1.0f;
    s.eps = hp->eps;
    return s;
}

extern "C" shoal_err_t adamw_update_cuda(float *p, const float *g, float *m, float *v, int64_t n,
                                         float lr, int decay, int64_t t, const adamw_hparams_t *hp,
                                         cudaStream_t stream)
{
    if (n == 0)
        return SHOAL_OK;
    const adamw_scalars_t s = s_adamw_scalars(lr, decay, t, hp);
    k_adamw<<<kcuda_blocks(n, 256), 256, 0, stream>>>(p, g, m, v, n, s);
    return kcuda_check("adamw_update_cuda");
}

/* Packed index j (over every segment's elements) → its segment by binary search over `packed`
 * (a few hundred segments: L1-resident), then the AdamW element with that segment's decay. */
__global__ void k_adamw_segments(float *__restrict__ p, const float *__restrict__ g,
                                 float *__restrict__ m, float *__restrict__ v,
                                 const adamw_segment_t *__restrict__ segs, int n_segs,
                                 int64_t n_packed, adamw_scalars_t s, float gcoef)
{
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n_packed;
         j += (int64_t)gridDim.x * blockDim.x) {
        int lo = 0, hi = n_segs - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            if (segs[mid].packed <= j)
                lo = mid;
            else
                hi = mid - 1;
        }
        const int64_t i = segs[lo].start + (j - segs[lo].packed);
        const float gi = gcoef < 1.0f ? __fmul_rn(g[i], gcoef) : g[i];
        s_adamw_element(p, gi, m, v, i, s, segs[lo].decay ? s.keep : 1.0f);
    }
}

extern "C" shoal_err_t adamw_update_segments_cuda(float *p, const float *g, float *m, float *v,
                                                  const adamw_segment_t *segs, int n_segs,
                                                  int64_t n_packed, float lr, float gcoef,
                                                  int64_t t, const adamw_hparams_t *hp,
                                                  cudaStream_t stream)
{
    if (n_packed == 0 || n_segs == 0)
        return SHOAL_OK;
    const adamw_scalars_t s = s_adamw_scalars(lr, 1, t, hp);
    k_adamw_segments<<<kcuda_blocks(n_packed, 256), 256, 0, stream>>>(p, g, m, v, segs, n_segs,
                                                                       n_packed, s, gcoef);
    return kcuda_check("adamw_update_segments_cuda");
}

#define GSS_THREADS 1024

__global__ void k_grad_sum_squares(const float *__restrict__ g, int64_t n, double *acc)
{
    __shared__ double s_part[GSS_THREADS / 32];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += GSS_THREADS)
        s += (double)g[i] * (double)g[i];
    s = kcuda_warp_sum_d(s);
    if ((threadIdx.x & 31) == 0)
        s_part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double tot = 0.0;
        for (int w = 0; w < GSS_THREADS / 32; w++)
            tot += s_part[w];
        *acc += tot;
    }
}

extern "C" shoal_err_t grad_sum_squares_cuda(const float *g, int64_t n, double *acc,
                                             cudaStream_t stream)
{
    if (n == 0)
        return SHOAL_OK;
    k_grad_sum_squares<<<1, GSS_THREADS, 0, stream>>>(g, n, acc);
    return kcuda_check("grad_sum_squares_cuda");
}

__global__ void k_grad_scale(float *__restrict__ g, int64_t n, float coef)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        g[i] = __fmul_rn(g[i], coef);
}

extern "C" shoal_err_t grad_scale_cuda(float *g, int64_t n, float coef, cudaStream_t stream)
{
    if (n == 0)
        return SHOAL_OK;
    k_grad_scale<<<kcuda_blocks(n, 256), 256, 0, stream>>>(g, n, coef);
    return kcuda_check("grad_scale_cuda");
}

/* N is tens: one thread, integers exact as on the CPU */
__global__ void k_moe_bias_update(float *bias, const int64_t *counts, int N, float gamma)
{
    int64_t total = 0;
    for (int i = 0; i < N; i++)
        total += counts[i];
    for (int i = 0; i < N; i++) {
        const int64_t diff = total - (int64_t)N * counts[i];
        const float sign = diff > 0 ? 1.0f : (diff < 0 ? -1.0f : 0.0f);
        bias[i] = bias[i] + gamma * sign;
    }
}

extern "C" shoal_err_t moe_bias_update_cuda(float *bias, const int64_t *counts, int N, float gamma,
                                            cudaStream_t stream)
{
    if (N == 0)
        return SHOAL_OK;
    k_moe_bias_update<<<1, 1, 0, stream>>>(bias, counts, N, gamma);
    return kcuda_check("moe_bias_update_cuda");
}
