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

/* The F32 safetensors entry of the model tensor t (its shape) named `name` with its data at
 * `data` (both borrowed): how model.safetensors and the optimizer file lay tensors out. */
st_tensor_t model_dir_st_tensor(const model_tensor_info_t *t, const char *name, const float *data);

#ifdef __cplusplus
}
#endif
#endif
