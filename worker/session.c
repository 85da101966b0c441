/* session.c: the worker's session with the coordinator (DEALER to its ROUTER) on a thread of its
 * own, so heartbeats flow while the training thread is deep in a step. */
#include "session.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#ifdef SHOAL_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "clock.h"
#include "fsutil.h"
#include "log.h"
#include "plan_delta.h"
#include "wire.h"

#define S_PENDING_MAX 512        /* unacknowledged reports kept for a resend after reconnect */
#define S_BACKOFF_MIN_MS 1000     /* Register retry: a slow coordinator must not see two */
#define S_BACKOFF_MAX_MS 5000
#define S_CURVE_RETRY_MS 2000 /* a CURVE socket not connected after this is made anew */
/* libzmq's reconnect backoff cap: a restarted coordinator gives workers dead_after_ms (3 s by
 * default) to show up again, so the cap must stay well below it. */
#define S_RECONNECT_MAX_MS 500
#define S_GETASSIGN_MIN_MS 300   /* GetAssignment rate limit */
#define S_LEAVE_WAIT_MS 1500     /* longest wait for the Leave's Ack */
#define S_POLL_MAX_MS 50
#define S_KEY_QUERIES_MAX 16     /* key questions sent per loop turn */

typedef enum { S_CONNECTING = 0, S_REGISTERED } s_state_t;

typedef struct {
    uint64_t seq; /* 0: not sent on the current connection */
    int64_t sent_ms;
    sess_req_t *req;
} s_pending_t;

struct session {
    /* copied configuration */
    char *coordinator, *name, *host, *device, *institution, *version, *data_endpoint;
    char *shard_endpoint;
    zsec_keys_t keys;   /* CURVE when curve */
    char coordinator_key[ZSEC_KEY_LEN + 1];
    int curve;
    vouch_t *vouch; /* the shard server's questions (session.h) */
    int curve_refused_logged;
    int dealer_sent; /* a message left on this socket: it connected */
    int64_t dealer_since_ms; /* when the socket was made: a refused handshake is not retried by
                              * libzmq, so a CURVE socket that never connects is made again */
    uint64_t memory_bytes;
    const volatile sig_atomic_t *stop_flag;
    double grace_seconds;
    int notify;

    void *zctx;
    void *pipe_train; /* training thread's end */
    void *pipe_sess;  /* session thread's end */
    char pipe_name[64];
    pthread_t thread;
    int started;
    comm_ids_t *ids; /* relayed NCCL unique ids (thread-safe, shared with the training thread) */

    comm_watch_t watch; /* the training thread's comms and what aborts them (its own lock) */
    pthread_mutex_t mu; /* guards the fields below */
    char worker_id[SESS_ID_MAX];
    atomic_int grace_expired;
    atomic_llong stop_seen_at_ms; /* stop_seen_ms for the training thread (0 = no stop yet) */

    /* session thread only */
    void *dealer;
    s_state_t state;
    uint64_t seq;
    int hb_ms, dead_ms;
    int lost;                 /* no word from the coordinator for dead_ms */
    char *id_file;            /* where the worker id is kept across restarts ("" = nowhere) */
    int64_t last_rx_ms, next_hb_ms, next_reg_ms, backoff_ms, last_getassign_ms;
    int64_t stop_seen_ms, next_watchdog_ms;
    sess_req_t *status;
    s_pending_t pending[S_PENDING_MAX];
    int n_pending;
    char run_id[SESS_ID_MAX]; /* run and generation of the newest accepted assignment */
    /* that assignment's full peer table and run spec: the base a plan delta applies to */
    plan_peers_t held;
    char *held_spec;
    char stopped_run[SESS_ID_MAX]; /* a run told to stop (the trainer may not have seen it) */
    uint64_t generation;
    int64_t fwd_committed, fwd_lease; /* last lease forwarded for (run_id, generation) */
    int leaving, leave_acked;
    uint64_t leave_seq;
    int64_t leave_deadline_ms;
    int quit;
};

static void s_copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static void s_notify(session_t *s, const char *text)
{
#ifdef SHOAL_HAVE_SYSTEMD
    if (s->notify)
        sd_notify(0, text);
#else
    (void)s;
    (void)text;
#endif
}

void sess_event_destroy(sess_event_t **evp)
{
    sess_event_t *ev = *evp;
    if (!ev)
        return;
    sess_plan_destroy(&ev->plan);
    free(ev->copies);
    free(ev);
    *evp = NULL;
}

/* A zeroed request of `kind` with room for `n_counts` expert counts. */
static sess_req_t *s_req_alloc(sess_req_kind_t kind, const char *run_id, uint64_t generation,
                               size_t n_counts)
{
    sess_req_t *r = calloc(1, sizeof *r + n_counts * sizeof r->expert_counts[0]);
    if (!r)
        return NULL;
    r->kind = kind;
    s_copy(r->run_id, sizeof r->run_id, run_id);
    r->generation = generation;
    return r;
}

sess_req_t *sess_req_new(sess_req_kind_t kind, const char *run_id, uint64_t generation)
{
    return s_req_alloc(kind, run_id, generation, 0);
}

sess_req_t *sess_req_new_step(const char *run_id, uint64_t generation, uint32_t n_layers,
                              uint32_t n_experts)
{
    sess_req_t *r = s_req_alloc(SESS_REQ_STEP, run_id, generation, (size_t)n_layers * n_experts);
    if (r) {
        r->n_expert_layers = n_layers;
        r->n_experts = n_experts;
    }
    return r;
}

/* ---- sending ---------------------------------------------------------------------------- */

static void s_envelope(session_t *s, Shoal__Envelope *env, Shoal__MsgType type, const char *run,
                       uint64_t gen)
{
    wire_envelope_init(env, type, run, s->worker_id, gen, ++s->seq);
}

/* Sends without blocking; a full queue (coordinator away) is not an error for the caller. */
static int s_send(session_t *s, const Shoal__Envelope *env)
{
    if (!s->dealer)
        return -1;
    shoal_err_t rc = wire_send(s->dealer, NULL, env, ZMQ_DONTWAIT);
    if (rc != SHOAL_OK) {
        log_debug("session: %s not sent: %s", wire_type_name(env->type), shoal_errmsg());
        return -1;
    }
    return 0;
}

static int s_send_register(session_t *s)
{
    Shoal__Envelope env;
    s_envelope(s, &env, SHOAL__MSG_TYPE__MSG_REGISTER, "", 0);
    Shoal__Register reg = SHOAL__REGISTER__INIT;
    char *devices[1] = {s->device};
    reg.name = s->name;
    reg.host = s->host;
    reg.n_devices = 1;
    reg.devices = devices;
    reg.memory_bytes = s->memory_bytes;
    reg.institution = s->institution;
    reg.version = s->version;
    reg.data_endpoint = s->data_endpoint;
    reg.shard_endpoint = s->shard_endpoint ? s->shard_endpoint : "";
    if (s->worker_id[0]) {
        reg.prev_id_case_case = SHOAL__REGISTER__PREV_ID_CASE_PREV_ID;
        reg.prev_id = s->worker_id;
    }
    env.body_case = SHOAL__ENVELOPE__BODY_REG;
    env.reg = &reg;
    return s_send(s, &env);
}

static void s_send_get_assignment(session_t *s, int force)
{
    const int64_t now = clock_mono_ms();
    if (s->state != S_REGISTERED || (!force && now - s->last_getassign_ms < S_GETASSIGN_MIN_MS))
        return;
    s->last_getassign_ms = now;
    Shoal__Envelope env;
    const sess_req_t *st = s->status;
    s_envelope(s, &env, SHOAL__MSG_TYPE__MSG_GET_ASSIGNMENT, st ? st->run_id : "",
               st ? st->generation : 0);
    Shoal__GetAssignment ga = SHOAL__GET_ASSIGNMENT__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_GET_ASSIGNMENT;
    env.get_assignment = &ga;
    s_send(s, &env);
}

/* Asks the coordinator about the keys the shard server met and does not know (vouch.h); the
 * answers come back as MSG_KEY_ANSWER. A question lost with the connection is asked again. */
static void s_send_key_queries(session_t *s)
{
    if (!s->vouch || s->state != S_REGISTERED || s->lost)
        return;
    char keys[S_KEY_QUERIES_MAX][ZSEC_KEY_LEN + 1];
    const int n = vouch_take_wanted(s->vouch, keys, S_KEY_QUERIES_MAX);
    for (int i = 0; i < n; i++) {
        Shoal__Envelope env;
        s_envelope(s, &env, SHOAL__MSG_TYPE__MSG_KEY_QUERY, "", 0);
        Shoal__KeyQuery q = SHOAL__KEY_QUERY__INIT;
        q.public_key = keys[i];
        env.body_case = SHOAL__ENVELOPE__BODY_KEY_QUERY;
        env.key_query = &q;
        s_send(s, &env);
    }
}

static void s_on_key_answer(session_t *s, const Shoal__KeyAnswer *a)
{
    if (!s->vouch || !vouch_answer(s->vouch, a->public_key, a->admitted, a->worker_id))
        return; /* not asked (any more): nothing to file */
    if (a->admitted)
        log_info("session: shard server admits key %s (worker %s)", a->public_key, a->worker_id);
    else
        log_info("session: shard server refuses key %s: %s", a->public_key, a->reason);
}

/* A heartbeat of the latest status; `bad` (a BAD_FRAMES request, or NULL) adds its entry. */
static void s_send_heartbeat(session_t *s, const sess_req_t *bad)
{
    const sess_req_t *st = s->status;
    Shoal__Envelope env;
    s_envelope(s, &env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, st ? st->run_id : "",
               st ? st->generation : 0);
    Shoal__Heartbeat hb = SHOAL__HEARTBEAT__INIT;
    if (st) {
        hb.step = st->step;
        hb.loss = st->loss;
        hb.tokens_per_s = st->tokens_per_s;
        hb.activity = (Shoal__WorkerActivity)st->activity;
        hb.detail = (char *)st->detail;
    }
    hb.timestamp_ms = (uint64_t)clock_wall_ms();
    Shoal__BadFrames bf = SHOAL__BAD_FRAMES__INIT, *bfp = &bf;
    if (bad) {
        bf.public_key = (char *)bad->bad_key;
        bf.frames = bad->bad_frames;
        bf.why = (char *)bad->detail;
        hb.n_bad_frames = 1;
        hb.bad_frames = &bfp;
    }
    env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    s_send(s, &env);
}

/* Sends a StepReport or CheckpointShardReport; returns the seq used (0 when not sent). */
static uint64_t s_send_report(session_t *s, sess_req_t *r)
{
    Shoal__Envelope env;
    if (r->kind == SESS_REQ_STEP) {
        s_envelope(s, &env, SHOAL__MSG_TYPE__MSG_STEP_REPORT, r->run_id, r->generation);
        Shoal__StepReport sr = SHOAL__STEP_REPORT__INIT;
        sr.step = r->step;
        sr.loss = r->loss;
        sr.tokens = r->tokens;
        sr.rejected_replicas = r->rejected_replicas;
        sr.reject_detail = r->reject_detail;
        sr.duration_s = r->duration_s;
        sr.grad_norm = r->grad_norm;
        sr.comm_seconds = r->comm_seconds;
        /* the loads point into the request: it outlives the send */
        Shoal__ExpertLoad *el = NULL, **elp = NULL;
        if (r->n_expert_layers) {
            el = calloc(r->n_expert_layers, sizeof *el);
            elp = calloc(r->n_expert_layers, sizeof *elp);
            if (!el || !elp) {
                free(el);
                free(elp);
                log_warn("session: step %lld reported without its expert loads (out of memory)",
                         (long long)r->step);
                el = NULL, elp = NULL;
            }
        }
        for (uint32_t i = 0; el && i < r->n_expert_layers; i++) {
            shoal__expert_load__init(&el[i]);
            el[i].layer = r->first_expert_layer + i;
            el[i].n_counts = r->n_experts;
            el[i].counts = r->expert_counts + (size_t)i * r->n_experts;
            elp[i] = &el[i];
        }
        sr.n_expert_loads = el ? r->n_expert_layers : 0;
        sr.expert_loads = elp;
        env.body_case = SHOAL__ENVELOPE__BODY_STEP_REPORT;
        env.step_report = &sr;
        const uint64_t seq = s_send(s, &env) == 0 ? env.seq : 0;
        free(el);
        free(elp);
        return seq;
    }
    s_envelope(s, &env,
               r->kind == SESS_REQ_SHARD_HELD      ? SHOAL__MSG_TYPE__MSG_SHARD_HELD
               : r->kind == SESS_REQ_SHARD_CORRUPT ? SHOAL__MSG_TYPE__MSG_SHARD_CORRUPT
                                                   : SHOAL__MSG_TYPE__MSG_CKPT_SHARD,
               r->run_id, r->generation);
    Shoal__CheckpointShardReport cr = SHOAL__CHECKPOINT_SHARD_REPORT__INIT;
    Shoal__FileDigest fd[SESS_MAX_FILES], *fdp[SESS_MAX_FILES];
    for (int i = 0; i < r->n_files; i++) {
        shoal__file_digest__init(&fd[i]);
        fd[i].name = r->files[i].name;
        fd[i].size = r->files[i].size;
        fd[i].sha256 = r->files[i].sha256;
        fdp[i] = &fd[i];
    }
    Shoal__Cell cell = SHOAL__CELL__INIT;
    cell.replica = r->replica;
    cell.stage = r->stage;
    cell.ep_rank = r->ep_rank;
    cr.step = r->step;
    cr.path = r->path;
    cr.n_files = (size_t)r->n_files;
    cr.files = fdp;
    cr.holder = r->kind == SESS_REQ_SHARD_CORRUPT ? r->holder : s->worker_id;
    cr.replica_of = r->replica_of;
    cr.cell = &cell;
    env.body_case = SHOAL__ENVELOPE__BODY_CKPT_SHARD;
    env.ckpt_shard = &cr;
    return s_send(s, &env) == 0 ? env.seq : 0;
}

static void s_send_leave(session_t *s, const char *reason, int drain_first)
{
    const sess_req_t *st = s->status;
    Shoal__Envelope env;
    s_envelope(s, &env, SHOAL__MSG_TYPE__MSG_LEAVE, st ? st->run_id : "",
               st ? st->generation : 0);
    Shoal__Leave lv = SHOAL__LEAVE__INIT;
    lv.reason = (char *)reason;
    lv.drain_first = drain_first;
    env.body_case = SHOAL__ENVELOPE__BODY_LEAVE;
    env.leave = &lv;
    if (drain_first) {
        (void)s_send(s, &env); /* asked again by the training thread until the drain comes */
        return;
    }
    s->leave_seq = s_send(s, &env) == 0 ? env.seq : 0;
}

/* ---- events to the training thread -------------------------------------------------------- */

static void s_emit(session_t *s, sess_event_t *ev)
{
    if (zmq_send(s->pipe_sess, &ev, sizeof ev, 0) != (int)sizeof ev) {
        log_error("session: cannot pass an event to the training thread: %s",
                  zmq_strerror(errno));
        sess_event_destroy(&ev);
    }
}

static void s_emit_simple(session_t *s, sess_ev_kind_t kind, const char *run, uint64_t gen,
                          sess_ctl_t ctl, const char *reason)
{
    sess_event_t *ev = calloc(1, sizeof *ev);
    if (!ev)
        return;
    ev->kind = kind;
    s_copy(ev->run_id, sizeof ev->run_id, run);
    ev->generation = gen;
    ev->control = ctl;
    s_copy(ev->reason, sizeof ev->reason, reason);
    s_emit(s, ev);
}

/* A RunControl as an event; a STOP may carry the hand-over of this worker's cell. */
static void s_emit_control(session_t *s, const Shoal__RunControl *rc)
{
    sess_event_t *ev = calloc(1, sizeof *ev);
    if (!ev)
        return;
    ev->kind = SESS_EV_CONTROL;
    s_copy(ev->run_id, sizeof ev->run_id, s->run_id);
    ev->generation = s->generation;
    ev->control = rc->command == SHOAL__RUN_COMMAND__RUN_CMD_PAUSE    ? SESS_CTL_PAUSE
                  : rc->command == SHOAL__RUN_COMMAND__RUN_CMD_RESUME ? SESS_CTL_RESUME
                                                                      : SESS_CTL_STOP;
    s_copy(ev->reason, sizeof ev->reason, rc->reason);
    if (ev->control == SESS_CTL_STOP && rc->handover && rc->handover->to_endpoint[0]) {
        s_copy(ev->handover_to, sizeof ev->handover_to, rc->handover->to_endpoint);
        s_copy(ev->handover_to_key, sizeof ev->handover_to_key, rc->handover->to_public_key);
        ev->handover_step = rc->handover->step;
        ev->handover_gen = rc->handover->generation;
    }
    s_emit(s, ev);
}

/* A Replicate order as an event: the shards converted (those that do not fit are dropped,
 * logged); sent whatever plan generation this worker holds (spares keep copies too). */
static void s_emit_replicate(session_t *s, const Shoal__Envelope *env)
{
    const Shoal__Replicate *rp = env->replicate;
    sess_event_t *ev = calloc(1, sizeof *ev);
    if (!ev || !(ev->copies = calloc(rp->n_copies + 1, sizeof *ev->copies))) {
        free(ev);
        log_error("session: out of memory for a replication order");
        return;
    }
    ev->kind = SESS_EV_REPLICATE;
    s_copy(ev->run_id, sizeof ev->run_id, env->run_id);
    ev->generation = env->generation;
    ev->step = rp->step;
    for (size_t i = 0; i < rp->n_copies; i++) {
        const Shoal__ReplicaCopy *k = rp->copies[i];
        if (sess_shard_from_pb(k->cell, k->writer, k->files, k->n_files, k->sources,
                               k->n_sources, &ev->copies[ev->n_copies]) == 0)
            ev->n_copies++;
        else
            log_warn("session: replication of %s's shard dropped: does not fit", k->writer);
    }
    s_emit(s, ev);
}

static void s_emit_lease(session_t *s, int64_t committed, int64_t lease)
{
    if (committed == s->fwd_committed && lease == s->fwd_lease)
        return;
    s->fwd_committed = committed;
    s->fwd_lease = lease;
    sess_event_t *ev = calloc(1, sizeof *ev);
    if (!ev)
        return;
    ev->kind = SESS_EV_LEASE;
    s_copy(ev->run_id, sizeof ev->run_id, s->run_id);
    ev->generation = s->generation;
    ev->committed = committed;
    ev->lease = lease;
    s_emit(s, ev);
}

/* ---- receiving ---------------------------------------------------------------------------- */

/* The training thread is in the middle of a run (busy) unless its status says idle. */
static int s_trainer_busy_with(const session_t *s, const char *run)
{
    const sess_req_t *st = s->status;
    return st && st->run_id[0] && strcmp(st->run_id, run) != 0 &&
           strcmp(st->run_id, s->stopped_run) != 0;
}

/* Keeps the accepted assignment's peer table and spec as the next delta's base: `rebuilt`
 * (a delta's table, moved) or a copy of the full assignment's. On failure no base is held
 * (the next delta is refused and the full plan fetched). */
static void s_hold_plan(session_t *s, const Shoal__Envelope *env, plan_peers_t *rebuilt)
{
    const Shoal__Assignment *a = env->assignment;
    if (rebuilt->generation) {
        plan_peers_clear(&s->held);
        s->held = *rebuilt;
        memset(rebuilt, 0, sizeof *rebuilt);
        return;
    }
    if (!s->held_spec || strcmp(s->held_spec, a->spec_yaml) != 0) {
        free(s->held_spec);
        s->held_spec = strdup(a->spec_yaml);
    }
    if (!s->held_spec || plan_peers_copy(&s->held, a->plan->run_id, a->plan->generation,
                                         a->plan->peers, a->plan->n_peers) != SHOAL_OK) {
        plan_peers_clear(&s->held);
        log_warn("session: out of memory keeping the plan: the next delta fetches it in full");
    }
}

/* A plan delta (plan_delta.h) rebuilt on the plan held into a full assignment: *full (with
 * *a and *p as its parts, the peers in *rebuilt) when it applies; otherwise 0, logged, and the
 * full assignment is fetched. */
static int s_rebuild_delta(session_t *s, const Shoal__Envelope *env, Shoal__Envelope *full,
                           Shoal__Assignment *a, Shoal__Plan *p, plan_peers_t *rebuilt)
{
    const char *why = NULL;
    if (plan_peers_apply(&s->held, env->run_id, env->assignment, rebuilt, &why) != SHOAL_OK ||
        !s->held_spec) {
        log_warn("session: dropped plan delta (run %s, generation %llu on %llu): %s; fetching "
                 "the full plan", env->run_id, (unsigned long long)env->generation,
                 (unsigned long long)env->assignment->base_generation,
                 why ? why : "no run spec held");
        plan_peers_clear(rebuilt);
        s_send_get_assignment(s, 1);
        return 0;
    }
    log_info("session: plan delta: generation %llu on %llu, %zu of %u peers changed",
             (unsigned long long)env->generation,
             (unsigned long long)env->assignment->base_generation,
             env->assignment->plan->n_peers, rebuilt->n);
    *p = *env->assignment->plan;
    p->peers = rebuilt->ptrs;
    p->n_peers = rebuilt->n;
    *a = *env->assignment;
    a->plan = p;
    a->spec_yaml = s->held_spec;
    *full = *env;
    full->assignment = a;
    return 1;
}

static void s_on_assignment(session_t *s, const Shoal__Envelope *env)
{
    Shoal__Envelope full;
    Shoal__Assignment full_a;
    Shoal__Plan full_p;
    plan_peers_t rebuilt = {0};
    if (env->body_case == SHOAL__ENVELOPE__BODY_ASSIGNMENT && env->assignment &&
        env->assignment->base_generation) {
        if (!s_rebuild_delta(s, env, &full, &full_a, &full_p, &rebuilt))
            return;
        env = &full;
    }
    sess_plan_t *pl = NULL;
    const char *why = NULL;
    shoal_err_t rc = sess_plan_from_assignment(env, s->worker_id, &pl, &why);
    if (rc == SHOAL_ERR_NOMEM)
        goto fail;
    if (rc != SHOAL_OK) {
        log_warn("session: dropped assignment (run %s, generation %llu): %s", env->run_id,
                 (unsigned long long)env->generation, why);
        plan_peers_clear(&rebuilt);
        return;
    }
    if (strcmp(pl->run_id, s->run_id) == 0 && pl->generation < s->generation) {
        log_warn("session: dropped stale assignment of run %s: generation %llu < %llu", pl->run_id,
                 (unsigned long long)pl->generation, (unsigned long long)s->generation);
        sess_plan_destroy(&pl);
        plan_peers_clear(&rebuilt);
        return;
    }
    if (s_trainer_busy_with(s, pl->run_id)) {
        log_warn("session: dropped assignment for run %s while training run %s", pl->run_id,
                 s->status->run_id);
        sess_plan_destroy(&pl);
        plan_peers_clear(&rebuilt);
        return;
    }
    sess_event_t *ev = calloc(1, sizeof *ev);
    if (!ev)
        goto fail;
    if (strcmp(s->run_id, pl->run_id) != 0 || s->generation != pl->generation) {
        s->fwd_committed = s->fwd_lease = -1;
        log_info("session: assignment: run %s generation %llu, rank %u of %u, start step %lld",
                 pl->run_id, (unsigned long long)pl->generation, pl->rank, pl->nranks,
                 (long long)pl->start_step);
    }
    /* relayed NCCL ids: a new run's generations start again; an older generation's are
     * useless (its id for generation g follows this worker's assignment g on the socket) */
    if (strcmp(s->run_id, pl->run_id) != 0)
        comm_ids_reset(s->ids);
    comm_ids_forget_before(s->ids, pl->generation);
    s_copy(s->run_id, sizeof s->run_id, pl->run_id);
    s->generation = pl->generation;
    s_hold_plan(s, env, &rebuilt);
    if (strcmp(s->stopped_run, pl->run_id) == 0)
        s->stopped_run[0] = 0; /* assigned again (e.g. undrained) */
    const uint64_t gen = pl->generation;
    const int64_t start = pl->start_step;
    ev->kind = SESS_EV_PLAN;
    s_copy(ev->run_id, sizeof ev->run_id, pl->run_id);
    ev->generation = gen;
    ev->plan = pl;
    s_emit(s, ev); /* first, so the training thread finds the plan once its collective fails */
    (void)comm_watch_plan(&s->watch, gen, start, "a newer plan starts at or before it");
    return;
fail:
    log_error("session: out of memory converting an assignment");
    sess_plan_destroy(&pl);
    plan_peers_clear(&rebuilt);
}

static void s_pending_remove_seq(session_t *s, uint64_t seq)
{
    for (int i = 0; i < s->n_pending; i++) {
        if (s->pending[i].seq == seq && seq != 0) {
            free(s->pending[i].req);
            memmove(&s->pending[i], &s->pending[i + 1],
                    sizeof s->pending[0] * (size_t)(s->n_pending - i - 1));
            s->n_pending--;
            return;
        }
    }
}

static void s_reregister(session_t *s, const char *why)
{
    if (s->state != S_REGISTERED)
        return; /* already registering: one Register at a time */
    log_warn("session: registering again: %s", why);
    s->state = S_CONNECTING;
    s->next_reg_ms = clock_mono_ms();
    s->backoff_ms = S_BACKOFF_MIN_MS;
}

static int s_is_current_run(const session_t *s, const char *run)
{
    return s->run_id[0] && strcmp(s->run_id, run) == 0;
}

static void s_on_ack(session_t *s, const Shoal__Envelope *env)
{
    const Shoal__Ack *ack = env->ack;
    s_pending_remove_seq(s, ack->acked_seq);
    if (s->leaving && ack->acked_type == SHOAL__MSG_TYPE__MSG_LEAVE && ack->acked_seq == s->leave_seq)
        s->leave_acked = 1;
    const int cur = s_is_current_run(s, env->run_id);
    switch (ack->directive) {
    case SHOAL__DIRECTIVE__DIRECTIVE_FETCH_ASSIGNMENT:
        s_send_get_assignment(s, 0);
        break;
    case SHOAL__DIRECTIVE__DIRECTIVE_REREGISTER:
        if (!s->leaving)
            s_reregister(s, "the coordinator does not know this worker id");
        break;
    case SHOAL__DIRECTIVE__DIRECTIVE_PAUSE:
    case SHOAL__DIRECTIVE__DIRECTIVE_DRAIN:
    case SHOAL__DIRECTIVE__DIRECTIVE_STOP:
        /* STOP in an Ack without a run: the coordinator holds no run for this worker, so
         * whatever assignment it still trains is void (e.g. its cell was given up). */
        if (ack->directive == SHOAL__DIRECTIVE__DIRECTIVE_STOP && !env->run_id[0] &&
            s->run_id[0] && s->status && strcmp(s->status->run_id, s->run_id) == 0) {
            log_info("session: the coordinator holds no run for this worker: dropping run %s",
                     s->run_id);
        } else if (!cur || ack->generation < s->generation) {
            log_debug("session: ignored directive %d of run '%s' generation %llu", ack->directive,
                      env->run_id, (unsigned long long)ack->generation);
            break;
        }
        s_emit_simple(s, SESS_EV_CONTROL, s->run_id, s->generation,
                      ack->directive == SHOAL__DIRECTIVE__DIRECTIVE_PAUSE   ? SESS_CTL_PAUSE
                      : ack->directive == SHOAL__DIRECTIVE__DIRECTIVE_DRAIN ? SESS_CTL_DRAIN
                                                                            : SESS_CTL_STOP,
                      "directive");
        if (ack->directive == SHOAL__DIRECTIVE__DIRECTIVE_STOP) {
            s_copy(s->stopped_run, sizeof s->stopped_run, s->run_id);
            (void)comm_watch_stop(&s->watch, COMM_WATCH_STOP, "the coordinator says stop");
        }
        break;
    default:
        break;
    }
    if (cur && ack->generation == s->generation && s->generation > 0 && ack->lease > 0)
        s_emit_lease(s, ack->committed_step, ack->lease);
    else if (cur && ack->generation > s->generation)
        s_send_get_assignment(s, 0);
}

static void s_on_error(session_t *s, const Shoal__Envelope *env)
{
    const Shoal__Error *e = env->error;
    log_warn("session: coordinator error %d about %s #%llu: %s", e->code,
             wire_type_name(e->about_type), (unsigned long long)e->about_seq, e->message);
    s_pending_remove_seq(s, e->about_seq); /* rejected: resending would not help */
    if (s->leaving && e->about_seq == s->leave_seq)
        s->leave_acked = 1;
    if (e->code == SHOAL__ERROR_CODE__ERR_UNKNOWN_WORKER && !s->leaving)
        s_reregister(s, "unknown worker id");
    else if (e->code == SHOAL__ERROR_CODE__ERR_STALE_GENERATION ||
             e->code == SHOAL__ERROR_CODE__ERR_WRONG_RUN)
        s_send_get_assignment(s, 0);
}

/* Sends again the reports not acknowledged for older_than_ms (0: all): a coordinator that
 * restarted between two of our heartbeats never saw what its predecessor had not read. */
static void s_resend_pending(session_t *s, int64_t older_than_ms)
{
    const int64_t now = clock_mono_ms();
    for (int i = 0; i < s->n_pending; i++) {
        if (older_than_ms && now - s->pending[i].sent_ms < older_than_ms)
            continue;
        s->pending[i].seq = s_send_report(s, s->pending[i].req);
        s->pending[i].sent_ms = now;
    }
}

static void s_on_register_reply(session_t *s, const Shoal__Envelope *env)
{
    const Shoal__RegisterReply *r = env->reg_reply;
    if (s->state == S_REGISTERED) {
        log_debug("session: extra register reply ignored");
        return;
    }
    if (!r->accepted || !r->worker_id[0]) {
        log_warn("session: registration refused: %s", r->reason[0] ? r->reason : "(no reason)");
        return; /* retried after the backoff */
    }
    pthread_mutex_lock(&s->mu);
    const int changed = strcmp(s->worker_id, r->worker_id) != 0;
    s_copy(s->worker_id, sizeof s->worker_id, r->worker_id);
    pthread_mutex_unlock(&s->mu);
    s->hb_ms = r->heartbeat_interval_ms >= 10 && r->heartbeat_interval_ms <= 600000
                   ? (int)r->heartbeat_interval_ms : 500;
    s->dead_ms = r->dead_after_ms >= 50 && r->dead_after_ms <= 86400000
                     ? (int)r->dead_after_ms : 3000;
    if (s->dead_ms < 2 * s->hb_ms)
        s->dead_ms = 2 * s->hb_ms;
    s->state = S_REGISTERED;
    s->lost = 0;
    if (changed && s->id_file[0] &&
        fsutil_write_file_atomic(s->id_file, s->worker_id, strlen(s->worker_id)) != SHOAL_OK)
        log_warn("session: cannot keep the worker id: %s", shoal_errmsg());
    log_info("session: registered with %s as %s%s (heartbeat %d ms, dead after %d ms)",
             s->coordinator, s->worker_id, changed ? "" : " again", s->hb_ms, s->dead_ms);
    /* Reports the previous coordinator (or connection) never acknowledged. */
    s_resend_pending(s, 0);
    s->next_hb_ms = clock_mono_ms();
    s_send_get_assignment(s, 1);
    if (s->leaving)
        s_send_leave(s, "leaving", 0);
}

/* A peer's NCCL unique id, relayed: kept for the comm creation that waits for it. Ids of
 * another run or an older generation are dropped; the wire layer checked the form. */
static void s_on_comm_id(session_t *s, const Shoal__Envelope *env)
{
    const Shoal__CommId *cid = env->comm_id;
    if (!s_is_current_run(s, env->run_id) || env->generation < s->generation) {
        log_warn("session: dropped comm id of group %s (run '%s' generation %llu; current: '%s' "
                 "generation %llu)", cid->group, env->run_id,
                 (unsigned long long)env->generation, s->run_id,
                 (unsigned long long)s->generation);
        return;
    }
    if (comm_ids_put(s->ids, cid->group, cid->id.data, cid->id.len) != SHOAL_OK)
        log_warn("session: comm id from %s dropped: %s", env->sender, shoal_errmsg());
    else
        log_debug("session: comm id of group %s from %s", cid->group, env->sender);
}

static void s_on_message(const Shoal__Envelope *env, void *ctx)
{
    session_t *s = ctx;
    const int64_t now = clock_mono_ms();
    if (s->lost && s->state == S_REGISTERED) {
        log_info("session: the coordinator answers again after %lld ms",
                 (long long)(now - s->last_rx_ms));
        s->lost = 0;
        s->last_rx_ms = now;
        s_resend_pending(s, 0); /* what the old instance never read */
        s_send_get_assignment(s, 1);
    }
    s->lost = 0;
    s->last_rx_ms = now;
    if (s->state != S_REGISTERED && env->type != SHOAL__MSG_TYPE__MSG_REGISTER_REPLY &&
        env->type != SHOAL__MSG_TYPE__MSG_ERROR && env->type != SHOAL__MSG_TYPE__MSG_ACK) {
        log_debug("session: %s before registration dropped", wire_type_name(env->type));
        return;
    }
    switch (env->type) {
    case SHOAL__MSG_TYPE__MSG_REGISTER_REPLY:
        s_on_register_reply(s, env);
        break;
    case SHOAL__MSG_TYPE__MSG_ASSIGNMENT:
        if (!s->leaving)
            s_on_assignment(s, env);
        break;
    case SHOAL__MSG_TYPE__MSG_ACK:
        s_on_ack(s, env);
        break;
    case SHOAL__MSG_TYPE__MSG_ERROR:
        s_on_error(s, env);
        break;
    case SHOAL__MSG_TYPE__MSG_STEP_COMMIT:
        if (!s_is_current_run(s, env->run_id) || env->generation != s->generation) {
            log_warn("session: dropped step commit of run '%s' generation %llu (current: '%s' "
                     "generation %llu)", env->run_id, (unsigned long long)env->generation,
                     s->run_id, (unsigned long long)s->generation);
            break;
        }
        s_emit_lease(s, env->step_commit->step, env->step_commit->lease);
        break;
    case SHOAL__MSG_TYPE__MSG_RUN_CONTROL: {
        const Shoal__RunControl *rc = env->run_control;
        if (!s_is_current_run(s, env->run_id) || env->generation < s->generation ||
            rc->command < SHOAL__RUN_COMMAND__RUN_CMD_PAUSE ||
            rc->command > SHOAL__RUN_COMMAND__RUN_CMD_STOP) {
            log_warn("session: dropped run control %d of run '%s' generation %llu (current: "
                     "'%s' generation %llu)", rc->command, env->run_id,
                     (unsigned long long)env->generation, s->run_id,
                     (unsigned long long)s->generation);
            break;
        }
        log_info("session: run %s: %s (%s)", s->run_id,
                 rc->command == SHOAL__RUN_COMMAND__RUN_CMD_PAUSE    ? "pause"
                 : rc->command == SHOAL__RUN_COMMAND__RUN_CMD_RESUME ? "resume"
                                                                     : "stop",
                 rc->reason);
        s_emit_control(s, rc);
        if (rc->command == SHOAL__RUN_COMMAND__RUN_CMD_STOP) {
            s_copy(s->stopped_run, sizeof s->stopped_run, s->run_id);
            (void)comm_watch_stop(&s->watch, COMM_WATCH_STOP, "the run was stopped");
        }
        break;
    }
    case SHOAL__MSG_TYPE__MSG_REPLICATE:
        s_emit_replicate(s, env);
        break;
    case SHOAL__MSG_TYPE__MSG_COMM_ID:
        s_on_comm_id(s, env);
        break;
    case SHOAL__MSG_TYPE__MSG_KEY_ANSWER:
        s_on_key_answer(s, env->key_answer);
        break;
    case SHOAL__MSG_TYPE__MSG_DRAIN:
        /* A worker-level order: the coordinator stamps no generation on it. */
        if (env->run_id[0] && !s_is_current_run(s, env->run_id)) {
            log_warn("session: dropped drain of run '%s' generation %llu", env->run_id,
                     (unsigned long long)env->generation);
            break;
        }
        log_info("session: drain: %s", env->drain->reason);
        s_emit_simple(s, SESS_EV_CONTROL, s->run_id, s->generation, SESS_CTL_DRAIN,
                      env->drain->reason);
        break;
    default:
        log_debug("session: dropped %s from the coordinator: not for a worker",
                  wire_type_name(env->type));
        break;
    }
}

/* ---- requests from the training thread ------------------------------------------------------ */

static void s_on_request(session_t *s, sess_req_t *r)
{
    switch (r->kind) {
    case SESS_REQ_STATUS:
        free(s->status);
        s->status = r;
        if (s->notify) {
            char text[320];
            snprintf(text, sizeof text, "STATUS=step %lld, activity %d%s%s", (long long)r->step,
                     r->activity, r->detail[0] ? ": " : "", r->detail);
            s_notify(s, text);
        }
        return;
    case SESS_REQ_STEP:
    case SESS_REQ_CKPT:
    case SESS_REQ_SHARD_HELD:
    case SESS_REQ_SHARD_CORRUPT:
        if (s->n_pending == S_PENDING_MAX) {
            log_warn("session: %d reports unacknowledged; dropping the oldest", S_PENDING_MAX);
            free(s->pending[0].req);
            memmove(&s->pending[0], &s->pending[1], sizeof s->pending[0] * (S_PENDING_MAX - 1));
            s->n_pending--;
        }
        s->pending[s->n_pending].req = r;
        s->pending[s->n_pending].seq = s->state == S_REGISTERED ? s_send_report(s, r) : 0;
        s->pending[s->n_pending].sent_ms = clock_mono_ms();
        s->n_pending++;
        return;
    case SESS_REQ_GET_ASSIGNMENT:
        s_send_get_assignment(s, 0);
        break;
    case SESS_REQ_COMM_ID: {
        Shoal__Envelope env;
        s_envelope(s, &env, SHOAL__MSG_TYPE__MSG_COMM_ID, r->run_id, r->generation);
        Shoal__CommId cid = SHOAL__COMM_ID__INIT;
        cid.group = r->comm_group;
        cid.id.data = r->comm_id;
        cid.id.len = r->comm_id_len;
        env.body_case = SHOAL__ENVELOPE__BODY_COMM_ID;
        env.comm_id = &cid;
        if (s->state != S_REGISTERED || s_send(s, &env) != 0)
            log_warn("session: comm id of group %s not sent (not registered, or the "
                     "coordinator is away): its peers will time out", r->comm_group);
        break;
    }
    case SESS_REQ_LEAVE:
        if (!s->leaving) {
            s->leaving = 1;
            /* Within the grace period when one runs (keep 0.2 s for the exit itself). */
            const int64_t now = clock_mono_ms();
            int64_t until = now + S_LEAVE_WAIT_MS;
            if (s->stop_seen_ms) {
                const int64_t grace_end =
                    s->stop_seen_ms + (int64_t)(s->grace_seconds * 1000) - 200;
                if (grace_end < until)
                    until = grace_end > now + 100 ? grace_end : now + 100;
            }
            s->leave_deadline_ms = until;
            log_info("session: leaving: %s", r->detail);
            s_send_leave(s, r->detail, 0);
        }
        break;
    case SESS_REQ_LEAVE_DRAIN:
        if (!s->leaving && s->state == S_REGISTERED) {
            log_info("session: asking for a hand-over before leaving: %s", r->detail);
            s_send_leave(s, r->detail, 1);
        }
        break;
    case SESS_REQ_BAD_FRAMES:
        if (s->state == S_REGISTERED && !s->leaving)
            s_send_heartbeat(s, r);
        break;
    }
    free(r);
}

/* ---- the thread --------------------------------------------------------------------------- */

static void s_connect(session_t *s)
{
    if (s->dealer)
        zmq_close(s->dealer);
    s->dealer = zmq_socket(s->zctx, ZMQ_DEALER);
    s->dealer_since_ms = clock_mono_ms();
    s->dealer_sent = 0;
    if (!s->dealer) {
        log_error("session: cannot create a socket: %s", zmq_strerror(errno));
        return;
    }
    /* IMMEDIATE: nothing queues while disconnected, so a coordinator coming back gets no burst
     * of stale heartbeats or duplicate Registers; reports are kept and resent by us. */
    int ivl = 100, ivl_max = S_RECONNECT_MAX_MS, hwm = 10000, immediate = 1;
    zmq_setsockopt(s->dealer, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
    zmq_setsockopt(s->dealer, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(s->dealer, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    zmq_setsockopt(s->dealer, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (s->curve && zsec_client(s->dealer, &s->keys, s->coordinator_key) != SHOAL_OK) {
        log_error("session: %s", shoal_errmsg());
        zmq_close(s->dealer);
        s->dealer = NULL;
        return;
    }
    if (wire_socket_limits(s->dealer) != SHOAL_OK ||
        zmq_connect(s->dealer, s->coordinator) != 0) {
        log_error("session: cannot connect to %s: %s", s->coordinator, zmq_strerror(errno));
        zmq_close(s->dealer);
        s->dealer = NULL;
    }
}

static void s_timers(session_t *s, int64_t now)
{
    if (s->stop_flag && *s->stop_flag && s->stop_seen_ms == 0) {
        s->stop_seen_ms = now;
        atomic_store(&s->stop_seen_at_ms, now);
        log_info("session: stop requested: %.1f s of grace", s->grace_seconds);
    }
    if (s->stop_seen_ms && !atomic_load(&s->grace_expired)) {
        /* Abandon the step early enough that the Leave still fits in the grace period. */
        double margin = s->grace_seconds / 4 < 1.0 ? s->grace_seconds / 4 : 1.0;
        if (now >= s->stop_seen_ms + (int64_t)((s->grace_seconds - margin) * 1000)) {
            atomic_store(&s->grace_expired, 1);
            (void)comm_watch_stop(&s->watch, COMM_WATCH_GRACE,
                                  "the SIGTERM grace period is ending");
        }
    }
    if (s->state == S_REGISTERED) {
        /* Coordinator gone: libzmq reconnects (with backoff) under the same socket; the id,
         * run and generation stay valid across a coordinator restart, so nothing is redone:
         * keep heartbeating and training up to the lease. */
        if (!s->lost && now - s->last_rx_ms > s->dead_ms) {
            log_warn("session: no word from the coordinator for %lld ms; training on within "
                     "the lease while libzmq reconnects", (long long)(now - s->last_rx_ms));
            s->lost = 1;
        }
        if (now >= s->next_hb_ms && !s->leaving) {
            s_send_heartbeat(s, NULL);
            s->next_hb_ms = now + s->hb_ms;
            s_resend_pending(s, 2 * (int64_t)s->dead_ms);
        }
        s_send_key_queries(s);
    }
    if (s->state == S_CONNECTING && now >= s->next_reg_ms) {
        if (s->curve && s->dealer && !s->dealer_sent && now - s->dealer_since_ms > S_CURVE_RETRY_MS) {
            if (!s->curve_refused_logged)
                log_warn("session: no CURVE connection to %s yet: is this worker's key on the "
                         "coordinator's allow-list, and coordinator.public its key? retrying",
                         s->coordinator);
            s->curve_refused_logged = 1;
            s_connect(s); /* a fresh handshake (after an allow-list reload, say) */
        }
        if (!s->dealer)
            s_connect(s);
        if (s_send_register(s) != 0) {
            s->next_reg_ms = now + 100; /* not connected yet (IMMEDIATE): try again soon */
        } else {
            s->dealer_sent = 1;
            /* sent: wait for the answer, longer each time it does not come */
            s->next_reg_ms = now + s->backoff_ms;
            s->backoff_ms =
                s->backoff_ms * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS : s->backoff_ms * 2;
        }
        if (!s->last_rx_ms)
            s->last_rx_ms = now;
    }
    if (s->notify && now >= s->next_watchdog_ms) {
        s_notify(s, "WATCHDOG=1");
        s->next_watchdog_ms = now + 1000;
    }
    if (s->leaving == 1 && (s->leave_acked || now >= s->leave_deadline_ms)) {
        if (!s->leave_acked)
            log_warn("session: the coordinator did not acknowledge the Leave");
        s->leaving = 2;
        s_emit_simple(s, SESS_EV_LEFT, "", 0, 0, "left");
    }
}

static void *s_thread(void *arg)
{
    session_t *s = arg;
    s->hb_ms = 500;
    s->dead_ms = 3000;
    s->backoff_ms = S_BACKOFF_MIN_MS;
    s->fwd_committed = s->fwd_lease = -1;
    s_connect(s);
    s->next_reg_ms = clock_mono_ms();
    s_notify(s, "READY=1");
    while (!s->quit) {
        const int64_t now = clock_mono_ms();
        s_timers(s, now);
        int64_t wait = S_POLL_MAX_MS;
        if (s->state == S_REGISTERED && s->next_hb_ms - now < wait)
            wait = s->next_hb_ms - now;
        if (wait < 0)
            wait = 0;
        zmq_pollitem_t items[2] = {{s->pipe_sess, 0, ZMQ_POLLIN, 0}, {s->dealer, 0, ZMQ_POLLIN, 0}};
        int n = zmq_poll(items, s->dealer ? 2 : 1, (long)wait);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("session: poll failed: %s", zmq_strerror(errno));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            for (;;) {
                sess_req_t *r = NULL;
                int got = zmq_recv(s->pipe_sess, &r, sizeof r, ZMQ_DONTWAIT);
                if (got != (int)sizeof r)
                    break;
                if (!r) {
                    s->quit = 1;
                    break;
                }
                s_on_request(s, r);
            }
        }
        if (s->dealer && (items[1].revents & ZMQ_POLLIN)) {
            for (int i = 0; i < 256; i++) {
                wire_route_t route;
                shoal_err_t rc = wire_recv(s->dealer, ZMQ_DONTWAIT, &route, s_on_message, s);
                if (rc == SHOAL_ERR_TIMEOUT || rc == SHOAL_ERR_IO)
                    break;
                if (rc != SHOAL_OK)
                    log_warn("session: dropped a bad message from the coordinator: %s",
                             shoal_errmsg());
            }
        }
    }
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------- */

shoal_err_t session_new(void *zctx, const session_config_t *cfg, session_t **out)
{
    *out = NULL;
    shoal_err_t rc = SHOAL_ERR_NOMEM;
    session_t *s = calloc(1, sizeof *s);
    if (!s)
        return shoal_fail(SHOAL_ERR_NOMEM, "session: out of memory");
    pthread_mutex_init(&s->mu, NULL);
    comm_watch_init(&s->watch);
    s->zctx = zctx;
    s->coordinator = strdup(cfg->coordinator ? cfg->coordinator : "");
    if (cfg->keys) {
        if (!cfg->coordinator_key || !zsec_key_valid(cfg->coordinator_key)) {
            free(s->coordinator);
            pthread_mutex_destroy(&s->mu);
            comm_watch_fini(&s->watch);
            free(s);
            return shoal_fail(SHOAL_ERR_INVALID, "session: CURVE needs the coordinator's key");
        }
        s->keys = *cfg->keys;
        snprintf(s->coordinator_key, sizeof s->coordinator_key, "%s", cfg->coordinator_key);
        s->curve = 1;
    }
    s->vouch = cfg->vouch;
    s->name = strdup(cfg->name ? cfg->name : "");
    s->host = strdup(cfg->host ? cfg->host : "");
    s->device = strdup(cfg->device ? cfg->device : "cpu");
    s->institution = strdup(cfg->institution ? cfg->institution : "");
    s->version = strdup(cfg->version ? cfg->version : "");
    s->data_endpoint = strdup(cfg->data_endpoint ? cfg->data_endpoint : "");
    s->shard_endpoint = strdup(cfg->shard_endpoint ? cfg->shard_endpoint : "");
    if (!s->coordinator || !s->name || !s->host || !s->device || !s->institution ||
        !s->version || !s->data_endpoint || !s->shard_endpoint) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "session: out of memory");
        goto fail;
    }
    s->memory_bytes = cfg->memory_bytes;
    s->stop_flag = cfg->stop_flag;
    s->grace_seconds = cfg->grace_seconds; /* > 0: the daemon applied its default */
    s->notify = cfg->notify;
    s->id_file = strdup(cfg->id_file ? cfg->id_file : "");
    if (!s->id_file) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "session: out of memory");
        goto fail;
    }
    if ((rc = comm_ids_new(&s->ids)) != SHOAL_OK)
        goto fail;
    if (cfg->prev_id && cfg->prev_id[0] && strlen(cfg->prev_id) < sizeof s->worker_id)
        s_copy(s->worker_id, sizeof s->worker_id, cfg->prev_id);
    snprintf(s->pipe_name, sizeof s->pipe_name, "inproc://shoal-session-%p", (void *)s);
    s->pipe_train = zmq_socket(zctx, ZMQ_PAIR);
    s->pipe_sess = zmq_socket(zctx, ZMQ_PAIR);
    if (!s->pipe_train || !s->pipe_sess || zmq_bind(s->pipe_train, s->pipe_name) != 0 ||
        zmq_connect(s->pipe_sess, s->pipe_name) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "session: inproc pipe: %s", zmq_strerror(errno));
        goto fail;
    }
    if (pthread_create(&s->thread, NULL, s_thread, s) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "session: cannot start the session thread");
        goto fail;
    }
    s->started = 1;
    *out = s;
    return SHOAL_OK;
fail:
    session_destroy(&s);
    return rc;
}

void session_destroy(session_t **sp)
{
    session_t *s = *sp;
    if (!s)
        return;
    if (s->started) {
        void *quit = NULL;
        zmq_send(s->pipe_train, &quit, sizeof quit, 0);
        pthread_join(s->thread, NULL);
    }
    /* Events the training thread never took. */
    for (;;) {
        sess_event_t *ev = NULL;
        if (!s->pipe_train || zmq_recv(s->pipe_train, &ev, sizeof ev, ZMQ_DONTWAIT) != (int)sizeof ev)
            break;
        sess_event_destroy(&ev);
    }
    comm_ids_destroy(&s->ids); /* the training thread waits on it no more: it destroys us */
    if (s->dealer)
        zmq_close(s->dealer);
    if (s->pipe_sess)
        zmq_close(s->pipe_sess);
    if (s->pipe_train)
        zmq_close(s->pipe_train);
    for (int i = 0; i < s->n_pending; i++)
        free(s->pending[i].req);
    free(s->status);
    free(s->coordinator);
    free(s->name);
    free(s->host);
    free(s->device);
    free(s->institution);
    free(s->version);
    free(s->data_endpoint);
    free(s->shard_endpoint);
    free(s->id_file);
    plan_peers_clear(&s->held);
    free(s->held_spec);
    pthread_mutex_destroy(&s->mu);
    comm_watch_fini(&s->watch);
    free(s);
    *sp = NULL;
}

shoal_err_t session_post(session_t *s, sess_req_t **req)
{
    sess_req_t *r = *req;
    *req = NULL;
    if (!r)
        return shoal_fail(SHOAL_ERR_NOMEM, "session: no request (out of memory)");
    if (zmq_send(s->pipe_train, &r, sizeof r, 0) != (int)sizeof r) {
        free(r);
        return shoal_fail(SHOAL_ERR_IO, "session: cannot post a request: %s",
                          zmq_strerror(errno));
    }
    return SHOAL_OK;
}

shoal_err_t session_wait(session_t *s, int timeout_ms, sess_event_t **ev)
{
    *ev = NULL;
    zmq_pollitem_t item = {s->pipe_train, 0, ZMQ_POLLIN, 0};
    int n = zmq_poll(&item, 1, timeout_ms);
    if (n < 0 && errno != EINTR)
        return shoal_fail(SHOAL_ERR_IO, "session: poll: %s", zmq_strerror(errno));
    if (n <= 0)
        return SHOAL_ERR_TIMEOUT;
    if (zmq_recv(s->pipe_train, ev, sizeof *ev, ZMQ_DONTWAIT) != (int)sizeof *ev) {
        *ev = NULL;
        return SHOAL_ERR_TIMEOUT;
    }
    return SHOAL_OK;
}

void session_track_comms(session_t *s, cell_comms_t *c, uint64_t generation,
                         int64_t inflight_step)
{
    (void)comm_watch_track(&s->watch, c, generation, inflight_step, COMM_WATCH_ALL);
}

void session_track_comms_on(session_t *s, cell_comms_t *c, uint64_t generation,
                            int64_t inflight_step, unsigned causes)
{
    (void)comm_watch_track(&s->watch, c, generation, inflight_step, causes);
}

double session_since_stop_s(const session_t *s)
{
    const int64_t at = atomic_load(&((session_t *)s)->stop_seen_at_ms);
    return at ? (double)(clock_mono_ms() - at) / 1000.0 : -1.0;
}

int session_grace_expired(const session_t *s)
{
    return atomic_load(&((session_t *)s)->grace_expired);
}

void session_worker_id(session_t *s, char *out, size_t cap)
{
    pthread_mutex_lock(&s->mu);
    s_copy(out, cap, s->worker_id);
    pthread_mutex_unlock(&s->mu);
}

comm_ids_t *session_comm_ids(session_t *s)
{
    return s->ids;
}

shoal_err_t session_send_comm_id(session_t *s, const char *run_id, uint64_t generation,
                                 uint32_t tag, const uint8_t *id, size_t len)
{
    if (!id || len == 0 || len > sizeof ((sess_req_t *)0)->comm_id)
        return shoal_fail(SHOAL_ERR_INVALID, "session: comm id of %zu bytes", len);
    sess_req_t *r = sess_req_new(SESS_REQ_COMM_ID, run_id, generation);
    if (!r)
        return shoal_fail(SHOAL_ERR_NOMEM, "session: out of memory");
    wire_comm_group_format(r->comm_group, sizeof r->comm_group, generation, tag);
    memcpy(r->comm_id, id, len);
    r->comm_id_len = len;
    return session_post(s, &r);
}
