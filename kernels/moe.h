/* moe.h: the MoE layer of MODEL.md on M token vectors: router, permutation of the M·K
 * (token, expert) pairs into expert order, one batched SwiGLU (three GEMMs) per expert over its
 * contiguous rows, gate-weighted combine back to token order, and the shared experts.
 * No capacity limit: no token is dropped. */
#ifndef SHOAL_KERNELS_MOE_H
#define SHOAL_KERNELS_MOE_H
#include "kernels_common.h"
#include "kgemm.h"
#ifdef SHOAL_HAVE_CUDA
#include <cublas_v2.h>
#endif
#include "router.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef struct {
    int d, fe, fs;       /* width, expert hidden width, shared hidden width ns·fe (0: none) */
    router_config_t router;
    kgemm_prec_t prec;   /* the CPU GEMMs' precision (kgemm.h; 0: fp32); the router's stay fp32 */
} moe_config_t;

/* Weights (or, with the same shape, their gradients). Expert e's gate and up rows are adjacent
 * (expert_gu[e] is [2fe, d]); expert_d[e] is [d, fe]. */
typedef struct {
    float *router;       /* [N, d] */
    float *bias;         /* [N] correction bias (unused in gradients) */
    float **expert_gu;   /* N pointers */
    float **expert_d;    /* N pointers */
    float *shared_gu;    /* [2fs, d] or NULL */
    float *shared_d;     /* [d, fs] or NULL */
} moe_weights_t;

/* What the forward saves for the backward, for up to max_M tokens. */
typedef struct {
    int M;
    float *s;            /* [M, N] affinities */
    int32_t *idx;        /* [M, K] selected experts */
    float *gates;        /* [M, K] */
    int32_t *pair_of_row;/* [M·K] pair p = m·K + k at each expert-ordered row */
    int64_t *offsets;    /* [N + 1] first row of each expert */
    float *xs;           /* [M·K, d] gathered inputs */
    float *gu;           /* [M·K, 2fe] */
    float *a;            /* [M·K, fe] */
    float *ys;           /* [M·K, d] expert outputs before gating */
    float *sh_gu, *sh_a; /* shared experts: [M, 2fs], [M, fs] */
    int32_t *row_of_pair;/* [M·K] the inverse of pair_of_row: pair p's row */
} moe_saved_t;

/* Scratch for the backward (one per model, shared by layers). */
typedef struct {
    float *dys, *dgu, *da, *dxs; /* [M·K, d], [M·K, 2fe], [M·K, fe], [M·K, d] */
    float *dgates, *dlogits;     /* [M, K], [M, N] */
    float *sh_dgu, *sh_da;       /* [M, 2fs], [M, fs] */
} moe_scratch_t;

/* Allocate/free (NULL on OOM; destroy is idempotent and nulls nothing it does not own). */
int moe_saved_alloc(moe_saved_t *sv, const moe_config_t *c, int max_M);
void moe_saved_free(moe_saved_t *sv);
int moe_scratch_alloc(moe_scratch_t *sc, const moe_config_t *c, int max_M);
void moe_scratch_free(moe_scratch_t *sc);

/* y [M, d] = MoE(u). counts_acc [N] += tokens that selected each expert (for the bias update). */
void moe_forward(const moe_config_t *c, const moe_weights_t *w, const float *u, int M,
                 moe_saved_t *sv, float *y, int64_t *counts_acc);

/* Backward from dy [M, d]: du [M, d] is overwritten with ∂L/∂u; gradients accumulate into g
 * (g->bias is ignored). */
void moe_backward(const moe_config_t *c, const moe_weights_t *w, const float *u,
                  const moe_saved_t *sv, const float *dy, moe_scratch_t *sc, float *du,
                  const moe_weights_t *g);
/* The forward and backward in pieces, for expert parallelism (the experts of a layer may live
 * on other ranks). moe_forward = moe_route, moe_experts_forward over all N experts,
 * moe_combine; moe_backward = moe_backward_gates, moe_experts_backward, moe_backward_finish;
 * the pieces do the same arithmetic in the same order, so the results are bitwise the same. */

/* Router, top-K, gates, and the gather of the M·K (token, expert) rows into expert order: fills
 * sv (s, idx, gates, pair_of_row, offsets, xs). counts_acc [N] += tokens per expert. */
void moe_route(const moe_config_t *c, const moe_weights_t *w, const float *u, int M,
               moe_saved_t *sv, int64_t *counts_acc);
/* SwiGLU of experts e0 .. e0+ne-1 over rows sorted by expert: expert e0+k owns rows
 * [off[k], off[k+1]) of xs [rows, d]; writes gu [rows, 2fe], a [rows, fe], ys [rows, d]. Only
 * w->expert_gu/expert_d[e0 .. e0+ne-1] are read. */
void moe_experts_forward(const moe_config_t *c, const moe_weights_t *w, int e0, int ne,
                         const int64_t *off, const float *xs, float *gu, float *a, float *ys);
/* y [M, d] = shared experts(u) + Σ gate · sv->ys, in expert-row order. */
void moe_combine(const moe_config_t *c, const moe_weights_t *w, const float *u,
                 moe_saved_t *sv, float *y);
/* du = shared experts' input gradient (or 0); sc->dgates and sc->dys (gated dy per row). */
void moe_backward_gates(const moe_config_t *c, const moe_weights_t *w, const float *u,
                        const moe_saved_t *sv, const float *dy, moe_scratch_t *sc, float *du,
                        const moe_weights_t *g);
/* Backward of experts e0 .. e0+ne-1 over their rows (layout as moe_experts_forward): dxs is
 * written, expert gradients g->expert_*[e0+k] accumulate. dgu, da: scratch for the rows of the
 * largest expert ([rows, 2fe], [rows, fe]). */
void moe_experts_backward(const moe_config_t *c, const moe_weights_t *w, int e0, int ne,
                          const int64_t *off, const float *xs, const float *gu, const float *a,
                          const float *dys, float *dgu, float *da, float *dxs,
                          const moe_weights_t *g);
/* du += the routed rows' sc->dxs; router gradients from sc->dgates (g->router accumulates). */
void moe_backward_finish(const moe_config_t *c, const moe_weights_t *w, const float *u,
                         const moe_saved_t *sv, moe_scratch_t *sc, float *du,
                         const moe_weights_t *g);

#ifdef SHOAL_HAVE_CUDA
/* CUDA twins. Weights and gradients are moe_weights_t whose float pointers are device
 * pointers (expert_gu/expert_d stay host arrays of N device pointers). `h` is the caller's cuBLAS
 * handle (bound to `stream`, host pointer mode; keep its default fp32 math). The selection
 * (idx), the permutation (pair_of_row, offsets) and counts_acc are computed exactly as on the
 * CPU, so they are bitwise the CPU's whenever the affinities select the same experts (the
 * device sigmoid and GEMM round differently, so a near tie may select differently); floats
 * agree within rounding and are run-to-run bitwise (no atomics). */

/* The forward's saved buffers on the device, plus what the GPU path adds. */
typedef struct {
    moe_saved_t dev;       /* same fields and shapes as the CPU's, every pointer on the device */
    int32_t *row_of_pair;  /* [M·K] device: expert-ordered row of pair p (inverse permutation) */
    int64_t *offsets_host; /* [N + 1] pinned host copy of dev.offsets: the per-expert GEMM sizes,
                            * read back once by the forward and reused by the backward */
    void **gemm_ptrs;      /* [3N] device: A, B, C pointer arrays of the grouped expert GEMMs */
} moe_saved_cuda_t;

/* Device allocations for up to max_M tokens; SHOAL_ERR_NOMEM (nothing left allocated) on
 * failure. The frees are idempotent (zeroed structs are fine) and zero the struct. */
shoal_err_t moe_saved_alloc_cuda(moe_saved_cuda_t *sv, const moe_config_t *c, int max_M);
void moe_saved_free_cuda(moe_saved_cuda_t *sv);
/* Same fields as the CPU scratch, on the device (dgu/da hold every expert's rows at once). */
shoal_err_t moe_scratch_alloc_cuda(moe_scratch_t *sc, const moe_config_t *c, int max_M);
void moe_scratch_free_cuda(moe_scratch_t *sc);

/* The experts' GEMMs go through cublasGemmGroupedBatchedEx (one call per GEMM kind for all
 * experts, SwiGLU over every row at once) in the handle's precision (kernels_matmul_bf16_cuda);
 * where cuBLAS refuses the grouped call for that precision, one GEMM per expert as before.
 * As moe_forward; counts_acc is a device int64 [N]. Synchronises `stream` once (offsets). */
shoal_err_t moe_forward_cuda(cublasHandle_t h, const moe_config_t *c, const moe_weights_t *w,
                             const float *u, int M, moe_saved_cuda_t *sv, float *y,
                             int64_t *counts_acc, cudaStream_t stream);
/* As moe_backward (no synchronisation: the forward's host offsets are reused). */
shoal_err_t moe_backward_cuda(cublasHandle_t h, const moe_config_t *c, const moe_weights_t *w,
                              const float *u, const moe_saved_cuda_t *sv, const float *dy,
                              moe_scratch_t *sc, float *du, const moe_weights_t *g,
                              cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
