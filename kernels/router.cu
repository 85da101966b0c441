/* router.cu: CUDA twin of router.c. Selection runs one thread per token through exactly the
 * CPU's scans (strict comparisons, the lower index wins ties), with its per-token scratch in
 * shared memory, so on the same affinities it selects bitwise the same experts; N and K are
 * small (tens), so a token's K·N comparisons are cheap next to the GEMMs around them. */
#include "kcuda.cuh"
#include "router.h"

__global__ void k_router_sigmoid(float *__restrict__ s, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        s[i] = 1.0f / (1.0f + expf(-s[i]));
}

/* Index of the largest eligible value (lowest index among equals), -1 if none (router.c). */
__device__ static int s_argmax_sb(const float *sm, const float *bias, const unsigned char *eligible,
                                  int n)
{
    int best = -1;
    float bv = 0.0f;
    for (int i = 0; i < n; i++) {
        if (!eligible[i])
            continue;
        const float v = sm[i] + bias[i];
        if (best < 0 || v > bv) {
            best = i;
            bv = v;
        }
    }
    return best;
}

__device__ static int s_argmax(const float *v, const unsigned char *eligible, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (eligible[i] && (best < 0 || v[i] > v[best]))
            best = i;
    return best;
}

/* Shared memory per thread: gscore [G] floats, then eligible [N] and gfree [G] bytes. */
__global__ void k_router_select(router_config_t c, const float *__restrict__ s,
                                const float *__restrict__ bias, int M, int32_t *__restrict__ idx)
{
    extern __shared__ float s_smem[];
    const int N = c.N, K = c.K, G = c.n_group, per = N / G;
    const int m = blockIdx.x * blockDim.x + threadIdx.x;
    float *gscore = s_smem + (size_t)threadIdx.x * G;
    unsigned char *eligible =
        (unsigned char *)(s_smem + (size_t)blockDim.x * G) + (size_t)threadIdx.x * (N + G);
    unsigned char *gfree = eligible + N;
    if (m >= M)
        return;
    const float *sm = s + (size_t)m * N;
    for (int i = 0; i < N; i++)
        eligible[i] = 1;
    if (G > 1) {
        for (int g = 0; g < G; g++) {
            /* sum of the two largest s + b of the group, the CPU's running pair */
            const float *vs = sm + g * per, *vb = bias + g * per;
            float a = vs[0] + vb[0], b = vs[1] + vb[1];
            if (b > a) {
                const float t = a;
                a = b;
                b = t;
            }
            for (int i = 2; i < per; i++) {
                const float v = vs[i] + vb[i];
                if (v > a) {
                    b = a;
                    a = v;
                } else if (v > b) {
                    b = v;
                }
            }
            gscore[g] = a + b;
            gfree[g] = 1;
        }
        for (int i = 0; i < N; i++)
            eligible[i] = 0;
        for (int t = 0; t < c.topk_group; t++) {
            const int g = s_argmax(gscore, gfree, G);
            gfree[g] = 0;
            for (int i = 0; i < per; i++)
                eligible[g * per + i] = 1;
        }
    }
    for (int k = 0; k < K; k++) {
        const int e = s_argmax_sb(sm, bias, eligible, N);
        eligible[e] = 0;
        idx[(size_t)m * K + k] = e;
    }
}

/* One thread per token; the CPU's arithmetic in its order (no FMA contraction). */
__global__ void k_router_gates_forward(router_config_t c, const float *__restrict__ s,
                                       const int32_t *__restrict__ idx, int M,
                                       float *__restrict__ gates)
{
    const int N = c.N, K = c.K;
    for (int m = blockIdx.x * blockDim.x + threadIdx.x; m < M; m += gridDim.x * blockDim.x) {
        const float *sm = s + (size_t)m * N;
        const int32_t *im = idx + (size_t)m * K;
        float sum = 0.0f;
        for (int k = 0; k < K; k++)
            sum = __fadd_rn(sum, sm[im[k]]);
        for (int k = 0; k < K; k++)
            gates[(size_t)m * K + k] = __fmul_rn(c.rsf, __fdiv_rn(sm[im[k]], sum));
    }
}

/* dlogits was zeroed; writes the K selected entries of each token. */
__global__ void k_router_gates_backward(router_config_t c, const float *__restrict__ s,
                                        const int32_t *__restrict__ idx,
                                        const float *__restrict__ dgates, int M,
                                        float *__restrict__ dlogits)
{
    const int N = c.N, K = c.K;
    for (int m = blockIdx.x * blockDim.x + threadIdx.x; m < M; m += gridDim.x * blockDim.x) {
        const float *sm = s + (size_t)m * N;
        const int32_t *im = idx + (size_t)m * K;
        const float *dg = dgates + (size_t)m * K;
        float sum = 0.0f, dot = 0.0f;
        for (int k = 0; k < K; k++) {
            sum = __fadd_rn(sum, sm[im[k]]);
            dot = __fadd_rn(dot, __fmul_rn(dg[k], sm[im[k]]));
        }
        const float inv = __fdiv_rn(1.0f, sum);
        for (int k = 0; k < K; k++) {
            const int e = im[k];
            const float ds =
                __fmul_rn(__fmul_rn(c.rsf, inv), __fsub_rn(dg[k], __fmul_rn(dot, inv)));
            dlogits[(size_t)m * N + e] = __fmul_rn(__fmul_rn(ds, sm[e]), __fsub_rn(1.0f, sm[e]));
        }
    }
}

extern "C" shoal_err_t router_sigmoid_cuda(float *s, int64_t n, cudaStream_t stream)
{
    if (n == 0)
        return SHOAL_OK;
    k_router_sigmoid<<<kcuda_blocks(n, 256), 256, 0, stream>>>(s, n);
    return kcuda_check("router_sigmoid_cuda");
}

extern "C" shoal_err_t router_select_cuda(const router_config_t *c, const float *s,
                                          const float *bias, int M, int32_t *idx,
                                          cudaStream_t stream)
{
    const int N = c->N, G = c->n_group;
    if (N < 1 || G < 1 || N % G != 0 || c->K < 1 ||
        (G == 1 ? c->K > N
                : N / G < 2 || c->topk_group < 1 || c->topk_group > G ||
                      c->K > c->topk_group * (N / G)))
        return shoal_fail(SHOAL_ERR_INVALID,
                          "router_select_cuda: bad config (N %d, K %d, n_group %d, topk_group %d)",
                          N, c->K, G, c->topk_group);
    if (M == 0)
        return SHOAL_OK;
    /* per-thread scratch; keep a block's share under 32 KiB (default limit is 48 KiB) */
    const size_t per_thread = sizeof(float) * (size_t)G + (size_t)(N + G);
    int threads = (int)((32u << 10) / per_thread);
    if (threads < 1)
        return shoal_fail(SHOAL_ERR_INVALID, "router_select_cuda: %d experts is too many", N);
    threads = threads >= 128 ? 128 : threads >= 32 ? threads / 32 * 32 : threads;
    /* the byte area starts after all the floats, so it stays 4-byte aligned */
    const size_t smem = per_thread * (size_t)threads;
    const unsigned grid = (unsigned)((M + threads - 1) / threads);
    k_router_select<<<grid, threads, smem, stream>>>(*c, s, bias, M, idx);
    return kcuda_check("router_select_cuda");
}

extern "C" shoal_err_t router_gates_forward_cuda(const router_config_t *c, const float *s,
                                                 const int32_t *idx, int M, float *gates,
                                                 cudaStream_t stream)
{
    if (M == 0)
        return SHOAL_OK;
    k_router_gates_forward<<<kcuda_blocks(M, 128), 128, 0, stream>>>(*c, s, idx, M, gates);
    return kcuda_check("router_gates_forward_cuda");
}

extern "C" shoal_err_t router_gates_backward_cuda(const router_config_t *c, const float *s,
                                                  const int32_t *idx, const float *dgates, int M,
                                                  float *dlogits, cudaStream_t stream)
{
    if (M == 0)
        return SHOAL_OK;
    cudaError_t e = cudaMemsetAsync(dlogits, 0, sizeof(float) * (size_t)M * c->N, stream);
    if (e != cudaSuccess)
        return shoal_fail(SHOAL_ERR_CUDA, "router_gates_backward_cuda: memset: %s",
                          cudaGetErrorString(e));
    k_router_gates_backward<<<kcuda_blocks(M, 128), 128, 0, stream>>>(*c, s, idx, dgates, M,
                                                                      dlogits);
    return kcuda_check("router_gates_backward_cuda");
}
