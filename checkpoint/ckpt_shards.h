/* ckpt_shards.h: a set of checkpoint shard dirs read together (ckpt_load_tensors, ckpt_export):
 * each verified against its manifest and its config.json checked when opened, then each tensor
 * found in the first dir that holds it and read from the mapped files, no more than asked. */
#ifndef SHOAL_CKPT_SHARDS_H
#define SHOAL_CKPT_SHARDS_H

#include "ckpt.h"
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ckpt_shards ckpt_shards_t;

/* Opens the checkpoint dirs dirs[0..n_dirs) (n_dirs >= 1, paths copied): each verified with
 * ckpt_manifest_verify, its config.json equal to `expect` (NULL: to dirs[0]'s) or
 * SHOAL_ERR_INVALID naming the file and the first differing key, its model.safetensors holding
 * only canonical tensors (SHOAL_ERR_FORMAT naming the file and the tensor). *out is owned by
 * the caller (ckpt_shards_close); NULL on error. */
shoal_err_t ckpt_shards_open(const char *const *dirs, int n_dirs, const model_config_t *expect,
                             ckpt_shards_t **out);

/* Closes the files and frees; idempotent, NULLs *s. */
void ckpt_shards_close(ckpt_shards_t **s);

/* The model config all the dirs share. */
const model_config_t *ckpt_shards_config(const ckpt_shards_t *s);

/* Index of the first dir whose model.safetensors holds `name`, or -1 when none does. */
int ckpt_shards_holder(const ckpt_shards_t *s, const char *name);

/* The dir (as given) and the opened model.safetensors of dir i (valid until close). */
const char *ckpt_shards_dir(const ckpt_shards_t *s, int i);
const st_file_t *ckpt_shards_model(const ckpt_shards_t *s, int i);

/* Reads canonical tensor t from dir i into dst (NULL: only checks its shape), as
 * model_dir_read_tensor. */
shoal_err_t ckpt_shards_read_param(const ckpt_shards_t *s, int i, const model_tensor_info_t *t,
                                   float *dst);

/* Reads moment `which` (0: exp_avg, 1: exp_avg_sq) of the non-bias tensor t from dir i's
 * optimizer.safetensors (opened on first use, every tensor of it checked to be a moment of a
 * non-bias canonical tensor: SHOAL_ERR_FORMAT naming it otherwise) into dst. */
shoal_err_t ckpt_shards_read_moment(ckpt_shards_t *s, int i, const model_tensor_info_t *t,
                                    int which, float *dst);

#ifdef __cplusplus
}
#endif
#endif
