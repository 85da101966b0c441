/* model_gpu_plan.h: host-side plan of the device model (worker/model_gpu.h): where each layer's
 * tensors sit in the flat parameter array (element offsets, the same for params, grads and the
 * AdamW moments), and the AdamW segments of one fused optimizer launch. Pure host code, built
 * and tested without CUDA. */
#ifndef SHOAL_WORKER_MODEL_GPU_PLAN_H
#define SHOAL_WORKER_MODEL_GPU_PLAN_H

#include <stdint.h>

#include "err.h"
#include "model.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element offsets of one layer's tensors (-1 where the layer has no such tensor). */
typedef struct {
    int is_moe;
    int64_t ln1, w_qkv, w_o, ln2;
    int64_t w_gu, w_d;              /* dense FFN: [gate; up] [2f, d], down [d, f] */
    int64_t router, bias;           /* MoE */
    int64_t *expert_gu, *expert_d;  /* [N] each: expert e's [gate; up] and down */
    int64_t shared_gu, shared_d;    /* shared experts, or -1 */
} model_gpu_layer_t;

/* The plan of a whole model (pp = ep = 1). */
typedef struct {
    int n_layers, N;
    model_gpu_layer_t *layers;
    int64_t embed, norm_f, head;
    int n_moe;
    int64_t *bias_of_moe;           /* [n_moe]: offset of MoE layer i's balancing bias */
    int n_segments;
    adamw_segment_t *segments;      /* trainable ranges, adjacent tensors of one decay merged */
    int64_t n_trainable;            /* Σ segment lengths (n_params minus the biases) */
} model_gpu_plan_t;

/* Builds the plan of `lay`, which must hold the whole model (SHOAL_ERR_INVALID otherwise; the
 * device model has no pipeline or expert parallelism yet). SHOAL_ERR_STATE if a tensor the
 * canonical order promises is missing. */
shoal_err_t model_gpu_plan_init(model_gpu_plan_t *p, const model_layout_t *lay);
void model_gpu_plan_fini(model_gpu_plan_t *p);

#ifdef __cplusplus
}
#endif
#endif
