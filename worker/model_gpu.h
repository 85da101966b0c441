/* model_gpu.h: the whole model (pp = ep = 1) resident on one CUDA device: parameters, gradients
 * and the AdamW moments as flat fp32 device arrays in the layout of model_layout_t (so a
 * checkpoint is a copy of the flat arrays), the activations of one micro-batch, and the step:
 * forward + backward of micro-batches accumulating gradients, loss and expert counts on the
 * device, then gradient norm, clipping, AdamW and the bias update on the device. The host
 * launches and reads back two numbers (loss sum, squared gradient norm) once per step.
 * Built only with CUDA (SHOAL_HAVE_CUDA). Deterministic: no float atomics; the same inputs give
 * the same bits. */
#ifndef SHOAL_WORKER_MODEL_GPU_H
#define SHOAL_WORKER_MODEL_GPU_H

#include <stdint.h>

#include "err.h"
#include "model.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct model_gpu model_gpu_t;

/* Options of model_gpu_new (bits). */
enum {
    MODEL_GPU_BF16 = 1,            /* GEMMs in bf16 with fp32 accumulation
                                    * (kernels_matmul_bf16_cuda); all storage stays fp32 */
    MODEL_GPU_FUSED_ATTENTION = 2, /* attention_*_fused_cuda (online softmax, no T×T matrix;
                                    * head width <= 128) instead of the batched-GEMM attention */
};

/* Allocates everything on the current device (device_bind first) for micro-batches of up to
 * max_B sequences of T positions, with `flags` (MODEL_GPU_*). The layout must hold the whole
 * model and outlive the model. Errors: SHOAL_ERR_INVALID (layout, T, head width for the fused
 * attention), SHOAL_ERR_NOMEM (device memory), SHOAL_ERR_CUDA. */
shoal_err_t model_gpu_new(const model_layout_t *lay, int max_B, int T, int flags,
                          model_gpu_t **out);
void model_gpu_destroy(model_gpu_t **m);

/* Copies host arrays of n_params floats to the device (m, v may be NULL: zeros) / back to the
 * host (any of them may be NULL). Synchronous. */
shoal_err_t model_gpu_upload(model_gpu_t *m, const float *params, const float *adam_m,
                             const float *adam_v);
shoal_err_t model_gpu_download(model_gpu_t *m, float *params, float *adam_m, float *adam_v);

/* Starts a step: zeroes the gradients, the expert counts and the loss sum on the device. */
shoal_err_t model_gpu_begin_step(model_gpu_t *m);

/* One micro-batch of B sequences: tok, tgt [B, T] host arrays of token ids in [0, V) (checked
 * by the caller), copied to the device; forward, loss, backward. Gradients of
 * loss_scale · Σ CE accumulate, as do the loss sum and the expert counts. Asynchronous except
 * for one stream synchronisation per MoE layer (the per-expert GEMM sizes). */
shoal_err_t model_gpu_micro_batch(model_gpu_t *m, const int32_t *tok, const int32_t *tgt, int B,
                                  float loss_scale);

/* Reads back the step's loss sum and Σ grad² (one synchronisation). */
shoal_err_t model_gpu_step_sums(model_gpu_t *m, double *loss_sum, double *grad_sq);

/* The update: gradients scaled by gcoef when gcoef < 1 (clipping), AdamW at optimizer step t
 * (1-based) with learning rate lr over every trainable tensor in one launch, then each MoE
 * layer's balancing bias from the step's counts (speed gamma). Asynchronous. */
shoal_err_t model_gpu_apply(model_gpu_t *m, float gcoef, float lr, int64_t t,
                            const adamw_hparams_t *hp, float gamma);

/* Waits for everything enqueued (SHOAL_ERR_CUDA names an asynchronous failure). */
shoal_err_t model_gpu_sync(model_gpu_t *m);

int64_t model_gpu_n_params(const model_gpu_t *m);

#ifdef __cplusplus
}
#endif
#endif
