/* xsum.cu: the CUDA twin of xsum.c (exact binned sums, see xsum.h), bit for bit the CPU's.
 *
 * The vector is cut into chunks of at most XSUM_CHUNK elements of one tensor each (fixed at init),
 * one block per chunk, so every block knows its tensor without a search. A deposit is three
 * launches: the largest |g| bit pattern of each chunk, combined per tensor by an unsigned
 * atomicMax (an integer maximum: the same in any order); one thread per tensor turns it into the
 * tensor's step (new window, raise, deposit window: xsum_elem.h, as xsum.c decides it); then each
 * element's counters are raised and the value deposited. Each counter belongs to one thread and
 * the arithmetic is xsum_elem.h's, which tests/kernels/test_xsum_twin.c checks on the host against
 * xsum.c. */
#include <stdlib.h>
#include <string.h>

#include "kcuda.cuh"
#include "xsum_elem.h"

#define XSUM_CHUNK 4096
#define XSUM_THREADS 256

typedef struct {
    int64_t lo, hi;
    int tensor;
} xsum_chunk_t;

__device__ __forceinline__ unsigned s_warp_max_u32(unsigned v)
{
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

/* maxbits[t] = max(maxbits[t], largest |g| pattern of each chunk of t) for chunks c0 + block. */
__global__ void k_maxbits(const xsum_chunk_t *__restrict__ chunks, int c0,
                          const float *__restrict__ g, unsigned *__restrict__ maxbits)
{
    __shared__ unsigned warp_max[XSUM_THREADS / 32];
    const xsum_chunk_t c = chunks[c0 + blockIdx.x];
    unsigned m = 0;
    for (int64_t i = c.lo + threadIdx.x; i < c.hi; i += blockDim.x) {
        const unsigned a = xsum_abs_bits(g[i]);
        m = a > m ? a : m;
    }
    m = s_warp_max_u32(m);
    if ((threadIdx.x & 31) == 0)
        warp_max[threadIdx.x >> 5] = m;
    __syncthreads();
    if (threadIdx.x < 32) {
        m = threadIdx.x < blockDim.x / 32 ? warp_max[threadIdx.x] : 0;
        m = s_warp_max_u32(m);
        if (threadIdx.x == 0 && m)
            atomicMax(&maxbits[c.tensor], m);
    }
}

/* One thread per tensor of [t0, t0 + n): the deposit's step; maxbits back to zero. */
__global__ void k_deposit_steps(int64_t *__restrict__ top, unsigned *__restrict__ maxbits,
                                xsum_step_t *__restrict__ steps, int t0, int n)
{
    const int t = t0 + (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= t0 + n)
        return;
    steps[t] = xsum_deposit_step(&top[t], maxbits[t]);
    maxbits[t] = 0;
}

__global__ void k_align_steps(int64_t *__restrict__ top, const int64_t *__restrict__ want,
                              xsum_step_t *__restrict__ steps, int t0, int n)
{
    const int t = t0 + (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= t0 + n)
        return;
    steps[t] = xsum_align_step(&top[t], want[t]);
}

/* Each element of chunks c0 + block: raise its counters, then deposit g[i] (g NULL: raise only). */
__global__ void k_apply(const xsum_chunk_t *__restrict__ chunks, int c0,
                        const xsum_step_t *__restrict__ steps, int64_t *__restrict__ bins,
                        const float *__restrict__ g)
{
    const xsum_chunk_t c = chunks[c0 + blockIdx.x];
    const xsum_step_t st = steps[c.tensor];
    const int deposit = g && st.dep != XSUM_EMPTY;
    if (st.raise == 0 && !deposit)
        return;
    const int shift = deposit ? xsum_deposit_shift(st.dep) : 0;
    for (int64_t i = c.lo + threadIdx.x; i < c.hi; i += blockDim.x) {
        if (st.raise != 0)
            xsum_raise_one(bins + 2 * i, st.raise);
        if (deposit)
            xsum_deposit_one(bins + 2 * i, g[i], shift);
    }
}

__global__ void k_result(const xsum_chunk_t *__restrict__ chunks, int c0,
                         const int64_t *__restrict__ top, const int64_t *__restrict__ bins,
                         float *__restrict__ out)
{
    const xsum_chunk_t c = chunks[c0 + blockIdx.x];
    const int64_t tp = top[c.tensor];
    const int special = tp == XSUM_EMPTY || tp == XSUM_NONFINITE;
    for (int64_t i = c.lo + threadIdx.x; i < c.hi; i += blockDim.x)
        out[i] = special ? xsum_result_special(tp) : xsum_result_one(bins + 2 * i, tp);
}

__global__ void k_fill_i64(int64_t *__restrict__ a, int n, int64_t v)
{
    const int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n)
        a[i] = v;
}

static shoal_err_t s_cuda(cudaError_t e, const char *what)
{
    if (e != cudaSuccess)
        return shoal_fail(SHOAL_ERR_CUDA, "xsum_vec_cuda: %s: %s", what, cudaGetErrorString(e));
    return SHOAL_OK;
}

static shoal_err_t s_check_range(const xsum_vec_cuda_t *x, int t0, int t1, const char *what)
{
    if (t0 < 0 || t1 > x->n_tensors || t0 > t1)
        return shoal_fail(SHOAL_ERR_INVALID, "%s: tensors [%d, %d) outside [0, %d)", what, t0, t1,
                          x->n_tensors);
    return SHOAL_OK;
}

extern "C" void xsum_vec_cuda_fini(xsum_vec_cuda_t *x)
{
    free(x->offsets);
    free(x->chunk_first);
    cudaFree(x->chunks);
    cudaFree(x->top);
    cudaFree(x->bins);
    cudaFree(x->maxbits);
    cudaFree(x->steps);
    memset(x, 0, sizeof *x);
}

extern "C" shoal_err_t xsum_vec_cuda_init(xsum_vec_cuda_t *x, const int64_t *offsets, int n_tensors)
{
    memset(x, 0, sizeof *x);
    x->n_tensors = n_tensors;
    x->n = offsets[n_tensors];
    const size_t nt = (size_t)n_tensors;
    x->offsets = (int64_t *)malloc(sizeof(int64_t) * (nt + 1));
    x->chunk_first = (int *)malloc(sizeof(int) * (nt + 1));
    int64_t n_chunks = 0;
    for (int t = 0; t < n_tensors; t++)
        n_chunks += (offsets[t + 1] - offsets[t] + XSUM_CHUNK - 1) / XSUM_CHUNK;
    if (n_chunks > INT32_MAX) {
        xsum_vec_cuda_fini(x);
        return shoal_fail(SHOAL_ERR_INVALID, "xsum_vec_cuda_init: %lld chunks (too many)",
                          (long long)n_chunks);
    }
    xsum_chunk_t *chunks = (xsum_chunk_t *)malloc(sizeof(xsum_chunk_t) * (size_t)(n_chunks + 1));
    if (!x->offsets || !x->chunk_first || !chunks) {
        free(chunks);
        xsum_vec_cuda_fini(x);
        return shoal_fail(SHOAL_ERR_NOMEM, "xsum_vec_cuda_init: %d tensors", n_tensors);
    }
    memcpy(x->offsets, offsets, sizeof(int64_t) * (nt + 1));
    int c = 0;
    for (int t = 0; t < n_tensors; t++) {
        x->chunk_first[t] = c;
        for (int64_t lo = offsets[t]; lo < offsets[t + 1]; lo += XSUM_CHUNK, c++) {
            chunks[c].lo = lo;
            chunks[c].hi = lo + XSUM_CHUNK < offsets[t + 1] ? lo + XSUM_CHUNK : offsets[t + 1];
            chunks[c].tensor = t;
        }
    }
    x->chunk_first[n_tensors] = c;
    shoal_err_t rc =
        s_cuda(cudaMalloc(&x->chunks, sizeof(xsum_chunk_t) * (size_t)(c + 1)), "cudaMalloc chunks");
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaMalloc(&x->top, sizeof(int64_t) * (nt + 1)), "cudaMalloc top");
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaMalloc(&x->bins, sizeof(int64_t) * (2 * (size_t)x->n + 1)),
                    "cudaMalloc bins");
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaMalloc(&x->maxbits, sizeof(unsigned) * (nt + 1)), "cudaMalloc maxbits");
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaMalloc(&x->steps, sizeof(xsum_step_t) * (nt + 1)), "cudaMalloc steps");
    if (rc == SHOAL_OK)
        rc = s_cuda(
            cudaMemcpy(x->chunks, chunks, sizeof(xsum_chunk_t) * (size_t)c, cudaMemcpyHostToDevice),
            "copy chunks");
    free(chunks);
    if (rc == SHOAL_OK)
        rc = xsum_vec_cuda_clear(x, 0);
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaDeviceSynchronize(), "init");
    if (rc != SHOAL_OK)
        xsum_vec_cuda_fini(x);
    return rc;
}

extern "C" shoal_err_t xsum_vec_cuda_clear(xsum_vec_cuda_t *x, cudaStream_t stream)
{
    x->deposits = 0;
    shoal_err_t rc = s_cuda(cudaMemsetAsync(x->bins, 0, sizeof(int64_t) * 2 * (size_t)x->n, stream),
                            "clear bins");
    if (rc == SHOAL_OK) /* a deposit cut short by a failed launch may have left maxima */
        rc = s_cuda(cudaMemsetAsync(x->maxbits, 0, sizeof(unsigned) * (size_t)x->n_tensors, stream),
                    "clear maxbits");
    if (rc != SHOAL_OK || x->n_tensors == 0)
        return rc;
    k_fill_i64<<<kcuda_blocks(x->n_tensors, XSUM_THREADS), XSUM_THREADS, 0, stream>>>(
        x->top, x->n_tensors, XSUM_EMPTY);
    return kcuda_check("xsum_vec_cuda_clear");
}

extern "C" shoal_err_t xsum_vec_cuda_deposit(xsum_vec_cuda_t *x, const float *g,
                                             cudaStream_t stream)
{
    if (x->deposits >= XSUM_MAX_DEPOSITS)
        return shoal_fail(SHOAL_ERR_STATE, "xsum_vec_cuda_deposit: more than %lld deposits",
                          (long long)XSUM_MAX_DEPOSITS);
    x->deposits++;
    return xsum_vec_cuda_deposit_tensors(x, g, 0, x->n_tensors, stream);
}

extern "C" shoal_err_t xsum_vec_cuda_deposit_tensors(xsum_vec_cuda_t *x, const float *g, int t0,
                                                     int t1, cudaStream_t stream)
{
    shoal_err_t rc = s_check_range(x, t0, t1, "xsum_vec_cuda_deposit_tensors");
    if (rc != SHOAL_OK || t0 == t1)
        return rc;
    const int c0 = x->chunk_first[t0], nc = x->chunk_first[t1] - c0;
    xsum_step_t *steps = (xsum_step_t *)x->steps;
    const xsum_chunk_t *chunks = (const xsum_chunk_t *)x->chunks;
    if (nc > 0)
        k_maxbits<<<nc, XSUM_THREADS, 0, stream>>>(chunks, c0, g, x->maxbits);
    k_deposit_steps<<<kcuda_blocks(t1 - t0, XSUM_THREADS), XSUM_THREADS, 0, stream>>>(
        x->top, x->maxbits, steps, t0, t1 - t0);
    if (nc > 0)
        k_apply<<<nc, XSUM_THREADS, 0, stream>>>(chunks, c0, steps, x->bins, g);
    return kcuda_check("xsum_vec_cuda_deposit_tensors");
}

extern "C" shoal_err_t xsum_vec_cuda_align(xsum_vec_cuda_t *x, const int64_t *top, int t0, int t1,
                                           cudaStream_t stream)
{
    shoal_err_t rc = s_check_range(x, t0, t1, "xsum_vec_cuda_align");
    if (rc != SHOAL_OK || t0 == t1)
        return rc;
    const int c0 = x->chunk_first[t0], nc = x->chunk_first[t1] - c0;
    xsum_step_t *steps = (xsum_step_t *)x->steps;
    k_align_steps<<<kcuda_blocks(t1 - t0, XSUM_THREADS), XSUM_THREADS, 0, stream>>>(
        x->top, top, steps, t0, t1 - t0);
    if (nc > 0)
        k_apply<<<nc, XSUM_THREADS, 0, stream>>>((const xsum_chunk_t *)x->chunks, c0, steps,
                                                 x->bins, NULL);
    return kcuda_check("xsum_vec_cuda_align");
}

extern "C" shoal_err_t xsum_vec_cuda_result(const xsum_vec_cuda_t *x, float *out, int t0, int t1,
                                            cudaStream_t stream)
{
    shoal_err_t rc = s_check_range(x, t0, t1, "xsum_vec_cuda_result");
    if (rc != SHOAL_OK)
        return rc;
    const int c0 = x->chunk_first[t0], nc = x->chunk_first[t1] - c0;
    if (nc == 0)
        return SHOAL_OK;
    k_result<<<nc, XSUM_THREADS, 0, stream>>>((const xsum_chunk_t *)x->chunks, c0, x->top, x->bins,
                                              out);
    return kcuda_check("xsum_vec_cuda_result");
}
