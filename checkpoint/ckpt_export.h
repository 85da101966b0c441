/* ckpt_export.h: a run's checkpoint shards assembled into one Hugging Face style model
 * directory (config.json + model.safetensors, or model-0000i-of-0000n.safetensors listed by
 * model.safetensors.index.json), as `shoalctl export` writes it and model_dir_load reads it. */
#ifndef SHOAL_CKPT_EXPORT_H
#define SHOAL_CKPT_EXPORT_H

#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Hugging Face's default largest file of a sharded model directory. */
#define CKPT_EXPORT_DEFAULT_SHARD_BYTES 5000000000ull

typedef enum {
    CKPT_EXPORT_F32 = 0, /* bit for bit the trained values */
    CKPT_EXPORT_BF16,    /* round to nearest even; the balancing biases stay F32 (as the
                            reference stores them: their updates are finer than bf16) */
} ckpt_export_dtype_t;

typedef struct {
    ckpt_export_dtype_t dtype;
    uint64_t max_shard_bytes; /* 0: CKPT_EXPORT_DEFAULT_SHARD_BYTES */
} ckpt_export_opts_t;

/* Writes the model directory `out` from the checkpoint shard dirs dirs[0..n_dirs) of one step
 * (ckpt_shards_open: each verified against its manifest, the same config.json in all). Each
 * canonical tensor is taken from the first dir that holds it (replicas hold copies); one that
 * no dir holds is SHOAL_ERR_NOTFOUND naming it. Tensors go in canonical order (model_tensor_list
 * names), in one model.safetensors when their total fits in max_shard_bytes, else in files of at
 * most max_shard_bytes each (a larger tensor alone in its file) plus
 * model.safetensors.index.json {"metadata": {"total_size"}, "weight_map": {name: file}}.
 * config.json says "torch_dtype" of the weights. The directory is built as "<out>.tmp-<pid>",
 * fsynced and renamed to `out`: `out` appears complete or not at all. `out` must not exist or
 * be an empty directory (SHOAL_ERR_STATE otherwise). opts NULL: the defaults (F32). */
shoal_err_t ckpt_export(const char *const *dirs, int n_dirs, const char *out,
                        const ckpt_export_opts_t *opts);

#ifdef __cplusplus
}
#endif
#endif
