/* trainer.h: the training loop of MODEL.md's training step, usable by one process
 * (`shoal-worker train`) or by one data-parallel rank of many (the worker daemon): a step is
 * compute (this rank's micro-batches) → all-reduce of one flat buffer → apply (clip, AdamW,
 * bias update), and the mathematics never depends on how many ranks share the work. */
#ifndef SHOAL_WORKER_TRAINER_H
#define SHOAL_WORKER_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "err.h"
#include "model.h"
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
    double comm_seconds; /* of step_seconds, the time spent inside comm calls (waiting included) */
    /* gradient sanity (train.grad_sanity_k): data-parallel replicas left out of this step's
     * aggregate (bit = replica) and why the first was; every replica reports the same */
    uint64_t rejected_replicas;
    char reject_why[160];
} trainer_step_info_t;

/* A test build's attack on a rank's own gradients (shoal-worker-attack): called with this
 * rank's local gradient buffer before any exchange (each micro-batch's with exact sums, the
 * accumulated buffer with float sums). Process-wide; NULL (the default) = none. */
typedef void (*trainer_grad_hook_fn)(float *grads, int64_t n, int replica, int64_t step);
void trainer_set_grad_hook(trainer_grad_hook_fn fn);

/* Where a trainer sits in a run's plan: a cell (replica, stage, ep_rank) of dp x pp x ep, and
 * the part of the model the cell holds. */
typedef struct {
    int dp, pp, ep;
    int replica, stage, ep_rank;
    model_part_t part;
} trainer_cell_t;

/* The comms of a cell's groups (group ranks in the order given). NULL where a group has one
 * member. */
typedef struct {
    comm_t *world;  /* every cell of the plan, by plan rank */
    comm_t *stage;  /* the dp·ep cells of this stage, rank replica·ep + ep_rank */
    comm_t *expert; /* the dp cells of this (stage, ep_rank), holding the same part; rank
                     * replica (its experts' gradients; a lost replica's state) */
    comm_t *ep;     /* the ep cells of this (replica, stage), rank ep_rank */
    comm_t *pipe;   /* the pp cells of this (replica, ep_rank), rank stage */
} trainer_comms_t;

/* The whole model on one process: dp = pp = ep = 1. */
void trainer_cell_whole(const model_config_t *cfg, trainer_cell_t *cell);

/* Builds the model, the optimizer state and the data reader for `spec`. Checkpoints go to
 * `ckpt_root` (the caller resolves checkpoint.dir). Parameters are not set yet: call
 * trainer_resume(). On error returns NULL-equivalent: *out stays NULL, message in errmsg. */
shoal_err_t trainer_new(const runspec_t *spec, const char *ckpt_root, trainer_t **out);
/* As trainer_new, for one cell: only the cell's part of the model, its optimizer state, and
 * the activations its pipeline schedule keeps (pp - stage micro-batches in flight).
 * SHOAL_ERR_INVALID when the cell does not fit the spec (e.g. ep > 1 and the step's
 * micro-batches do not split evenly over the dp·ep data ranks). */
shoal_err_t trainer_new_cell(const runspec_t *spec, const char *ckpt_root,
                             const trainer_cell_t *cell, trainer_t **out);
const trainer_cell_t *trainer_cell(const trainer_t *t);

/* One whole step of a cell: its micro-batches through the pipeline (1F1B: stage s runs
 * pp - 1 - s forwards ahead, then one forward and one backward in turn; activations and their
 * gradients travel over comms->pipe, routed tokens over comms->ep), the gradient sums (the
 * shared tensors over comms->stage, experts over comms->expert), the global gradient norm over
 * comms->world, then clip, AdamW and the bias update. The micro-batches of data rank
 * q = replica·ep + ep_rank are q, q + dp·ep, ... of the step. The mathematics equals the
 * single-process step up to float summation order. Comm errors come back as they are
 * (SHOAL_ERR_ABORTED, SHOAL_ERR_TIMEOUT, ...); the state is then unchanged. */
shoal_err_t trainer_step(trainer_t *t, const trainer_comms_t *comms, trainer_step_info_t *info);
void trainer_destroy(trainer_t **t);

/* Loads the newest complete checkpoint of ckpt_root if there is one (*resumed_step = its step),
 * else initialises the parameters from `init_model_dir` (a model directory) when given, else
 * randomly from train.init_seed (*resumed_step = 0 in both cases). */
shoal_err_t trainer_resume(trainer_t *t, const char *init_model_dir, int64_t *resumed_step);

/* Loads a specific checkpoint directory (step-XXXXXXXX). */
shoal_err_t trainer_load_checkpoint(trainer_t *t, const char *dir);
/* Loads the cell's tensors from the shards of one checkpoint step, written under any plan
 * (resharding): each tensor from the first dir that holds it; the step from dirs[0]. */
shoal_err_t trainer_load_checkpoint_dirs(trainer_t *t, const char *const *dirs, int n_dirs);

/* The next step to run (== steps when the run is complete). */
int64_t trainer_next_step(const trainer_t *t);
int64_t trainer_total_steps(const trainer_t *t);

/* Computes this rank's share of the next step: micro-batch i of the step (G / micro_batch of
 * them) belongs to rank i mod nranks. Fills the reduce buffer (zeroed first). */
shoal_err_t trainer_compute(trainer_t *t, int rank, int nranks);

/* The flat buffer ranks sum with an all-reduce between compute and apply:
 * [gradients (n_params) | expert counts (n_moe_layers·N) | loss sum (1)]. */
float *trainer_reduce_buffer(trainer_t *t, size_t *n);

/* Hot experts: the routed-token counts (top-k picks) per expert of the MoE layers the cell
 * holds, from the step just applied, as its reduce left them: summed over every cell of the
 * stage (all replicas and ep ranks: the whole batch; replicas the gradient guard left out are
 * not counted). Layer-major, *n_experts per layer, from model layer *first_layer; returns the
 * number of MoE layers (0: none). Points into the trainer: valid until its next step. */
int trainer_expert_counts(const trainer_t *t, const float **counts, int *first_layer,
                          int *n_experts);

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
shoal_err_t trainer_init_fresh(trainer_t *t);

/* Directory of the checkpoint of `step` under the trainer's checkpoint root
 * (<root>/step-XXXXXXXX) into out[cap]; SHOAL_ERR_INVALID when it does not fit. */
shoal_err_t trainer_checkpoint_path(const trainer_t *t, int64_t step, char *out, size_t cap);
