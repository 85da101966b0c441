/* model_gpu.cu: the whole model on one CUDA device, composing the kernels' CUDA twins in the
 * order of model.c (model_part_forward / model_part_backward), plus the step's reductions
 * (loss sum, Σ grad²: fixed-shape trees, no atomics) and the fused optimizer launch.
 * Everything runs on one stream; the only host waits are one per MoE layer forward (expert
 * GEMM sizes, inside moe_forward_cuda) and model_gpu_step_sums. */
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "cross_entropy.h"
#include "embedding.h"
#include "ffn.h"
#include "kblas.cuh"
#include "model_gpu.h"
#include "model_gpu_plan.h"
#include "moe.h"
#include "rmsnorm.h"
#include "rope.h"

/* Fixed reduction shapes: results do not depend on scheduling. */
#define SQ_BLOCKS 1024
#define SQ_THREADS 256
#define SUM_THREADS 256

/* One layer's saved activations (the buffers of model.c's s_layer_act_t, on the device). */
typedef struct {
    float *h_in, *a, *rstd1, *qkv, *p, *o, *h_mid, *u, *rstd2; /* p: lse [B, H, T] when fused */
    float *gu, *act; /* dense FFN */
    moe_saved_cuda_t moe;
    int is_moe;
} s_act_t;

struct model_gpu {
    const model_layout_t *lay;
    model_gpu_plan_t plan;
    int max_B, T, flags;
    cudaStream_t stream;
    cublasHandle_t blas;
    moe_config_t mcfg;
    float *params, *grads, *adam_m, *adam_v;
    int64_t *counts;          /* [n_moe · N] tokens per expert this step */
    double *sums;             /* [2]: loss sum, Σ grad² */
    double *host_sums;        /* pinned [2] */
    double *row_loss;         /* [M] */
    double *sq_part;          /* [SQ_BLOCKS] */
    adamw_segment_t *segs;    /* device copy of plan.segments */
    int32_t *tok, *tgt;       /* [M] */
    float *cos_t, *sin_t;     /* [T, dh/2] */
    s_act_t *act;             /* [L] */
    float *h_final, *rstd_f, *xn, *logits; /* logits hold dlogits after the forward */
    float *dh, *dtmp, *dobuf, *dqkv, *dp, *dgu, *dact;
    moe_scratch_t msc;
    float **pw_gu, **pw_d, **gw_gu, **gw_d; /* host arrays [L · N] of expert device pointers */
};

static shoal_err_t s_cuda(cudaError_t e, const char *what)
{
    if (e != cudaSuccess)
        return shoal_fail(SHOAL_ERR_CUDA, "device model: %s: %s", what, cudaGetErrorString(e));
    return SHOAL_OK;
}

/* cudaMalloc of n elements of `size` bytes (at least 1 byte) into *p; records failure. */
static void s_dalloc(void *p, size_t n, size_t size, int *fail)
{
    *(void **)p = NULL;
    if (*fail)
        return;
    const size_t bytes = n * size;
    if (cudaMalloc((void **)p, bytes > 0 ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* not a sticky error: keep later launch checks clean */
        *(void **)p = NULL;
        *fail = 1;
    }
}

/* *acc += Σ x[0..n) in a fixed order (one block: strided per-thread sums, then a fixed tree). */
__global__ void k_sum_doubles(const double *__restrict__ x, int64_t n, double *acc)
{
    __shared__ double s_part[SUM_THREADS];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += SUM_THREADS)
        s += x[i];
    s_part[threadIdx.x] = s;
    __syncthreads();
    for (int w = SUM_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w)
            s_part[threadIdx.x] += s_part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        *acc += s_part[0];
}

/* part[b] = Σ g² over the elements b·SQ_THREADS + t + k·SQ_BLOCKS·SQ_THREADS (fixed grid). */
__global__ void k_sq_partial(const float *__restrict__ g, int64_t n, double *__restrict__ part)
{
    __shared__ double s_part[SQ_THREADS];
    double s = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)SQ_THREADS + threadIdx.x; i < n;
         i += (int64_t)SQ_BLOCKS * SQ_THREADS)
        s += (double)g[i] * (double)g[i];
    s_part[threadIdx.x] = s;
    __syncthreads();
    for (int w = SQ_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w)
            s_part[threadIdx.x] += s_part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        part[blockIdx.x] = s_part[0];
}

static void s_free_all(model_gpu_t *m)
{
    const int L = m->plan.n_layers;
    if (m->act)
        for (int l = 0; l < L; l++) {
            s_act_t *a = &m->act[l];
            cudaFree(a->h_in);
            cudaFree(a->a);
            cudaFree(a->rstd1);
            cudaFree(a->qkv);
            cudaFree(a->p);
            cudaFree(a->o);
            cudaFree(a->h_mid);
            cudaFree(a->u);
            cudaFree(a->rstd2);
            cudaFree(a->gu);
            cudaFree(a->act);
            moe_saved_free_cuda(&a->moe);
        }
    free(m->act);
    void *dev[] = {m->params, m->grads,  m->adam_m,  m->adam_v, m->counts, m->sums,
                   m->row_loss, m->sq_part, m->segs,  m->tok,    m->tgt,    m->cos_t,
                   m->sin_t,  m->h_final, m->rstd_f, m->xn,     m->logits, m->dh,
                   m->dtmp,   m->dobuf,  m->dqkv,    m->dp,     m->dgu,    m->dact};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    moe_scratch_free_cuda(&m->msc);
    cudaFreeHost(m->host_sums);
    free(m->pw_gu);
    free(m->pw_d);
    free(m->gw_gu);
    free(m->gw_d);
}

extern "C" void model_gpu_destroy(model_gpu_t **mp)
{
    model_gpu_t *m = *mp;
    if (!m)
        return;
    if (m->stream)
        cudaStreamSynchronize(m->stream);
    s_free_all(m);
    if (m->blas) {
        kernels_matmul_bf16_cuda(m->blas, 0);
        cublasDestroy(m->blas);
    }
    if (m->stream)
        cudaStreamDestroy(m->stream);
    model_gpu_plan_fini(&m->plan);
    free(m);
    *mp = NULL;
}

/* Device activations for max_B · T tokens, as model.c's s_slot_alloc and model_new_slots. */
static shoal_err_t s_alloc_activations(model_gpu_t *m)
{
    const model_config_t *c = &m->lay->cfg;
    const int L = c->num_hidden_layers, H = c->num_attention_heads;
    const size_t M = (size_t)m->max_B * m->T, d = (size_t)c->hidden_size;
    const size_t f = (size_t)c->intermediate_size, V = (size_t)c->vocab_size;
    const int fused = (m->flags & MODEL_GPU_FUSED_ATTENTION) != 0;
    /* attention's saved scores and their gradient scratch: T×T per head, or a row each fused */
    const size_t PT = (size_t)m->max_B * H * m->T * (fused ? 1 : m->T), F = sizeof(float);
    int fail = 0;
    m->act = (s_act_t *)calloc((size_t)L, sizeof *m->act);
    if (!m->act)
        return shoal_fail(SHOAL_ERR_NOMEM, "device model: out of host memory");
    for (int l = 0; l < L && !fail; l++) {
        s_act_t *a = &m->act[l];
        a->is_moe = m->plan.layers[l].is_moe;
        s_dalloc(&a->h_in, M * d, F, &fail);
        s_dalloc(&a->a, M * d, F, &fail);
        s_dalloc(&a->rstd1, M, F, &fail);
        s_dalloc(&a->qkv, M * 3 * d, F, &fail);
        s_dalloc(&a->p, PT, F, &fail);
        s_dalloc(&a->o, M * d, F, &fail);
        s_dalloc(&a->h_mid, M * d, F, &fail);
        s_dalloc(&a->u, M * d, F, &fail);
        s_dalloc(&a->rstd2, M, F, &fail);
        if (a->is_moe) {
            if (!fail && moe_saved_alloc_cuda(&a->moe, &m->mcfg, (int)M) != SHOAL_OK)
                fail = 1;
        } else {
            s_dalloc(&a->gu, M * 2 * f, F, &fail);
            s_dalloc(&a->act, M * f, F, &fail);
        }
    }
    s_dalloc(&m->h_final, M * d, F, &fail);
    s_dalloc(&m->rstd_f, M, F, &fail);
    s_dalloc(&m->xn, M * d, F, &fail);
    s_dalloc(&m->logits, M * V, F, &fail);
    s_dalloc(&m->dh, M * d, F, &fail);
    s_dalloc(&m->dtmp, M * d, F, &fail);
    s_dalloc(&m->dobuf, M * d, F, &fail);
    s_dalloc(&m->dqkv, M * 3 * d, F, &fail);
    s_dalloc(&m->dp, PT, F, &fail);
    s_dalloc(&m->dgu, M * 2 * f, F, &fail);
    s_dalloc(&m->dact, M * f, F, &fail);
    s_dalloc(&m->row_loss, M, sizeof(double), &fail);
    s_dalloc(&m->tok, M, sizeof(int32_t), &fail);
    s_dalloc(&m->tgt, M, sizeof(int32_t), &fail);
    if (!fail && m->plan.n_moe > 0 && moe_scratch_alloc_cuda(&m->msc, &m->mcfg, (int)M) != SHOAL_OK)
        fail = 1;
    if (fail)
        return shoal_fail(SHOAL_ERR_NOMEM, "device model: out of device memory for the "
                          "activations of %d x %d tokens", m->max_B, m->T);
    return SHOAL_OK;
}

/* The expert pointer arrays of every MoE layer into params and grads. */
static void s_bind_experts(model_gpu_t *m)
{
    const int N = m->plan.N;
    for (int l = 0; l < m->plan.n_layers; l++) {
        const model_gpu_layer_t *w = &m->plan.layers[l];
        if (!w->is_moe)
            continue;
        for (int e = 0; e < N; e++) {
            const size_t k = (size_t)l * N + e;
            m->pw_gu[k] = m->params + w->expert_gu[e];
            m->pw_d[k] = m->params + w->expert_d[e];
            m->gw_gu[k] = m->grads + w->expert_gu[e];
            m->gw_d[k] = m->grads + w->expert_d[e];
        }
    }
}

extern "C" shoal_err_t model_gpu_new(const model_layout_t *lay, int max_B, int T, int flags,
                                     model_gpu_t **out)
{
    const model_config_t *c = &lay->cfg;
    *out = NULL;
    if (T < 1 || T > c->max_position_embeddings || max_B < 1)
        return shoal_fail(SHOAL_ERR_INVALID, "device model: %d sequences of %d positions (T must "
                          "be in [1, %d])", max_B, T, c->max_position_embeddings);
    model_gpu_t *m = (model_gpu_t *)calloc(1, sizeof *m);
    if (!m)
        return shoal_fail(SHOAL_ERR_NOMEM, "device model: out of host memory");
    shoal_err_t rc;
    m->lay = lay;
    m->max_B = max_B;
    m->T = T;
    m->flags = flags;
    SHOAL_CHECK_GOTO(model_gpu_plan_init(&m->plan, lay), rc, fail);
    {
        const int L = c->num_hidden_layers, N = c->n_routed_experts, d = c->hidden_size;
        const int dh = d / c->num_attention_heads;
        const size_t np = (size_t)lay->n_params, F = sizeof(float);
        m->mcfg = (moe_config_t){.d = d,
                                 .fe = c->moe_intermediate_size,
                                 .fs = c->n_shared_experts * c->moe_intermediate_size,
                                 .router = {.N = N,
                                            .K = c->num_experts_per_tok,
                                            .n_group = c->n_group,
                                            .topk_group = c->topk_group,
                                            .rsf = (float)c->routed_scaling_factor},
                                 .prec = KGEMM_FP32}; /* host GEMMs only; the device's: flags */
        SHOAL_CHECK_GOTO(s_cuda(cudaStreamCreate(&m->stream), "stream"), rc, fail);
        SHOAL_CHECK_GOTO(kblas_check(cublasCreate(&m->blas), "device model: cublasCreate"), rc,
                         fail);
        SHOAL_CHECK_GOTO(kblas_bind(m->blas, m->stream, "device model"), rc, fail);
        SHOAL_CHECK_GOTO(kernels_matmul_bf16_cuda(m->blas, (flags & MODEL_GPU_BF16) != 0), rc,
                         fail);
        if ((flags & MODEL_GPU_FUSED_ATTENTION) && dh > 128) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "device model: the fused attention takes heads of "
                            "at most 128, this model's are %d", dh);
            goto fail;
        }
        int fail_alloc = 0;
        s_dalloc(&m->params, np, F, &fail_alloc);
        s_dalloc(&m->grads, np, F, &fail_alloc);
        s_dalloc(&m->adam_m, np, F, &fail_alloc);
        s_dalloc(&m->adam_v, np, F, &fail_alloc);
        s_dalloc(&m->counts, (size_t)m->plan.n_moe * N, sizeof(int64_t), &fail_alloc);
        s_dalloc(&m->sums, 2, sizeof(double), &fail_alloc);
        s_dalloc(&m->sq_part, SQ_BLOCKS, sizeof(double), &fail_alloc);
        s_dalloc(&m->segs, (size_t)m->plan.n_segments, sizeof(adamw_segment_t), &fail_alloc);
        s_dalloc(&m->cos_t, (size_t)T * dh / 2, F, &fail_alloc);
        s_dalloc(&m->sin_t, (size_t)T * dh / 2, F, &fail_alloc);
        if (fail_alloc) {
            rc = shoal_fail(SHOAL_ERR_NOMEM, "device model: out of device memory for %zu "
                            "parameters (4 copies: params, grads, AdamW m and v)", np);
            goto fail;
        }
        if (cudaMallocHost((void **)&m->host_sums, 2 * sizeof(double)) != cudaSuccess) {
            cudaGetLastError();
            rc = shoal_fail(SHOAL_ERR_NOMEM, "device model: no pinned host memory");
            goto fail;
        }
        m->pw_gu = (float **)calloc((size_t)L * N + 1, sizeof(float *));
        m->pw_d = (float **)calloc((size_t)L * N + 1, sizeof(float *));
        m->gw_gu = (float **)calloc((size_t)L * N + 1, sizeof(float *));
        m->gw_d = (float **)calloc((size_t)L * N + 1, sizeof(float *));
        float *cs = (float *)malloc(sizeof(float) * ((size_t)T * dh + 1));
        if (!m->pw_gu || !m->pw_d || !m->gw_gu || !m->gw_d || !cs) {
            free(cs);
            rc = shoal_fail(SHOAL_ERR_NOMEM, "device model: out of host memory");
            goto fail;
        }
        rope_tables(T, dh, c->rope_theta, cs, cs + (size_t)T * dh / 2);
        rc = s_cuda(cudaMemcpy(m->cos_t, cs, F * T * dh / 2, cudaMemcpyHostToDevice), "rope");
        if (rc == SHOAL_OK)
            rc = s_cuda(cudaMemcpy(m->sin_t, cs + (size_t)T * dh / 2, F * T * dh / 2,
                                   cudaMemcpyHostToDevice),
                        "rope");
        free(cs);
        if (rc != SHOAL_OK)
            goto fail;
        SHOAL_CHECK_GOTO(s_cuda(cudaMemcpy(m->segs, m->plan.segments,
                                           sizeof(adamw_segment_t) * m->plan.n_segments,
                                           cudaMemcpyHostToDevice),
                                "segments"),
                         rc, fail);
        SHOAL_CHECK_GOTO(s_alloc_activations(m), rc, fail);
        s_bind_experts(m);
    }
    *out = m;
    return SHOAL_OK;
fail:
    model_gpu_destroy(&m);
    return rc;
}

extern "C" int64_t model_gpu_n_params(const model_gpu_t *m)
{
    return m->lay->n_params;
}

extern "C" shoal_err_t model_gpu_upload(model_gpu_t *m, const float *params, const float *adam_m,
                                        const float *adam_v)
{
    const size_t bytes = sizeof(float) * (size_t)m->lay->n_params;
    shoal_err_t rc = s_cuda(cudaStreamSynchronize(m->stream), "upload: sync");
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaMemcpy(m->params, params, bytes, cudaMemcpyHostToDevice), "upload params");
    if (rc == SHOAL_OK)
        rc = s_cuda(adam_m ? cudaMemcpy(m->adam_m, adam_m, bytes, cudaMemcpyHostToDevice)
                           : cudaMemset(m->adam_m, 0, bytes),
                    "upload adam m");
    if (rc == SHOAL_OK)
        rc = s_cuda(adam_v ? cudaMemcpy(m->adam_v, adam_v, bytes, cudaMemcpyHostToDevice)
                           : cudaMemset(m->adam_v, 0, bytes),
                    "upload adam v");
    return rc;
}

extern "C" shoal_err_t model_gpu_download(model_gpu_t *m, float *params, float *adam_m,
                                          float *adam_v)
{
    const size_t bytes = sizeof(float) * (size_t)m->lay->n_params;
    shoal_err_t rc = s_cuda(cudaStreamSynchronize(m->stream), "download: sync");
    if (rc == SHOAL_OK && params)
        rc = s_cuda(cudaMemcpy(params, m->params, bytes, cudaMemcpyDeviceToHost), "download");
    if (rc == SHOAL_OK && adam_m)
        rc = s_cuda(cudaMemcpy(adam_m, m->adam_m, bytes, cudaMemcpyDeviceToHost), "download");
    if (rc == SHOAL_OK && adam_v)
        rc = s_cuda(cudaMemcpy(adam_v, m->adam_v, bytes, cudaMemcpyDeviceToHost), "download");
    return rc;
}

extern "C" shoal_err_t model_gpu_begin_step(model_gpu_t *m)
{
    const size_t np = (size_t)m->lay->n_params;
    shoal_err_t rc = s_cuda(cudaMemsetAsync(m->grads, 0, sizeof(float) * np, m->stream),
                            "zero grads");
    if (rc == SHOAL_OK && m->plan.n_moe > 0)
        rc = s_cuda(cudaMemsetAsync(m->counts, 0,
                                    sizeof(int64_t) * (size_t)m->plan.n_moe * m->plan.N,
                                    m->stream),
                    "zero counts");
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaMemsetAsync(m->sums, 0, 2 * sizeof(double), m->stream), "zero sums");
    return rc;
}

/* A MoE layer's weights (or gradients) inside base: pointer arrays from the bound tables. */
static moe_weights_t s_moe_view(const model_gpu_t *m, int l, float *base, float **gu, float **dn)
{
    const model_gpu_layer_t *w = &m->plan.layers[l];
    const size_t k = (size_t)l * m->plan.N;
    moe_weights_t v;
    v.router = base + w->router;
    v.bias = base + w->bias;
    v.expert_gu = gu + k;
    v.expert_d = dn + k;
    v.shared_gu = w->shared_gu >= 0 ? base + w->shared_gu : NULL;
    v.shared_d = w->shared_d >= 0 ? base + w->shared_d : NULL;
    return v;
}

static shoal_err_t s_forward(model_gpu_t *m, int B, float loss_scale)
{
    const model_config_t *c = &m->lay->cfg;
    const int L = c->num_hidden_layers, d = c->hidden_size, V = c->vocab_size, T = m->T;
    const int f = c->intermediate_size, N = c->n_routed_experts, M = B * T;
    const float eps = (float)c->rms_norm_eps;
    const attention_shape_t ash = {B, T, d, c->num_attention_heads, KGEMM_FP32};
    const cudaStream_t st = m->stream;
    float *P = m->params;
    shoal_err_t rc;
    int moe_i = 0;
    SHOAL_CHECK_GOTO(embedding_forward_cuda(m->tok, M, P + m->plan.embed, d, m->act[0].h_in, st),
                     rc, out);
    /* each residual add is fused into the norm that follows it: h_in of layer l > 0 (and
     * h_final) is the FFN/MoE output + the previous layer's h_mid, h_mid the attention output
     * + h_in; the sums are stored in place, as the backward reads them */
    for (int l = 0; l < L; l++) {
        s_act_t *a = &m->act[l];
        const model_gpu_layer_t *w = &m->plan.layers[l];
        float *hout = l + 1 < L ? m->act[l + 1].h_in : m->h_final;
        if (l == 0)
            rc = rmsnorm_forward_cuda(a->h_in, P + w->ln1, M, d, eps, a->a, a->rstd1, st);
        else
            rc = rmsnorm_residual_forward_cuda(a->h_in, m->act[l - 1].h_mid, P + w->ln1, M, d, eps,
                                               a->a, a->rstd1, st);
        if (rc != SHOAL_OK)
            goto out;
        SHOAL_CHECK_GOTO((m->flags & MODEL_GPU_FUSED_ATTENTION ? attention_forward_fused_cuda
                                                                : attention_forward_cuda)(
                             m->blas, &ash, a->a, P + w->w_qkv, P + w->w_o, m->cos_t, m->sin_t,
                             a->qkv, a->p, a->o, a->h_mid, st),
                         rc, out);
        SHOAL_CHECK_GOTO(rmsnorm_residual_forward_cuda(a->h_mid, a->h_in, P + w->ln2, M, d, eps,
                                                       a->u, a->rstd2, st),
                         rc, out);
        if (a->is_moe) {
            const moe_weights_t mw = s_moe_view(m, l, P, m->pw_gu, m->pw_d);
            SHOAL_CHECK_GOTO(moe_forward_cuda(m->blas, &m->mcfg, &mw, a->u, M, &a->moe, hout,
                                              m->counts + (size_t)moe_i * N, st),
                             rc, out);
            moe_i++;
        } else {
            SHOAL_CHECK_GOTO(ffn_forward_cuda(m->blas, a->u, M, d, f, P + w->w_gu, P + w->w_d,
                                              a->gu, a->act, hout, 0.0f, st),
                             rc, out);
        }
    }
    SHOAL_CHECK_GOTO(rmsnorm_residual_forward_cuda(m->h_final, m->act[L - 1].h_mid,
                                                   P + m->plan.norm_f, M, d, eps, m->xn,
                                                   m->rstd_f, st),
                     rc, out);
    SHOAL_CHECK_GOTO(kblas_bind(m->blas, st, "device model (head)"), rc, out);
    SHOAL_CHECK_GOTO(kblas_gemm(m->blas, false, true, M, V, d, 1.0f, m->xn, d, P + m->plan.head,
                                d, 0.0f, m->logits, V, "device model (logits)"),
                     rc, out);
    SHOAL_CHECK_GOTO(cross_entropy_forward_backward_cuda(m->logits, m->tgt, M, V, loss_scale,
                                                         m->logits, m->row_loss, st),
                     rc, out);
    k_sum_doubles<<<1, SUM_THREADS, 0, st>>>(m->row_loss, M, m->sums);
    rc = kcuda_check("device model (loss sum)");
out:
    return rc;
}

static shoal_err_t s_backward(model_gpu_t *m, int B)
{
    const model_config_t *c = &m->lay->cfg;
    const int L = c->num_hidden_layers, d = c->hidden_size, V = c->vocab_size, T = m->T;
    const int f = c->intermediate_size, M = B * T;
    const attention_shape_t ash = {B, T, d, c->num_attention_heads, KGEMM_FP32};
    const cudaStream_t st = m->stream;
    float *P = m->params, *G = m->grads;
    shoal_err_t rc;
    /* head: m->logits holds dlogits */
    SHOAL_CHECK_GOTO(kblas_bind(m->blas, st, "device model (head backward)"), rc, out);
    SHOAL_CHECK_GOTO(kblas_gemm(m->blas, true, false, V, d, M, 1.0f, m->logits, V, m->xn, d, 1.0f,
                                G + m->plan.head, d, "device model (d head)"),
                     rc, out);
    SHOAL_CHECK_GOTO(kblas_gemm(m->blas, false, false, M, d, V, 1.0f, m->logits, V,
                                P + m->plan.head, d, 0.0f, m->dtmp, d, "device model (d xn)"),
                     rc, out);
    SHOAL_CHECK_GOTO(s_cuda(cudaMemsetAsync(m->dh, 0, sizeof(float) * (size_t)M * d, st),
                            "zero dh"),
                     rc, out);
    SHOAL_CHECK_GOTO(rmsnorm_backward_cuda(m->h_final, P + m->plan.norm_f, m->rstd_f, m->dtmp, M,
                                           d, m->dh, G + m->plan.norm_f, st),
                     rc, out);
    for (int l = L - 1; l >= 0; l--) {
        s_act_t *a = &m->act[l];
        const model_gpu_layer_t *w = &m->plan.layers[l];
        /* FFN / MoE: dh is ∂L/∂h_out, which is also ∂L/∂h_mid through the residual */
        if (a->is_moe) {
            const moe_weights_t mw = s_moe_view(m, l, P, m->pw_gu, m->pw_d);
            const moe_weights_t mg = s_moe_view(m, l, G, m->gw_gu, m->gw_d);
            SHOAL_CHECK_GOTO(moe_backward_cuda(m->blas, &m->mcfg, &mw, a->u, &a->moe, m->dh,
                                               &m->msc, m->dtmp, &mg, st),
                             rc, out);
        } else {
            SHOAL_CHECK_GOTO(ffn_backward_cuda(m->blas, a->u, M, d, f, P + w->w_gu, P + w->w_d,
                                               a->gu, a->act, m->dh, m->dgu, m->dact, m->dtmp,
                                               0.0f, G + w->w_gu, G + w->w_d, st),
                             rc, out);
        }
        SHOAL_CHECK_GOTO(rmsnorm_backward_cuda(a->h_mid, P + w->ln2, a->rstd2, m->dtmp, M, d,
                                               m->dh, G + w->ln2, st),
                         rc, out);
        /* attention: dh is now ∂L/∂h_mid = ∂L/∂h_in through the residual */
        SHOAL_CHECK_GOTO((m->flags & MODEL_GPU_FUSED_ATTENTION ? attention_backward_fused_cuda
                                                                : attention_backward_cuda)(
                             m->blas, &ash, a->a, P + w->w_qkv, P + w->w_o, m->cos_t, m->sin_t,
                             a->qkv, a->p, a->o, m->dh, m->dobuf, m->dqkv, m->dp, m->dtmp,
                             G + w->w_qkv, G + w->w_o, st),
                         rc, out);
        SHOAL_CHECK_GOTO(rmsnorm_backward_cuda(a->h_in, P + w->ln1, a->rstd1, m->dtmp, M, d,
                                               m->dh, G + w->ln1, st),
                         rc, out);
    }
    rc = embedding_backward_cuda(m->tok, M, m->dh, d, V, G + m->plan.embed, st);
out:
    return rc;
}

extern "C" shoal_err_t model_gpu_micro_batch(model_gpu_t *m, const int32_t *tok,
                                             const int32_t *tgt, int B, float loss_scale)
{
    if (B < 1 || B > m->max_B)
        return shoal_fail(SHOAL_ERR_INVALID, "device model: micro-batch of %d, at most %d", B,
                          m->max_B);
    const size_t bytes = sizeof(int32_t) * (size_t)B * m->T;
    /* pageable sources: cudaMemcpyAsync returns once they are staged, so the caller may reuse
     * tok and tgt at once */
    shoal_err_t rc = s_cuda(cudaMemcpyAsync(m->tok, tok, bytes, cudaMemcpyHostToDevice, m->stream),
                            "tokens to device");
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaMemcpyAsync(m->tgt, tgt, bytes, cudaMemcpyHostToDevice, m->stream),
                    "targets to device");
    if (rc == SHOAL_OK)
        rc = s_forward(m, B, loss_scale);
    if (rc == SHOAL_OK)
        rc = s_backward(m, B);
    return rc;
}

extern "C" shoal_err_t model_gpu_step_sums(model_gpu_t *m, double *loss_sum, double *grad_sq)
{
    const int64_t np = m->lay->n_params;
    k_sq_partial<<<SQ_BLOCKS, SQ_THREADS, 0, m->stream>>>(m->grads, np, m->sq_part);
    shoal_err_t rc = kcuda_check("device model (grad squares)");
    if (rc == SHOAL_OK) {
        k_sum_doubles<<<1, SUM_THREADS, 0, m->stream>>>(m->sq_part, SQ_BLOCKS, m->sums + 1);
        rc = kcuda_check("device model (grad squares sum)");
    }
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaMemcpyAsync(m->host_sums, m->sums, 2 * sizeof(double),
                                    cudaMemcpyDeviceToHost, m->stream),
                    "step sums to host");
    if (rc == SHOAL_OK)
        rc = s_cuda(cudaStreamSynchronize(m->stream), "step");
    if (rc == SHOAL_OK) {
        *loss_sum = m->host_sums[0];
        *grad_sq = m->host_sums[1];
    }
    return rc;
}

extern "C" shoal_err_t model_gpu_apply(model_gpu_t *m, float gcoef, float lr, int64_t t,
                                       const adamw_hparams_t *hp, float gamma)
{
    shoal_err_t rc = adamw_update_segments_cuda(m->params, m->grads, m->adam_m, m->adam_v, m->segs,
                                                m->plan.n_segments, m->plan.n_trainable, lr,
                                                gcoef, t, hp, m->stream);
    const int N = m->plan.N;
    for (int i = 0; i < m->plan.n_moe && rc == SHOAL_OK; i++)
        rc = moe_bias_update_cuda(m->params + m->plan.bias_of_moe[i], m->counts + (size_t)i * N,
                                  N, gamma, m->stream);
    return rc;
}

extern "C" shoal_err_t model_gpu_sync(model_gpu_t *m)
{
    return s_cuda(cudaStreamSynchronize(m->stream), "sync");
}
