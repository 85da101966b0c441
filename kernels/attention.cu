/* attention.cu: CUDA twin of attention.c. Projections are cuBLAS GEMMs; scores, P·V and their
 * gradients are strided-batched GEMMs over the (sequence, head) pairs: batched over the larger
 * of B and H, one launch per index of the smaller (q, k, v addressed in place inside qkv with
 * leading dimension 3d, as on the CPU); the causal mask lives in the
 * softmax kernels, which zero the upper triangle exactly like the CPU, so the full-width GEMMs
 * that follow add exact zeros. FLOPs forward ≈ 8·M·d² + 4·B·T²·d (the CPU skips masked blocks;
 * here the T×T products are computed whole, 2× the causal work, still GEMM-bound). */
#include <math.h>

#include "attention.h"
#include "kblas.cuh"
#include "rope.h"

#define ATTN_ROWS_PER_BLOCK 4

/* One warp per score row (b, h, i): softmax over keys j <= i, zeros for j > i. The row is
 * overwritten in place: exp(x − max) first, then the scaling by 1/Σ (the CPU's order). */
__global__ void k_attn_softmax_causal(float *__restrict__ p, int64_t rows, int T)
{
    const int lane = threadIdx.x & 31;
    const int64_t r = blockIdx.x * (int64_t)ATTN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= rows)
        return;
    const int i = (int)(r % T);
    float *row = p + r * T;
    float mx = -INFINITY;
    for (int j = lane; j <= i; j += 32)
        mx = fmaxf(mx, row[j]);
    mx = kcuda_warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j <= i; j += 32) {
        const float e = expf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    sum = kcuda_warp_sum(sum);
    const float inv = 1.0f / sum;
    for (int j = lane; j < T; j += 32)
        row[j] = j <= i ? row[j] * inv : 0.0f;
}

/* dS = scale · P ⊙ (dP − Σ_j P ⊙ dP) on j <= i, 0 above the diagonal; in place over dP. */
__global__ void k_attn_softmax_backward(const float *__restrict__ p, float *__restrict__ dp,
                                        int64_t rows, int T, float scale)
{
    const int lane = threadIdx.x & 31;
    const int64_t r = blockIdx.x * (int64_t)ATTN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= rows)
        return;
    const int i = (int)(r % T);
    const float *prow = p + r * T;
    float *drow = dp + r * T;
    float dot = 0.0f;
    for (int j = lane; j <= i; j += 32)
        dot += prow[j] * drow[j];
    dot = kcuda_warp_sum(dot);
    for (int j = lane; j < T; j += 32)
        drow[j] = j <= i ? scale * prow[j] * (drow[j] - dot) : 0.0f;
}

static shoal_err_t s_rows_launch(bool backward, const float *p, float *x, int64_t rows, int T,
                                 float scale, cudaStream_t stream)
{
    if (rows == 0)
        return SHOAL_OK;
    const int64_t grid = (rows + ATTN_ROWS_PER_BLOCK - 1) / ATTN_ROWS_PER_BLOCK;
    if (grid > 0x7fffffffLL)
        return shoal_fail(SHOAL_ERR_INVALID, "attention_cuda: %lld score rows is too many",
                          (long long)rows);
    if (backward) {
        k_attn_softmax_backward<<<(unsigned)grid, 32 * ATTN_ROWS_PER_BLOCK, 0, stream>>>(p, x, rows,
                                                                                         T, scale);
        return kcuda_check("attention_backward_cuda (softmax backward)");
    }
    k_attn_softmax_causal<<<(unsigned)grid, 32 * ATTN_ROWS_PER_BLOCK, 0, stream>>>(x, rows, T);
    return kcuda_check("attention_forward_cuda (softmax)");
}

/* qkv [M, 3d] = a · Wqkv^T, then RoPE on q and k (both attention forms start so). */
static shoal_err_t s_qkv_forward(cublasHandle_t h, const attention_shape_t *s, const float *a,
                                 const float *w_qkv, const float *cos_t, const float *sin_t,
                                 float *qkv, cudaStream_t stream, const char *what)
{
    const int B = s->B, T = s->T, d = s->d, H = s->H, dh = d / H, M = B * T, ld = 3 * d;
    shoal_err_t rc = kblas_bind(h, stream, what);
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, true, M, 3 * d, d, 1.0f, a, d, w_qkv, d, 0.0f, qkv, ld, what);
    if (rc == SHOAL_OK)
        rc = rope_forward_cuda(qkv, B, T, H, dh, ld, cos_t, sin_t, stream);
    if (rc == SHOAL_OK)
        rc = rope_forward_cuda(qkv + d, B, T, H, dh, ld, cos_t, sin_t, stream);
    return rc;
}

/* The backward's two ends: first dWo += dout^T o and do = dout Wo (`first`), then, from dqkv,
 * RoPE backward on dq and dk, dWqkv += dqkv^T a and da = dqkv Wqkv. */
static shoal_err_t s_proj_backward(cublasHandle_t h, const attention_shape_t *s, bool first,
                                   const float *a, const float *w_qkv, const float *w_o,
                                   const float *cos_t, const float *sin_t, const float *o,
                                   const float *dout, float *dobuf, float *dqkv, float *da,
                                   float *dw_qkv_acc, float *dw_o_acc, cudaStream_t stream,
                                   const char *what)
{
    const int B = s->B, T = s->T, d = s->d, H = s->H, dh = d / H, M = B * T, ld = 3 * d;
    shoal_err_t rc = kblas_bind(h, stream, what);
    if (first) {
        if (rc == SHOAL_OK)
            rc = kblas_gemm(h, true, false, d, d, M, 1.0f, dout, d, o, d, 1.0f, dw_o_acc, d, what);
        if (rc == SHOAL_OK)
            rc = kblas_gemm(h, false, false, M, d, d, 1.0f, dout, d, w_o, d, 0.0f, dobuf, d, what);
        return rc;
    }
    if (rc == SHOAL_OK)
        rc = rope_backward_cuda(dqkv, B, T, H, dh, ld, cos_t, sin_t, stream);
    if (rc == SHOAL_OK)
        rc = rope_backward_cuda(dqkv + d, B, T, H, dh, ld, cos_t, sin_t, stream);
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, true, false, 3 * d, d, M, 1.0f, dqkv, ld, a, d, 1.0f, dw_qkv_acc, d,
                        what);
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, false, M, d, 3 * d, 1.0f, dqkv, ld, w_qkv, d, 0.0f, da, d, what);
    return rc;
}

/* A per-(sequence, head) GEMM over all B·H pairs, operand X of pair (b, h) at
 * X + b·Xb + h·Xh: strided-batched over the larger of B and H, one launch per index of the
 * smaller (launches, not FLOPs, dominate at large micro-batches of short sequences). */
typedef struct {
    const float *p;
    int ld;
    long long sb, sh; /* element strides of the sequence and the head */
} s_bh_t;

static shoal_err_t s_gemm_bh(cublasHandle_t h, bool ta, bool tb, int M, int N, int K, float alpha,
                             s_bh_t A, s_bh_t Bm, float beta, float *C, int ldc, long long Cb,
                             long long Ch, int nb, int nh, const char *what)
{
    const bool per_seq = nb <= nh; /* loop the sequences, batch the heads (or the reverse) */
    const int outer = per_seq ? nb : nh, batch = per_seq ? nh : nb;
    shoal_err_t rc = SHOAL_OK;
    for (int i = 0; i < outer && rc == SHOAL_OK; i++) {
        const long long ao = i * (per_seq ? A.sb : A.sh), bo = i * (per_seq ? Bm.sb : Bm.sh);
        const long long co = i * (per_seq ? Cb : Ch);
        rc = kblas_gemm_strided(h, ta, tb, M, N, K, alpha, A.p + ao, A.ld, per_seq ? A.sh : A.sb,
                                Bm.p + bo, Bm.ld, per_seq ? Bm.sh : Bm.sb, beta, C + co, ldc,
                                per_seq ? Ch : Cb, batch, what);
    }
    return rc;
}

extern "C" shoal_err_t attention_forward_cuda(cublasHandle_t h, const attention_shape_t *s,
                                              const float *a, const float *w_qkv, const float *w_o,
                                              const float *cos_t, const float *sin_t, float *qkv,
                                              float *p, float *o, float *out, cudaStream_t stream)
{
    const int B = s->B, T = s->T, d = s->d, H = s->H, dh = d / H, M = B * T, ld = 3 * d;
    const float scale = 1.0f / sqrtf((float)dh);
    const long long TT = (long long)T * T, Tld = (long long)T * ld, Td = (long long)T * d;
    const long long HTT = H * TT;
    if (M == 0)
        return SHOAL_OK;
    const s_bh_t q = {qkv, ld, Tld, dh}, k = {qkv + d, ld, Tld, dh}, v = {qkv + 2 * d, ld, Tld, dh};
    const s_bh_t pp = {p, T, HTT, TT};
    shoal_err_t rc = s_qkv_forward(h, s, a, w_qkv, cos_t, sin_t, qkv, stream,
                                   "attention_forward_cuda (qkv)");
    /* S [T, T] = scale · Q K^T per (sequence, head): q, k in place in qkv (head stride dh) */
    if (rc == SHOAL_OK)
        rc = s_gemm_bh(h, false, true, T, T, dh, scale, q, k, 0.0f, p, T, HTT, TT, B, H,
                       "attention_forward_cuda (qk)");
    if (rc == SHOAL_OK)
        rc = s_rows_launch(false, NULL, p, (int64_t)B * H * T, T, 0.0f, stream);
    /* O [T, dh] = P V, written into the heads' columns of o */
    if (rc == SHOAL_OK)
        rc = s_gemm_bh(h, false, false, T, dh, T, 1.0f, pp, v, 0.0f, o, d, Td, dh, B, H,
                       "attention_forward_cuda (pv)");
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, true, M, d, d, 1.0f, o, d, w_o, d, 0.0f, out, d,
                        "attention_forward_cuda (out)");
    return rc;
}

extern "C" shoal_err_t attention_backward_cuda(cublasHandle_t h, const attention_shape_t *s,
                                               const float *a, const float *w_qkv, const float *w_o,
                                               const float *cos_t, const float *sin_t,
                                               const float *qkv, const float *p, const float *o,
                                               const float *dout, float *dobuf, float *dqkv,
                                               float *dp, float *da, float *dw_qkv_acc,
                                               float *dw_o_acc, cudaStream_t stream)
{
    const int B = s->B, T = s->T, d = s->d, H = s->H, dh = d / H, M = B * T, ld = 3 * d;
    const float scale = 1.0f / sqrtf((float)dh);
    const long long TT = (long long)T * T, Tld = (long long)T * ld, Td = (long long)T * d;
    const long long HTT = H * TT;
    if (M == 0)
        return SHOAL_OK;
    const s_bh_t q = {qkv, ld, Tld, dh}, k = {qkv + d, ld, Tld, dh}, v = {qkv + 2 * d, ld, Tld, dh};
    const s_bh_t dob = {dobuf, d, Td, dh}, pp = {p, T, HTT, TT}, ds = {dp, T, HTT, TT};
    /* dWo [d, d] += dout^T o;  do [M, d] = dout Wo */
    shoal_err_t rc = s_proj_backward(h, s, true, a, w_qkv, w_o, cos_t, sin_t, o, dout, dobuf,
                                     dqkv, da, dw_qkv_acc, dw_o_acc, stream,
                                     "attention_backward_cuda (out projection)");
    /* dP = dO V^T;  dV = P^T dO (overwrites: dqkv is scratch) */
    if (rc == SHOAL_OK)
        rc = s_gemm_bh(h, false, true, T, T, dh, 1.0f, dob, v, 0.0f, dp, T, HTT, TT, B, H,
                       "attention_backward_cuda (dp)");
    if (rc == SHOAL_OK)
        rc = s_gemm_bh(h, true, false, T, dh, T, 1.0f, pp, dob, 0.0f, dqkv + 2 * d, ld, Tld, dh, B,
                       H, "attention_backward_cuda (dv)");
    if (rc == SHOAL_OK)
        rc = s_rows_launch(true, p, dp, (int64_t)B * H * T, T, scale, stream);
    /* dQ = dS K;  dK = dS^T Q */
    if (rc == SHOAL_OK)
        rc = s_gemm_bh(h, false, false, T, dh, T, 1.0f, ds, k, 0.0f, dqkv, ld, Tld, dh, B, H,
                       "attention_backward_cuda (dq)");
    if (rc == SHOAL_OK)
        rc = s_gemm_bh(h, true, false, T, dh, T, 1.0f, ds, q, 0.0f, dqkv + d, ld, Tld, dh, B, H,
                       "attention_backward_cuda (dk)");
    /* RoPE backward;  dWqkv [3d, d] += dqkv^T a;  da [M, d] = dqkv Wqkv */
    if (rc == SHOAL_OK)
        rc = s_proj_backward(h, s, false, a, w_qkv, w_o, cos_t, sin_t, o, dout, dobuf, dqkv, da,
                             dw_qkv_acc, dw_o_acc, stream, "attention_backward_cuda (qkv)");
    return rc;
}

/* ---- fused causal attention core (flash-style): no T×T matrix in memory --------------------
 * One warp per (b, h, row); each lane holds FA_MAXE elements of a head vector (dh ≤ 128). The
 * forward streams keys j ≤ i with an online softmax and saves lse = max + log Σ exp per row; the
 * backward recomputes the probabilities from lse in two passes, one per query row (dq, and
 * D_i = dO_i · O_i) and one per key row (dk, dv), so every output element is written by one warp
 * in a fixed order: deterministic, no atomics. Cost per head: O(T²·dh) FMAs on CUDA cores (not
 * tensor cores) with K/V read from L2; meant for the short sequences of the presets. Warp sums are
 * butterflies, so every lane holds the same bits of a dot product. */
#define FA_MAXE 4
#define FA_WARPS 4

/* The row r = (b·H + h)·T + i of the fused kernels, as (b, h, i). */
__device__ __forceinline__ void s_fa_row(int64_t r, int T, int H, int *b, int *hh, int *i)
{
    *i = (int)(r % T);
    const int64_t bh = r / T;
    *hh = (int)(bh % H);
    *b = (int)(bh / H);
}

__device__ __forceinline__ float s_fa_dot(const float *x, const float *y, int lane, int dh)
{
    float v = 0.0f;
#pragma unroll
    for (int e = 0; e < FA_MAXE; e++) {
        const int c = lane + 32 * e;
        if (c < dh)
            v += x[e] * y[c];
    }
    return kcuda_warp_sum(v);
}

__device__ __forceinline__ void s_fa_load(float *x, const float *src, int lane, int dh)
{
#pragma unroll
    for (int e = 0; e < FA_MAXE; e++) {
        const int c = lane + 32 * e;
        x[e] = c < dh ? src[c] : 0.0f;
    }
}

__device__ __forceinline__ void s_fa_store(float *dst, const float *x, float mul, int lane, int dh)
{
#pragma unroll
    for (int e = 0; e < FA_MAXE; e++) {
        const int c = lane + 32 * e;
        if (c < dh)
            dst[c] = x[e] * mul;
    }
}

__global__ void k_fa_forward(const float *__restrict__ qkv, int B, int T, int H, int dh,
                             float scale, float *__restrict__ o, float *__restrict__ lse)
{
    const int lane = threadIdx.x & 31, d = H * dh, ld = 3 * d;
    const int64_t r = blockIdx.x * (int64_t)FA_WARPS + (threadIdx.x >> 5);
    if (r >= (int64_t)B * H * T)
        return;
    int b, hh, i;
    s_fa_row(r, T, H, &b, &hh, &i);
    const float *kb = qkv + (int64_t)b * T * ld + d + hh * dh, *vb = kb + d;
    float q[FA_MAXE], acc[FA_MAXE];
    s_fa_load(q, qkv + ((int64_t)b * T + i) * ld + hh * dh, lane, dh);
#pragma unroll
    for (int e = 0; e < FA_MAXE; e++)
        acc[e] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int j = 0; j <= i; j++) {
        const float sj = s_fa_dot(q, kb + (int64_t)j * ld, lane, dh) * scale;
        const float mn = fmaxf(m, sj), corr = expf(m - mn), pj = expf(sj - mn);
        const float *vj = vb + (int64_t)j * ld;
        l = l * corr + pj;
#pragma unroll
        for (int e = 0; e < FA_MAXE; e++) {
            const int c = lane + 32 * e;
            if (c < dh)
                acc[e] = acc[e] * corr + pj * vj[c];
        }
        m = mn;
    }
    s_fa_store(o + ((int64_t)b * T + i) * d + hh * dh, acc, 1.0f / l, lane, dh);
    if (lane == 0)
        lse[r] = m + logf(l);
}

/* Pass 1, one warp per query row i: D_i = dO_i·O_i and dq_i = scale · Σ_{j≤i} dS_ij k_j with
 * dS_ij = P_ij (dO_i·v_j − D_i), P_ij = exp(scale q_i·k_j − lse_i). */
__global__ void k_fa_backward_q(const float *__restrict__ qkv, const float *__restrict__ o,
                                const float *__restrict__ dob, const float *__restrict__ lse,
                                int B, int T, int H, int dh, float scale,
                                float *__restrict__ dqkv, float *__restrict__ drow)
{
    const int lane = threadIdx.x & 31, d = H * dh, ld = 3 * d;
    const int64_t r = blockIdx.x * (int64_t)FA_WARPS + (threadIdx.x >> 5);
    if (r >= (int64_t)B * H * T)
        return;
    int b, hh, i;
    s_fa_row(r, T, H, &b, &hh, &i);
    const int64_t tok = (int64_t)b * T + i;
    const float *kb = qkv + (int64_t)b * T * ld + d + hh * dh, *vb = kb + d;
    float q[FA_MAXE], g[FA_MAXE], dq[FA_MAXE];
    s_fa_load(q, qkv + tok * ld + hh * dh, lane, dh);
    s_fa_load(g, dob + tok * d + hh * dh, lane, dh);
    const float D = s_fa_dot(g, o + tok * d + hh * dh, lane, dh), L = lse[r];
#pragma unroll
    for (int e = 0; e < FA_MAXE; e++)
        dq[e] = 0.0f;
    for (int j = 0; j <= i; j++) {
        const float *kj = kb + (int64_t)j * ld;
        const float p = expf(s_fa_dot(q, kj, lane, dh) * scale - L);
        const float ds = p * (s_fa_dot(g, vb + (int64_t)j * ld, lane, dh) - D);
#pragma unroll
        for (int e = 0; e < FA_MAXE; e++) {
            const int c = lane + 32 * e;
            if (c < dh)
                dq[e] += ds * kj[c];
        }
    }
    s_fa_store(dqkv + tok * ld + hh * dh, dq, scale, lane, dh);
    if (lane == 0)
        drow[r] = D;
}

/* Pass 2, one warp per key row j: dv_j = Σ_{i≥j} P_ij dO_i, dk_j = scale · Σ_{i≥j} dS_ij q_i. */
__global__ void k_fa_backward_kv(const float *__restrict__ qkv, const float *__restrict__ dob,
                                 const float *__restrict__ lse, const float *__restrict__ drow,
                                 int B, int T, int H, int dh, float scale,
                                 float *__restrict__ dqkv)
{
    const int lane = threadIdx.x & 31, d = H * dh, ld = 3 * d;
    const int64_t r = blockIdx.x * (int64_t)FA_WARPS + (threadIdx.x >> 5);
    if (r >= (int64_t)B * H * T)
        return;
    int b, hh, j;
    s_fa_row(r, T, H, &b, &hh, &j);
    const int64_t tok = (int64_t)b * T + j, row0 = r - j; /* lse/drow index of (b, h, 0) */
    const float *qb = qkv + (int64_t)b * T * ld + hh * dh;
    const float *gb = dob + (int64_t)b * T * d + hh * dh;
    float k[FA_MAXE], v[FA_MAXE], dk[FA_MAXE], dv[FA_MAXE];
    s_fa_load(k, qkv + tok * ld + d + hh * dh, lane, dh);
    s_fa_load(v, qkv + tok * ld + 2 * d + hh * dh, lane, dh);
#pragma unroll
    for (int e = 0; e < FA_MAXE; e++)
        dk[e] = dv[e] = 0.0f;
    for (int i = j; i < T; i++) {
        const float *qi = qb + (int64_t)i * ld, *gi = gb + (int64_t)i * d;
        const float p = expf(s_fa_dot(k, qi, lane, dh) * scale - lse[row0 + i]);
        const float ds = p * (s_fa_dot(v, gi, lane, dh) - drow[row0 + i]);
#pragma unroll
        for (int e = 0; e < FA_MAXE; e++) {
            const int c = lane + 32 * e;
            if (c < dh) {
                dv[e] += p * gi[c];
                dk[e] += ds * qi[c];
            }
        }
    }
    s_fa_store(dqkv + tok * ld + d + hh * dh, dk, scale, lane, dh);
    s_fa_store(dqkv + tok * ld + 2 * d + hh * dh, dv, 1.0f, lane, dh);
}

static shoal_err_t s_fa_check(const attention_shape_t *s, unsigned *grid, const char *what)
{
    const int dh = s->d / s->H;
    const int64_t rows = (int64_t)s->B * s->H * s->T;
    if (dh > 32 * FA_MAXE)
        return shoal_fail(SHOAL_ERR_INVALID, "%s: head width %d above the fused kernel's %d", what,
                          dh, 32 * FA_MAXE);
    const int64_t g = (rows + FA_WARPS - 1) / FA_WARPS;
    if (g > 0x7fffffffLL)
        return shoal_fail(SHOAL_ERR_INVALID, "%s: %lld rows is too many", what, (long long)rows);
    *grid = (unsigned)g;
    return SHOAL_OK;
}

extern "C" shoal_err_t attention_forward_fused_cuda(cublasHandle_t h, const attention_shape_t *s,
                                                    const float *a, const float *w_qkv,
                                                    const float *w_o, const float *cos_t,
                                                    const float *sin_t, float *qkv, float *lse,
                                                    float *o, float *out, cudaStream_t stream)
{
    const int d = s->d, H = s->H, dh = d / H, M = s->B * s->T;
    unsigned grid = 0;
    if (M == 0)
        return SHOAL_OK;
    shoal_err_t rc = s_fa_check(s, &grid, "attention_forward_fused_cuda");
    if (rc == SHOAL_OK)
        rc = s_qkv_forward(h, s, a, w_qkv, cos_t, sin_t, qkv, stream,
                           "attention_forward_fused_cuda (qkv)");
    if (rc == SHOAL_OK) {
        k_fa_forward<<<grid, 32 * FA_WARPS, 0, stream>>>(qkv, s->B, s->T, H, dh,
                                                         1.0f / sqrtf((float)dh), o, lse);
        rc = kcuda_check("attention_forward_fused_cuda (core)");
    }
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, true, M, d, d, 1.0f, o, d, w_o, d, 0.0f, out, d,
                        "attention_forward_fused_cuda (out)");
    return rc;
}

extern "C" shoal_err_t attention_backward_fused_cuda(
    cublasHandle_t h, const attention_shape_t *s, const float *a, const float *w_qkv,
    const float *w_o, const float *cos_t, const float *sin_t, const float *qkv, const float *lse,
    const float *o, const float *dout, float *dobuf, float *dqkv, float *drow, float *da,
    float *dw_qkv_acc, float *dw_o_acc, cudaStream_t stream)
{
    const int H = s->H, dh = s->d / H;
    const float scale = 1.0f / sqrtf((float)dh);
    unsigned grid = 0;
    if (s->B * s->T == 0)
        return SHOAL_OK;
    shoal_err_t rc = s_fa_check(s, &grid, "attention_backward_fused_cuda");
    if (rc == SHOAL_OK)
        rc = s_proj_backward(h, s, true, a, w_qkv, w_o, cos_t, sin_t, o, dout, dobuf, dqkv, da,
                             dw_qkv_acc, dw_o_acc, stream,
                             "attention_backward_fused_cuda (out projection)");
    if (rc == SHOAL_OK) {
        k_fa_backward_q<<<grid, 32 * FA_WARPS, 0, stream>>>(qkv, o, dobuf, lse, s->B, s->T, H, dh,
                                                            scale, dqkv, drow);
        rc = kcuda_check("attention_backward_fused_cuda (dq)");
    }
    if (rc == SHOAL_OK) {
        k_fa_backward_kv<<<grid, 32 * FA_WARPS, 0, stream>>>(qkv, dobuf, lse, drow, s->B, s->T, H,
                                                             dh, scale, dqkv);
        rc = kcuda_check("attention_backward_fused_cuda (dk, dv)");
    }
    if (rc == SHOAL_OK)
        rc = s_proj_backward(h, s, false, a, w_qkv, w_o, cos_t, sin_t, o, dout, dobuf, dqkv, da,
                             dw_qkv_acc, dw_o_acc, stream, "attention_backward_fused_cuda (qkv)");
    return rc;
}
