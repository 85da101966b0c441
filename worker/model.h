/* model.h: the whole shoal-moe model of MODEL.md on the CPU: parameter layout (one flat fp32
 * array in canonical tensor order), random initialisation, and the fused forward + backward of
 * one micro-batch with every activation buffer allocated once, up front. */
#ifndef SHOAL_WORKER_MODEL_H
#define SHOAL_WORKER_MODEL_H

#include <stdint.h>

#include "err.h"
#include "model_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where each canonical tensor lives in the flat parameter array. */
typedef struct {
    model_config_t cfg;
    int n_tensors;
    model_tensor_info_t *tensors; /* canonical order (model_tensor_list) */
    int64_t *offsets;             /* [n_tensors + 1] element offsets */
    int64_t n_params;             /* total elements, biases included */
    int n_moe_layers;
} model_layout_t;

shoal_err_t model_layout_init(model_layout_t *lay, const model_config_t *cfg);
void model_layout_fini(model_layout_t *lay);
/* Index of a tensor by name, -1 if absent. */
int model_layout_find(const model_layout_t *lay, const char *name);

/* Draws parameters: 2-D tensors N(0, 0.02²), norm weights 1, balancing biases 0; a pure
 * function of (config, seed). */
void model_init_params(const model_layout_t *lay, uint64_t seed, float *params);

typedef struct model model_t;

/* Allocates every buffer for micro-batches of up to max_B sequences of T positions. NULL with
 * a shoal_fail() message on failure. The layout must outlive the model. */
model_t *model_new(const model_layout_t *lay, int max_B, int T);
void model_destroy(model_t **m);

/* One micro-batch: forward, loss, backward. tok, tgt: [B, T] token ids in [0, V) (checked by the
 * caller). Gradients of loss_scale · Σ_positions CE ACCUMULATE into grads (same layout as
 * params; bias slots untouched); counts [n_moe_layers · N] accumulate the tokens that selected
 * each expert. Returns the unscaled loss sum Σ CE over the B·T positions. */
double model_forward_backward(model_t *m, const float *params, const int32_t *tok,
                              const int32_t *tgt, int B, float loss_scale, float *grads,
                              int64_t *counts);

#ifdef __cplusplus
}
#endif
#endif
