/* trainer_gpu.h: the single-process training loop with the whole step on one CUDA device
 * (model_gpu.h): the same run spec, data order, step mathematics, checkpoints and exports as the
 * CPU trainer (trainer.h), which it keeps as its host side: checkpoints and resume go through
 * it, so a GPU run resumes on the CPU and a CPU run on the GPU. Built only with CUDA. */
#ifndef SHOAL_WORKER_TRAINER_GPU_H
#define SHOAL_WORKER_TRAINER_GPU_H

#include "device.h"
#include "err.h"
#include "runspec.h"
#include "trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct trainer_gpu trainer_gpu_t;

/* Builds the host trainer (trainer_new) and the device model on `dev` (bound to this thread),
 * with train.precision resolved for a GPU (auto = bf16). pp = ep = 1 only: SHOAL_ERR_INVALID
 * for a spec asking for pipeline stages or expert parallelism. *out stays NULL on error. */
shoal_err_t trainer_gpu_new(const runspec_t *spec, const char *ckpt_root, const device_t *dev,
                            trainer_gpu_t **out);
/* As trainer_gpu_new, with extra model_gpu.h flags (MODEL_GPU_FUSED_ATTENTION); the precision
 * bit still comes from the spec. For tests and benchmarks comparing the two attentions. */
shoal_err_t trainer_gpu_new_flags(const runspec_t *spec, const char *ckpt_root,
                                  const device_t *dev, int flags, trainer_gpu_t **out);
void trainer_gpu_destroy(trainer_gpu_t **t);

/* trainer_resume on the host side, then the state to the device. */
shoal_err_t trainer_gpu_resume(trainer_gpu_t *t, const char *init_model_dir,
                               int64_t *resumed_step);

/* One whole step: this process's micro-batches (all of them), gradient norm, clip, AdamW, bias
 * update, all on the device; loss and norm read back once. SHOAL_ERR_NUMERIC (state unchanged)
 * when the loss or the norm is not finite; SHOAL_ERR_CUDA on a device failure. */
shoal_err_t trainer_gpu_step(trainer_gpu_t *t, trainer_step_info_t *info);

int64_t trainer_gpu_next_step(const trainer_gpu_t *t);
int64_t trainer_gpu_total_steps(const trainer_gpu_t *t);
int trainer_gpu_checkpoint_due(const trainer_gpu_t *t);
/* Whether the matmuls run in bf16. */
int trainer_gpu_bf16(const trainer_gpu_t *t);

/* Copies the device state into the host trainer (params, AdamW m and v, step counters), for
 * checkpoints, exports and tests. */
shoal_err_t trainer_gpu_sync_host(trainer_gpu_t *t);
/* The host trainer: call trainer_gpu_sync_host first for the current values. */
trainer_t *trainer_gpu_host(trainer_gpu_t *t);

/* trainer_gpu_sync_host, then the host trainer's trainer_checkpoint_async / trainer_export. */
shoal_err_t trainer_gpu_checkpoint_async(trainer_gpu_t *t);
shoal_err_t trainer_gpu_checkpoint_wait(trainer_gpu_t *t);
shoal_err_t trainer_gpu_export(trainer_gpu_t *t, const char *dir);

#ifdef __cplusplus
}
#endif
#endif
