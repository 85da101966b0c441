/* attention.cu: CUDA twin of attention.c. Projections are cuBLAS GEMMs; scores, P·V and their
 * gradients are strided-batched GEMMs over the H heads of one sequence (q, k, v addressed in
 * place inside qkv with leading dimension 3d, as on the CPU); the causal mask lives in the
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

extern "C" shoal_err_t attention_forward_cuda(cublasHandle_t h, const attention_shape_t *s,
                                              const float *a, const float *w_qkv, const float *w_o,
                                              const float *cos_t, const float *sin_t, float *qkv,
                                              float *p, float *o, float *out, cudaStream_t stream)
{
    const int B = s->B, T = s->T, d = s->d, H = s->H, dh = d / H, M = B * T, ld = 3 * d;
    const float scale = 1.0f / sqrtf((float)dh);
    const long long TT = (long long)T * T;
    if (M == 0)
        return SHOAL_OK;
    shoal_err_t rc = kblas_bind(h, stream, "attention_forward_cuda");
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, true, M, 3 * d, d, 1.0f, a, d, w_qkv, d, 0.0f, qkv, ld,
                        "attention_forward_cuda (qkv)");
    if (rc == SHOAL_OK)
        rc = rope_forward_cuda(qkv, B, T, H, dh, ld, cos_t, sin_t, stream);
    if (rc == SHOAL_OK)
        rc = rope_forward_cuda(qkv + d, B, T, H, dh, ld, cos_t, sin_t, stream);
    /* S_h [T, T] = scale · Q_h K_h^T for the H heads of each sequence (head stride dh) */
    for (int b = 0; b < B && rc == SHOAL_OK; b++) {
        const float *q = qkv + (size_t)b * T * ld, *k = q + d;
        rc = kblas_gemm_strided(h, false, true, T, T, dh, scale, q, ld, dh, k, ld, dh, 0.0f,
                                p + (size_t)b * H * TT, T, TT, H, "attention_forward_cuda (qk)");
    }
    if (rc == SHOAL_OK)
        rc = s_rows_launch(false, NULL, p, (int64_t)B * H * T, T, 0.0f, stream);
    /* O_h [T, dh] = P_h V_h, written into the heads' columns of o */
    for (int b = 0; b < B && rc == SHOAL_OK; b++) {
        const float *v = qkv + (size_t)b * T * ld + 2 * d;
        rc = kblas_gemm_strided(h, false, false, T, dh, T, 1.0f, p + (size_t)b * H * TT, T, TT, v,
                                ld, dh, 0.0f, o + (size_t)b * T * d, d, dh, H,
                                "attention_forward_cuda (pv)");
    }
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
    const long long TT = (long long)T * T;
    if (M == 0)
        return SHOAL_OK;
    shoal_err_t rc = kblas_bind(h, stream, "attention_backward_cuda");
    /* dWo [d, d] += dout^T o;  do [M, d] = dout Wo */
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, true, false, d, d, M, 1.0f, dout, d, o, d, 1.0f, dw_o_acc, d,
                        "attention_backward_cuda (dw_o)");
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, false, M, d, d, 1.0f, dout, d, w_o, d, 0.0f, dobuf, d,
                        "attention_backward_cuda (do)");
    for (int b = 0; b < B && rc == SHOAL_OK; b++) {
        const float *v = qkv + (size_t)b * T * ld + 2 * d, *dob = dobuf + (size_t)b * T * d;
        const float *pb = p + (size_t)b * H * TT;
        float *dpb = dp + (size_t)b * H * TT, *dv = dqkv + (size_t)b * T * ld + 2 * d;
        /* dP_h = dO_h V_h^T;  dV_h = P_h^T dO_h (overwrites: dqkv is scratch) */
        rc = kblas_gemm_strided(h, false, true, T, T, dh, 1.0f, dob, d, dh, v, ld, dh, 0.0f, dpb, T,
                                TT, H, "attention_backward_cuda (dp)");
        if (rc == SHOAL_OK)
            rc = kblas_gemm_strided(h, true, false, T, dh, T, 1.0f, pb, T, TT, dob, d, dh, 0.0f, dv,
                                    ld, dh, H, "attention_backward_cuda (dv)");
    }
    if (rc == SHOAL_OK)
        rc = s_rows_launch(true, p, dp, (int64_t)B * H * T, T, scale, stream);
    for (int b = 0; b < B && rc == SHOAL_OK; b++) {
        const size_t base = (size_t)b * T * ld;
        const float *q = qkv + base, *k = q + d, *dsb = dp + (size_t)b * H * TT;
        float *dq = dqkv + base, *dk = dq + d;
        /* dQ_h = dS_h K_h;  dK_h = dS_h^T Q_h */
        rc = kblas_gemm_strided(h, false, false, T, dh, T, 1.0f, dsb, T, TT, k, ld, dh, 0.0f, dq,
                                ld, dh, H, "attention_backward_cuda (dq)");
        if (rc == SHOAL_OK)
            rc = kblas_gemm_strided(h, true, false, T, dh, T, 1.0f, dsb, T, TT, q, ld, dh, 0.0f, dk,
                                    ld, dh, H, "attention_backward_cuda (dk)");
    }
    if (rc == SHOAL_OK)
        rc = rope_backward_cuda(dqkv, B, T, H, dh, ld, cos_t, sin_t, stream);
    if (rc == SHOAL_OK)
        rc = rope_backward_cuda(dqkv + d, B, T, H, dh, ld, cos_t, sin_t, stream);
    /* dWqkv [3d, d] += dqkv^T a;  da [M, d] = dqkv Wqkv */
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, true, false, 3 * d, d, M, 1.0f, dqkv, ld, a, d, 1.0f, dw_qkv_acc, d,
                        "attention_backward_cuda (dw_qkv)");
    if (rc == SHOAL_OK)
        rc = kblas_gemm(h, false, false, M, d, 3 * d, 1.0f, dqkv, ld, w_qkv, d, 0.0f, da, d,
                        "attention_backward_cuda (da)");
    return rc;
}
