/* model_config.h: the shoal-moe v1 configuration (MODEL.md), its config.json form, its checks,
 * and the canonical list of tensors (names and shapes, in MODEL.md order). */
#ifndef SHOAL_MODEL_CONFIG_H
#define SHOAL_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Routed experts per layer the kernels support (DeepSeek-V3 has 256). */
#define MODEL_MAX_EXPERTS 1024

typedef struct {
    int vocab_size;              /* V */
    int hidden_size;             /* d */
    int num_hidden_layers;       /* L */
    int num_attention_heads;     /* H */
    int intermediate_size;       /* f */
    int moe_intermediate_size;   /* fe */
    int n_routed_experts;        /* N */
    int n_shared_experts;        /* ns */
    int num_experts_per_tok;     /* K */
    int n_group;
    int topk_group;
    int first_k_dense_replace;
    double routed_scaling_factor;
    double rms_norm_eps;
    double rope_theta;
    int max_position_embeddings; /* longest T */
    double bias_update_speed;    /* gamma */
} model_config_t;

/* Fills `cfg` with the tiny preset of MODEL.md. */
void model_config_tiny(model_config_t *cfg);

/* Looks up a preset by name ("tiny", "small"); SHOAL_ERR_NOTFOUND if unknown. */
shoal_err_t model_config_preset(const char *name, model_config_t *cfg);

/* True when every key of `a` equals that of `b`. */
int model_config_equal(const model_config_t *a, const model_config_t *b);

/* Checks every v1 constraint; on failure the message names the offending key. */
shoal_err_t model_config_validate(const model_config_t *cfg);

/* Sets one key by its config.json name from a number. SHOAL_ERR_NOTFOUND for an unknown key,
 * SHOAL_ERR_INVALID for a value that is not an integer where one is required. */
shoal_err_t model_config_set(model_config_t *cfg, const char *key, double value);

/* Reads DIR/config.json (missing keys default to the tiny preset; unknown keys are ignored as
 * in Hugging Face configs; fixed v1 keys such as scoring_func are checked). */
shoal_err_t model_config_load(const char *path, model_config_t *cfg);

/* The config.json text (HF DeepSeek-V3 keys, pretty-printed). Caller frees. NULL on OOM. */
char *model_config_to_json(const model_config_t *cfg);

/* Writes `path` (config.json) with model_config_to_json(), no fsync. */
shoal_err_t model_config_save(const model_config_t *cfg, const char *path);

static inline int model_config_is_moe_layer(const model_config_t *cfg, int layer)
{
    return layer >= cfg->first_k_dense_replace;
}

/* One tensor of the model: canonical name, shape (1 or 2 dims). */
typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    int is_bias; /* mlp.gate.e_score_correction_bias: not trained by gradient */
} model_tensor_info_t;

/* The canonical tensor list in MODEL.md order. Writes up to `cap` entries and returns the
 * total count (call with cap 0 to size the array). */
int model_tensor_list(const model_config_t *cfg, model_tensor_info_t *out, int cap);

static inline int64_t model_tensor_numel(const model_tensor_info_t *t)
{
    return t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
}

#ifdef __cplusplus
}
#endif
#endif
