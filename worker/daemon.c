/* daemon.c: the worker daemon's training thread: its loop (events from the session thread,
 * the step compute -> all-reduce -> apply within the lease, status and step reports) and its
 * setup and teardown. Applying a plan is daemon_plan.c; the state directory is statedir.c;
 * the session with the coordinator is session.c. */
#include "daemon.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "daemon_config.h"
#include "daemon_int.h"
#include "fsutil.h"
#include "kgemm.h"
#include "log.h"
#include "name.h"
#include "prefault.h"
#include "shoal_version.h"

#define S_IDLE_WAIT_MS 100
#define S_FAILED_ASK_MS 1000      /* GetAssignment again while failed */
#define S_SAME_GEN_RETRY_MS 10000 /* last resort: retry a failed generation the coordinator keeps */
#define S_LEFT_WAIT_MS 3000

int daemon_stopping(const daemon_t *d)
{
    return d->cfg.stop_flag && *d->cfg.stop_flag;
}

static int64_t s_done_steps(const daemon_t *d)
{
    return d->tr && d->have_state ? trainer_next_step(d->tr) : 0;
}

void daemon_status(daemon_t *d, sess_activity_t act, const char *fmt, ...)
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
    daemon_metrics_publish(d);
    daemon_report_bad_frames(d);
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
    d->last_ask_ms = clock_mono_ms();
    sess_req_t *r = sess_req_new(SESS_REQ_GET_ASSIGNMENT, d->plan ? d->plan->run_id : "",
                                 d->plan ? d->plan->generation : 0);
    session_post(d->sess, &r);
}

void daemon_drop_comm(daemon_t *d)
{
    if (!d->have_comms)
        return;
    session_track_comms(d->sess, NULL, 0, 0);
    cell_comms_destroy(&d->comms);
    d->have_comms = 0;
}

/* Checkpoint copies (Replicate orders) wait from a new plan's arrival until this worker trains
 * under it or has nothing to train: a recovery needs the CPU and the disk, and a death orders
 * copies of the dead worker's shards to the very workers that take over its cell (the
 * coordinator pushes the plan first). Copies started before the plan came run on. */
static void s_hold_copies(daemon_t *d, int hold)
{
    if (!d->repl || d->copies_held == hold)
        return;
    d->copies_held = hold;
    ckpt_replicator_hold(d->repl, hold);
}

static void s_vfail(daemon_t *d, sess_activity_t act, const char *fmt, va_list ap)
{
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    log_warn("assignment failed (generation %llu): %s",
             (unsigned long long)(d->plan ? d->plan->generation : 0), msg);
    daemon_drop_comm(d);
    s_hold_copies(d, 0);
    d->failed = 1;
    d->failed_gen = d->plan ? d->plan->generation : 0;
    d->failed_ms = clock_mono_ms();
    daemon_status(d, act, "%s", msg);
    s_ask_assignment(d);
}

void daemon_fail(daemon_t *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_vfail(d, SESS_ACT_FAILED, fmt, ap);
    va_end(ap);
}

void daemon_fail_as(daemon_t *d, sess_activity_t act, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_vfail(d, act, fmt, ap);
    va_end(ap);
}

/* ---- checkpoints -------------------------------------------------------------------------- */

void daemon_ckpt_finish(daemon_t *d, int report)
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
        (rc = statedir_ckpt_report(r->path, r)) != SHOAL_OK) {
        log_error("checkpoint of step %lld: %s", (long long)step, shoal_errmsg());
        free(r);
        return;
    }
    log_info("checkpoint of step %lld durable in %s", (long long)step, r->path);
    session_post(d->sess, &r);
}

/* ---- events ------------------------------------------------------------------------------- */

static void s_stop_run(daemon_t *d, const char *why)
{
    log_info("run %s: stop (%s)", d->plan ? d->plan->run_id : d->tr_run, why);
    daemon_drop_comm(d);
    daemon_ckpt_finish(d, 0); /* durable on disk; the coordinator no longer wants it */
    sess_plan_destroy(&d->plan);
    sess_plan_destroy(&d->pending);
    s_hold_copies(d, 0);
    /* The trainer and its state stay until another run needs the memory: a later plan of the
     * same run (undrain, a cell given up and re-planned) may start right where it is. */
    d->paused = d->failed = d->draining = 0;
    daemon_status(d, SESS_ACT_IDLE, NULL);
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
            if (clock_mono_ms() - d->failed_ms < S_SAME_GEN_RETRY_MS)
                break; /* wait for a newer generation */
            if (d->comms_gen == p->generation)
                break; /* its comms were made once: the listener refuses a generation twice, so
                        * only a newer plan (the coordinator re-plans a failure) can help */
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
        s_hold_copies(d, 1); /* before the Replicate orders that follow it in this pump */
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
            if (ev->handover_to[0]) /* the old plan's comms are gone: the state is still here */
                (void)daemon_handover_give(d, ev->handover_to, ev->handover_to_key,
                                           ev->handover_step, ev->handover_gen);
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
    case SESS_EV_REPLICATE:
        daemon_replicas_order(d, ev);
        break;
    }
    sess_event_destroy(&ev);
}

void daemon_pump(daemon_t *d, int timeout_ms)
{
    sess_event_t *ev = NULL;
    daemon_replicas_poll(d); /* copies made in the background: confirm them */
    if (session_wait(d->sess, timeout_ms, &ev) != SHOAL_OK)
        return;
    s_on_event(d, ev);
    while (session_wait(d->sess, 0, &ev) == SHOAL_OK)
        s_on_event(d, ev);
}

/* Whether the old plan may keep training toward the pending plan's start step. */
static int s_keep_old_plan(const daemon_t *d)
{
    if (!d->plan || d->failed || !d->have_comms || !d->have_state ||
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
    return d->plan && !d->failed && d->have_comms && d->have_state &&
           trainer_next_step(d->tr) < trainer_total_steps(d->tr) &&
           trainer_next_step(d->tr) + 1 <= d->lease;
}

/* SIGTERM while holding a cell of a run not yet complete: ask the coordinator for a drain
 * (Leave{drain_first}, again every second until its Drain arrives), train to the boundary, hand
 * the cell over when the STOP that ends the plan says to whom, then leave. When the grace runs
 * out first (or the plan failed) the worker leaves anyway and the death path applies. */
static int s_handing_over(daemon_t *d)
{
    if (!daemon_stopping(d) || !d->plan || !d->tr || !d->have_state || d->failed ||
        session_grace_expired(d->sess) ||
        trainer_next_step(d->tr) >= trainer_total_steps(d->tr))
        return 0;
    const int64_t now = clock_mono_ms();
    if (!d->draining && now - d->handover_ask_ms >= 1000) {
        d->handover_ask_ms = now;
        sess_req_t *r = sess_req_new(SESS_REQ_LEAVE_DRAIN, d->plan->run_id, d->plan->generation);
        if (r)
            snprintf(r->detail, sizeof r->detail, "stop requested (SIGTERM): handing over");
        session_post(d->sess, &r);
    }
    return 1;
}

/* ---- a step ------------------------------------------------------------------------------- */

void *daemon_state_buffer(daemon_t *d)
{
    const size_t n = trainer_state_bytes(d->tr);
    if (!d->snap || d->snap_len != n) {
        free(d->snap);
        d->snap = malloc(n);
        d->snap_len = d->snap ? n : 0;
        d->snap_step = -1;
        prefault(d->snap, d->snap_len); /* written in full by its first use */
    }
    return d->snap;
}

/* The StepReport request of the step just applied; with the stage's expert loads when this cell
 * is replica 0, ep rank 0 of its stage: after the step's reduce every cell of a stage holds the
 * same whole-batch counts, so one report per stage carries them (ops/CAPACITY.md). */
static sess_req_t *s_step_request(daemon_t *d, const sess_plan_t *p)
{
    const float *counts = NULL;
    int first = 0, n_experts = 0;
    const int n_layers = p->replica == 0 && p->ep_rank == 0
                             ? trainer_expert_counts(d->tr, &counts, &first, &n_experts)
                             : 0;
    if (n_layers <= 0 || n_experts <= 0)
        return sess_req_new(SESS_REQ_STEP, p->run_id, p->generation);
    sess_req_t *r =
        sess_req_new_step(p->run_id, p->generation, (uint32_t)n_layers, (uint32_t)n_experts);
    if (!r)
        return NULL;
    r->first_expert_layer = (uint32_t)first;
    for (size_t i = 0; i < (size_t)n_layers * (size_t)n_experts; i++)
        r->expert_counts[i] = counts[i] > 0 ? (uint64_t)llroundf(counts[i]) : 0;
    return r;
}

static void s_step(daemon_t *d)
{
    const sess_plan_t *p = d->plan;
    const int64_t k = trainer_next_step(d->tr) + 1;
    const sess_activity_t act = d->draining ? SESS_ACT_DRAINING : SESS_ACT_TRAINING;
    daemon_status(d, act, NULL);
    /* the state before this step, for a rollback if the step's commit never comes */
    if (daemon_state_buffer(d)) {
        trainer_state_pack(d->tr, d->snap);
        d->snap_step = k - 1;
    }
    trainer_step_info_t info;
    /* checkpoint copies made meanwhile on the replicator thread (the metric shows their cost) */
    const int copying = d->repl ? ckpt_replicator_busy(d->repl) : 0;
    session_track_comms(d->sess, &d->comms, p->generation, k);
    shoal_err_t rc = trainer_step(d->tr, &d->comms.g, &info);
    session_track_comms(d->sess, &d->comms, p->generation, 0);
    if (rc == SHOAL_ERR_ABORTED) {
        log_info("step %lld abandoned: its collective was aborted", (long long)k);
        daemon_drop_comm(d);
        daemon_pump(d, 0); /* the newer plan (or the stop) that caused it */
        if (!d->pending && d->plan && !daemon_stopping(d))
            daemon_fail(d, "step %lld: collective aborted", (long long)k);
        return;
    }
    if (rc != SHOAL_OK) {
        daemon_fail(d, "step %lld: %s", (long long)k, shoal_errmsg());
        return;
    }
    d->last_loss = (float)info.loss;
    d->tokens_per_s = info.step_seconds > 0 ? (float)(info.tokens / info.step_seconds) : 0;
    d->last_step_s = info.step_seconds;
    d->last_comm_s = info.comm_seconds;
    d->steps_trained++;
    log_info("step %lld/%lld loss %.4f gnorm %.3f %.0f tok/s, %.0f%% in comm (generation %llu, "
             "rank %u/%u)",
             (long long)k, (long long)info.steps, info.loss, info.grad_norm, d->tokens_per_s,
             info.step_seconds > 0 ? 100.0 * info.comm_seconds / info.step_seconds : 0.0,
             (unsigned long long)p->generation, p->rank, p->nranks);
    if (d->metrics) {
        fprintf(d->metrics, "{\"run\":\"%s\",\"step\":%lld,\"loss\":%.9g,\"lr\":%.9g,"
                "\"grad_norm\":%.9g,\"tokens_per_s\":%.1f,\"step_seconds\":%.6f,"
                "\"comm_seconds\":%.6f,\"copies_in_flight\":%d,"
                "\"generation\":%llu,\"rank\":%u,\"nranks\":%u}\n", p->run_id, (long long)k,
                info.loss, info.lr, info.grad_norm, d->tokens_per_s, info.step_seconds,
                info.comm_seconds, copying,
                (unsigned long long)p->generation, p->rank, p->nranks);
        fflush(d->metrics);
    }
    sess_req_t *r = s_step_request(d, p);
    if (r) {
        r->step = k;
        r->loss = (float)info.loss;
        r->tokens = (uint64_t)info.tokens;
        r->duration_s = (float)info.step_seconds;
        r->grad_norm = (float)info.grad_norm;
        r->comm_seconds = (float)info.comm_seconds;
        r->rejected_replicas = info.rejected_replicas;
        snprintf(r->reject_detail, sizeof r->reject_detail, "%s", info.reject_why);
    }
    session_post(d->sess, &r);
    if (!d->pending)
        s_hold_copies(d, 0);
    daemon_ckpt_finish(d, 1);
    if (trainer_checkpoint_due(d->tr)) {
        if ((rc = trainer_checkpoint_async(d->tr)) != SHOAL_OK)
            log_error("checkpoint of step %lld not started: %s", (long long)k, shoal_errmsg());
        else
            d->ckpt_pending = k;
    }
    daemon_status(d, act, NULL);
}

/* ---- setup -------------------------------------------------------------------------------- */

/* CURVE keys from cfg->keys_dir; without them, TCP needs cfg->insecure (warned about). */
static shoal_err_t s_keys(daemon_t *d, const daemon_config_t *cfg)
{
    if (!cfg->keys_dir || !cfg->keys_dir[0]) {
        if (!cfg->insecure && strncmp(cfg->coordinator, "tcp://", 6) == 0)
            return shoal_fail(SHOAL_ERR_INVALID,
                              "the coordinator %s is TCP: give --keys DIR (key.secret, "
                              "key.public, coordinator.public; ops/SECURITY.md) or --insecure",
                              cfg->coordinator);
        if (cfg->insecure)
            log_warn("--insecure: plaintext TCP to the coordinator and the data-plane peers");
        return SHOAL_OK;
    }
    char path[4096];
    shoal_err_t rc = zsec_keys_load(cfg->keys_dir, &d->keys);
    if (rc == SHOAL_OK)
        rc = fsutil_path(path, sizeof path, "%s/coordinator.public", cfg->keys_dir);
    if (rc == SHOAL_OK)
        rc = zsec_public_load(path, d->coordinator_key);
    if (rc != SHOAL_OK)
        return shoal_fail_context(rc, "--keys %s", cfg->keys_dir);
    d->curve = 1;
    log_info("CURVE on, public key %s", d->keys.public_key);
    return SHOAL_OK;
}

static shoal_err_t s_setup(daemon_t *d, const daemon_config_t *cfg, char *endpoint_buf,
                           size_t endpoint_cap)
{
    d->cfg = *cfg;
    daemon_config_t dflt;
    daemon_config_defaults(&dflt); /* unset (0) settings of a caller that built cfg by hand */
    if (d->cfg.grace_seconds <= 0)
        d->cfg.grace_seconds = dflt.grace_seconds;
    if (d->cfg.comm_timeout_ms <= 0)
        d->cfg.comm_timeout_ms = dflt.comm_timeout_ms;
    d->state.lock_fd = -1;
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
    if (!name_ok(d->name))
        return shoal_fail(SHOAL_ERR_INVALID, "--name '%s' refused: use 1-64 characters of " NAME_RULE,
                          d->name);
    if (name_has_id_form(d->name))
        return shoal_fail(SHOAL_ERR_INVALID, "--name '%s' refused: " NAME_ID_FORM_RULE, d->name);
    log_set_component(d->name); /* before the session thread starts: it logs too */
    shoal_err_t rc = device_select(cfg->device ? cfg->device : "auto", &d->device);
    if (rc != SHOAL_OK)
        return shoal_fail_context(rc, "--device");
    /* The daemon's cells train with the CPU trainer (split cells, exact sums over ZeroMQ); the
     * GPU trainer runs whole models in `shoal-worker train` only so far. Reporting a GPU the
     * worker does not train on would make the planner size its cells wrongly. */
    if (d->device.kind == DEVICE_CUDA) {
        if (cfg->device && strcmp(cfg->device, "auto") != 0)
            return shoal_fail(SHOAL_ERR_INVALID, "--device %s: daemon mode trains on the CPU "
                              "(the GPU trainer runs in `shoal-worker train` only so far); use "
                              "--device cpu or auto", cfg->device);
        log_warn("device auto: %s is present, but daemon mode trains on the CPU (the GPU "
                 "trainer runs in `shoal-worker train` only so far)", d->device.name);
        if ((rc = device_select("cpu", &d->device)) != SHOAL_OK)
            return rc;
    }
    /* the training thread is this one: its CUDA calls go to the selected GPU */
    if ((rc = device_bind(&d->device)) != SHOAL_OK)
        return rc;
    rc = statedir_open(&d->state, cfg->state_dir, d->name);
    if (rc != SHOAL_OK)
        return rc;
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
    if ((rc = s_keys(d, cfg)) != SHOAL_OK)
        return rc;
    const comm_listener_opts_t lo = {.bind_endpoint = bind,
                                     .advertise_host =
                                         cfg->advertise_host ? cfg->advertise_host : host,
                                     .keys = d->curve ? &d->keys : NULL};
    rc = comm_listener_new_opts(&lo, &d->listener);
    if (rc != SHOAL_OK)
        return shoal_fail_context(rc, "data endpoint %s", bind);
    snprintf(endpoint_buf, endpoint_cap, "%s", comm_listener_endpoint(d->listener));
    if (!(d->zctx = zmq_ctx_new()))
        return shoal_fail(SHOAL_ERR_IO, "zmq context: %s", zmq_strerror(errno));
    return SHOAL_OK;
}

static void s_teardown(daemon_t *d)
{
    daemon_drop_comm(d);
    daemon_plan_drop_trainer(d);
    sess_plan_destroy(&d->plan);
    sess_plan_destroy(&d->pending);
    session_destroy(&d->sess);
    daemon_replicas_stop(d);
    ckpt_repl_set_vouch(NULL);
    vouch_destroy(&d->vouch); /* after its askers: the session and the shard server */
    daemon_metrics_stop(d);
    comm_listener_destroy(&d->listener);
    if (d->zctx)
        zmq_ctx_term(d->zctx);
    if (d->metrics)
        fclose(d->metrics);
    statedir_close(&d->state);
    free(d->snap);
    free(d->spec);
}

/* Leaves: the step is finished or abandoned; report what is durable, say goodbye. */
static void s_leave(daemon_t *d)
{
    log_info("leaving at step %lld", (long long)s_done_steps(d));
    daemon_drop_comm(d);
    daemon_ckpt_finish(d, 1);
    daemon_status(d, SESS_ACT_DRAINING, "leaving");
    sess_req_t *r = sess_req_new(SESS_REQ_LEAVE, d->plan ? d->plan->run_id : "",
                                 d->plan ? d->plan->generation : 0);
    if (r)
        snprintf(r->detail, sizeof r->detail, "stop requested (SIGTERM)");
    session_post(d->sess, &r);
    const int64_t until = clock_mono_ms() + S_LEFT_WAIT_MS;
    while (clock_mono_ms() < until) {
        sess_event_t *ev = NULL;
        if (session_wait(d->sess, 50, &ev) != SHOAL_OK)
            continue;
        const int left = ev->kind == SESS_EV_LEFT;
        sess_event_destroy(&ev);
        if (left)
            break;
    }
    /* the operator's (and the tests') measure of the grace promise, free of process teardown
     * and of the machine's load on whoever watches from outside */
    if (session_since_stop_s(d->sess) >= 0)
        log_info("left %.2f s after the stop request (grace %.1f s)",
                 session_since_stop_s(d->sess), d->cfg.grace_seconds);
}

shoal_err_t daemon_run(const daemon_config_t *cfg)
{
    daemon_t *d = calloc(1, sizeof *d);
    if (!d)
        return shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    char endpoint[512];
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    char shard_endpoint[512];
    shoal_err_t rc = s_setup(d, cfg, endpoint, sizeof endpoint);
    if (rc == SHOAL_OK)
        rc = daemon_metrics_start(d);
    if (rc == SHOAL_OK) {
        /* shard servers and fetches: CURVE with this worker's keys (ckpt_repl.h); the shard
         * server admits only the keys the coordinator vouches for (asked by the session) */
        ckpt_repl_set_curve(d->curve ? &d->keys : NULL);
        if (d->curve)
            rc = vouch_new(VOUCH_TTL_MS, &d->vouch);
        ckpt_repl_set_vouch(d->vouch);
        if (rc == SHOAL_OK)
            rc = daemon_replicas_start(d, endpoint, shard_endpoint, sizeof shard_endpoint);
    }
    if (rc != SHOAL_OK)
        goto out;
    /* Register reports "cpu" (or "cpu bf16" where train.precision bf16 can run) or
     * "cuda:N <name>" and the device's memory: the planner sizes cells and tells GPU workers
     * from CPU ones by them (ops/COORDINATOR.md). */
    char device[sizeof d->device.name + 16];
    device_spec(&d->device, device, sizeof device);
    size_t at = strlen(device);
    if (d->device.kind == DEVICE_CUDA)
        snprintf(device + at, sizeof device - at, " %s", d->device.name);
    else if (kgemm_bf16_available())
        snprintf(device + at, sizeof device - at, " bf16");
    /* The id this worker had before a restart (COORDINATOR.md: sent as prev_id). */
    char id_file[PATH_MAX + 16], prev_id[SESS_ID_MAX];
    statedir_prev_id(&d->state, prev_id, sizeof prev_id);
    if ((rc = statedir_id_file(&d->state, id_file, sizeof id_file)) != SHOAL_OK)
        goto out;
    const session_config_t sc = {
        .coordinator = cfg->coordinator,
        .name = d->name,
        .host = host,
        .device = device,
        .institution = cfg->institution,
        .version = SHOAL_VERSION,
        .data_endpoint = endpoint,
        .shard_endpoint = shard_endpoint,
        .memory_bytes = d->device.memory_bytes,
        .stop_flag = cfg->stop_flag,
        .grace_seconds = d->cfg.grace_seconds,
        .notify = getenv("NOTIFY_SOCKET") != NULL,
        .prev_id = prev_id,
        .id_file = id_file,
        .keys = d->curve ? &d->keys : NULL,
        .coordinator_key = d->coordinator_key,
        .vouch = d->vouch,
    };
    if ((rc = session_new(d->zctx, &sc, &d->sess)) != SHOAL_OK)
        goto out;
    char described[192];
    device_describe(&d->device, described, sizeof described);
    log_info("worker %s: device %s, state %s, data endpoint %s, coordinator %s", d->name,
             described, d->state.path, endpoint, cfg->coordinator);
    daemon_status(d, SESS_ACT_IDLE, NULL);
    while (!daemon_stopping(d) || s_handing_over(d)) {
        daemon_pump(d, s_trainable(d) || d->pending ? 0 : S_IDLE_WAIT_MS);
        if (daemon_stopping(d) && !s_handing_over(d))
            break;
        if (d->pending && !s_keep_old_plan(d)) {
            sess_plan_t *p = d->pending;
            d->pending = NULL;
            daemon_plan_switch(d, p);
            continue;
        }
        if (s_trainable(d)) {
            s_step(d);
            continue;
        }
        /* Nothing to train now: say why, finish a checkpoint, ask again if failed. */
        if (!d->pending)
            s_hold_copies(d, 0);
        if (d->failed) {
            if (clock_mono_ms() - d->last_ask_ms >= S_FAILED_ASK_MS)
                s_ask_assignment(d);
        } else if (d->plan && d->tr) {
            daemon_ckpt_finish(d, 1);
            if (trainer_next_step(d->tr) >= trainer_total_steps(d->tr))
                daemon_status(d, SESS_ACT_IDLE, "run complete");
            else if (d->paused)
                daemon_status(d, SESS_ACT_WAITING, "paused");
            else
                daemon_status(d, SESS_ACT_WAITING, "at the lease (step %lld)", (long long)d->lease);
        } else if (!d->plan) {
            daemon_status(d, SESS_ACT_IDLE, NULL);
        }
    }
    s_leave(d);
    rc = SHOAL_OK;
out:
    s_teardown(d);
    free(d);
    return rc;
}
