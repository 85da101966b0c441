/* ckpt.h: atomic, verified training checkpoints on a local file system, and an asynchronous
 * writer that snapshots the buffers and writes off the training thread.
 *
 * Layout: <root>/step-<8-digit step>/ holding config.json + model.safetensors (a loadable model
 * directory), optimizer.safetensors (NAME.exp_avg, NAME.exp_avg_sq for every non-bias tensor),
 * trainer_state.json (the trainer's opaque JSON) and manifest.json (name, size and SHA-256 of
 * each other file; written last). It is built in <root>/.tmp-step-<8 digits>-<pid>/ and renamed
 * into place once every file and the directory are fsynced, so a crash leaves the whole
 * checkpoint or none.
 * A checkpoint shard has the same layout holding a subset of the tensors (one cell's: its
 * stage's layers, its experts); the whole-model checkpoint is the shard holding all of them. */
#ifndef SHOAL_CKPT_H
#define SHOAL_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "model_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- layout: the one home of every fact about a checkpoint's names and manifest ---------- */

#define CKPT_MANIFEST_NAME "manifest.json"
#define CKPT_MANIFEST_MAX_FILES 16 /* entries of one manifest (ckpt_save writes 4) */
#define CKPT_FILE_NAME_MAX 256     /* a file name in a manifest, with its NUL */

/* The directory name of a step's checkpoint, "step-<8+ digit step>", into out[cap].
 * SHOAL_ERR_INVALID when step < 0 or cap is too small. */
shoal_err_t ckpt_step_dir_name(int64_t step, char *out, size_t cap);

/* The directory of a step's checkpoint under `root`: "<root>/step-<8+ digit step>".
 * SHOAL_ERR_INVALID when step < 0 or the path does not fit in cap. */
shoal_err_t ckpt_step_dir(const char *root, int64_t step, char *out, size_t cap);

/* Whether `name` is a step directory name ("step-" and 8 to 18 decimal digits, nothing else);
 * its step into *step when it is. */
int ckpt_step_dir_parse(const char *name, int64_t *step);

/* One file a manifest lists. */
typedef struct {
    char name[CKPT_FILE_NAME_MAX]; /* a plain file name in the checkpoint dir (no '/') */
    uint64_t size;
    char sha256[65]; /* 64 hex digits as listed (ckpt_save writes lower case) */
} ckpt_file_t;

typedef struct {
    int64_t step; /* the manifest's "step" (-1 when it has none) */
    int n_files;
    ckpt_file_t files[CKPT_MANIFEST_MAX_FILES];
} ckpt_manifest_t;

/* Reads and checks dir/manifest.json without reading the files it lists: JSON without duplicate
 * keys, format "shoal-checkpoint-v1", at most CKPT_MANIFEST_MAX_FILES entries each with a plain
 * name, a size >= 0 and a 64-digit hex SHA-256, and every file of the layout listed. Errors:
 * SHOAL_ERR_NOTFOUND when dir does not exist, SHOAL_ERR_FORMAT (naming the manifest) for a
 * missing or malformed manifest; *m is unspecified then. ckpt_load verifies the files against
 * it. */
shoal_err_t ckpt_manifest_read(const char *dir, ckpt_manifest_t *m);

/* The checks of ckpt_manifest_read on `len` bytes of manifest text (a manifest fetched from a
 * peer, the fuzz target); `origin` names it in errors. */
shoal_err_t ckpt_manifest_parse(const char *text, size_t len, const char *origin,
                                ckpt_manifest_t *m);

/* Checks every file dir/manifest.json lists (ckpt_manifest_read first): present, its size,
 * then its SHA-256. A truncated, altered or missing file is SHOAL_ERR_FORMAT naming it; errors of
 * ckpt_manifest_read otherwise. Reads the files once, streaming. */
shoal_err_t ckpt_manifest_verify(const char *dir);

/* ---- checkpoint shards: a subset of the canonical tensors ------------------------------- */

/* One canonical tensor of a shard and its buffers (model_tensor_numel(info) floats each). */
typedef struct {
    const model_tensor_info_t *info; /* canonical name, shape, is_bias (borrowed) */
    float *param, *m, *v;            /* m and v unused (may be NULL) for is_bias */
} ckpt_tensor_t;

/* Fills out[i] (i < n) for the canonical list info[0..n) (all of model_tensor_list, in order)
 * pointing into the flat arrays params, m, v (model_dir.h layout; any may be NULL: the
 * pointers are then NULL). Lets the whole model be saved and loaded as the shard holding
 * everything. */
void ckpt_tensors_flat(const model_tensor_info_t *info, int n, float *params, float *m, float *v,
                       ckpt_tensor_t *out);

/* Writes and commits the checkpoint shard of `step` under `root` holding the tensors t[0..n),
 * laid out as ckpt_save (model.safetensors: the tensors in the order given, F32;
 * optimizer.safetensors: NAME.exp_avg, NAME.exp_avg_sq of the non-bias ones; config.json the
 * whole model's), with the same atomicity, stale-dir cleanup and pruning. Every t[i].info must
 * be a canonical tensor of cfg (name and shape), each at most once: SHOAL_ERR_INVALID naming it
 * otherwise. Given all tensors in canonical order it writes exactly what ckpt_save writes. */
shoal_err_t ckpt_save_tensors(const char *root, int64_t step, const model_config_t *cfg,
                              const ckpt_tensor_t *t, int n, const char *state_json, int keep);

/* Fills every tensor of t[0..n) (param, and m and v where not NULL and not is_bias) from
 * whichever of the checkpoint dirs dirs[0..n_dirs) holds it, the first one in that order (a
 * tensor replicated across shards is read once). Each dir is first verified against its
 * manifest (ckpt_manifest_verify) and its config.json must equal `expect` (SHOAL_ERR_INVALID
 * naming the file and the first differing key); a model file with a tensor that is not
 * canonical is SHOAL_ERR_FORMAT. Only the tensors asked for are read (from the mapped files).
 * A tensor no dir holds: SHOAL_ERR_NOTFOUND naming it (the first such); a moment missing from
 * the holder's optimizer file: SHOAL_ERR_NOTFOUND naming that file and the moment; a wrong
 * shape: SHOAL_ERR_FORMAT naming file and tensor. state_json (may be NULL) receives a malloc'd
 * copy of dirs[0]'s trainer_state.json (caller frees; NULL on error). */
shoal_err_t ckpt_load_tensors(const char *const *dirs, int n_dirs, const model_config_t *expect,
                              ckpt_tensor_t *t, int n, char **state_json);

/* ---- whole-model checkpoints (the shard holding every tensor) --------------------------- */

/* Writes and commits the checkpoint of `step` under `root` (created if missing). params,
 * adam_m and adam_v all use the flat layout of model_dir.h (model_dir_param_count floats); the
 * bias slots of m and v are ignored. trainer_state_json must parse as JSON (NULL writes "{}").
 * A committed checkpoint of the same step is replaced atomically. Stale .tmp-* dirs of dead
 * processes are removed first; after the commit, if keep > 0, only `keep` step-* dirs remain:
 * this one and the highest other steps (the one just written is never pruned). */
shoal_err_t ckpt_save(const char *root, int64_t step, const model_config_t *cfg,
                      const float *params, const float *adam_m, const float *adam_v,
                      const char *trainer_state_json, int keep);

/* Newest committed step under `root`: its step and, when path != NULL, its directory into
 * path[cap]. SHOAL_ERR_NOTFOUND when there is none (a missing root included). Does not verify
 * digests (ckpt_load does). */
shoal_err_t ckpt_latest(const char *root, int64_t *step, char *path, size_t cap);

/* The committed steps under `root`, ascending: writes up to `cap` into steps (may be NULL when
 * cap is 0) and sets *count to the total. A missing root gives 0. Lets a caller fall back to an
 * older checkpoint when the newest fails to load. */
shoal_err_t ckpt_list(const char *root, int64_t *steps, int cap, int *count);

/* Loads a checkpoint directory. First checks every file against manifest.json (size, then
 * SHA-256): a truncated or altered file is SHOAL_ERR_FORMAT naming it. Then config.json must
 * equal `expect` (SHOAL_ERR_INVALID naming the first differing key), and every tensor must be
 * present with its shape (SHOAL_ERR_FORMAT / NOTFOUND naming file and tensor).
 * params, adam_m, adam_v: caller arrays of model_dir_param_count(expect) floats, any may be
 * NULL to skip it (bias slots of m and v are set to 0). *trainer_state_json (if not NULL)
 * receives a malloc'd NUL-terminated copy of trainer_state.json; caller frees. */
shoal_err_t ckpt_load(const char *dir, const model_config_t *expect, float *params, float *adam_m,
                      float *adam_v, char **trainer_state_json);

/* Asynchronous writer: one write in flight at a time, on its own pthread (ckpt_writer.c). */
typedef struct ckpt_writer ckpt_writer_t;

/* NULL on out of memory. */
ckpt_writer_t *ckpt_writer_new(void);

/* Waits for a write still in flight; if that write failed, returns its error (message
 * restored on this thread) and starts nothing: each failure is reported exactly once, by this
 * call or by ckpt_writer_wait. Otherwise copies params, m, v (n floats each, n must equal
 * model_dir_param_count(cfg)), cfg, root and state_json into memory the writer owns, starts
 * ckpt_save(root, step, ..., keep) on the writer thread and returns at once: the caller may
 * overwrite its buffers immediately. */
shoal_err_t ckpt_writer_submit(ckpt_writer_t *w, const char *root, int64_t step,
                               const model_config_t *cfg, const float *params, const float *m,
                               const float *v, int64_t n, const char *state_json, int keep);

/* ckpt_writer_submit for a shard: as ckpt_save_tensors, after copying the infos and the data
 * of t[0..n) (param, and m, v of the non-bias tensors) into memory the writer owns. */
shoal_err_t ckpt_writer_submit_tensors(ckpt_writer_t *w, const char *root, int64_t step,
                                       const model_config_t *cfg, const ckpt_tensor_t *t, int n,
                                       const char *state_json, int keep);

/* Waits for the write in flight (if any) and returns the status of the last write not yet
 * reported, with its message available through shoal_errmsg() on this thread; SHOAL_OK if
 * there is none. */
shoal_err_t ckpt_writer_wait(ckpt_writer_t *w);

/* Step of the last write that completed successfully, or -1. */
int64_t ckpt_writer_last_step(const ckpt_writer_t *w);

/* Waits for the write in flight, frees everything, NULLs *w; idempotent. A failure not yet
 * reported is logged. */
void ckpt_writer_destroy(ckpt_writer_t **w);

#ifdef __cplusplus
}
#endif
#endif
