/* model.h: the whole shoal-moe model of MODEL.md on the CPU: parameter layout (one flat fp32
 * array in canonical tensor order), random initialisation, and the fused forward + backward of
 * one micro-batch with every activation buffer allocated once, up front. */
#ifndef SHOAL_WORKER_MODEL_H
#define SHOAL_WORKER_MODEL_H

#include <stdint.h>

#include "err.h"
#include "model_config.h"
#include "moe.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The part of the model one cell holds: a pipeline stage's contiguous layers and, of every MoE
 * layer among them, the routed experts of one expert-parallel rank. The embedding belongs to the
 * first stage, the final norm and the head to the last. */
typedef struct {
    int first_layer, n_layers;
    int has_embedding, has_head;
    int expert_first, expert_count; /* routed experts [first, first + count) */
} model_part_t;

/* The whole model as one part (what a single process or a data-parallel rank holds). */
void model_part_whole(const model_config_t *cfg, model_part_t *part);

/* Where each tensor of a part lives in its flat parameter array. `tensors` lists the held
 * tensors in canonical order (model_tensor_list). When the part holds every expert the array is
 * the canonical order itself (the layout of model_dir.h for the whole model); otherwise the
 * tensors every ep rank of the stage holds come first, [0, n_shared_params), and this rank's
 * experts after them, so that each group's gradients are one contiguous range to reduce. */
typedef struct {
    model_config_t cfg;
    model_part_t part;
    int n_tensors;
    model_tensor_info_t *tensors; /* held tensors, canonical order */
    int64_t *offsets;             /* [n_tensors + 1]: element offset of each; [n_tensors] = n_params */
    int64_t n_params;             /* total elements, biases included */
    int64_t n_shared_params;      /* elements of the non-expert tensors (== n_params when the
                                   * part holds every expert) */
    int n_moe_layers;             /* MoE layers in the part */
} model_layout_t;

shoal_err_t model_layout_init(model_layout_t *lay, const model_config_t *cfg);
/* SHOAL_ERR_INVALID (naming the field) for a part outside the model. */
shoal_err_t model_layout_init_part(model_layout_t *lay, const model_config_t *cfg,
                                   const model_part_t *part);
void model_layout_fini(model_layout_t *lay);
/* Index of a tensor by name, -1 if absent. */
int model_layout_find(const model_layout_t *lay, const char *name);

/* Draws parameters: 2-D tensors N(0, 0.02²), norm weights 1, balancing biases 0; a pure
 * function of (config, seed): a part gets exactly the values the whole model would hold. */
shoal_err_t model_init_params(const model_layout_t *lay, uint64_t seed, float *params);

typedef struct model model_t;

/* Allocates every buffer for micro-batches of up to max_B sequences of T positions, with
 * `slots` micro-batches in flight (forward done, backward not yet: a pipeline schedule keeps up
 * to pp - stage of them). NULL with a shoal_fail() message on failure. The layout must outlive
 * the model. */
model_t *model_new(const model_layout_t *lay, int max_B, int T);
model_t *model_new_slots(const model_layout_t *lay, int max_B, int T, int slots);
void model_destroy(model_t **m);

/* Expert parallelism: the routed experts of a MoE layer run where they live. `forward` gets the
 * layer's rows gathered in expert order (sv->xs, sv->offsets over all N experts) and must fill
 * sv->ys; `backward` gets their gated output gradients dys and must fill dxs, accumulating the
 * gradients of the experts this part holds into g. Without an exchange every expert runs here. */
typedef struct {
    void *ctx;
    shoal_err_t (*forward)(void *ctx, int layer, int slot, const moe_config_t *c,
                           const moe_weights_t *w, moe_saved_t *sv);
    shoal_err_t (*backward)(void *ctx, int layer, int slot, const moe_config_t *c,
                            const moe_weights_t *w, const moe_saved_t *sv, const float *dys,
                            float *dxs, const moe_weights_t *g);
} model_expert_exchange_t;

/* Sets (or with NULL clears) the exchange; copied. */
void model_set_expert_exchange(model_t *m, const model_expert_exchange_t *x);

/* The precision of the model's matrix products (kgemm.h); KGEMM_FP32 (the default) until set.
 * The caller checks kgemm_check(prec) first. The MoE routers stay fp32 either way. */
void model_set_precision(model_t *m, kgemm_prec_t prec);

/* The MoE configuration the model's layers use (its prec field is the model's precision). */
const moe_config_t *model_moe_config(const model_t *m);

/* Forward of one micro-batch of B sequences through the part, kept in `slot`. Input: tok
 * [B, T] when the part holds the embedding, else h_in [B·T, d]. When the part holds the head,
 * the loss of tgt [B, T] is computed (*loss_sum = Σ CE over the B·T positions, its gradient
 * scaled by loss_scale kept for the backward, which must come before the part's next forward);
 * otherwise the output activations go to h_out [B·T, d]. counts [n_moe_layers · N] accumulate
 * the tokens that selected each expert. Errors come from the expert exchange only. */
shoal_err_t model_part_forward(model_t *m, int slot, const float *params, const int32_t *tok,
                               const float *h_in, const int32_t *tgt, int B, float loss_scale,
                               float *h_out, double *loss_sum, int64_t *counts);

/* Backward of the micro-batch in `slot`, from dh_out [B·T, d] (NULL when the part holds the
 * head). Gradients ACCUMULATE into grads (layout of the part; bias slots untouched). dh_in
 * [B·T, d] receives ∂L/∂h_in when the part has no embedding (may be NULL otherwise). */
shoal_err_t model_part_backward(model_t *m, int slot, const float *params, const float *dh_out,
                                float *grads, float *dh_in);

/* The whole model on one micro-batch: forward, loss, backward (slot 0). tok, tgt: [B, T] token
 * ids in [0, V) (checked by the caller). Gradients of loss_scale · Σ_positions CE ACCUMULATE
 * into grads; counts [n_moe_layers · N] accumulate. Returns the unscaled loss sum. */
double model_forward_backward(model_t *m, const float *params, const int32_t *tok,
                              const int32_t *tgt, int B, float loss_scale, float *grads,
                              int64_t *counts);

#ifdef __cplusplus
}
#endif
#endif
