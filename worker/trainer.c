/* trainer.c: parameters, AdamW state, data order, the step, and checkpoint snapshots. */
#include "trainer.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "clock.h"
#include "data.h"
#include "log.h"
#include "model.h"
#include "model_dir.h"
#include "optim.h"

struct trainer {
    runspec_t spec;
    char ckpt_root[RUNSPEC_PATH_MAX];
    model_layout_t lay;
    model_t *model;
    data_t *data;
    float *params, *m, *v;
    float *reduce;          /* grads | counts | loss */
    size_t n_reduce;
    int64_t n_counts;
    int64_t *counts;        /* per micro-batch scratch */
    int32_t *tok, *tgt;     /* [micro_batch, T] */
    int64_t next_step;      /* steps applied so far */
    int64_t adam_t;
    double compute_seconds;
    ckpt_writer_t *writer;
};

shoal_err_t trainer_new(const runspec_t *spec, const char *ckpt_root, trainer_t **out)
{
    *out = NULL;
    trainer_t *t = calloc(1, sizeof *t);
    if (!t)
        return shoal_fail(SHOAL_ERR_NOMEM, "trainer: out of memory");
    shoal_err_t rc;
    t->spec = *spec;
    snprintf(t->ckpt_root, sizeof t->ckpt_root, "%s", ckpt_root);
    if (spec->global_batch % spec->micro_batch != 0) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "train.micro_batch (%d) must divide train.global_batch "
                        "(%d)", spec->micro_batch, spec->global_batch);
        goto fail;
    }
    SHOAL_CHECK_GOTO(model_layout_init(&t->lay, &spec->model), rc, fail);
    const char *paths[RUNSPEC_MAX_FILES];
    for (int i = 0; i < spec->n_data_files; i++)
        paths[i] = spec->data_files[i];
    SHOAL_CHECK_GOTO(data_open(paths, spec->n_data_files, spec->seq_len, spec->model.vocab_size,
                               spec->data_seed, &t->data),
                     rc, fail);
    t->model = model_new(&t->lay, spec->micro_batch, spec->seq_len);
    if (!t->model) {
        rc = SHOAL_ERR_NOMEM;
        goto fail;
    }
    const size_t np = (size_t)t->lay.n_params;
    t->n_counts = (int64_t)t->lay.n_moe_layers * spec->model.n_routed_experts;
    t->n_reduce = np + (size_t)t->n_counts + 1;
    t->params = calloc(np, sizeof(float));
    t->m = calloc(np, sizeof(float));
    t->v = calloc(np, sizeof(float));
    t->reduce = calloc(t->n_reduce, sizeof(float));
    t->counts = calloc((size_t)t->n_counts + 1, sizeof(int64_t));
    t->tok = calloc((size_t)spec->micro_batch * spec->seq_len, sizeof(int32_t));
    t->tgt = calloc((size_t)spec->micro_batch * spec->seq_len, sizeof(int32_t));
    t->writer = ckpt_writer_new();
    if (!t->params || !t->m || !t->v || !t->reduce || !t->counts || !t->tok || !t->tgt ||
        !t->writer) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "trainer: cannot allocate %zu parameters", np);
        goto fail;
    }
    *out = t;
    return SHOAL_OK;
fail:
    trainer_destroy(&t);
    return rc;
}

void trainer_destroy(trainer_t **tp)
{
    trainer_t *t = *tp;
    if (!t)
        return;
    ckpt_writer_destroy(&t->writer);
    model_destroy(&t->model);
    data_destroy(&t->data);
    model_layout_fini(&t->lay);
    free(t->params);
    free(t->m);
    free(t->v);
    free(t->reduce);
    free(t->counts);
    free(t->tok);
    free(t->tgt);
    free(t);
    *tp = NULL;
}

static shoal_err_t s_parse_state(trainer_t *t, const char *dir, const char *json)
{
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    json_int_t step = -1, adam_t = -1, seed = -1;
    if (!root || json_unpack(root, "{s:I, s:I, s:I}", "step", &step, "adam_t", &adam_t,
                             "data_seed", &seed) != 0) {
        json_decref(root);
        return shoal_fail(SHOAL_ERR_FORMAT, "%s/trainer_state.json: expected step, adam_t and "
                          "data_seed", dir);
    }
    json_decref(root);
    if (step < 0 || step > t->spec.steps || adam_t < 0)
        return shoal_fail(SHOAL_ERR_FORMAT, "%s/trainer_state.json: step %lld outside the run's "
                          "%d steps", dir, (long long)step, t->spec.steps);
    if ((uint64_t)seed != t->spec.data_seed)
        return shoal_fail(SHOAL_ERR_INVALID, "%s: written with data.seed %lld, the run spec says "
                          "%llu", dir, (long long)seed, (unsigned long long)t->spec.data_seed);
    t->next_step = step;
    t->adam_t = adam_t;
    return SHOAL_OK;
}

shoal_err_t trainer_load_checkpoint(trainer_t *t, const char *dir)
{
    char *state = NULL;
    shoal_err_t rc = ckpt_load(dir, &t->spec.model, t->params, t->m, t->v, &state);
    if (rc == SHOAL_OK)
        rc = s_parse_state(t, dir, state);
    free(state);
    return rc;
}

shoal_err_t trainer_resume(trainer_t *t, const char *init_model_dir, int64_t *resumed_step)
{
    char path[RUNSPEC_PATH_MAX + 64];
    int64_t step = 0;
    *resumed_step = 0;
    shoal_err_t rc = ckpt_latest(t->ckpt_root, &step, path, sizeof path);
    if (rc == SHOAL_OK) {
        rc = trainer_load_checkpoint(t, path);
        if (rc == SHOAL_OK)
            *resumed_step = t->next_step;
        return rc;
    }
    if (rc != SHOAL_ERR_NOTFOUND)
        return rc;
    shoal_err_clear();
    t->next_step = 0;
    t->adam_t = 0;
    memset(t->m, 0, sizeof(float) * (size_t)t->lay.n_params);
    memset(t->v, 0, sizeof(float) * (size_t)t->lay.n_params);
    if (!init_model_dir) {
        return model_init_params(&t->lay, t->spec.init_seed, t->params);
    }
    model_config_t cfg;
    float *loaded = NULL;
    int64_t n = 0;
    if ((rc = model_dir_load(init_model_dir, &cfg, &loaded, &n)) != SHOAL_OK)
        return rc;
    if (!model_config_equal(&cfg, &t->spec.model) || n != t->lay.n_params) {
        free(loaded);
        return shoal_fail(SHOAL_ERR_INVALID, "%s: its config.json differs from the run spec's "
                          "model", init_model_dir);
    }
    memcpy(t->params, loaded, sizeof(float) * (size_t)n);
    free(loaded);
    return SHOAL_OK;
}

int64_t trainer_next_step(const trainer_t *t)
{
    return t->next_step;
}

int64_t trainer_total_steps(const trainer_t *t)
{
    return t->spec.steps;
}

shoal_err_t trainer_compute(trainer_t *t, int rank, int nranks)
{
    if (t->next_step >= t->spec.steps)
        return shoal_fail(SHOAL_ERR_STATE, "trainer: all %d steps are done", t->spec.steps);
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return shoal_fail(SHOAL_ERR_INVALID, "trainer: rank %d of %d", rank, nranks);
    const double t0 = clock_mono_s();
    const int G = t->spec.global_batch, mb = t->spec.micro_batch, T = t->spec.seq_len;
    const int n_micro = G / mb;
    const float scale = (float)(1.0 / ((double)G * T));
    const int64_t np = t->lay.n_params;
    memset(t->reduce, 0, sizeof(float) * t->n_reduce);
    double loss_sum = 0.0;
    memset(t->counts, 0, sizeof(int64_t) * (size_t)t->n_counts);
    for (int i = rank; i < n_micro; i += nranks) {
        for (int j = 0; j < mb; j++) {
            const int64_t pos = t->next_step * G + (int64_t)i * mb + j;
            const int64_t seq = data_sequence_index(t->data, pos);
            data_sequence(t->data, seq, t->tok + (size_t)j * T, t->tgt + (size_t)j * T);
        }
        loss_sum += model_forward_backward(t->model, t->params, t->tok, t->tgt, mb, scale,
                                           t->reduce, t->counts);
    }
    for (int64_t e = 0; e < t->n_counts; e++)
        t->reduce[np + e] = (float)t->counts[e];
    t->reduce[t->n_reduce - 1] = (float)loss_sum;
    t->compute_seconds = clock_mono_s() - t0;
    return SHOAL_OK;
}

float *trainer_reduce_buffer(trainer_t *t, size_t *n)
{
    *n = t->n_reduce;
    return t->reduce;
}

shoal_err_t trainer_apply(trainer_t *t, trainer_step_info_t *info)
{
    const double t0 = clock_mono_s();
    const runspec_t *sp = &t->spec;
    const int64_t np = t->lay.n_params, k = t->next_step;
    float *g = t->reduce;
    const double tokens = (double)sp->global_batch * sp->seq_len;
    const double loss = (double)g[t->n_reduce - 1] / tokens;
    if (!isfinite(loss))
        return shoal_fail(SHOAL_ERR_NUMERIC, "step %lld: loss is %g", (long long)k, loss);
    const double norm = sqrt(grad_sum_squares(g, np));
    if (!isfinite(norm))
        return shoal_fail(SHOAL_ERR_NUMERIC, "step %lld: gradient norm is %g", (long long)k, norm);
    const double coef = sp->clip_grad_norm > 0 ? clip_coefficient(norm, sp->clip_grad_norm) : 1.0;
    if (coef < 1.0)
        grad_scale(g, np, (float)coef);
    const double lr = lr_at(k, sp->steps, sp->lr, sp->warmup_steps, sp->min_lr);
    const adamw_hparams_t hp = {.beta1 = (float)sp->beta1, .beta2 = (float)sp->beta2,
                                .eps = (float)sp->adam_eps, .weight_decay = (float)sp->weight_decay};
    t->adam_t++;
    for (int i = 0; i < t->lay.n_tensors; i++) {
        const model_tensor_info_t *ti = &t->lay.tensors[i];
        if (ti->is_bias)
            continue;
        const int64_t o = t->lay.offsets[i];
        adamw_update(t->params + o, g + o, t->m + o, t->v + o, model_tensor_numel(ti), (float)lr,
                     ti->ndim == 2, t->adam_t, &hp);
    }
    /* balancing biases from the whole batch's counts */
    const int N = sp->model.n_routed_experts;
    int moe_i = 0;
    for (int i = 0; i < t->lay.n_tensors; i++) {
        if (!t->lay.tensors[i].is_bias)
            continue;
        for (int e = 0; e < N; e++)
            t->counts[e] = (int64_t)llroundf(g[np + (int64_t)moe_i * N + e]);
        moe_bias_update(t->params + t->lay.offsets[i], t->counts, N,
                        (float)sp->model.bias_update_speed);
        moe_i++;
    }
    t->next_step++;
    if (info) {
        *info = (trainer_step_info_t){.step = k,
                                      .steps = sp->steps,
                                      .loss = loss,
                                      .lr = lr,
                                      .grad_norm = norm,
                                      .step_seconds = t->compute_seconds + (clock_mono_s() - t0),
                                      .tokens = tokens};
    }
    return SHOAL_OK;
}

int trainer_checkpoint_due(const trainer_t *t)
{
    const int every = t->spec.checkpoint_every;
    return t->next_step == t->spec.steps || (every > 0 && t->next_step % every == 0);
}

shoal_err_t trainer_checkpoint_async(trainer_t *t)
{
    char state[256];
    snprintf(state, sizeof state, "{\"step\": %lld, \"adam_t\": %lld, \"data_seed\": %llu}",
             (long long)t->next_step, (long long)t->adam_t,
             (unsigned long long)t->spec.data_seed);
    return ckpt_writer_submit(t->writer, t->ckpt_root, t->next_step, &t->spec.model, t->params,
                              t->m, t->v, t->lay.n_params, state, t->spec.checkpoint_keep);
}

shoal_err_t trainer_checkpoint_wait(trainer_t *t)
{
    return ckpt_writer_wait(t->writer);
}

shoal_err_t trainer_export(trainer_t *t, const char *dir)
{
    return model_dir_save(dir, &t->spec.model, t->params);
}

const float *trainer_params(const trainer_t *t, int64_t *n)
{
    if (n)
        *n = t->lay.n_params;
    return t->params;
}

const float *trainer_adam_m(const trainer_t *t)
{
    return t->m;
}

const float *trainer_adam_v(const trainer_t *t)
{
    return t->v;
}

/* ---- the full training state as one flat buffer ---- */
#define S_STATE_MAGIC 0x53544853u /* "SHTS" */
#define S_STATE_VERSION 1u

typedef struct {
    uint32_t magic, version;
    int64_t n_params, next_step, adam_t;
    uint64_t data_seed;
    uint8_t reserved[TRAINER_STATE_HEADER_BYTES - 40];
} s_state_hdr_t;
_Static_assert(sizeof(s_state_hdr_t) == TRAINER_STATE_HEADER_BYTES, "state header size");

size_t trainer_state_bytes(const trainer_t *t)
{
    return TRAINER_STATE_HEADER_BYTES + 3 * sizeof(float) * (size_t)t->lay.n_params;
}

void trainer_state_pack(const trainer_t *t, void *buf)
{
    const size_t np = (size_t)t->lay.n_params;
    s_state_hdr_t h = {.magic = S_STATE_MAGIC, .version = S_STATE_VERSION,
                       .n_params = t->lay.n_params, .next_step = t->next_step,
                       .adam_t = t->adam_t, .data_seed = t->spec.data_seed};
    unsigned char *p = buf;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    memcpy(p, t->params, np * sizeof(float));
    memcpy(p + np * sizeof(float), t->m, np * sizeof(float));
    memcpy(p + 2 * np * sizeof(float), t->v, np * sizeof(float));
}

int64_t trainer_state_step(const void *buf, size_t len)
{
    s_state_hdr_t h;
    if (!buf || len < sizeof h)
        return -1;
    memcpy(&h, buf, sizeof h);
    if (h.magic != S_STATE_MAGIC || h.version != S_STATE_VERSION)
        return -1;
    return h.next_step;
}

shoal_err_t trainer_state_unpack(trainer_t *t, const void *buf, size_t len)
{
    s_state_hdr_t h;
    if (!buf || len != trainer_state_bytes(t))
        return shoal_fail(SHOAL_ERR_FORMAT, "training state: %zu bytes, expected %zu", len,
                          trainer_state_bytes(t));
    memcpy(&h, buf, sizeof h);
    if (h.magic != S_STATE_MAGIC || h.version != S_STATE_VERSION)
        return shoal_fail(SHOAL_ERR_FORMAT, "training state: bad magic or version");
    if (h.n_params != t->lay.n_params || h.data_seed != t->spec.data_seed)
        return shoal_fail(SHOAL_ERR_FORMAT, "training state of another model or data order "
                          "(%lld parameters, data seed %llu)", (long long)h.n_params,
                          (unsigned long long)h.data_seed);
    if (h.next_step < 0 || h.next_step > t->spec.steps || h.adam_t < 0)
        return shoal_fail(SHOAL_ERR_FORMAT, "training state: step %lld outside the run's %d "
                          "steps", (long long)h.next_step, t->spec.steps);
    const size_t np = (size_t)t->lay.n_params;
    const unsigned char *p = (const unsigned char *)buf + sizeof h;
    memcpy(t->params, p, np * sizeof(float));
    memcpy(t->m, p + np * sizeof(float), np * sizeof(float));
    memcpy(t->v, p + 2 * np * sizeof(float), np * sizeof(float));
    t->next_step = h.next_step;
    t->adam_t = h.adam_t;
    return SHOAL_OK;
}

void trainer_init_fresh(trainer_t *t)
{
    t->next_step = 0;
    t->adam_t = 0;
    memset(t->m, 0, sizeof(float) * (size_t)t->lay.n_params);
    memset(t->v, 0, sizeof(float) * (size_t)t->lay.n_params);
    model_init_params(&t->lay, t->spec.init_seed, t->params);
}

shoal_err_t trainer_checkpoint_path(const trainer_t *t, int64_t step, char *out, size_t cap)
{
    return ckpt_step_dir(t->ckpt_root, step, out, cap);
}
