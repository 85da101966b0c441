/* ckpt_writer.c: the asynchronous checkpoint writer: snapshots a shard's tensors, then writes
 * them with ckpt_save_tensors on its own thread while training goes on. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "log.h"
#include "model_dir.h"

struct ckpt_writer {
    pthread_t thread;
    int running;
    /* the job: owned snapshots */
    char *root;
    int64_t step;
    model_config_t cfg;
    model_tensor_info_t *info; /* n infos, the tensors' copies point at them */
    ckpt_tensor_t *t;
    int n, n_cap;
    float *data; /* every tensor's param, m and v */
    int64_t data_cap;
    char *state;
    int keep;
    /* the result, read only after pthread_join */
    shoal_err_t rc;
    int unreported;
    char msg[1024];
    int64_t last_ok_step;
};

ckpt_writer_t *ckpt_writer_new(void)
{
    ckpt_writer_t *w = calloc(1, sizeof *w);
    if (w)
        w->last_ok_step = -1;
    return w;
}

static void *s_writer_main(void *arg)
{
    ckpt_writer_t *w = arg;
    w->rc = ckpt_save_tensors(w->root, w->step, &w->cfg, w->t, w->n, w->state, w->keep);
    if (w->rc != SHOAL_OK) {
        /* shoal_errmsg() is thread-local: carry the text to the thread that asks */
        snprintf(w->msg, sizeof w->msg, "%s", shoal_errmsg());
        w->unreported = 1;
    } else {
        w->last_ok_step = w->step;
    }
    return NULL;
}

static void s_join(ckpt_writer_t *w)
{
    if (w->running) {
        pthread_join(w->thread, NULL);
        w->running = 0;
    }
}

shoal_err_t ckpt_writer_wait(ckpt_writer_t *w)
{
    s_join(w);
    if (!w->unreported)
        return SHOAL_OK;
    w->unreported = 0;
    return shoal_fail(w->rc, "%s", w->msg);
}

/* Room for n tensors and `floats` floats of data (kept between writes: the sizes repeat). */
static shoal_err_t s_reserve(ckpt_writer_t *w, int n, int64_t floats)
{
    if (n > w->n_cap) {
        free(w->info);
        free(w->t);
        w->info = calloc((size_t)n, sizeof *w->info);
        w->t = calloc((size_t)n, sizeof *w->t);
        w->n_cap = (w->info && w->t) ? n : 0;
        if (!w->n_cap)
            return shoal_fail(SHOAL_ERR_NOMEM, "checkpoint writer: out of memory");
    }
    if (floats > w->data_cap) {
        free(w->data);
        w->data = malloc((size_t)floats * sizeof(float));
        w->data_cap = w->data ? floats : 0;
        if (!w->data)
            return shoal_fail(SHOAL_ERR_NOMEM, "checkpoint writer: cannot snapshot %lld floats",
                              (long long)floats);
    }
    return SHOAL_OK;
}

/* Copies one buffer of numel floats into the snapshot at *at; returns where it went. */
static float *s_copy(float *base, int64_t *at, const float *src, int64_t numel)
{
    float *dst = base + *at;
    memcpy(dst, src, (size_t)numel * sizeof(float));
    *at += numel;
    return dst;
}

shoal_err_t ckpt_writer_submit_tensors(ckpt_writer_t *w, const char *root, int64_t step,
                                       const model_config_t *cfg, const ckpt_tensor_t *t, int n,
                                       const char *state_json, int keep)
{
    shoal_err_t rc = ckpt_writer_wait(w);
    if (rc != SHOAL_OK)
        return rc;
    if (!root || !cfg || n < 0 || (n > 0 && !t))
        return shoal_fail(SHOAL_ERR_INVALID, "checkpoint writer: bad arguments");
    int64_t floats = 0;
    for (int i = 0; i < n; i++) {
        if (!t[i].info || !t[i].param || (!t[i].info->is_bias && (!t[i].m || !t[i].v)))
            return shoal_fail(SHOAL_ERR_INVALID, "checkpoint writer: tensor %d has no %s", i,
                              t[i].info ? "buffers" : "info");
        floats += model_tensor_numel(t[i].info) * (t[i].info->is_bias ? 1 : 3);
    }
    if ((rc = s_reserve(w, n, floats)) != SHOAL_OK)
        return rc;
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = model_tensor_numel(t[i].info);
        w->info[i] = *t[i].info;
        w->t[i] = (ckpt_tensor_t){.info = &w->info[i]};
        w->t[i].param = s_copy(w->data, &at, t[i].param, numel);
        if (!t[i].info->is_bias) {
            w->t[i].m = s_copy(w->data, &at, t[i].m, numel);
            w->t[i].v = s_copy(w->data, &at, t[i].v, numel);
        }
    }
    w->n = n;
    free(w->root);
    free(w->state);
    w->root = strdup(root);
    w->state = strdup(state_json ? state_json : "{}");
    if (!w->root || !w->state)
        return shoal_fail(SHOAL_ERR_NOMEM, "checkpoint writer: out of memory");
    w->cfg = *cfg;
    w->step = step;
    w->keep = keep;
    w->rc = SHOAL_OK;
    int e = pthread_create(&w->thread, NULL, s_writer_main, w);
    if (e != 0)
        return shoal_fail(SHOAL_ERR_IO, "checkpoint writer: cannot start thread: %s", strerror(e));
    w->running = 1;
    return SHOAL_OK;
}

shoal_err_t ckpt_writer_submit(ckpt_writer_t *w, const char *root, int64_t step,
                               const model_config_t *cfg, const float *params, const float *m,
                               const float *v, int64_t n, const char *state_json, int keep)
{
    shoal_err_t rc = ckpt_writer_wait(w);
    if (rc != SHOAL_OK)
        return rc;
    if (!root || !cfg || !params || !m || !v)
        return shoal_fail(SHOAL_ERR_INVALID, "checkpoint writer: bad arguments");
    int64_t want = model_dir_param_count(cfg);
    if (n != want)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "checkpoint writer: %lld floats given, the model has %lld", (long long)n,
                          (long long)want);
    int nt = model_tensor_list(cfg, NULL, 0);
    model_tensor_info_t *info = calloc((size_t)nt + 1, sizeof *info);
    ckpt_tensor_t *t = calloc((size_t)nt + 1, sizeof *t);
    if (!info || !t) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "checkpoint writer: out of memory");
        goto out;
    }
    model_tensor_list(cfg, info, nt);
    /* only read (copied): the casts serve the shared tensor type */
    ckpt_tensors_flat(info, nt, (float *)params, (float *)m, (float *)v, t);
    rc = ckpt_writer_submit_tensors(w, root, step, cfg, t, nt, state_json, keep);
out:
    free(t);
    free(info);
    return rc;
}

int64_t ckpt_writer_last_step(const ckpt_writer_t *w)
{
    return w->last_ok_step;
}

void ckpt_writer_destroy(ckpt_writer_t **wp)
{
    if (!wp || !*wp)
        return;
    ckpt_writer_t *w = *wp;
    if (ckpt_writer_wait(w) != SHOAL_OK)
        log_error("checkpoint writer: %s", shoal_errmsg());
    free(w->info);
    free(w->t);
    free(w->data);
    free(w->root);
    free(w->state);
    free(w);
    *wp = NULL;
}
