/* moe.cu: CUDA twin of moe.c. The permutation into expert order is the CPU's stable counting
 * sort, done deterministically without atomics: one block per expert counts its pairs, one
 * thread scans the counts, then one block per expert walks the pairs in order and places its
 * own with a block-wide prefix sum (ballots), so pair_of_row and offsets are bitwise the CPU's.
 * Each expert's rows then go through the ffn twin (cuBLAS); the combine sums a token's K
 * contributions in expert-row order, as the CPU does, so results are run-to-run bitwise. The
 * per-expert GEMM sizes are read back to the host once per forward (one stream sync).
 * Cost: the sort reads idx 2N times (M·K int32 per pass: 4 MB at N 64, M·K 8192, out of L2),
 * small beside the expert GEMMs' 6·M·K·d·fe FLOPs forward. */
#include <string.h>

#include <stdlib.h>

#include "ffn.h"
#include "kblas.cuh"
#include "moe.h"
#include "swiglu.h"

#define MOE_THREADS 256

/* offsets[e + 1] = number of pairs routed to e (one block per expert). */
__global__ void k_moe_count(const int32_t *__restrict__ idx, int64_t P, int64_t *__restrict__ off)
{
    __shared__ int64_t s_part[MOE_THREADS / 32];
    const int e = blockIdx.x;
    int64_t c = 0;
    for (int64_t p = threadIdx.x; p < P; p += blockDim.x)
        c += idx[p] == e;
    for (int o = 16; o > 0; o >>= 1)
        c += __shfl_xor_sync(0xffffffffu, c, o);
    if ((threadIdx.x & 31) == 0)
        s_part[threadIdx.x >> 5] = c;
    __syncthreads();
    if (threadIdx.x == 0) {
        int64_t t = 0;
        for (int w = 0; w < MOE_THREADS / 32; w++)
            t += s_part[w];
        off[e + 1] = t;
    }
}

/* Counts → exclusive offsets (offsets[0] = 0), counts_acc += counts; one thread, N is small. */
__global__ void k_moe_scan(int N, int64_t *__restrict__ off, int64_t *__restrict__ counts_acc)
{
    off[0] = 0;
    for (int e = 0; e < N; e++) {
        counts_acc[e] += off[e + 1];
        off[e + 1] += off[e];
    }
}

/* Stable placement of expert e's pairs (one block per expert): chunks of MOE_THREADS pairs in
 * pair order, each thread's row = offsets[e] + pairs of e before it. */
__global__ void k_moe_place(const int32_t *__restrict__ idx, int64_t P,
                            const int64_t *__restrict__ off, int32_t *__restrict__ pair_of_row,
                            int32_t *__restrict__ row_of_pair)
{
    __shared__ int s_warp[MOE_THREADS / 32];
    const int e = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t base = off[e];
    const int64_t end = off[e + 1];
    if (base == end)
        return; /* uniform over the block */
    for (int64_t c0 = 0; c0 < P; c0 += MOE_THREADS) {
        const int64_t p = c0 + threadIdx.x;
        const bool mine = p < P && idx[p] == e;
        const unsigned ballot = __ballot_sync(0xffffffffu, mine);
        if (lane == 0)
            s_warp[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, total = 0;
        for (int w = 0; w < MOE_THREADS / 32; w++) {
            before += w < warp ? s_warp[w] : 0;
            total += s_warp[w];
        }
        if (mine) {
            const int64_t row = base + before + __popc(ballot & ((1u << lane) - 1u));
            pair_of_row[row] = (int32_t)p;
            row_of_pair[p] = (int32_t)row;
        }
        base += total;
        __syncthreads(); /* s_warp is rewritten by the next chunk */
        if (base == end)
            break; /* every pair of e placed (uniform over the block) */
    }
}

/* xs[row] = u[token of pair_of_row[row]] */
__global__ void k_moe_gather(const float *__restrict__ u, const int32_t *__restrict__ pair_of_row,
                             int64_t P, int K, int d, float *__restrict__ xs)
{
    const int64_t n = P * d;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / d, j = i % d;
        xs[i] = u[(int64_t)(pair_of_row[row] / K) * d + j];
    }
}

/* One block per token m: y[m] += Σ over its K rows in increasing row order (the CPU's order)
 * of gate · src[row] (gate 1 when gates is NULL), without FMA contraction as on the CPU. */
__global__ void k_moe_combine(const float *__restrict__ src,
                              const int32_t *__restrict__ row_of_pair,
                              const float *__restrict__ gates, int K, int d, float *__restrict__ y)
{
    extern __shared__ int64_t s_rows[]; /* K rows, then K gates */
    float *s_g = (float *)(s_rows + K);
    const int64_t m = blockIdx.x;
    if (threadIdx.x == 0) {
        for (int k = 0; k < K; k++) { /* insertion sort by row; K is small */
            const int64_t p = m * K + k, r = row_of_pair[p];
            const float g = gates ? gates[p] : 1.0f;
            int t = k;
            for (; t > 0 && s_rows[t - 1] > r; t--) {
                s_rows[t] = s_rows[t - 1];
                s_g[t] = s_g[t - 1];
            }
            s_rows[t] = r;
            s_g[t] = g;
        }
    }
    __syncthreads();
    float *yr = y + m * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float acc = yr[j];
        for (int k = 0; k < K; k++) {
            const float v = src[s_rows[k] * d + j];
            acc = __fadd_rn(acc, gates ? __fmul_rn(s_g[k], v) : v);
        }
        yr[j] = acc;
    }
}

/* One warp per expert row: dgates[p] = dy[m]·ys[row], dys[row] = gate·dy[m]. */
__global__ void k_moe_gate_grads(const float *__restrict__ dy, const float *__restrict__ ys,
                                 const float *__restrict__ gates,
                                 const int32_t *__restrict__ pair_of_row, int64_t P, int K, int d,
                                 float *__restrict__ dys, float *__restrict__ dgates)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= P)
        return;
    const int32_t p = pair_of_row[row];
    const float *dym = dy + (int64_t)(p / K) * d, *ysr = ys + row * d;
    float *dysr = dys + row * d;
    const float gt = gates[p];
    float dot = 0.0f;
    for (int j = lane; j < d; j += 32) {
        dot += dym[j] * ysr[j];
        dysr[j] = __fmul_rn(gt, dym[j]);
    }
    dot = kcuda_warp_sum(dot);
    if (lane == 0)
        dgates[p] = dot;
}

static shoal_err_t s_cuda(cudaError_t e, const char *what)
{
    if (e != cudaSuccess)
        return shoal_fail(SHOAL_ERR_CUDA, "%s: %s", what, cudaGetErrorString(e));
    return SHOAL_OK;
}

static shoal_err_t s_combine(const float *src, const int32_t *row_of_pair, const float *gates,
                             int M, int K, int d, float *y, cudaStream_t stream, const char *what)
{
    if (M == 0)
        return SHOAL_OK;
    const size_t smem = (sizeof(int64_t) + sizeof(float)) * (size_t)K;
    k_moe_combine<<<(unsigned)M, 128, smem, stream>>>(src, row_of_pair, gates, K, d, y);
    return kcuda_check(what);
}

/* cudaMalloc of n bytes (at least 1, like the CPU's s_alloc) into *p; false on failure. */
static bool s_dalloc(void *p, size_t n)
{
    return cudaMalloc((void **)p, n ? n : 1) == cudaSuccess;
}

extern "C" shoal_err_t moe_saved_alloc_cuda(moe_saved_cuda_t *sv, const moe_config_t *c, int max_M)
{
    const size_t M = (size_t)max_M, N = (size_t)c->router.N, K = (size_t)c->router.K;
    const size_t d = (size_t)c->d, fe = (size_t)c->fe, fs = (size_t)c->fs;
    moe_saved_t *v = &sv->dev;
    memset(sv, 0, sizeof *sv);
    bool ok = s_dalloc(&v->s, sizeof(float) * M * N) &&
              s_dalloc(&v->idx, sizeof(int32_t) * M * K) &&
              s_dalloc(&v->gates, sizeof(float) * M * K) &&
              s_dalloc(&v->pair_of_row, sizeof(int32_t) * M * K) &&
              s_dalloc(&v->offsets, sizeof(int64_t) * (N + 1)) &&
              s_dalloc(&v->xs, sizeof(float) * M * K * d) &&
              s_dalloc(&v->gu, sizeof(float) * M * K * 2 * fe) &&
              s_dalloc(&v->a, sizeof(float) * M * K * fe) &&
              s_dalloc(&v->ys, sizeof(float) * M * K * d) &&
              s_dalloc(&v->sh_gu, sizeof(float) * M * 2 * fs) &&
              s_dalloc(&v->sh_a, sizeof(float) * M * fs) &&
              s_dalloc(&sv->row_of_pair, sizeof(int32_t) * M * K) &&
              s_dalloc(&sv->gemm_ptrs, sizeof(void *) * 3 * N) &&
              cudaMallocHost((void **)&sv->offsets_host, sizeof(int64_t) * (N + 1)) == cudaSuccess;
    if (!ok) {
        cudaGetLastError(); /* so the failed allocation is not reported by a later launch check */
        moe_saved_free_cuda(sv);
        return shoal_fail(SHOAL_ERR_NOMEM,
                          "moe_saved_alloc_cuda: out of device memory for %d tokens", max_M);
    }
    return SHOAL_OK;
}

extern "C" void moe_saved_free_cuda(moe_saved_cuda_t *sv)
{
    moe_saved_t *v = &sv->dev;
    cudaFree(v->s);
    cudaFree(v->idx);
    cudaFree(v->gates);
    cudaFree(v->pair_of_row);
    cudaFree(v->offsets);
    cudaFree(v->xs);
    cudaFree(v->gu);
    cudaFree(v->a);
    cudaFree(v->ys);
    cudaFree(v->sh_gu);
    cudaFree(v->sh_a);
    cudaFree(sv->row_of_pair);
    cudaFree(sv->gemm_ptrs);
    cudaFreeHost(sv->offsets_host);
    memset(sv, 0, sizeof *sv);
}

extern "C" shoal_err_t moe_scratch_alloc_cuda(moe_scratch_t *sc, const moe_config_t *c, int max_M)
{
    const size_t M = (size_t)max_M, N = (size_t)c->router.N, K = (size_t)c->router.K;
    const size_t d = (size_t)c->d, fe = (size_t)c->fe, fs = (size_t)c->fs;
    memset(sc, 0, sizeof *sc);
    bool ok = s_dalloc(&sc->dys, sizeof(float) * M * K * d) &&
              s_dalloc(&sc->dgu, sizeof(float) * M * K * 2 * fe) &&
              s_dalloc(&sc->da, sizeof(float) * M * K * fe) &&
              s_dalloc(&sc->dxs, sizeof(float) * M * K * d) &&
              s_dalloc(&sc->dgates, sizeof(float) * M * K) &&
              s_dalloc(&sc->dlogits, sizeof(float) * M * N) &&
              s_dalloc(&sc->sh_dgu, sizeof(float) * M * 2 * fs) &&
              s_dalloc(&sc->sh_da, sizeof(float) * M * fs);
    if (!ok) {
        cudaGetLastError();
        moe_scratch_free_cuda(sc);
        return shoal_fail(SHOAL_ERR_NOMEM,
                          "moe_scratch_alloc_cuda: out of device memory for %d tokens", max_M);
    }
    return SHOAL_OK;
}

extern "C" void moe_scratch_free_cuda(moe_scratch_t *sc)
{
    cudaFree(sc->dys);
    cudaFree(sc->dgu);
    cudaFree(sc->da);
    cudaFree(sc->dxs);
    cudaFree(sc->dgates);
    cudaFree(sc->dlogits);
    cudaFree(sc->sh_dgu);
    cudaFree(sc->sh_da);
    memset(sc, 0, sizeof *sc);
}

/* One GEMM kind over every expert with rows, in kblas_gemm's row-major terms:
 * C_e = op(A_e)·op(B_e) + beta·C_e (alpha 1). Each operand is either an activation (`*_rows`:
 * the expert's rows start r0 rows into it, r0 · ld elements) or a weight (`*_of`: expert e's own
 * pointer). `rows_is_k`: the expert's row count is the inner dimension (weight gradients:
 * dW += dY^T X), else the outer M; the other two dimensions are fixed. */
typedef struct {
    bool ta, tb, rows_is_k;
    int m, n, k; /* the fixed dimensions (the row count replaces m, or k) */
    int lda, ldb, ldc;
    float beta;
    const float *a_rows, *const *a_of;
    const float *b_rows, *const *b_of;
    float *c_rows, *const *c_of;
} s_grouped_t;

/* Grouped GEMMs refused by cuBLAS in a precision [bf16]: remembered, then the per-expert loop. */
static int s_grouped_refused[2];

/* Operand of expert e: its own weight, or its rows of the activation. */
static const void *s_operand(const float *rows, const float *const *of, int e, int64_t r0, int ld)
{
    return of ? (const void *)of[e] : (const void *)(rows + r0 * ld);
}

/* SHOAL_ERR_STATE (no message) when cuBLAS refuses the grouped call in this precision: the
 * caller then runs one GEMM per expert. dev_ptrs: [3N] device pointers (moe_saved_cuda_t). */
static shoal_err_t s_grouped_gemm(cublasHandle_t h, const s_grouped_t *g, int N,
                                  const int64_t *off, void **dev_ptrs, cudaStream_t stream,
                                  const char *what)
{
    const int bf16 = kernels_matmul_is_bf16_cuda(h) ? 1 : 0;
    if (s_grouped_refused[bf16])
        return SHOAL_ERR_STATE;
    const size_t n_max = (size_t)N;
    const void **ptrs = (const void **)malloc(sizeof(void *) * 3 * n_max);
    int *dims = (int *)malloc(sizeof(int) * 7 * n_max);
    cublasOperation_t *ops = (cublasOperation_t *)malloc(sizeof(cublasOperation_t) * 2 * n_max);
    float *scal = (float *)malloc(sizeof(float) * 2 * n_max);
    shoal_err_t rc = SHOAL_OK;
    if (!ptrs || !dims || !ops || !scal) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of host memory", what);
        goto out;
    }
    {
        /* the problems in cuBLAS's column-major terms: operands swapped as in kblas_gemm */
        int *mm = dims, *nn = dims + n_max, *kk = dims + 2 * n_max, *lda = dims + 3 * n_max;
        int *ldb = dims + 4 * n_max, *ldc = dims + 5 * n_max, *gsz = dims + 6 * n_max;
        cublasOperation_t *opa = ops, *opb = ops + n_max;
        float *alpha = scal, *beta = scal + n_max;
        const void **pa = ptrs, **pb = ptrs + n_max, **pc = ptrs + 2 * n_max;
        int n = 0;
        for (int e = 0; e < N; e++) {
            const int64_t r0 = off[e], rows = off[e + 1] - off[e];
            if (rows == 0)
                continue;
            pa[n] = s_operand(g->b_rows, g->b_of, e, r0, g->ldb);
            pb[n] = s_operand(g->a_rows, g->a_of, e, r0, g->lda);
            pc[n] = s_operand(g->c_rows, (const float *const *)g->c_of, e, r0, g->ldc);
            opa[n] = g->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
            opb[n] = g->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
            mm[n] = g->n;
            nn[n] = g->rows_is_k ? g->m : (int)rows;
            kk[n] = g->rows_is_k ? (int)rows : g->k;
            lda[n] = g->ldb;
            ldb[n] = g->lda;
            ldc[n] = g->ldc;
            gsz[n] = 1;
            alpha[n] = 1.0f;
            beta[n] = g->beta;
            n++;
        }
        if (n == 0)
            goto out;
        /* the three tables packed to n entries and copied at once: from pageable memory the
         * call returns once they are staged, and stream order keeps the device copy until this
         * GEMM has read it, so one device table serves every call */
        memmove(pa + n, pb, sizeof(void *) * (size_t)n);
        memmove(pa + 2 * n, pc, sizeof(void *) * (size_t)n);
        rc = s_cuda(cudaMemcpyAsync(dev_ptrs, pa, sizeof(void *) * 3 * (size_t)n,
                                    cudaMemcpyHostToDevice, stream),
                    what);
        if (rc != SHOAL_OK)
            goto out;
        const cublasStatus_t st = cublasGemmGroupedBatchedEx(
            h, opa, opb, mm, nn, kk, alpha, (const void *const *)dev_ptrs, CUDA_R_32F, lda,
            (const void *const *)(dev_ptrs + n), CUDA_R_32F, ldb, beta,
            (void *const *)(dev_ptrs + 2 * n), CUDA_R_32F, ldc, n, gsz,
            bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F);
        if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE) {
            s_grouped_refused[bf16] = 1; /* this cuBLAS has no grouped GEMM for the types */
            rc = SHOAL_ERR_STATE;
        } else {
            rc = kblas_check(st, what);
        }
    }
out:
    free(ptrs);
    free(dims);
    free(ops);
    free(scal);
    return rc;
}

/* The experts' forward (sc NULL) or backward with grouped GEMMs over the rows of sv (sizes from
 * sv->offsets_host), SwiGLU over every row at once: the arithmetic of ffn_forward_cuda /
 * ffn_backward_cuda per expert. SHOAL_ERR_STATE when cuBLAS refuses the first grouped call
 * (nothing written yet: the caller loops over the experts); a refusal after gradients were
 * accumulated is an error. */
static shoal_err_t s_experts_grouped(cublasHandle_t h, const moe_config_t *c,
                                     const moe_weights_t *w, const moe_saved_cuda_t *sv,
                                     moe_scratch_t *sc, const moe_weights_t *g,
                                     cudaStream_t stream)
{
    const moe_saved_t *v = &sv->dev;
    const int N = c->router.N, d = c->d, fe = c->fe, f2 = 2 * c->fe;
    const int64_t *off = sv->offsets_host, P = off[N];
    void **tab = sv->gemm_ptrs;
    shoal_err_t rc;
    if (!sc) {
        /* gu = xs_e · Wgu_e^T;  a = swiglu(gu);  ys = a_e · Wd_e^T */
        const s_grouped_t g1 = {false, true, false, 0, f2, d, d, d, f2, 0.0f,
                                v->xs, NULL, NULL, w->expert_gu, v->gu, NULL};
        const s_grouped_t g2 = {false, true, false, 0, d, fe, fe, fe, d, 0.0f,
                                v->a, NULL, NULL, w->expert_d, v->ys, NULL};
        rc = s_grouped_gemm(h, &g1, N, off, tab, stream, "moe_forward_cuda (grouped gu)");
        if (rc == SHOAL_OK)
            rc = swiglu_forward_cuda(v->gu, (int)P, fe, v->a, stream);
        if (rc == SHOAL_OK)
            rc = s_grouped_gemm(h, &g2, N, off, tab, stream, "moe_forward_cuda (grouped y)");
        return rc; /* a late refusal only means the loop recomputes everything: beta is 0 */
    }
    /* dWd_e += dys_e^T a_e;  da = dys_e · Wd_e;  dgu = swiglu'(gu, da);
     * dWgu_e += dgu_e^T xs_e;  dxs = dgu_e · Wgu_e */
    const s_grouped_t g3 = {true, false, true, d, fe, 0, d, fe, fe, 1.0f,
                            sc->dys, NULL, v->a, NULL, NULL, g->expert_d};
    const s_grouped_t g4 = {false, false, false, 0, fe, d, d, fe, fe, 0.0f,
                            sc->dys, NULL, NULL, w->expert_d, sc->da, NULL};
    const s_grouped_t g5 = {true, false, true, f2, d, 0, f2, d, d, 1.0f,
                            sc->dgu, NULL, v->xs, NULL, NULL, g->expert_gu};
    const s_grouped_t g6 = {false, false, false, 0, d, f2, f2, d, d, 0.0f,
                            sc->dgu, NULL, NULL, w->expert_gu, sc->dxs, NULL};
    rc = s_grouped_gemm(h, &g3, N, off, tab, stream, "moe_backward_cuda (grouped dw_d)");
    if (rc != SHOAL_OK)
        return rc; /* SHOAL_ERR_STATE: nothing accumulated yet */
    rc = s_grouped_gemm(h, &g4, N, off, tab, stream, "moe_backward_cuda (grouped da)");
    if (rc == SHOAL_OK)
        rc = swiglu_backward_cuda(v->gu, sc->da, (int)P, fe, sc->dgu, stream);
    if (rc == SHOAL_OK)
        rc = s_grouped_gemm(h, &g5, N, off, tab, stream, "moe_backward_cuda (grouped dw_gu)");
    if (rc == SHOAL_OK)
        rc = s_grouped_gemm(h, &g6, N, off, tab, stream, "moe_backward_cuda (grouped dx)");
    if (rc == SHOAL_ERR_STATE)
        rc = shoal_fail(SHOAL_ERR_CUDA, "moe_backward_cuda: cuBLAS refused a grouped GEMM after "
                        "accepting one in the same precision");
    return rc;
}

/* *rc = the grouped path's result, except a refusal (SHOAL_ERR_STATE), which becomes SHOAL_OK
 * and returns 1: run one GEMM per expert. */
static int s_refused(shoal_err_t *rc, shoal_err_t grouped)
{
    *rc = grouped == SHOAL_ERR_STATE ? SHOAL_OK : grouped;
    return grouped == SHOAL_ERR_STATE;
}

extern "C" shoal_err_t moe_forward_cuda(cublasHandle_t h, const moe_config_t *c,
                                        const moe_weights_t *w, const float *u, int M,
                                        moe_saved_cuda_t *sv, float *y, int64_t *counts_acc,
                                        cudaStream_t stream)
{
    const int N = c->router.N, K = c->router.K, d = c->d, fe = c->fe;
    const int64_t P = (int64_t)M * K;
    moe_saved_t *v = &sv->dev;
    if (P > INT32_MAX)
        return shoal_fail(SHOAL_ERR_INVALID, "moe_forward_cuda: %lld pairs overflow int32",
                          (long long)P);
    v->M = M;
    shoal_err_t rc = kblas_bind(h, stream, "moe_forward_cuda");
    /* router: s = sigmoid(u Wr^T), selection, gates */
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, true, M, N, d, 1.0f, u, d, w->router, d, 0.0f, v->s, N,
                        "moe_forward_cuda (router)");
    if (rc == SHOAL_OK)
        rc = router_sigmoid_cuda(v->s, (int64_t)M * N, stream);
    if (rc == SHOAL_OK)
        rc = router_select_cuda(&c->router, v->s, w->bias, M, v->idx, stream);
    if (rc == SHOAL_OK)
        rc = router_gates_forward_cuda(&c->router, v->s, v->idx, M, v->gates, stream);
    if (rc != SHOAL_OK)
        return rc;

    /* stable counting sort of the pairs by expert */
    k_moe_count<<<(unsigned)N, MOE_THREADS, 0, stream>>>(v->idx, P, v->offsets);
    if ((rc = kcuda_check("moe_forward_cuda (count)")) != SHOAL_OK)
        return rc;
    k_moe_scan<<<1, 1, 0, stream>>>(N, v->offsets, counts_acc);
    if ((rc = kcuda_check("moe_forward_cuda (scan)")) != SHOAL_OK)
        return rc;
    k_moe_place<<<(unsigned)N, MOE_THREADS, 0, stream>>>(v->idx, P, v->offsets, v->pair_of_row,
                                                         sv->row_of_pair);
    if ((rc = kcuda_check("moe_forward_cuda (place)")) != SHOAL_OK)
        return rc;
    if (P > 0) {
        k_moe_gather<<<kcuda_blocks(P * d, 256), 256, 0, stream>>>(u, v->pair_of_row, P, K, d,
                                                                   v->xs);
        if ((rc = kcuda_check("moe_forward_cuda (gather)")) != SHOAL_OK)
            return rc;
    }
    /* the per-expert GEMM sizes: the one host synchronisation of the layer */
    rc = s_cuda(cudaMemcpyAsync(sv->offsets_host, v->offsets, sizeof(int64_t) * (size_t)(N + 1),
                                cudaMemcpyDeviceToHost, stream),
                "moe_forward_cuda: offsets to host");
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaStreamSynchronize(stream), "moe_forward_cuda: sync for the offsets");
    const int64_t *off = sv->offsets_host;
    /* every pair counted once: an out-of-range expert index would leave rows unwritten */
    if (rc == SHOAL_OK && off[N] != P)
        rc = shoal_fail(SHOAL_ERR_STATE,
                        "moe_forward_cuda: expert offsets cover %lld of %lld pairs (bad idx)",
                        (long long)off[N], (long long)P);
    const int per_expert = rc == SHOAL_OK && s_refused(&rc, s_experts_grouped(h, c, w, sv, NULL,
                                                                              NULL, stream));
    for (int e = 0; per_expert && e < N && rc == SHOAL_OK; e++) {
        const int64_t r0 = off[e], rows = off[e + 1] - off[e];
        rc = ffn_forward_cuda(h, v->xs + r0 * d, (int)rows, d, fe, w->expert_gu[e], w->expert_d[e],
                              v->gu + r0 * 2 * fe, v->a + r0 * fe, v->ys + r0 * d, 0.0f, stream);
    }
    /* shared experts write y; routed outputs are added in expert-row order */
    if (rc == SHOAL_OK) {
        if (c->fs > 0)
            rc = ffn_forward_cuda(h, u, M, d, c->fs, w->shared_gu, w->shared_d, v->sh_gu, v->sh_a,
                                  y, 0.0f, stream);
        else
            rc = s_cuda(cudaMemsetAsync(y, 0, sizeof(float) * (size_t)M * d, stream),
                        "moe_forward_cuda: zero y");
    }
    if (rc == SHOAL_OK)
        rc = s_combine(v->ys, sv->row_of_pair, v->gates, M, K, d, y, stream,
                       "moe_forward_cuda (combine)");
    return rc;
}

extern "C" shoal_err_t moe_backward_cuda(cublasHandle_t h, const moe_config_t *c,
                                         const moe_weights_t *w, const float *u,
                                         const moe_saved_cuda_t *sv, const float *dy,
                                         moe_scratch_t *sc, float *du, const moe_weights_t *g,
                                         cudaStream_t stream)
{
    const moe_saved_t *v = &sv->dev;
    const int N = c->router.N, K = c->router.K, d = c->d, fe = c->fe, M = v->M;
    const int64_t P = (int64_t)M * K;
    shoal_err_t rc = kblas_bind(h, stream, "moe_backward_cuda");
    /* shared experts write du first */
    if (rc == SHOAL_OK) {
        if (c->fs > 0)
            rc = ffn_backward_cuda(h, u, M, d, c->fs, w->shared_gu, w->shared_d, v->sh_gu, v->sh_a,
                                   dy, sc->sh_dgu, sc->sh_da, du, 0.0f, g->shared_gu, g->shared_d,
                                   stream);
        else
            rc = s_cuda(cudaMemsetAsync(du, 0, sizeof(float) * (size_t)M * d, stream),
                        "moe_backward_cuda: zero du");
    }
    /* gate gradients and the gated output gradient per expert row */
    if (rc == SHOAL_OK && P > 0) {
        const int warps = 4;
        k_moe_gate_grads<<<(unsigned)((P + warps - 1) / warps), 32 * warps, 0, stream>>>(
            dy, v->ys, v->gates, v->pair_of_row, P, K, d, sc->dys, sc->dgates);
        rc = kcuda_check("moe_backward_cuda (gate grads)");
    }
    /* experts: sizes from the forward's host copy; scratch at each expert's own rows */
    const int64_t *off = sv->offsets_host;
    const int per_expert = rc == SHOAL_OK && s_refused(&rc, s_experts_grouped(h, c, w, sv, sc, g,
                                                                              stream));
    for (int e = 0; per_expert && e < N && rc == SHOAL_OK; e++) {
        const int64_t r0 = off[e], rows = off[e + 1] - off[e];
        rc = ffn_backward_cuda(h, v->xs + r0 * d, (int)rows, d, fe, w->expert_gu[e], w->expert_d[e],
                               v->gu + r0 * 2 * fe, v->a + r0 * fe, sc->dys + r0 * d,
                               sc->dgu + r0 * 2 * fe, sc->da + r0 * fe, sc->dxs + r0 * d, 0.0f,
                               g->expert_gu[e], g->expert_d[e], stream);
    }
    if (rc == SHOAL_OK)
        rc = s_combine(sc->dxs, sv->row_of_pair, NULL, M, K, d, du, stream,
                       "moe_backward_cuda (combine)");
    /* router: through the gates and the sigmoid to the logits, then to Wr and u */
    if (rc == SHOAL_OK)
        rc = router_gates_backward_cuda(&c->router, v->s, v->idx, sc->dgates, M, sc->dlogits,
                                        stream);
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, true, false, N, d, M, 1.0f, sc->dlogits, N, u, d, 1.0f, g->router, d,
                        "moe_backward_cuda (d router)");
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, false, M, d, N, 1.0f, sc->dlogits, N, w->router, d, 1.0f, du, d,
                        "moe_backward_cuda (du router)");
    return rc;
}
