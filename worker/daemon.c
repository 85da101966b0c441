/* daemon.c: the worker daemon's training thread: applies plans at step boundaries, agrees with
 * its peers on the state to start from, runs compute → all-reduce → apply per step within the
 * lease, and reports steps and checkpoints through the session thread (session.c). */
#include "daemon.h"

#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "comm.h"
#include "fsutil.h"
#include "log.h"
#include "runspec.h"
#include "session.h"
#include "sha256.h"
#include "shoal_version.h"
#include "trainer.h"

#define S_IDLE_WAIT_MS 100
#define S_FAILED_ASK_MS 1000      /* GetAssignment again while failed */
#define S_SAME_GEN_RETRY_MS 10000 /* last resort: retry a failed generation the coordinator keeps */
#define S_LEFT_WAIT_MS 3000

typedef struct {
    daemon_config_t cfg;
    char state_dir[PATH_MAX];
    char name[SESS_ID_MAX];
    int lock_fd;
    void *zctx;
    comm_listener_t *listener;
    session_t *sess;
    FILE *metrics;

    sess_plan_t *plan;    /* the plan being trained (NULL: none) */
    sess_plan_t *pending; /* a newer plan, applied at the next step boundary */
    runspec_t *spec;
    trainer_t *tr;
    char tr_run[SESS_ID_MAX];
    char *tr_spec_yaml;
    char ckpt_root[PATH_MAX];
    int have_state;       /* the trainer holds the state after trainer_next_step() steps */
    comm_t *comm;
    void *snap;           /* packed state before the last apply, for a rollback */
    size_t snap_len;
    int64_t snap_step;    /* -1: none */
    int64_t lease, committed;
    int paused, failed, draining;
    int loading;          /* between a plan switch and its agreed state */
    uint64_t failed_gen;
    int64_t failed_ms, last_ask_ms;
    int64_t ckpt_pending; /* step of a checkpoint being written (0: none) */
    float last_loss, tokens_per_s;
    sess_activity_t activity;
    int64_t status_step;
    char status_run[SESS_ID_MAX];
    uint64_t status_gen;
    char detail[256];
} daemon_t;

static int64_t s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int s_stopping(const daemon_t *d)
{
    return d->cfg.stop_flag && *d->cfg.stop_flag;
}

static int64_t s_done_steps(const daemon_t *d)
{
    return d->tr && d->have_state ? trainer_next_step(d->tr) : 0;
}

/* Posts the status the heartbeats carry, when it changed. */
static void s_status(daemon_t *d, sess_activity_t act, const char *fmt, ...)
{
    char detail[256] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    const char *run = d->plan ? d->plan->run_id : "";
    const uint64_t gen = d->plan ? d->plan->generation : 0;
    int64_t step = s_done_steps(d);
    /* While a plan loads, steps past its start are not (yet) trained under it: heartbeats
     * count as step reports, so never claim them for the new generation. */
    if (d->loading && d->plan && step > d->plan->start_step - 1)
        step = d->plan->start_step - 1;
    if (act == d->activity && step == d->status_step && gen == d->status_gen &&
        strcmp(run, d->status_run) == 0 && strcmp(detail, d->detail) == 0)
        return;
    if (act != d->activity)
        log_debug("activity %d -> %d%s%s", d->activity, act, detail[0] ? ": " : "", detail);
    d->activity = act;
    d->status_step = step;
    d->status_gen = gen;
    snprintf(d->status_run, sizeof d->status_run, "%s", run);
    snprintf(d->detail, sizeof d->detail, "%s", detail);
    sess_req_t *r = sess_req_new(SESS_REQ_STATUS, run, gen);
    if (r) {
        r->step = step;
        r->loss = d->last_loss;
        r->tokens_per_s = d->tokens_per_s;
        r->activity = act;
        snprintf(r->detail, sizeof r->detail, "%s", detail);
    }
    session_post(d->sess, &r);
}

static void s_ask_assignment(daemon_t *d)
{
    d->last_ask_ms = s_mono_ms();
    sess_req_t *r = sess_req_new(SESS_REQ_GET_ASSIGNMENT, d->plan ? d->plan->run_id : "",
                                 d->plan ? d->plan->generation : 0);
    session_post(d->sess, &r);
}

static void s_drop_comm(daemon_t *d)
{
    if (!d->comm)
        return;
    session_track_comm(d->sess, NULL, 0, 0);
    comm_destroy(&d->comm);
}

/* The assignment failed: say so and wait for the next plan. */
static void s_fail(daemon_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_fail(daemon_t *d, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_warn("assignment failed (generation %llu): %s",
             (unsigned long long)(d->plan ? d->plan->generation : 0), msg);
    s_drop_comm(d);
    d->failed = 1;
    d->failed_gen = d->plan ? d->plan->generation : 0;
    d->failed_ms = s_mono_ms();
    s_status(d, SESS_ACT_FAILED, "%s", msg);
    s_ask_assignment(d);
}

/* ---- checkpoints -------------------------------------------------------------------------- */

/* Reads the manifest of a committed checkpoint into the report. */
static shoal_err_t s_read_manifest(const char *dir, sess_req_t *r)
{
    char path[PATH_MAX];
    shoal_err_t rc = fsutil_path(path, sizeof path, "%s/manifest.json", dir);
    if (rc != SHOAL_OK)
        return rc;
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    json_t *files = root ? json_object_get(root, "files") : NULL;
    if (!json_is_array(files)) {
        json_decref(root);
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: no file list (%s)", path, jerr.text);
    }
    r->n_files = 0;
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        const char *sha = json_string_value(json_object_get(f, "sha256"));
        json_t *size = json_object_get(f, "size");
        if (!name || !sha || strlen(sha) != 64 || !json_is_integer(size) ||
            json_integer_value(size) < 0 || r->n_files >= SESS_MAX_FILES - 1) {
            json_decref(root);
            return shoal_fail(SHOAL_ERR_FORMAT, "%s: bad entry %zu", path, i);
        }
        sess_file_t *o = &r->files[r->n_files++];
        snprintf(o->name, sizeof o->name, "%s", name);
        snprintf(o->sha256, sizeof o->sha256, "%s", sha);
        o->size = (uint64_t)json_integer_value(size);
    }
    json_decref(root);
    /* The manifest itself: the coordinator records every file a holder serves. */
    uint8_t digest[SHA256_LEN];
    uint64_t size = 0;
    if ((rc = sha256_file(path, digest, &size)) != SHOAL_OK)
        return rc;
    sess_file_t *m = &r->files[r->n_files++];
    snprintf(m->name, sizeof m->name, "manifest.json");
    m->size = size;
    sha256_hex(digest, m->sha256);
    return SHOAL_OK;
}

/* Waits for the checkpoint being written (if any) and, when `report`, reports it once durable. */
static void s_finish_checkpoint_as(daemon_t *d, int report)
{
    if (!d->ckpt_pending || !d->tr)
        return;
    const int64_t step = d->ckpt_pending;
    d->ckpt_pending = 0;
    shoal_err_t rc = trainer_checkpoint_wait(d->tr);
    if (rc != SHOAL_OK) {
        log_error("checkpoint of step %lld failed: %s", (long long)step, shoal_errmsg());
        return;
    }
    if (!report)
        return;
    sess_req_t *r = sess_req_new(SESS_REQ_CKPT, d->plan ? d->plan->run_id : d->tr_run,
                                 d->plan ? d->plan->generation : 0);
    if (!r)
        return;
    r->step = step;
    if (d->plan) {
        r->replica = d->plan->replica;
        r->stage = d->plan->stage;
        r->ep_rank = d->plan->ep_rank;
    }
    if ((rc = trainer_checkpoint_path(d->tr, step, r->path, sizeof r->path)) != SHOAL_OK ||
        (rc = s_read_manifest(r->path, r)) != SHOAL_OK) {
        log_error("checkpoint of step %lld: %s", (long long)step, shoal_errmsg());
        free(r);
        return;
    }
    log_info("checkpoint of step %lld durable in %s", (long long)step, r->path);
    session_post(d->sess, &r);
}

static void s_finish_checkpoint(daemon_t *d)
{
    s_finish_checkpoint_as(d, 1);
}

/* A plan that starts right after a checkpoint step: the checkpoint commits only once every
 * cell of the current plan reported its shard, so write it if this worker lacks it (state
 * received from a peer) and report it under the new generation. */
static void s_checkpoint_boundary(daemon_t *d)
{
    const int64_t step = trainer_next_step(d->tr);
    if (step == 0 || !trainer_checkpoint_due(d->tr))
        return;
    char dir[PATH_MAX];
    struct stat st;
    if (trainer_checkpoint_path(d->tr, step, dir, sizeof dir) == SHOAL_OK && stat(dir, &st) == 0) {
        d->ckpt_pending = step; /* already durable: s_finish_checkpoint just reports it */
        s_finish_checkpoint(d);
        return;
    }
    if (trainer_checkpoint_async(d->tr) == SHOAL_OK)
        d->ckpt_pending = step;
    else
        log_error("checkpoint of step %lld not started: %s", (long long)step, shoal_errmsg());
}

/* ---- plans -------------------------------------------------------------------------------- */

static int s_id_ok(const char *id)
{
    if (!id[0] || id[0] == '.')
        return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

static void s_drop_trainer(daemon_t *d)
{
    if (d->tr) {
        s_finish_checkpoint(d);
        trainer_destroy(&d->tr);
    }
    free(d->tr_spec_yaml);
    d->tr_spec_yaml = NULL;
    d->tr_run[0] = 0;
    d->have_state = 0;
    d->snap_step = -1;
}

/* A trainer for the plan's run (kept across plans of the same run and spec). */
static shoal_err_t s_ensure_trainer(daemon_t *d, const sess_plan_t *p)
{
    if (d->tr && strcmp(d->tr_run, p->run_id) == 0 && d->tr_spec_yaml &&
        strcmp(d->tr_spec_yaml, p->spec_yaml) == 0)
        return SHOAL_OK;
    s_drop_trainer(d);
    if (!s_id_ok(p->run_id))
        return shoal_fail(SHOAL_ERR_INVALID, "run id '%s' is not a safe directory name",
                          p->run_id);
    char origin[128];
    snprintf(origin, sizeof origin, "run %s spec", p->run_id);
    shoal_err_t rc = runspec_load_string(p->spec_yaml, origin, d->spec);
    if (rc != SHOAL_OK)
        return rc;
    if (d->spec->checkpoint_dir[0] == '/')
        rc = fsutil_path(d->ckpt_root, sizeof d->ckpt_root, "%s", d->spec->checkpoint_dir);
    else
        rc = fsutil_path(d->ckpt_root, sizeof d->ckpt_root, "%s/runs/%s/%s", d->state_dir,
                         p->run_id, d->spec->checkpoint_dir);
    if (rc != SHOAL_OK || (rc = fsutil_mkdir_p(d->ckpt_root)) != SHOAL_OK)
        return rc;
    openblas_set_num_threads(d->cfg.threads > 0 ? d->cfg.threads : d->spec->threads);
    if ((rc = trainer_new(d->spec, d->ckpt_root, &d->tr)) != SHOAL_OK)
        return rc;
    d->tr_spec_yaml = strdup(p->spec_yaml);
    if (!d->tr_spec_yaml) {
        trainer_destroy(&d->tr);
        return shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    }
    snprintf(d->tr_run, sizeof d->tr_run, "%s", p->run_id);
    d->have_state = 0;
    d->snap_step = -1;
    log_info("run %s (%s): %d steps of %d x %d tokens, checkpoints in %s", p->run_id,
             p->run_name, d->spec->steps, d->spec->global_batch, d->spec->seq_len, d->ckpt_root);
    return SHOAL_OK;
}

/* Makes the trainer hold the state after start_step - 1 steps: kept, rolled back to the
 * snapshot, fresh (step 0), or loaded from a local checkpoint; then the ranks agree and one
 * holder broadcasts it to the ranks that lack it. */
static shoal_err_t s_load_state(daemon_t *d)
{
    const sess_plan_t *p = d->plan;
    const int64_t want = p->start_step - 1;
    shoal_err_t rc = SHOAL_OK;
    if (want > trainer_total_steps(d->tr))
        return shoal_fail(SHOAL_ERR_INVALID, "plan starts at step %lld of a %lld-step run",
                          (long long)p->start_step, (long long)trainer_total_steps(d->tr));
    if (p->source == SESS_SOURCE_INIT && want != 0)
        return shoal_fail(SHOAL_ERR_INVALID, "fresh initialisation but start_step %lld",
                          (long long)p->start_step);
    int have = d->have_state && trainer_next_step(d->tr) == want;
    if (!have && d->snap_step == want && trainer_state_unpack(d->tr, d->snap, d->snap_len) == SHOAL_OK) {
        log_info("rolled back to the state after step %lld", (long long)want);
        d->have_state = have = 1;
    }
    if (!have && (want == 0 || p->source == SESS_SOURCE_INIT)) {
        trainer_init_fresh(d->tr);
        d->have_state = have = 1;
    }
    if (!have) {
        /* A checkpoint on this worker: the plan's path, else ours of that step. */
        char dir[SESS_TEXT_MAX];
        struct stat st;
        if (p->source == SESS_SOURCE_CHECKPOINT && p->ckpt_path[0] == '/' &&
            stat(p->ckpt_path, &st) == 0)
            snprintf(dir, sizeof dir, "%s", p->ckpt_path);
        else if (trainer_checkpoint_path(d->tr, want, dir, sizeof dir) != SHOAL_OK)
            dir[0] = 0;
        if (dir[0] && stat(dir, &st) == 0) {
            d->have_state = 0;
            if (trainer_load_checkpoint(d->tr, dir) == SHOAL_OK && trainer_next_step(d->tr) == want) {
                log_info("loaded checkpoint %s", dir);
                d->have_state = have = 1;
            } else {
                log_warn("checkpoint %s unusable: %s", dir, shoal_errmsg());
            }
        }
    }
    d->snap_step = -1;
    if (p->nranks == 1) {
        if (!have)
            return shoal_fail(SHOAL_ERR_NOTFOUND, "no state after step %lld here (source %d)",
                              (long long)want, p->source);
        return SHOAL_OK;
    }
    /* Who holds it? One small all-reduce, then at most one broadcast. */
    float *holds = calloc(p->nranks, sizeof(float));
    void *buf = NULL;
    if (!holds)
        return shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    holds[p->rank] = have ? 1.0f : 0.0f;
    session_track_comm(d->sess, d->comm, p->generation, p->start_step);
    rc = comm_allreduce_sum_f32(d->comm, holds, p->nranks, (uint64_t)want);
    if (rc != SHOAL_OK) {
        rc = shoal_fail_context(rc, "agreeing on the state after step %lld", (long long)want);
        goto out;
    }
    int root = -1, missing = 0;
    if (p->source == SESS_SOURCE_PEER && holds[p->source_rank] > 0.5f)
        root = (int)p->source_rank;
    for (uint32_t r = 0; r < p->nranks; r++) {
        if (holds[r] > 0.5f && root < 0)
            root = (int)r;
        missing += holds[r] < 0.5f;
    }
    if (root < 0) {
        rc = shoal_fail(SHOAL_ERR_NOTFOUND, "no rank holds the state after step %lld",
                        (long long)want);
        goto out;
    }
    if (missing) {
        const size_t n = trainer_state_bytes(d->tr);
        if (!(buf = malloc(n))) {
            rc = shoal_fail(SHOAL_ERR_NOMEM, "out of memory for a %zu-byte state", n);
            goto out;
        }
        if (have)
            trainer_state_pack(d->tr, buf);
        log_info("state after step %lld: rank %d sends it to %d rank(s) (%.1f MiB)",
                 (long long)want, root, missing, (double)n / (1 << 20));
        rc = comm_broadcast(d->comm, buf, n, root, (uint64_t)want);
        if (rc != SHOAL_OK) {
            rc = shoal_fail_context(rc, "receiving the state after step %lld", (long long)want);
            goto out;
        }
        if (!have) {
            if ((rc = trainer_state_unpack(d->tr, buf, n)) != SHOAL_OK)
                goto out;
            if (trainer_next_step(d->tr) != want) {
                rc = shoal_fail(SHOAL_ERR_FORMAT, "rank %d sent the state after step %lld, not "
                                "%lld", root, (long long)trainer_next_step(d->tr), (long long)want);
                goto out;
            }
            d->have_state = 1;
        }
    }
out:
    session_track_comm(d->sess, d->comm, p->generation, 0);
    free(buf);
    free(holds);
    return rc;
}

static void s_pump(daemon_t *d, int timeout_ms);

/* Applies `p` (owned) at a step boundary. */
static void s_switch_plan(daemon_t *d, sess_plan_t *p)
{
    s_drop_comm(d);
    /* Not reported under the old generation (the coordinator moved on): the new plan reports
     * the checkpoint of its boundary (s_checkpoint_boundary). */
    s_finish_checkpoint_as(d, 0);
    const int same_run = d->plan && strcmp(d->plan->run_id, p->run_id) == 0;
    sess_plan_destroy(&d->plan);
    d->plan = p;
    d->failed = d->draining = 0;
    d->loading = 1;
    d->lease = p->lease;
    d->committed = p->start_step - 1;
    if (!same_run)
        d->paused = 0;
    log_info("plan: run %s generation %llu, rank %u of %u, start step %lld, source %s",
             p->run_id, (unsigned long long)p->generation, p->rank, p->nranks,
             (long long)p->start_step,
             p->source == SESS_SOURCE_INIT ? "init"
             : p->source == SESS_SOURCE_CHECKPOINT ? "checkpoint" : "peer");
    s_status(d, SESS_ACT_LOADING, NULL);
    shoal_err_t rc;
    if (p->pp != 1 || p->ep != 1 || p->dp != p->nranks) {
        s_fail(d, "this worker trains data-parallel cells only (plan pp %u ep %u)", p->pp, p->ep);
        return;
    }
    if ((rc = s_ensure_trainer(d, p)) != SHOAL_OK) {
        s_fail(d, "%s", shoal_errmsg());
        return;
    }
    const comm_config_t cc = {.rank = (int)p->rank,
                              .nranks = (int)p->nranks,
                              .endpoints = (const char *const *)p->endpoints,
                              .generation = p->generation,
                              .timeout_ms = d->cfg.comm_timeout_ms,
                              .chunk_bytes = 0};
    if ((rc = comm_new(d->listener, &cc, &d->comm)) != SHOAL_OK) {
        s_fail(d, "comm: %s", shoal_errmsg());
        return;
    }
    rc = s_load_state(d);
    d->loading = 0;
    if (rc == SHOAL_ERR_ABORTED) {
        /* An even newer plan (or a stop) overtook this one while it loaded. */
        s_drop_comm(d);
        s_pump(d, 0);
        if (d->pending || !d->plan || s_stopping(d))
            return;
    }
    if (rc != SHOAL_OK) {
        s_fail(d, "%s", shoal_errmsg());
        return;
    }
    s_checkpoint_boundary(d);
    s_status(d, SESS_ACT_TRAINING, NULL);
}

/* ---- events ------------------------------------------------------------------------------- */

static void s_stop_run(daemon_t *d, const char *why)
{
    log_info("run %s: stop (%s)", d->plan ? d->plan->run_id : d->tr_run, why);
    s_drop_comm(d);
    s_finish_checkpoint_as(d, 0); /* durable on disk; the coordinator no longer wants it */
    sess_plan_destroy(&d->plan);
    sess_plan_destroy(&d->pending);
    /* The trainer and its state stay until another run needs the memory: a later plan of the
     * same run (undrain, a cell given up and re-planned) may start right where it is. */
    d->paused = d->failed = d->draining = 0;
    s_status(d, SESS_ACT_IDLE, NULL);
}

static void s_on_event(daemon_t *d, sess_event_t *ev)
{
    const int cur = d->plan && strcmp(ev->run_id, d->plan->run_id) == 0;
    switch (ev->kind) {
    case SESS_EV_PLAN: {
        sess_plan_t *p = ev->plan;
        const uint64_t have_gen = d->pending && strcmp(d->pending->run_id, p->run_id) == 0
                                      ? d->pending->generation
                                  : d->plan && strcmp(d->plan->run_id, p->run_id) == 0
                                      ? d->plan->generation
                                      : 0;
        if (d->failed && p->generation == d->failed_gen && d->plan &&
            strcmp(d->plan->run_id, p->run_id) == 0) {
            if (s_mono_ms() - d->failed_ms < S_SAME_GEN_RETRY_MS)
                break; /* wait for a newer generation */
            log_warn("retrying generation %llu: the coordinator made no newer plan",
                     (unsigned long long)p->generation);
        } else if (p->generation < have_gen) {
            break;
        } else if (p->generation == have_gen && !d->failed) {
            if (d->plan && d->plan->generation == p->generation && p->lease > d->lease)
                d->lease = p->lease;
            break; /* a repeat */
        }
        sess_plan_destroy(&d->pending);
        d->pending = p;
        ev->plan = NULL;
        break;
    }
    case SESS_EV_LEASE:
        if (cur && ev->generation == d->plan->generation) {
            if (ev->lease > d->lease)
                d->lease = ev->lease;
            if (ev->committed > d->committed)
                d->committed = ev->committed;
        }
        break;
    case SESS_EV_CONTROL:
        if (!cur && ev->control != SESS_CTL_DRAIN)
            break;
        switch (ev->control) {
        case SESS_CTL_PAUSE:
            if (!d->paused)
                log_info("run %s paused", d->plan->run_id);
            d->paused = 1;
            break;
        case SESS_CTL_RESUME:
            if (d->paused)
                log_info("run %s resumed", d->plan->run_id);
            d->paused = 0;
            break;
        case SESS_CTL_STOP:
            s_stop_run(d, ev->reason);
            break;
        case SESS_CTL_DRAIN:
            /* The coordinator freezes the lease and re-plans without this worker at that
             * boundary (then says stop): leaving earlier would stall the peers' collectives. */
            if (d->plan && !d->draining) {
                log_info("draining: training run %s to the lease, then leaving its plan",
                         d->plan->run_id);
                d->draining = 1;
            }
            break;
        }
        break;
    case SESS_EV_LEFT:
        break;
    }
    sess_event_destroy(&ev);
}

/* Takes every waiting event; waits up to timeout_ms for the first. */
static void s_pump(daemon_t *d, int timeout_ms)
{
    sess_event_t *ev = NULL;
    if (session_wait(d->sess, timeout_ms, &ev) != SHOAL_OK)
        return;
    s_on_event(d, ev);
    while (session_wait(d->sess, 0, &ev) == SHOAL_OK)
        s_on_event(d, ev);
}

/* Whether the old plan may keep training toward the pending plan's start step. */
static int s_keep_old_plan(const daemon_t *d)
{
    if (!d->plan || d->failed || !d->comm || !d->have_state ||
        strcmp(d->plan->run_id, d->pending->run_id) != 0)
        return 0;
    const int64_t next = trainer_next_step(d->tr) + 1;
    return next < d->pending->start_step && next <= d->lease &&
           next <= trainer_total_steps(d->tr);
}

/* Whether the current plan can run its next step now. A pause takes effect at the lease, which
 * the coordinator freezes while the run is paused: every cell stops at that same boundary.
 * Stopping at "my" next boundary instead would leave a peer that already started the next
 * step blocked in its collective until the comm timeout. */
static int s_trainable(const daemon_t *d)
{
    return d->plan && !d->failed && d->comm && d->have_state &&
           trainer_next_step(d->tr) < trainer_total_steps(d->tr) &&
           trainer_next_step(d->tr) + 1 <= d->lease;
}

/* ---- a step ------------------------------------------------------------------------------- */

static void s_step(daemon_t *d)
{
    const sess_plan_t *p = d->plan;
    const int64_t k = trainer_next_step(d->tr) + 1;
    const sess_activity_t act = d->draining ? SESS_ACT_DRAINING : SESS_ACT_TRAINING;
    s_status(d, act, NULL);
    shoal_err_t rc = trainer_compute(d->tr, (int)p->rank, (int)p->nranks);
    if (rc != SHOAL_OK) {
        s_fail(d, "step %lld: %s", (long long)k, shoal_errmsg());
        return;
    }
    size_t n = 0;
    float *buf = trainer_reduce_buffer(d->tr, &n);
    session_track_comm(d->sess, d->comm, p->generation, k);
    rc = comm_allreduce_sum_f32(d->comm, buf, n, (uint64_t)k);
    session_track_comm(d->sess, d->comm, p->generation, 0);
    if (rc == SHOAL_ERR_ABORTED) {
        log_info("step %lld abandoned: its collective was aborted", (long long)k);
        s_drop_comm(d);
        s_pump(d, 0); /* the newer plan (or the stop) that caused it */
        if (!d->pending && d->plan && !s_stopping(d))
            s_fail(d, "step %lld: collective aborted", (long long)k);
        return;
    }
    if (rc != SHOAL_OK) {
        s_fail(d, "step %lld: all-reduce: %s", (long long)k, shoal_errmsg());
        return;
    }
    const size_t sn = trainer_state_bytes(d->tr);
    if (!d->snap || d->snap_len != sn) {
        free(d->snap);
        d->snap = malloc(sn);
        d->snap_len = d->snap ? sn : 0;
    }
    if (d->snap) {
        trainer_state_pack(d->tr, d->snap);
        d->snap_step = k - 1;
    }
    trainer_step_info_t info;
    if ((rc = trainer_apply(d->tr, &info)) != SHOAL_OK) {
        s_fail(d, "step %lld: %s", (long long)k, shoal_errmsg());
        return;
    }
    d->last_loss = (float)info.loss;
    d->tokens_per_s = info.step_seconds > 0 ? (float)(info.tokens / info.step_seconds) : 0;
    log_info("step %lld/%lld loss %.4f gnorm %.3f %.0f tok/s (generation %llu, rank %u/%u)",
             (long long)k, (long long)info.steps, info.loss, info.grad_norm, d->tokens_per_s,
             (unsigned long long)p->generation, p->rank, p->nranks);
    if (d->metrics) {
        fprintf(d->metrics, "{\"run\":\"%s\",\"step\":%lld,\"loss\":%.9g,\"lr\":%.9g,"
                "\"grad_norm\":%.9g,\"tokens_per_s\":%.1f,\"step_seconds\":%.6f,"
                "\"generation\":%llu,\"rank\":%u,\"nranks\":%u}\n", p->run_id, (long long)k,
                info.loss, info.lr, info.grad_norm, d->tokens_per_s, info.step_seconds,
                (unsigned long long)p->generation, p->rank, p->nranks);
        fflush(d->metrics);
    }
    sess_req_t *r = sess_req_new(SESS_REQ_STEP, p->run_id, p->generation);
    if (r) {
        r->step = k;
        r->loss = (float)info.loss;
        r->tokens = (uint64_t)info.tokens;
        r->duration_s = (float)info.step_seconds;
        r->grad_norm = (float)info.grad_norm;
    }
    session_post(d->sess, &r);
    s_finish_checkpoint(d);
    if (trainer_checkpoint_due(d->tr)) {
        if ((rc = trainer_checkpoint_async(d->tr)) != SHOAL_OK)
            log_error("checkpoint of step %lld not started: %s", (long long)k, shoal_errmsg());
        else
            d->ckpt_pending = k;
    }
    s_status(d, act, NULL);
}

/* ---- setup -------------------------------------------------------------------------------- */

static shoal_err_t s_setup(daemon_t *d, const daemon_config_t *cfg, char *endpoint_buf,
                           size_t endpoint_cap)
{
    d->cfg = *cfg;
    if (d->cfg.grace_seconds <= 0)
        d->cfg.grace_seconds = 10.0;
    if (d->cfg.comm_timeout_ms <= 0)
        d->cfg.comm_timeout_ms = 30000;
    d->lock_fd = -1;
    d->snap_step = -1;
    d->activity = (sess_activity_t)-1;
    if (!cfg->coordinator || !cfg->coordinator[0])
        return shoal_fail(SHOAL_ERR_INVALID, "--coordinator is required");
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    if (cfg->name)
        snprintf(d->name, sizeof d->name, "%s", cfg->name);
    else
        snprintf(d->name, sizeof d->name, "%.40s-%ld", host, (long)getpid());
    if (!s_id_ok(d->name))
        return shoal_fail(SHOAL_ERR_INVALID, "--name '%s': use 1-64 characters of "
                          "[A-Za-z0-9._-], not starting with '.'", d->name);
    log_set_component(d->name); /* before the session thread starts: it logs too */
    char dir[PATH_MAX];
    const char *env_dir = getenv("STATE_DIRECTORY");
    shoal_err_t rc;
    if (cfg->state_dir)
        rc = fsutil_path(dir, sizeof dir, "%s", cfg->state_dir);
    else if (env_dir && env_dir[0])
        rc = fsutil_path(dir, sizeof dir, "%s", env_dir);
    else
        rc = fsutil_path(dir, sizeof dir, "/var/lib/shoal/worker-%s", d->name);
    if (rc != SHOAL_OK || (rc = fsutil_mkdir_p(dir)) != SHOAL_OK)
        return rc;
    if (!realpath(dir, d->state_dir))
        return shoal_fail(SHOAL_ERR_IO, "state dir %s: %s", dir, strerror(errno));
    char lock_path[PATH_MAX + 16];
    snprintf(lock_path, sizeof lock_path, "%s/lock", d->state_dir);
    d->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (d->lock_fd < 0)
        return shoal_fail(SHOAL_ERR_IO, "%s: %s", lock_path, strerror(errno));
    if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return shoal_fail(SHOAL_ERR_STATE, "state dir %s is in use by another worker",
                          d->state_dir);
    if (cfg->metrics_path && !(d->metrics = fopen(cfg->metrics_path, "a")))
        return shoal_fail(SHOAL_ERR_IO, "cannot open %s for appending: %s", cfg->metrics_path,
                          strerror(errno));
    if (!(d->spec = calloc(1, sizeof *d->spec)))
        return shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    const char *bind = cfg->data_endpoint;
    if (!bind) {
        const char *c = cfg->coordinator;
        const int local = strncmp(c, "ipc://", 6) == 0 || strncmp(c, "inproc://", 9) == 0 ||
                          strstr(c, "://127.") || strstr(c, "://localhost");
        bind = local ? "tcp://127.0.0.1:0" : "tcp://*:0";
    }
    rc = comm_listener_new_advertise(bind, cfg->advertise_host ? cfg->advertise_host : host,
                                     &d->listener);
    if (rc != SHOAL_OK)
        return shoal_fail_context(rc, "data endpoint %s", bind);
    snprintf(endpoint_buf, endpoint_cap, "%s", comm_listener_endpoint(d->listener));
    if (!(d->zctx = zmq_ctx_new()))
        return shoal_fail(SHOAL_ERR_IO, "zmq context: %s", zmq_strerror(errno));
    return SHOAL_OK;
}

static void s_teardown(daemon_t *d)
{
    s_drop_comm(d);
    s_drop_trainer(d);
    sess_plan_destroy(&d->plan);
    sess_plan_destroy(&d->pending);
    session_destroy(&d->sess);
    comm_listener_destroy(&d->listener);
    if (d->zctx)
        zmq_ctx_term(d->zctx);
    if (d->metrics)
        fclose(d->metrics);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
    free(d->snap);
    free(d->spec);
}

/* Leaves: the step is finished or abandoned; report what is durable, say goodbye. */
static void s_leave(daemon_t *d)
{
    log_info("leaving at step %lld", (long long)s_done_steps(d));
    s_drop_comm(d);
    s_finish_checkpoint(d);
    s_status(d, SESS_ACT_DRAINING, "leaving");
    sess_req_t *r = sess_req_new(SESS_REQ_LEAVE, d->plan ? d->plan->run_id : "",
                                 d->plan ? d->plan->generation : 0);
    if (r)
        snprintf(r->detail, sizeof r->detail, "stop requested (SIGTERM)");
    session_post(d->sess, &r);
    const int64_t until = s_mono_ms() + S_LEFT_WAIT_MS;
    while (s_mono_ms() < until) {
        sess_event_t *ev = NULL;
        if (session_wait(d->sess, 50, &ev) != SHOAL_OK)
            continue;
        const int left = ev->kind == SESS_EV_LEFT;
        sess_event_destroy(&ev);
        if (left)
            break;
    }
}

shoal_err_t daemon_run(const daemon_config_t *cfg)
{
    daemon_t *d = calloc(1, sizeof *d);
    if (!d)
        return shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    char endpoint[512];
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    shoal_err_t rc = s_setup(d, cfg, endpoint, sizeof endpoint);
    if (rc != SHOAL_OK)
        goto out;
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    /* The id this worker had before a restart (COORDINATOR.md: sent as prev_id). */
    char id_file[PATH_MAX + 16], prev_id[SESS_ID_MAX] = "";
    snprintf(id_file, sizeof id_file, "%s/worker_id", d->state_dir);
    uint8_t *idbuf = NULL;
    size_t idlen = 0;
    if (fsutil_read_file(id_file, &idbuf, &idlen) == SHOAL_OK && idlen > 0 &&
        idlen < sizeof prev_id) {
        memcpy(prev_id, idbuf, idlen);
        prev_id[idlen] = 0;
        if (!s_id_ok(prev_id))
            prev_id[0] = 0;
    }
    free(idbuf);
    shoal_err_clear();
    const session_config_t sc = {
        .coordinator = cfg->coordinator,
        .name = d->name,
        .host = host,
        .device = "cpu",
        .institution = cfg->institution,
        .version = SHOAL_VERSION,
        .data_endpoint = endpoint,
        .memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0,
        .stop_flag = cfg->stop_flag,
        .grace_seconds = d->cfg.grace_seconds,
        .notify = getenv("NOTIFY_SOCKET") != NULL,
        .prev_id = prev_id,
        .id_file = id_file,
    };
    if ((rc = session_new(d->zctx, &sc, &d->sess)) != SHOAL_OK)
        goto out;
    log_info("worker %s: state %s, data endpoint %s, coordinator %s", d->name, d->state_dir,
             endpoint, cfg->coordinator);
    s_status(d, SESS_ACT_IDLE, NULL);
    while (!s_stopping(d)) {
        s_pump(d, s_trainable(d) || d->pending ? 0 : S_IDLE_WAIT_MS);
        if (s_stopping(d))
            break;
        if (d->pending && !s_keep_old_plan(d)) {
            sess_plan_t *p = d->pending;
            d->pending = NULL;
            s_switch_plan(d, p);
            continue;
        }
        if (s_trainable(d)) {
            s_step(d);
            continue;
        }
        /* Nothing to train now: say why, finish a checkpoint, ask again if failed. */
        if (d->failed) {
            if (s_mono_ms() - d->last_ask_ms >= S_FAILED_ASK_MS)
                s_ask_assignment(d);
        } else if (d->plan && d->tr) {
            s_finish_checkpoint(d);
            if (trainer_next_step(d->tr) >= trainer_total_steps(d->tr))
                s_status(d, SESS_ACT_IDLE, "run complete");
            else if (d->paused)
                s_status(d, SESS_ACT_WAITING, "paused");
            else
                s_status(d, SESS_ACT_WAITING, "at the lease (step %lld)", (long long)d->lease);
        } else if (!d->plan) {
            s_status(d, SESS_ACT_IDLE, NULL);
        }
    }
    s_leave(d);
    rc = SHOAL_OK;
out:
    s_teardown(d);
    free(d);
    return rc;
}
