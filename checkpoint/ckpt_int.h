/* ckpt_int.h: what the checkpoint sources share among themselves (not part of the interface):
 * the layout's file list, the optimizer's tensor names, the manifest writer, the config check. */
#ifndef SHOAL_CKPT_INT_H
#define SHOAL_CKPT_INT_H

#include <stdio.h>

#include "zsec.h"
#include "ckpt.h"

#define CKPT_MODEL_FILE "model.safetensors"
#define CKPT_OPTIMIZER_FILE "optimizer.safetensors"
#define CKPT_CONFIG_FILE "config.json"
#define CKPT_STATE_FILE "trainer_state.json"

/* The files of the layout besides the manifest, in the order the manifest lists them. */
extern const char *const ckpt_layout_files[];
enum { CKPT_LAYOUT_NFILES = 4 };

/* The optimizer file's name of moment `which` (0: exp_avg, 1: exp_avg_sq) of tensor `name`. */
static inline void ckpt_moment_name(const char *name, int which, char *out, size_t cap)
{
    snprintf(out, cap, "%s.%s", name, which ? "exp_avg_sq" : "exp_avg");
}

/* Removes the temp dir of a failed write (rc) keeping the failure's message. */
void ckpt_discard_tmp(const char *tmp, shoal_err_t rc);

/* Keeps `keep` committed step-* dirs under root (keep <= 0: all): `current` (never pruned;
 * -1: none) and the highest others; each removed one is renamed away first (ckpt.c). */
shoal_err_t ckpt_prune_steps(const char *root, int keep, int64_t current);

/* Renames the complete, fsynced dir `tmp` to `final` (replacing one that exists atomically
 * where the file system can) and fsyncs `root`, their parent. */
shoal_err_t ckpt_commit_dir(const char *root, const char *tmp, const char *final);

/* Writes dir/manifest.json listing the layout's files with their sizes and digests. */
shoal_err_t ckpt_manifest_write(const char *dir, int64_t step);

/* SHOAL_OK when the config.json at `path` equals `expect`, else SHOAL_ERR_INVALID naming the
 * file and the first differing key; errors of model_config_load. */
shoal_err_t ckpt_config_check(const char *path, const model_config_t *expect);

/* ckpt_serve.c: the keys ckpt_repl_set_curve gave (1), or 0 for plaintext. */
int ckpt_repl_curve_keys(zsec_keys_t *out);

#endif
