/* trainer.h: the training loop of MODEL.md's training step, usable by one process
 * (`shoal-worker train`) or by one data-parallel rank of many (the worker daemon): a step is
 * compute (this rank's micro-batches) → all-reduce of one flat buffer → apply (clip, AdamW,
 * bias update), and the mathematics never depends on how many ranks share the work. */
#ifndef SHOAL_WORKER_TRAINER_H
#define SHOAL_WORKER_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "runspec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct trainer trainer_t;

typedef struct {
    int64_t step;        /* the step just applied (0-based) */
    int64_t steps;       /* total steps of the run */
    double loss;         /* mean loss of the step's global batch */
    double lr;
    double grad_norm;    /* before clipping */
    double step_seconds; /* wall time of compute + apply on this process */
    double tokens;       /* tokens in the global batch */
} trainer_step_info_t;

/* Builds the model, the optimizer state and the data reader for `spec`. Checkpoints go to
 * `ckpt_root` (the caller resolves checkpoint.dir). Parameters are not set yet: call
 * trainer_resume(). On error returns NULL-equivalent: *out stays NULL, message in errmsg. */
shoal_err_t trainer_new(const runspec_t *spec, const char *ckpt_root, trainer_t **out);
void trainer_destroy(trainer_t **t);

/* Loads the newest complete checkpoint of ckpt_root if there is one (*resumed_step = its step),
 * else initialises the parameters from `init_model_dir` (a model directory) when given, else
 * randomly from train.init_seed (*resumed_step = 0 in both cases). */
shoal_err_t trainer_resume(trainer_t *t, const char *init_model_dir, int64_t *resumed_step);

/* Loads a specific checkpoint directory (step-XXXXXXXX). */
shoal_err_t trainer_load_checkpoint(trainer_t *t, const char *dir);

/* The next step to run (== steps when the run is complete). */
int64_t trainer_next_step(const trainer_t *t);
int64_t trainer_total_steps(const trainer_t *t);

/* Computes this rank's share of the next step: micro-batch i of the step (G / micro_batch of
 * them) belongs to rank i mod nranks. Fills the reduce buffer (zeroed first). */
shoal_err_t trainer_compute(trainer_t *t, int rank, int nranks);

/* The flat buffer ranks sum with an all-reduce between compute and apply:
 * [gradients (n_params) | expert counts (n_moe_layers·N) | loss sum (1)]. */
float *trainer_reduce_buffer(trainer_t *t, size_t *n);

/* Applies the summed buffer: clip, AdamW, bias update; advances the step. */
shoal_err_t trainer_apply(trainer_t *t, trainer_step_info_t *info);

/* Whether a checkpoint is due after the step just applied (every_steps, or the last step). */
int trainer_checkpoint_due(const trainer_t *t);

/* Snapshots the state and writes step-<next step>/ asynchronously (off this thread). */
shoal_err_t trainer_checkpoint_async(trainer_t *t);
/* Waits for the asynchronous checkpoint; returns its result. */
shoal_err_t trainer_checkpoint_wait(trainer_t *t);

/* Writes the current parameters as a model directory (config.json + model.safetensors). */
shoal_err_t trainer_export(trainer_t *t, const char *dir);

/* Read access for tests and the verification entry. */
const float *trainer_params(const trainer_t *t, int64_t *n);
const float *trainer_adam_m(const trainer_t *t);
const float *trainer_adam_v(const trainer_t *t);

#ifdef __cplusplus
}
#endif
#endif

/* ---- the full training state as one flat buffer (worker daemon: peer broadcast, rollback) ---
 * Layout: a 64-byte header (magic "SHTS", version, n_params, next_step, adam_t, data_seed) then
 * params, adam m, adam v (n_params floats each), host byte order. */
#define TRAINER_STATE_HEADER_BYTES 64

/* Bytes of the packed state of `t`. */
size_t trainer_state_bytes(const trainer_t *t);

/* Packs the whole state into buf[trainer_state_bytes(t)]. */
void trainer_state_pack(const trainer_t *t, void *buf);

/* The next_step recorded in a packed state; -1 when `buf` is not one (len too short, bad magic). */
int64_t trainer_state_step(const void *buf, size_t len);

/* Replaces the state of `t` with a packed one. SHOAL_ERR_FORMAT when the buffer is not a packed
 * state of this model and data order (size, magic, parameter count, data seed, step range);
 * `t` is unchanged then. */
shoal_err_t trainer_state_unpack(trainer_t *t, const void *buf, size_t len);

/* Fresh state: parameters from train.init_seed, zero moments, step 0 (ignores checkpoints). */
void trainer_init_fresh(trainer_t *t);

/* Directory of the checkpoint of `step` under the trainer's checkpoint root
 * (<root>/step-XXXXXXXX) into out[cap]; SHOAL_ERR_INVALID when it does not fit. */
shoal_err_t trainer_checkpoint_path(const trainer_t *t, int64_t step, char *out, size_t cap);
