/* trainer.c: parameters, AdamW state, data order, the step, and checkpoint snapshots. */
#include "trainer.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "clock.h"
#include "data.h"
#include "expert_ep.h"
#include "grad_sanity.h"
#include "gradsum.h"
#include "kgemm.h"
#include "log.h"
#include "model.h"
#include "model_dir.h"
#include "optim.h"
#include "prefault.h"

struct trainer {
    runspec_t spec;
    trainer_cell_t cell;
    char ckpt_root[RUNSPEC_PATH_MAX];
    model_layout_t lay;
    model_t *model;
    expert_ep_t *xep;       /* ep > 1 */
    data_t *data;
    int n_slots;            /* micro-batches in flight: pp - stage */
    int32_t *slot_tok, *slot_tgt; /* [n_slots][micro_batch · T] */
    float *h_recv, *h_send; /* [micro_batch · T · d] activations from / to the next stage */
    float *d_recv, *d_send; /* their gradients */
    double comm_seconds;
    float *params, *m, *v;
    float *reduce;          /* grads | counts | loss */
    size_t n_reduce;
    int64_t n_counts;
    int64_t *counts;        /* per micro-batch scratch */
    int32_t *tok, *tgt;     /* [micro_batch, T] */
    int64_t next_step;      /* steps applied so far */
    int64_t adam_t;
    double compute_seconds;
    gradsum_t *gs;          /* train.grad_sum exact; NULL: float sums */
    ckpt_writer_t *writer;
    /* data-parallel guard (grad_sanity.h): this rank's micro-batches of the step, the running
     * norms of its group, and every replica's reduce buffer when they must be combined apart */
    int64_t micro_here;
    grad_sanity_t sanity;
    float *rows;    /* [dp][n_reduce] */
    double *trim_scratch;
};

static trainer_grad_hook_fn s_grad_hook;

void trainer_set_grad_hook(trainer_grad_hook_fn fn)
{
    s_grad_hook = fn;
}

void trainer_cell_whole(const model_config_t *cfg, trainer_cell_t *cell)
{
    *cell = (trainer_cell_t){.dp = 1, .pp = 1, .ep = 1};
    model_part_whole(cfg, &cell->part);
}

static shoal_err_t s_cell_check(const runspec_t *spec, const trainer_cell_t *c)
{
    if (c->dp < 1 || c->pp < 1 || c->ep < 1 || c->replica < 0 || c->replica >= c->dp ||
        c->stage < 0 || c->stage >= c->pp || c->ep_rank < 0 || c->ep_rank >= c->ep)
        return shoal_fail(SHOAL_ERR_INVALID, "trainer: cell (%d, %d, %d) outside dp %d x pp %d x "
                          "ep %d", c->replica, c->stage, c->ep_rank, c->dp, c->pp, c->ep);
    if (c->part.has_embedding != (c->stage == 0) || c->part.has_head != (c->stage == c->pp - 1))
        return shoal_fail(SHOAL_ERR_INVALID, "trainer: stage %d of %d with%s the embedding and "
                          "with%s the head", c->stage, c->pp, c->part.has_embedding ? "" : "out",
                          c->part.has_head ? "" : "out");
    const int n_micro = spec->global_batch / spec->micro_batch;
    if (c->ep > 1 && n_micro % (c->dp * c->ep) != 0)
        return shoal_fail(SHOAL_ERR_INVALID, "trainer: the step's %d micro-batches do not split "
                          "evenly over dp %d x ep %d data ranks (expert parallelism runs them in "
                          "lockstep)", n_micro, c->dp, c->ep);
    return SHOAL_OK;
}

/* train.precision on the CPU: auto and fp32 are fp32; bf16 needs this CPU and oneDNN. */
static shoal_err_t s_set_precision(trainer_t *t)
{
    int bf16 = 0;
    shoal_err_t rc = runspec_precision_bf16(&t->spec, 0, &bf16);
    if (rc != SHOAL_OK || !bf16)
        return rc;
    if ((rc = kgemm_check(KGEMM_BF16)) != SHOAL_OK)
        return shoal_fail_context(rc, "train.precision bf16");
    model_set_precision(t->model, KGEMM_BF16);
    log_info("train.precision bf16: the CPU computes in bf16 (oneDNN, fp32 accumulation)");
    return SHOAL_OK;
}

shoal_err_t trainer_new(const runspec_t *spec, const char *ckpt_root, trainer_t **out)
{
    trainer_cell_t whole;
    trainer_cell_whole(&spec->model, &whole);
    return trainer_new_cell(spec, ckpt_root, &whole, out);
}

/* expert_ep's hook: one source's expert gradients of one layer, deposited on their own. */
static shoal_err_t s_flush_experts(void *ctx, float *lo, float *hi)
{
    trainer_t *t = ctx;
    return gradsum_micro_add_range(t->gs, lo, hi);
}

shoal_err_t trainer_new_cell(const runspec_t *spec, const char *ckpt_root,
                             const trainer_cell_t *cell, trainer_t **out)
{
    *out = NULL;
    trainer_t *t = calloc(1, sizeof *t);
    if (!t)
        return shoal_fail(SHOAL_ERR_NOMEM, "trainer: out of memory");
    shoal_err_t rc;
    t->spec = *spec;
    t->cell = *cell;
    snprintf(t->ckpt_root, sizeof t->ckpt_root, "%s", ckpt_root);
    if (spec->global_batch % spec->micro_batch != 0) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "train.micro_batch (%d) must divide train.global_batch "
                        "(%d)", spec->micro_batch, spec->global_batch);
        goto fail;
    }
    SHOAL_CHECK_GOTO(s_cell_check(spec, cell), rc, fail);
    SHOAL_CHECK_GOTO(model_layout_init_part(&t->lay, &spec->model, &cell->part), rc, fail);
    const char *paths[RUNSPEC_MAX_FILES];
    for (int i = 0; i < spec->n_data_files; i++)
        paths[i] = spec->data_files[i];
    SHOAL_CHECK_GOTO(data_open(paths, spec->n_data_files, spec->seq_len, spec->model.vocab_size,
                               spec->data_seed, &t->data),
                     rc, fail);
    t->n_slots = cell->pp - cell->stage;
    t->model = model_new_slots(&t->lay, spec->micro_batch, spec->seq_len, t->n_slots);
    if (!t->model) {
        rc = SHOAL_ERR_NOMEM;
        goto fail;
    }
    SHOAL_CHECK_GOTO(s_set_precision(t), rc, fail);
    const size_t mt = (size_t)spec->micro_batch * spec->seq_len;
    if (cell->ep > 1) {
        SHOAL_CHECK_GOTO(expert_ep_new(&t->lay, cell->ep, cell->ep_rank, t->n_slots, (int)mt,
                                       &t->xep),
                         rc, fail);
        const model_expert_exchange_t x = expert_ep_exchange(t->xep);
        model_set_expert_exchange(t->model, &x);
        if (runspec_grad_sum_exact(spec))
            expert_ep_set_flush(t->xep, s_flush_experts, t);
    }
    const size_t np = (size_t)t->lay.n_params, hd = mt * (size_t)spec->model.hidden_size;
    t->n_counts = (int64_t)t->lay.n_moe_layers * spec->model.n_routed_experts;
    t->n_reduce = np + (size_t)t->n_counts + 1;
    t->params = calloc(np, sizeof(float));
    t->m = calloc(np, sizeof(float));
    t->v = calloc(np, sizeof(float));
    t->reduce = calloc(t->n_reduce, sizeof(float));
    t->counts = calloc((size_t)t->n_counts + 1, sizeof(int64_t));
    t->tok = calloc(mt, sizeof(int32_t));
    t->tgt = calloc(mt, sizeof(int32_t));
    t->slot_tok = calloc(mt * (size_t)t->n_slots, sizeof(int32_t));
    t->slot_tgt = calloc(mt * (size_t)t->n_slots, sizeof(int32_t));
    t->h_recv = calloc(hd, sizeof(float));
    t->h_send = calloc(hd, sizeof(float));
    t->d_recv = calloc(hd, sizeof(float));
    t->d_send = calloc(hd, sizeof(float));
    t->writer = ckpt_writer_new();
    if (runspec_grad_sum_exact(spec))
        SHOAL_CHECK_GOTO(gradsum_new(&t->lay, spec->global_batch / spec->micro_batch, &t->gs), rc,
                         fail);
    if (!t->params || !t->m || !t->v || !t->reduce || !t->counts || !t->tok || !t->tgt ||
        !t->slot_tok || !t->slot_tgt || !t->h_recv || !t->h_send || !t->d_recv || !t->d_send ||
        !t->writer) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "trainer: cannot allocate %zu parameters", np);
        goto fail;
    }
    /* every step writes them in full: map them now, in one call each (prefault.h) */
    prefault(t->params, np * sizeof(float));
    prefault(t->m, np * sizeof(float));
    prefault(t->v, np * sizeof(float));
    prefault(t->reduce, t->n_reduce * sizeof(float));
    *out = t;
    return SHOAL_OK;
fail:
    trainer_destroy(&t);
    return rc;
}

const trainer_cell_t *trainer_cell(const trainer_t *t)
{
    return &t->cell;
}

void trainer_destroy(trainer_t **tp)
{
    trainer_t *t = *tp;
    if (!t)
        return;
    ckpt_writer_destroy(&t->writer);
    gradsum_destroy(&t->gs);
    model_destroy(&t->model);
    expert_ep_destroy(&t->xep);
    free(t->rows);
    free(t->trim_scratch);
    free(t->slot_tok);
    free(t->slot_tgt);
    free(t->h_recv);
    free(t->h_send);
    free(t->d_recv);
    free(t->d_send);
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

/* The cell's tensors as checkpoint entries pointing into params, m, v. NULL on OOM. */
static ckpt_tensor_t *s_ckpt_tensors(trainer_t *t)
{
    ckpt_tensor_t *ct = calloc((size_t)t->lay.n_tensors + 1, sizeof *ct);
    if (!ct)
        return NULL;
    for (int i = 0; i < t->lay.n_tensors; i++) {
        const int64_t o = t->lay.offsets[i];
        const int bias = t->lay.tensors[i].is_bias;
        ct[i] = (ckpt_tensor_t){.info = &t->lay.tensors[i],
                                .param = t->params + o,
                                .m = bias ? NULL : t->m + o,
                                .v = bias ? NULL : t->v + o};
    }
    return ct;
}

shoal_err_t trainer_load_checkpoint_dirs(trainer_t *t, const char *const *dirs, int n_dirs)
{
    char *state = NULL;
    ckpt_tensor_t *ct = s_ckpt_tensors(t);
    if (!ct)
        return shoal_fail(SHOAL_ERR_NOMEM, "trainer: out of memory");
    /* bias moments are never trained: zero them as a whole-model load does */
    memset(t->m, 0, sizeof(float) * (size_t)t->lay.n_params);
    memset(t->v, 0, sizeof(float) * (size_t)t->lay.n_params);
    shoal_err_t rc =
        ckpt_load_tensors(dirs, n_dirs, &t->spec.model, ct, t->lay.n_tensors, &state);
    if (rc == SHOAL_OK)
        rc = s_parse_state(t, dirs[0], state);
    free(state);
    free(ct);
    return rc;
}

shoal_err_t trainer_load_checkpoint(trainer_t *t, const char *dir)
{
    return trainer_load_checkpoint_dirs(t, &dir, 1);
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

/* Reads sequence j of micro-batch i of the current step into tok/tgt row j. */
static void s_read_micro(trainer_t *t, int i, int32_t *tok, int32_t *tgt)
{
    const int G = t->spec.global_batch, mb = t->spec.micro_batch, T = t->spec.seq_len;
    for (int j = 0; j < mb; j++) {
        const int64_t pos = t->next_step * G + (int64_t)i * mb + j;
        const int64_t seq = data_sequence_index(t->data, pos);
        data_sequence(t->data, seq, tok + (size_t)j * T, tgt + (size_t)j * T);
    }
}

static float s_loss_scale(const trainer_t *t)
{
    return (float)(1.0 / ((double)t->spec.global_batch * t->spec.seq_len));
}

/* The reduce buffer's counts and loss from this rank's micro-batches. */
static void s_fill_tail(trainer_t *t, double loss_sum)
{
    const int64_t np = t->lay.n_params;
    for (int64_t e = 0; e < t->n_counts; e++)
        t->reduce[np + e] = (float)t->counts[e];
    t->reduce[t->n_reduce - 1] = (float)loss_sum;
}

/* The buffer a micro-batch's backward accumulates into: its own (exact sums) or the step's. */
static float *s_grads_begin(trainer_t *t)
{
    return t->gs ? gradsum_micro_buffer(t->gs) : t->reduce;
}

static shoal_err_t s_grads_end(trainer_t *t)
{
    if (t->gs && s_grad_hook)
        s_grad_hook(gradsum_micro_buffer_current(t->gs), t->lay.n_params, t->cell.replica,
                    t->next_step + 1);
    return t->gs ? gradsum_micro_add(t->gs) : SHOAL_OK;
}

/* This data rank's micro-batches (whole model): gradients into the reduce buffer (float sums)
 * or the exact counters. */
static shoal_err_t s_compute_data(trainer_t *t, int rank, int nranks)
{
    if (t->next_step >= t->spec.steps)
        return shoal_fail(SHOAL_ERR_STATE, "trainer: all %d steps are done", t->spec.steps);
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return shoal_fail(SHOAL_ERR_INVALID, "trainer: rank %d of %d", rank, nranks);
    if (t->cell.pp != 1 || t->cell.ep != 1)
        return shoal_fail(SHOAL_ERR_STATE, "trainer: a pipeline or expert-parallel cell "
                          "computes with trainer_step");
    const double t0 = clock_mono_s();
    const int n_micro = t->spec.global_batch / t->spec.micro_batch;
    const float scale = s_loss_scale(t);
    memset(t->reduce, 0, sizeof(float) * t->n_reduce);
    if (t->gs)
        gradsum_begin(t->gs);
    double loss_sum = 0.0;
    memset(t->counts, 0, sizeof(int64_t) * (size_t)t->n_counts);
    t->micro_here = 0;
    for (int i = rank; i < n_micro; i += nranks) {
        t->micro_here++;
        s_read_micro(t, i, t->tok, t->tgt);
        loss_sum += model_forward_backward(t->model, t->params, t->tok, t->tgt,
                                           t->spec.micro_batch, scale, s_grads_begin(t),
                                           t->counts);
        shoal_err_t rc = s_grads_end(t);
        if (rc != SHOAL_OK)
            return rc;
    }
    if (!t->gs && s_grad_hook && t->micro_here > 0)
        s_grad_hook(t->reduce, t->lay.n_params, t->cell.replica, t->next_step + 1);
    s_fill_tail(t, loss_sum);
    t->compute_seconds = clock_mono_s() - t0;
    return SHOAL_OK;
}

shoal_err_t trainer_compute(trainer_t *t, int rank, int nranks)
{
    shoal_err_t rc = s_compute_data(t, rank, nranks);
    /* exact sums: this rank's share as floats, as a caller summing buffers expects */
    if (rc == SHOAL_OK && t->gs)
        rc = gradsum_reduce(t->gs, NULL, NULL, 0, t->reduce);
    return rc;
}

/* comm calls of the step, timed (their waiting is what limits a pipeline) */
static shoal_err_t s_timed(trainer_t *t, shoal_err_t rc, double t0)
{
    t->comm_seconds += clock_mono_s() - t0;
    return rc;
}

static shoal_err_t s_send(trainer_t *t, comm_t *c, int dst, const float *buf, size_t n,
                          uint64_t step)
{
    const double t0 = clock_mono_s();
    return s_timed(t, comm_send(c, dst, buf, n * sizeof(float), step), t0);
}

static shoal_err_t s_recv(trainer_t *t, comm_t *c, int src, float *buf, size_t n, uint64_t step)
{
    const double t0 = clock_mono_s();
    return s_timed(t, comm_recv(c, src, buf, n * sizeof(float), step), t0);
}

static shoal_err_t s_allreduce(trainer_t *t, comm_t *c, float *buf, size_t n, uint64_t step)
{
    if (!c || n == 0)
        return SHOAL_OK;
    const double t0 = clock_mono_s();
    return s_timed(t, comm_allreduce_sum_f32(c, buf, n, step), t0);
}

/* Forward of the i-th micro-batch of this data rank (global micro-batch `mb_index`). */
static shoal_err_t s_pipe_forward(trainer_t *t, const trainer_comms_t *cm, int i, int mb_index,
                                  uint64_t step, double *loss_sum)
{
    const trainer_cell_t *c = &t->cell;
    const int slot = i % t->n_slots, mb = t->spec.micro_batch;
    const size_t mt = (size_t)mb * t->spec.seq_len, hd = mt * (size_t)t->spec.model.hidden_size;
    int32_t *tok = t->slot_tok + mt * slot, *tgt = t->slot_tgt + mt * slot;
    s_read_micro(t, mb_index, tok, tgt);
    shoal_err_t rc;
    if (c->stage > 0 && (rc = s_recv(t, cm->pipe, c->stage - 1, t->h_recv, hd, step)) != SHOAL_OK)
        return rc;
    double ls = 0.0;
    rc = model_part_forward(t->model, slot, t->params, tok, t->h_recv, tgt, mb, s_loss_scale(t),
                            t->h_send, &ls, t->counts);
    if (rc != SHOAL_OK)
        return rc;
    *loss_sum += ls;
    if (c->stage < c->pp - 1)
        return s_send(t, cm->pipe, c->stage + 1, t->h_send, hd, step);
    return SHOAL_OK;
}

static shoal_err_t s_pipe_backward(trainer_t *t, const trainer_comms_t *cm, int i,
                                   uint64_t step)
{
    const trainer_cell_t *c = &t->cell;
    const int slot = i % t->n_slots;
    const size_t hd = (size_t)t->spec.micro_batch * t->spec.seq_len *
                      (size_t)t->spec.model.hidden_size;
    shoal_err_t rc;
    const int last = c->stage == c->pp - 1;
    if (!last && (rc = s_recv(t, cm->pipe, c->stage + 1, t->d_recv, hd, step)) != SHOAL_OK)
        return rc;
    rc = model_part_backward(t->model, slot, t->params, last ? NULL : t->d_recv,
                             s_grads_begin(t), t->d_send);
    if (rc != SHOAL_OK || (rc = s_grads_end(t)) != SHOAL_OK)
        return rc;
    if (c->stage > 0)
        return s_send(t, cm->pipe, c->stage - 1, t->d_send, hd, step);
    return SHOAL_OK;
}

/* This cell's micro-batches on the 1F1B schedule. */
static shoal_err_t s_compute_pipeline(trainer_t *t, const trainer_comms_t *cm, uint64_t step)
{
    const trainer_cell_t *c = &t->cell;
    const int n_micro = t->spec.global_batch / t->spec.micro_batch;
    const int q = c->replica * c->ep + c->ep_rank, n_data = c->dp * c->ep;
    const int m = q < n_micro ? (n_micro - q + n_data - 1) / n_data : 0;
    const int warm = c->pp - 1 - c->stage < m ? c->pp - 1 - c->stage : m;
    memset(t->reduce, 0, sizeof(float) * t->n_reduce);
    memset(t->counts, 0, sizeof(int64_t) * (size_t)t->n_counts);
    if (t->gs)
        gradsum_begin(t->gs);
    if (t->xep)
        expert_ep_bind(t->xep, cm->ep, step);
    double loss_sum = 0.0;
    int fwd = 0, bwd = 0;
    shoal_err_t rc = SHOAL_OK;
    while (rc == SHOAL_OK && fwd < warm) {
        rc = s_pipe_forward(t, cm, fwd, q + fwd * n_data, step, &loss_sum);
        fwd++;
    }
    while (rc == SHOAL_OK && bwd < m) {
        if (fwd < m) {
            rc = s_pipe_forward(t, cm, fwd, q + fwd * n_data, step, &loss_sum);
            fwd++;
        }
        if (rc == SHOAL_OK)
            rc = s_pipe_backward(t, cm, bwd++, step);
    }
    if (t->xep)
        t->comm_seconds += expert_ep_comm_seconds(t->xep);
    s_fill_tail(t, loss_sum);
    return rc;
}

float *trainer_reduce_buffer(trainer_t *t, size_t *n)
{
    *n = t->n_reduce;
    return t->reduce;
}

/* Clip, AdamW and the bias update from the summed buffer, given the global gradient norm. */
static shoal_err_t s_apply(trainer_t *t, double norm, double compute_s, trainer_step_info_t *info)
{
    const double t0 = clock_mono_s();
    const runspec_t *sp = &t->spec;
    const int64_t np = t->lay.n_params, k = t->next_step;
    float *g = t->reduce;
    const double tokens = (double)sp->global_batch * sp->seq_len;
    const double loss = (double)g[t->n_reduce - 1] / tokens;
    if (!isfinite(loss))
        return shoal_fail(SHOAL_ERR_NUMERIC, "step %lld: loss is %g", (long long)k, loss);
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
                                      .step_seconds = compute_s + (clock_mono_s() - t0),
                                      .tokens = tokens,
                                      .comm_seconds = t->comm_seconds};
    }
    return SHOAL_OK;
}

int trainer_expert_counts(const trainer_t *t, const float **counts, int *first_layer,
                          int *n_experts)
{
    const model_part_t *pt = &t->lay.part;
    const int fk = t->spec.model.first_k_dense_replace;
    *counts = t->reduce + t->lay.n_params;
    *first_layer = pt->first_layer > fk ? pt->first_layer : fk; /* MoE layers are contiguous */
    *n_experts = t->spec.model.n_routed_experts;
    return t->lay.n_moe_layers;
}

/* The squared norm of a cell holding the whole model. */
static double s_local_norm_sq(const trainer_t *t)
{
    return t->gs ? gradsum_norm_local(t->gs, t->reduce)
                 : grad_sum_squares(t->reduce, t->lay.n_params);
}

shoal_err_t trainer_apply(trainer_t *t, trainer_step_info_t *info)
{
    t->comm_seconds = 0;
    return s_apply(t, sqrt(s_local_norm_sq(t)), t->compute_seconds, info);
}

/* The global gradient norm and loss of a split model: every distinct tensor counted once (the
 * shared tensors by ep rank 0 of replica 0, the experts by replica 0), summed over the world
 * as two floats (high and low part of a double) so the norm keeps double precision. */
static shoal_err_t s_global_norm(trainer_t *t, const trainer_comms_t *cm, uint64_t step,
                                 double *norm)
{
    const trainer_cell_t *c = &t->cell;
    if (t->gs) {
        double loss = t->reduce[t->n_reduce - 1], ss = 0.0;
        const double t0 = clock_mono_s();
        shoal_err_t rc = s_timed(
            t,
            gradsum_norm_world(t->gs, cm->world, t->reduce, c->replica == 0 && c->ep_rank == 0,
                               c->replica == 0,
                               c->replica == 0 && c->ep_rank == 0 && c->stage == c->pp - 1,
                               &loss, step, &ss),
            t0);
        if (rc != SHOAL_OK)
            return rc;
        *norm = sqrt(ss);
        t->reduce[t->n_reduce - 1] = (float)loss;
        return SHOAL_OK;
    }
    double ss = 0.0;
    if (c->replica == 0) {
        if (c->ep_rank == 0)
            ss += grad_sum_squares(t->reduce, t->lay.n_shared_params);
        ss += grad_sum_squares(t->reduce + t->lay.n_shared_params,
                               t->lay.n_params - t->lay.n_shared_params);
    }
    float parts[3] = {(float)ss, 0.0f, 0.0f};
    parts[1] = (float)(ss - (double)parts[0]);
    if (c->replica == 0 && c->ep_rank == 0 && c->stage == c->pp - 1)
        parts[2] = t->reduce[t->n_reduce - 1];
    shoal_err_t rc = s_allreduce(t, cm->world, parts, 3, step);
    if (rc != SHOAL_OK)
        return rc;
    *norm = sqrt((double)parts[0] + (double)parts[1]);
    t->reduce[t->n_reduce - 1] = parts[2];
    return SHOAL_OK;
}

/* Exact sums: the non-expert tensors over the stage, the experts over the cells holding them,
 * counts and loss (integers, and a loss only reported) as floats over the stage. */
static shoal_err_t s_reduce_exact(trainer_t *t, const trainer_comms_t *cm, uint64_t step)
{
    const int64_t np = t->lay.n_params;
    const double t0 = clock_mono_s();
    shoal_err_t rc = s_timed(
        t, gradsum_reduce(t->gs, cm->stage, t->cell.ep > 1 ? cm->expert : cm->stage, step, t->reduce),
        t0);
    if (rc != SHOAL_OK)
        return rc;
    return s_allreduce(t, cm->stage, t->reduce + np, t->n_reduce - (size_t)np, step);
}

/* ---- the data-parallel guard (train.grad_sanity_k, train.aggregation) ---------------------- */

/* Micro-batches replica r of dp computes (s_compute_data's i = r, r + dp, ...). */
static int64_t s_micro_of(const trainer_t *t, int r, int dp)
{
    const int n_micro = t->spec.global_batch / t->spec.micro_batch;
    return r < n_micro ? (n_micro - r + dp - 1) / dp : 0;
}

/* Every replica's report (finite, norm scaled to the whole batch, micro-batches) over the
 * group, exactly: each rank fills its slot, the others add zero bits. */
static shoal_err_t s_exchange_reports(trainer_t *t, comm_t *group, uint64_t step,
                                      grad_report_t *rep, int dp)
{
    const int64_t np = t->lay.n_params;
    const int me = t->cell.replica;
    int finite = isfinite(t->reduce[t->n_reduce - 1]);
    for (int64_t j = 0; j < np && finite; j++)
        finite = isfinite(t->reduce[j]);
    const double norm = finite ? sqrt(s_local_norm_sq(t)) : 0.0;
    const int n_micro = t->spec.global_batch / t->spec.micro_batch;
    int64_t buf[3 * GRAD_SANITY_MAX_REPLICAS] = {0};
    buf[3 * me] = finite;
    buf[3 * me + 1] = gradsum_bits(t->micro_here > 0 ? norm * n_micro / (double)t->micro_here : 0.0);
    buf[3 * me + 2] = t->micro_here;
    const double t0 = clock_mono_s();
    shoal_err_t rc = s_timed(t, comm_allreduce_sum_i64(group, buf, 3 * (size_t)dp, step), t0);
    if (rc != SHOAL_OK)
        return rc;
    for (int r = 0; r < dp; r++) {
        rep[r] = (grad_report_t){.finite = buf[3 * r] == 1, .norm = gradsum_double(buf[3 * r + 1]),
                                 .micro = buf[3 * r + 2]};
        if (rep[r].micro != s_micro_of(t, r, dp))
            return shoal_fail(SHOAL_ERR_STATE, "step %llu: replica %d reports %lld micro-batches, "
                              "its share is %lld", (unsigned long long)step, r,
                              (long long)rep[r].micro, (long long)s_micro_of(t, r, dp));
    }
    return SHOAL_OK;
}

/* Combines the replicas apart: every replica's reduce buffer gathered (each element has one
 * non-zero contributor, so the sum is exact), then on every rank the same arithmetic over the
 * accepted rows: their sum (exact sums: deposited into the counters) or trimmed mean, scaled to
 * the whole batch. */
static shoal_err_t s_combine_apart(trainer_t *t, comm_t *group, uint64_t step,
                                   const grad_report_t *rep, int dp, uint64_t rejected)
{
    const size_t nr = t->n_reduce;
    const int64_t np = t->lay.n_params;
    const int n_micro = t->spec.global_batch / t->spec.micro_batch;
    if (!t->rows) {
        t->rows = malloc(sizeof(float) * nr * (size_t)dp);
        t->trim_scratch = malloc(sizeof(double) * (size_t)dp);
        if (!t->rows || !t->trim_scratch)
            return shoal_fail(SHOAL_ERR_NOMEM, "trainer: cannot gather %d replicas' gradients",
                              dp);
    }
    memset(t->rows, 0, sizeof(float) * nr * (size_t)dp);
    const int me = t->cell.replica;
    if (!(rejected >> me & 1))
        memcpy(t->rows + (size_t)me * nr, t->reduce, sizeof(float) * nr);
    const double t0 = clock_mono_s();
    shoal_err_t rc = s_timed(t, comm_allreduce_sum_f32(group, t->rows, nr * (size_t)dp, step), t0);
    if (rc != SHOAL_OK)
        return rc;
    int use[GRAD_SANITY_MAX_REPLICAS];
    int64_t micro = 0;
    for (int r = 0; r < dp; r++) {
        use[r] = rep[r].micro > 0 && !(rejected >> r & 1);
        micro += use[r] ? rep[r].micro : 0;
    }
    const double scale = micro > 0 ? (double)n_micro / (double)micro : 0.0;
    if (runspec_trimmed_mean(&t->spec)) {
        /* each row scaled to a whole batch's gradient before the per-coordinate ranking */
        for (int r = 0; r < dp; r++)
            if (use[r]) {
                const float f = (float)((double)n_micro / (double)rep[r].micro);
                float *row = t->rows + (size_t)r * nr;
                for (int64_t j = 0; j < np; j++)
                    row[j] *= f;
            }
        grad_trimmed_mean(t->rows, dp, nr, np, use, 0, t->spec.trim, t->trim_scratch, t->reduce);
    } else if (t->gs) {
        gradsum_begin(t->gs);
        for (int r = 0; r < dp; r++)
            if (use[r]) {
                memcpy(gradsum_micro_buffer(t->gs), t->rows + (size_t)r * nr,
                       sizeof(float) * (size_t)np);
                if ((rc = gradsum_micro_add(t->gs)) != SHOAL_OK)
                    return rc;
            }
        if ((rc = gradsum_reduce(t->gs, NULL, NULL, 0, t->reduce)) != SHOAL_OK)
            return rc;
        grad_scale(t->reduce, np, (float)scale);
    } else {
        for (int64_t j = 0; j < np; j++) {
            double sum = 0.0;
            for (int r = 0; r < dp; r++)
                sum += use[r] ? t->rows[(size_t)r * nr + (size_t)j] : 0.0f;
            t->reduce[j] = (float)(sum * scale);
        }
    }
    /* counts and loss: the accepted replicas' sums (the loss as a whole batch's) */
    for (size_t j = (size_t)np; j < nr; j++) {
        double sum = 0.0;
        for (int r = 0; r < dp; r++)
            sum += use[r] ? t->rows[(size_t)r * nr + j] : 0.0f;
        t->reduce[j] = (float)sum;
    }
    t->reduce[nr - 1] = (float)(t->reduce[nr - 1] * scale);
    return SHOAL_OK;
}

/* The guard of an unsplit data-parallel step, after this rank's compute: replicas exchange
 * their reports, every rank decides alike which to leave out, and unless the plain sum of all
 * of them applies (*combined = 0: nothing rejected, aggregation sum), the step's gradients are
 * combined here (*combined = 1). */
static shoal_err_t s_dp_guard(trainer_t *t, comm_t *group, uint64_t step, int *combined,
                              trainer_step_info_t *info)
{
    const int dp = t->cell.dp;
    *combined = 0;
    if (dp > GRAD_SANITY_MAX_REPLICAS)
        return SHOAL_OK; /* beyond the decision's mask: plain sums (documented) */
    if (t->sanity.generation != comm_generation(group) || t->sanity.k != t->spec.grad_sanity_k)
        grad_sanity_reset(&t->sanity, t->spec.grad_sanity_k, comm_generation(group));
    shoal_err_t rc;
    if (t->gs && (rc = gradsum_reduce(t->gs, NULL, NULL, 0, t->reduce)) != SHOAL_OK)
        return rc; /* this rank's share as floats (the counters stay as they are) */
    grad_report_t rep[GRAD_SANITY_MAX_REPLICAS];
    if ((rc = s_exchange_reports(t, group, step, rep, dp)) != SHOAL_OK)
        return rc;
    uint64_t rejected = 0;
    rc = grad_sanity_decide(&t->sanity, rep, dp, &rejected, info->reject_why,
                            sizeof info->reject_why);
    if (rc != SHOAL_OK)
        return rc;
    info->rejected_replicas = rejected;
    if (rejected)
        log_warn("step %llu: gradient of replica mask 0x%llx left out: %s",
                 (unsigned long long)step, (unsigned long long)rejected, info->reject_why);
    if (!rejected && !runspec_trimmed_mean(&t->spec))
        return SHOAL_OK;
    *combined = 1;
    return s_combine_apart(t, group, step, rep, dp, rejected);
}

shoal_err_t trainer_step(trainer_t *t, const trainer_comms_t *cm, trainer_step_info_t *info)
{
    if (t->next_step >= t->spec.steps)
        return shoal_fail(SHOAL_ERR_STATE, "trainer: all %d steps are done", t->spec.steps);
    const trainer_cell_t *c = &t->cell;
    const uint64_t step = (uint64_t)t->next_step + 1;
    const double t0 = clock_mono_s();
    const int split = c->pp > 1 || c->ep > 1;
    shoal_err_t rc;
    t->comm_seconds = 0;
    if (!split)
        rc = s_compute_data(t, c->replica, c->dp);
    else
        rc = s_compute_pipeline(t, cm, step);
    if (rc != SHOAL_OK)
        return rc;
    trainer_step_info_t guard = {0};
    int combined = 0;
    if (!split && c->dp > 1 && cm->stage &&
        (t->spec.grad_sanity_k > 0 || runspec_trimmed_mean(&t->spec)) &&
        (rc = s_dp_guard(t, cm->stage, step, &combined, &guard)) != SHOAL_OK)
        return rc;
    const int64_t np = t->lay.n_params, ns = t->lay.n_shared_params;
    if (combined) {
        rc = SHOAL_OK;
    } else if (t->gs) {
        rc = s_reduce_exact(t, cm, step);
    } else if (c->ep == 1) {
        rc = s_allreduce(t, cm->stage, t->reduce, t->n_reduce, step);
    } else {
        if ((rc = s_allreduce(t, cm->stage, t->reduce, (size_t)ns, step)) == SHOAL_OK &&
            (rc = s_allreduce(t, cm->stage, t->reduce + np, t->n_reduce - (size_t)np, step)) ==
                SHOAL_OK)
            rc = s_allreduce(t, cm->expert, t->reduce + ns, (size_t)(np - ns), step);
    }
    if (rc != SHOAL_OK)
        return rc;
    double norm;
    if (!split)
        norm = sqrt(s_local_norm_sq(t));
    else if ((rc = s_global_norm(t, cm, step, &norm)) != SHOAL_OK)
        return rc;
    rc = s_apply(t, norm, clock_mono_s() - t0, info);
    if (rc == SHOAL_OK && info) {
        info->rejected_replicas = guard.rejected_replicas;
        memcpy(info->reject_why, guard.reject_why, sizeof info->reject_why);
    }
    return rc;
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
    ckpt_tensor_t *ct = s_ckpt_tensors(t);
    if (!ct)
        return shoal_fail(SHOAL_ERR_NOMEM, "trainer: out of memory");
    shoal_err_t rc = ckpt_writer_submit_tensors(t->writer, t->ckpt_root, t->next_step,
                                                &t->spec.model, ct, t->lay.n_tensors, state,
                                                t->spec.checkpoint_keep);
    free(ct);
    return rc;
}

shoal_err_t trainer_checkpoint_wait(trainer_t *t)
{
    return ckpt_writer_wait(t->writer);
}

shoal_err_t trainer_export(trainer_t *t, const char *dir)
{
    if (t->lay.n_params != t->lay.n_shared_params || !t->lay.part.has_embedding ||
        !t->lay.part.has_head)
        return shoal_fail(SHOAL_ERR_STATE, "trainer: a cell holds part of the model; export a "
                          "run with shoalctl export");
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

shoal_err_t trainer_init_fresh(trainer_t *t)
{
    t->next_step = 0;
    t->adam_t = 0;
    memset(t->m, 0, sizeof(float) * (size_t)t->lay.n_params);
    memset(t->v, 0, sizeof(float) * (size_t)t->lay.n_params);
    return model_init_params(&t->lay, t->spec.init_seed, t->params);
}

shoal_err_t trainer_checkpoint_path(const trainer_t *t, int64_t step, char *out, size_t cap)
{
    return ckpt_step_dir(t->ckpt_root, step, out, cap);
}
