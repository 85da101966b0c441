/* trainer_gpu.c: the step of trainer.c (compute → norm → clip → AdamW → bias update) with every
 * tensor on the device, and the host trainer as the keeper of checkpoints and resume. The
 * state crosses between them as trainer.h's packed state (trainer_state_pack/unpack). */
#include "trainer_gpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "data.h"
#include "model_gpu.h"
#include "optim.h"

/* The first bytes of trainer.h's packed state header, in its documented order: magic,
 * version, n_params, next_step, adam_t, data_seed. */
typedef struct {
    uint32_t magic, version;
    int64_t n_params, next_step, adam_t;
    uint64_t data_seed;
} s_state_head_t;
_Static_assert(sizeof(s_state_head_t) <= TRAINER_STATE_HEADER_BYTES, "state header");

struct trainer_gpu {
    runspec_t spec;
    trainer_t *host;
    model_layout_t lay;
    model_gpu_t *model;
    data_t *data;
    int32_t *tok, *tgt;     /* [micro_batch · T] */
    unsigned char *state;   /* packed state: header template + params | m | v */
    size_t state_bytes;
    int64_t next_step, adam_t;
    int bf16;
};

shoal_err_t trainer_gpu_new(const runspec_t *spec, const char *ckpt_root, const device_t *dev,
                            trainer_gpu_t **out)
{
    return trainer_gpu_new_flags(spec, ckpt_root, dev, 0, out);
}

shoal_err_t trainer_gpu_new_flags(const runspec_t *spec, const char *ckpt_root,
                                  const device_t *dev, int flags, trainer_gpu_t **out)
{
    *out = NULL;
    if (dev->kind != DEVICE_CUDA)
        return shoal_fail(SHOAL_ERR_INVALID, "GPU trainer: device %s is not a CUDA device",
                          dev->name);
    if (spec->pp > 1 || spec->ep > 1)
        return shoal_fail(SHOAL_ERR_INVALID, "GPU trainer: parallel.pipeline_stages %d and "
                          "parallel.expert_parallel %d: the GPU path holds the whole model (1 "
                          "and 1)", spec->pp, spec->ep);
    trainer_gpu_t *t = calloc(1, sizeof *t);
    if (!t)
        return shoal_fail(SHOAL_ERR_NOMEM, "GPU trainer: out of memory");
    shoal_err_t rc;
    t->spec = *spec;
    SHOAL_CHECK_GOTO(runspec_precision_bf16(spec, 1, &t->bf16), rc, fail);
    SHOAL_CHECK_GOTO(device_bind(dev), rc, fail);
    /* the host side keeps checkpoints and multiplies nothing: fp32, so that train.precision
     * bf16 on a GPU never asks the CPU for bf16 */
    runspec_t host_spec = *spec;
    strcpy(host_spec.precision, "fp32");
    SHOAL_CHECK_GOTO(trainer_new(&host_spec, ckpt_root, &t->host), rc, fail);
    SHOAL_CHECK_GOTO(model_layout_init(&t->lay, &spec->model), rc, fail);
    const char *paths[RUNSPEC_MAX_FILES];
    for (int i = 0; i < spec->n_data_files; i++)
        paths[i] = spec->data_files[i];
    SHOAL_CHECK_GOTO(data_open(paths, spec->n_data_files, spec->seq_len, spec->model.vocab_size,
                               spec->data_seed, &t->data),
                     rc, fail);
    flags = (flags & ~MODEL_GPU_BF16) | (t->bf16 ? MODEL_GPU_BF16 : 0);
    SHOAL_CHECK_GOTO(model_gpu_new(&t->lay, spec->micro_batch, spec->seq_len, flags, &t->model),
                     rc, fail);
    const size_t mt = (size_t)spec->micro_batch * spec->seq_len;
    t->tok = calloc(mt, sizeof(int32_t));
    t->tgt = calloc(mt, sizeof(int32_t));
    t->state_bytes = trainer_state_bytes(t->host);
    t->state = malloc(t->state_bytes);
    if (!t->tok || !t->tgt || !t->state) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "GPU trainer: out of host memory");
        goto fail;
    }
    trainer_state_pack(t->host, t->state); /* the header template trainer_gpu_sync_host edits */
    *out = t;
    return SHOAL_OK;
fail:
    trainer_gpu_destroy(&t);
    return rc;
}

void trainer_gpu_destroy(trainer_gpu_t **tp)
{
    trainer_gpu_t *t = *tp;
    if (!t)
        return;
    model_gpu_destroy(&t->model);
    trainer_destroy(&t->host);
    data_destroy(&t->data);
    model_layout_fini(&t->lay);
    free(t->tok);
    free(t->tgt);
    free(t->state);
    free(t);
    *tp = NULL;
}

static float *s_state_array(trainer_gpu_t *t, int k)
{
    return (float *)(t->state + TRAINER_STATE_HEADER_BYTES) + (size_t)k * t->lay.n_params;
}

/* The host trainer's state (packed) to the device and the step counters. */
static shoal_err_t s_from_host(trainer_gpu_t *t)
{
    s_state_head_t h;
    trainer_state_pack(t->host, t->state);
    memcpy(&h, t->state, sizeof h);
    t->next_step = h.next_step;
    t->adam_t = h.adam_t;
    return model_gpu_upload(t->model, s_state_array(t, 0), s_state_array(t, 1),
                            s_state_array(t, 2));
}

shoal_err_t trainer_gpu_sync_host(trainer_gpu_t *t)
{
    s_state_head_t h;
    memcpy(&h, t->state, sizeof h); /* the template s_from_host packed */
    h.next_step = t->next_step;
    h.adam_t = t->adam_t;
    memcpy(t->state, &h, sizeof h);
    shoal_err_t rc = model_gpu_download(t->model, s_state_array(t, 0), s_state_array(t, 1),
                                        s_state_array(t, 2));
    if (rc == SHOAL_OK)
        rc = trainer_state_unpack(t->host, t->state, t->state_bytes);
    return rc;
}

shoal_err_t trainer_gpu_resume(trainer_gpu_t *t, const char *init_model_dir,
                               int64_t *resumed_step)
{
    shoal_err_t rc = trainer_resume(t->host, init_model_dir, resumed_step);
    if (rc == SHOAL_OK)
        rc = s_from_host(t);
    return rc;
}

/* Sequence j of micro-batch i of the current step into tok/tgt row j (trainer.c's order). */
static void s_read_micro(trainer_gpu_t *t, int i)
{
    const int G = t->spec.global_batch, mb = t->spec.micro_batch, T = t->spec.seq_len;
    for (int j = 0; j < mb; j++) {
        const int64_t pos = t->next_step * G + (int64_t)i * mb + j;
        data_sequence(t->data, data_sequence_index(t->data, pos), t->tok + (size_t)j * T,
                      t->tgt + (size_t)j * T);
    }
}

shoal_err_t trainer_gpu_step(trainer_gpu_t *t, trainer_step_info_t *info)
{
    const runspec_t *sp = &t->spec;
    if (t->next_step >= sp->steps)
        return shoal_fail(SHOAL_ERR_STATE, "GPU trainer: all %d steps are done", sp->steps);
    const double t0 = clock_mono_s();
    const int64_t k = t->next_step;
    const int n_micro = sp->global_batch / sp->micro_batch;
    const double tokens = (double)sp->global_batch * sp->seq_len;
    const float scale = (float)(1.0 / tokens);
    shoal_err_t rc = model_gpu_begin_step(t->model);
    for (int i = 0; i < n_micro && rc == SHOAL_OK; i++) {
        s_read_micro(t, i);
        rc = model_gpu_micro_batch(t->model, t->tok, t->tgt, sp->micro_batch, scale);
    }
    double loss_sum = 0, grad_sq = 0;
    if (rc == SHOAL_OK)
        rc = model_gpu_step_sums(t->model, &loss_sum, &grad_sq);
    if (rc != SHOAL_OK)
        return rc;
    const double loss = loss_sum / tokens, norm = sqrt(grad_sq);
    if (!isfinite(loss))
        return shoal_fail(SHOAL_ERR_NUMERIC, "step %lld: loss is %g", (long long)k, loss);
    if (!isfinite(norm))
        return shoal_fail(SHOAL_ERR_NUMERIC, "step %lld: gradient norm is %g", (long long)k, norm);
    /* the scalars exactly as trainer.c forms them */
    const double coef = sp->clip_grad_norm > 0 ? clip_coefficient(norm, sp->clip_grad_norm) : 1.0;
    const double lr = lr_at(k, sp->steps, sp->lr, sp->warmup_steps, sp->min_lr);
    const adamw_hparams_t hp = {.beta1 = (float)sp->beta1, .beta2 = (float)sp->beta2,
                                .eps = (float)sp->adam_eps, .weight_decay = (float)sp->weight_decay};
    rc = model_gpu_apply(t->model, coef < 1.0 ? (float)coef : 1.0f, (float)lr, t->adam_t + 1, &hp,
                         (float)sp->model.bias_update_speed);
    if (rc == SHOAL_OK) /* the step's time includes the device's update */
        rc = model_gpu_sync(t->model);
    if (rc != SHOAL_OK)
        return rc;
    t->adam_t++;
    t->next_step++;
    if (info)
        *info = (trainer_step_info_t){.step = k,
                                      .steps = sp->steps,
                                      .loss = loss,
                                      .lr = lr,
                                      .grad_norm = norm,
                                      .step_seconds = clock_mono_s() - t0,
                                      .tokens = tokens,
                                      .comm_seconds = 0};
    return SHOAL_OK;
}

int64_t trainer_gpu_next_step(const trainer_gpu_t *t)
{
    return t->next_step;
}

int64_t trainer_gpu_total_steps(const trainer_gpu_t *t)
{
    return t->spec.steps;
}

int trainer_gpu_checkpoint_due(const trainer_gpu_t *t)
{
    const int every = t->spec.checkpoint_every;
    return t->next_step == t->spec.steps || (every > 0 && t->next_step % every == 0);
}

int trainer_gpu_bf16(const trainer_gpu_t *t)
{
    return t->bf16;
}

trainer_t *trainer_gpu_host(trainer_gpu_t *t)
{
    return t->host;
}

shoal_err_t trainer_gpu_checkpoint_async(trainer_gpu_t *t)
{
    shoal_err_t rc = trainer_gpu_sync_host(t);
    return rc == SHOAL_OK ? trainer_checkpoint_async(t->host) : rc;
}

shoal_err_t trainer_gpu_checkpoint_wait(trainer_gpu_t *t)
{
    return trainer_checkpoint_wait(t->host);
}

shoal_err_t trainer_gpu_export(trainer_gpu_t *t, const char *dir)
{
    shoal_err_t rc = trainer_gpu_sync_host(t);
    return rc == SHOAL_OK ? trainer_export(t->host, dir) : rc;
}
