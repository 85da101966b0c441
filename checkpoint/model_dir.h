/* model_dir.h: Hugging Face style model directories (config.json + model.safetensors, or
 * model.safetensors.index.json + model-0000i-of-0000n.safetensors) to and from the flat float32
 * parameter array: tensor i of model_tensor_list() starts at the sum of the numels before it,
 * the balancing biases (is_bias) included. */
#ifndef SHOAL_MODEL_DIR_H
#define SHOAL_MODEL_DIR_H

#include <stdint.h>

#include "err.h"
#include "model_config.h"
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Total element count of the flat parameter array of `cfg`. */
int64_t model_dir_param_count(const model_config_t *cfg);

/* Reads DIR/config.json into *cfg, then DIR/model.safetensors or else the sharded layout, into
 * a malloc'd array (*params, caller frees) of *n_params floats. Every canonical tensor must be
 * present exactly once with its exact shape; F64/BF16/F16 are converted to float32. Errors name
 * the file and the tensor: missing tensor (SHOAL_ERR_NOTFOUND), wrong shape, unexpected extra
 * tensor, truncated or corrupt file (SHOAL_ERR_FORMAT); no weights file at all: NOTFOUND. */
shoal_err_t model_dir_load(const char *dir, model_config_t *cfg, float **params, int64_t *n_params);

/* Reads one safetensors file holding exactly the canonical tensors of `cfg` into params
 * (model_dir_param_count floats, caller-allocated). Same checks as model_dir_load. */
shoal_err_t model_dir_read_file(const char *path, const model_config_t *cfg, float *params);

/* Writes DIR/config.json and DIR/model.safetensors (F32, canonical order, metadata
 * format=pt), each written to a temp name, fsynced and renamed; creates DIR if missing. */
shoal_err_t model_dir_save(const char *dir, const model_config_t *cfg, const float *params);

/* Writes DIR/config.json (model_config_to_json, "torch_dtype" replaced when torch_dtype is not
 * NULL) to a temp name, fsynced and renamed. */
shoal_err_t model_dir_write_config(const char *dir, const model_config_t *cfg,
                                   const char *torch_dtype);

/* Reads the tensor `name` (NULL: t->name) of `f` into dst (model_tensor_numel(t) floats; NULL
 * only checks) after checking that its shape is exactly t's: SHOAL_ERR_NOTFOUND ("missing
 * tensor") or SHOAL_ERR_FORMAT naming the file and `name`. */
shoal_err_t model_dir_read_tensor(const st_file_t *f, const model_tensor_info_t *t,
                                  const char *name, float *dst);

/* The canonical tensors of cfg sorted by name, for model_dir_lookup: a malloc'd array of *n
 * (caller frees). */
shoal_err_t model_dir_sorted_tensors(const model_config_t *cfg, model_tensor_info_t **sorted,
                                     int *n);
/* The canonical tensor called `name` in a sorted list, or NULL when it is not one. */
const model_tensor_info_t *model_dir_lookup(const model_tensor_info_t *sorted, int n,
                                            const char *name);

/* The safetensors metadata of every model file shoal writes ({"format": "pt"}). */
extern const char *const model_dir_st_meta[];

/* The F32 safetensors entry of the model tensor t (its shape) named `name` with its data at
 * `data` (both borrowed): how model.safetensors and the optimizer file lay tensors out. */
st_tensor_t model_dir_st_tensor(const model_tensor_info_t *t, const char *name, const float *data);

#ifdef __cplusplus
}
#endif
#endif
