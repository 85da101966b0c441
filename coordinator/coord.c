/* coord.c: the coordinator's state machine: worker protocol handlers, the step barrier and
 * checkpoint commits, the planner's application at step boundaries, the cron, persistence and
 * the zmq_poll loop. Control verbs live in control.c. */
#include "coord_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#ifdef SHOAL_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"

#define COORD_CRON_MS 50
#define COORD_BURST 256 /* messages drained per socket per poll round */

static const char *s_worker_states[WORKER__COUNT] = {"joining", "active", "draining",
                                                     "drained", "dead",   "left"};
static const char *s_run_states[RUN__COUNT] = {"pending", "running", "paused",
                                               "done",    "failed",  "cancelled"};

const char *coord_worker_state_name(worker_state_t s)
{
    return (unsigned)s < WORKER__COUNT ? s_worker_states[s] : "unknown";
}

const char *coord_run_state_name(run_state_t s)
{
    return (unsigned)s < RUN__COUNT ? s_run_states[s] : "unknown";
}

static int s_parse_state(const char *name, const char *const *names, int n)
{
    for (int i = 0; name && i < n; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

int64_t coord_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t coord_now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int s_is_live(worker_state_t s)
{
    return s == WORKER_JOINING || s == WORKER_ACTIVE || s == WORKER_DRAINING || s == WORKER_DRAINED;
}

static int s_run_is_terminal(run_state_t s)
{
    return s == RUN_DONE || s == RUN_FAILED || s == RUN_CANCELLED;
}

coord_worker_t *coord_find_worker(coord_t *c, const char *id_or_name)
{
    for (int i = 0; i < c->n_workers; i++)
        if (strcmp(c->workers[i]->id, id_or_name) == 0)
            return c->workers[i];
    for (int i = 0; i < c->n_workers; i++)
        if (strcmp(c->workers[i]->name, id_or_name) == 0)
            return c->workers[i];
    return NULL;
}

/* Worker ids are "w<N>" (assigned here), so the number indexes c->by_num: every message's
 * sender is found in O(1) however many workers there are. */
static int s_id_number(const char *id, uint64_t *n)
{
    if (id[0] != 'w' || id[1] < '1' || id[1] > '9')
        return 0;
    char *end = NULL;
    unsigned long long v = strtoull(id + 1, &end, 10);
    if (*end || v > (1ull << 31))
        return 0;
    *n = v;
    return 1;
}

static coord_worker_t *s_worker_by_id(coord_t *c, const char *id)
{
    uint64_t n;
    if (!s_id_number(id, &n) || n >= c->cap_by_num || !c->by_num[n])
        return NULL;
    return strcmp(c->by_num[n]->id, id) == 0 ? c->by_num[n] : NULL;
}

/* Appends a worker to the list and the index. SHOAL_ERR_NOMEM, or SHOAL_ERR_INVALID for an id
 * not of the form w<N>. */
static shoal_err_t s_worker_insert(coord_t *c, coord_worker_t *w)
{
    uint64_t n;
    if (!s_id_number(w->id, &n))
        return shoal_fail(SHOAL_ERR_INVALID, "worker id '%s' is not w<N>", w->id);
    if (n >= c->cap_by_num) {
        uint64_t cap = c->cap_by_num ? c->cap_by_num : 64;
        while (cap <= n)
            cap *= 2;
        coord_worker_t **idx = realloc(c->by_num, cap * sizeof *idx);
        if (!idx)
            return shoal_fail(SHOAL_ERR_NOMEM, "worker index");
        memset(idx + c->cap_by_num, 0, (cap - c->cap_by_num) * sizeof *idx);
        c->by_num = idx;
        c->cap_by_num = cap;
    }
    if (c->n_workers == c->cap_workers) {
        int cap = c->cap_workers ? 2 * c->cap_workers : 16;
        coord_worker_t **ws = realloc(c->workers, (size_t)cap * sizeof *ws);
        if (!ws)
            return shoal_fail(SHOAL_ERR_NOMEM, "workers");
        c->workers = ws;
        c->cap_workers = cap;
    }
    c->workers[c->n_workers++] = w;
    c->by_num[n] = w;
    return SHOAL_OK;
}

coord_run_t *coord_find_run(coord_t *c, const char *id_or_name)
{
    for (int i = 0; i < c->n_runs; i++)
        if (strcmp(c->runs[i]->id, id_or_name) == 0)
            return c->runs[i];
    for (int i = 0; i < c->n_runs; i++)
        if (strcmp(c->runs[i]->name, id_or_name) == 0)
            return c->runs[i];
    return NULL;
}

/* ---- persistence ------------------------------------------------------------------------ */

static store_batch_t *s_txn(coord_t *c)
{
    if (!c->txn)
        c->txn = store_batch_new(c->st);
    return c->txn;
}

static json_t *s_worker_json(const coord_worker_t *w)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "id", w->id,
                     "name", w->name, "host", w->host, "devices", w->devices, "memory_bytes",
                     (json_int_t)w->memory_bytes, "institution", w->institution, "version",
                     w->version, "data_endpoint", w->endpoint, "state",
                     coord_worker_state_name(w->state), "run", w->run, "registered_ms",
                     (json_int_t)w->registered_ms, "quarantine", w->quarantine);
}

static json_t *s_run_json(const coord_run_t *r)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:i, s:i, s:I, s:I, s:I, s:I, s:s, s:f, s:I, "
                     "s:s}",
                     "id", r->id, "name", r->name, "spec_yaml", r->spec_yaml, "state",
                     coord_run_state_name(r->state), "total_steps", (json_int_t)r->total_steps,
                     "n_layers", (int)r->n_layers, "n_experts", (int)r->n_experts, "generation",
                     (json_int_t)r->generation, "committed_step", (json_int_t)r->committed_step,
                     "lease", (json_int_t)r->lease, "checkpoint_step",
                     (json_int_t)r->checkpoint_step, "checkpoint_path", r->checkpoint_path, "loss",
                     r->loss, "submitted_ms", (json_int_t)r->submitted_ms, "reason", r->reason);
}

static void s_put_json(coord_t *c, store_cf_t cf, const char *key, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text)
        store_batch_put(s_txn(c), cf, key, text, strlen(text));
    else
        log_error("cannot serialise %s/%s: out of memory", store_cf_name(cf), key);
    free(text);
    json_decref(j);
}

void coord_put_worker(coord_t *c, const coord_worker_t *w)
{
    s_put_json(c, STORE_CF_WORKERS, w->id, s_worker_json(w));
}

void coord_put_run(coord_t *c, const coord_run_t *r)
{
    s_put_json(c, STORE_CF_RUNS, r->id, s_run_json(r));
}

void coord_put_meta(coord_t *c, const char *key, uint64_t value)
{
    char v[32];
    int n = snprintf(v, sizeof v, "%" PRIu64, value);
    store_batch_put(s_txn(c), STORE_CF_META, key, v, (size_t)n);
}

static void s_put_plan(coord_t *c, const plan_t *p)
{
    char key[PLAN_ID_MAX + 24];
    snprintf(key, sizeof key, "%s/%020" PRIu64, p->run_id, p->generation);
    s_put_json(c, STORE_CF_PLANS, key, plan_to_json(p));
}

void coord_ledger(coord_t *c, const char *run, const char *kind, json_t *detail)
{
    shoal_err_t rc = ledger_append(c->ledger, s_txn(c), run && run[0] ? run : LEDGER_CLUSTER, kind,
                                   detail, coord_now_wall_ms(), NULL);
    if (rc != SHOAL_OK)
        log_error("ledger: %s", shoal_errmsg());
    json_decref(detail);
}

shoal_err_t coord_txn_commit(coord_t *c)
{
    if (!c->txn)
        return SHOAL_OK;
    shoal_err_t rc = SHOAL_OK;
    if (store_batch_count(c->txn) > 0)
        rc = store_commit(c->txn);
    if (rc == SHOAL_OK) {
        ledger_staged_commit(c->ledger);
    } else {
        log_error("state not persisted: %s", shoal_errmsg());
        ledger_staged_discard(c->ledger);
    }
    store_batch_destroy(&c->txn);
    return rc;
}

/* ---- transitions ----------------------------------------------------------------------- */

static int s_worker_transition_ok(worker_state_t from, worker_state_t to)
{
    switch (to) {
    case WORKER_JOINING:
        return from == WORKER_DEAD || from == WORKER_LEFT;
    case WORKER_ACTIVE:
        return from == WORKER_JOINING || from == WORKER_DRAINING || from == WORKER_DRAINED;
    case WORKER_DRAINING:
        return from == WORKER_JOINING || from == WORKER_ACTIVE;
    case WORKER_DRAINED: /* from active/joining: quarantine (see s_quarantine) */
        return from == WORKER_DRAINING || from == WORKER_ACTIVE || from == WORKER_JOINING;
    case WORKER_DEAD:
    case WORKER_LEFT:
        return s_is_live(from);
    default:
        return 0;
    }
}

shoal_err_t coord_worker_transition(coord_t *c, coord_worker_t *w, worker_state_t to,
                                    const char *fmt, ...)
{
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    worker_state_t from = w->state;
    if (!s_worker_transition_ok(from, to))
        return shoal_fail(SHOAL_ERR_STATE, "worker %s: cannot go from %s to %s", w->id,
                          coord_worker_state_name(from), coord_worker_state_name(to));
    w->state = to;
    if (to == WORKER_ACTIVE)
        w->quarantine[0] = 0; /* undrained: placeable again */
    log_info("worker %s: %s -> %s (%s)", w->id, coord_worker_state_name(from),
             coord_worker_state_name(to), reason);
    coord_ledger(c, w->run, "worker_state",
                 json_pack("{s:s, s:s, s:s, s:s, s:s}", "worker", w->id, "name", w->name, "from",
                           coord_worker_state_name(from), "to", coord_worker_state_name(to),
                           "reason", reason));
    coord_put_worker(c, w);
    return SHOAL_OK;
}

static int s_run_transition_ok(run_state_t from, run_state_t to)
{
    switch (to) {
    case RUN_RUNNING:
        return from == RUN_PENDING || from == RUN_PAUSED;
    case RUN_PAUSED:
        return from == RUN_RUNNING;
    case RUN_DONE:
        return from == RUN_RUNNING;
    case RUN_FAILED:
    case RUN_CANCELLED:
        return !s_run_is_terminal(from);
    default:
        return 0;
    }
}

shoal_err_t coord_run_transition(coord_t *c, coord_run_t *r, run_state_t to, const char *fmt, ...)
{
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    run_state_t from = r->state;
    if (!s_run_transition_ok(from, to))
        return shoal_fail(SHOAL_ERR_STATE, "run %s is %s: cannot become %s", r->id,
                          coord_run_state_name(from), coord_run_state_name(to));
    r->state = to;
    if (to == RUN_FAILED || to == RUN_CANCELLED)
        snprintf(r->reason, sizeof r->reason, "%s", reason);
    log_info("run %s: %s -> %s (%s)", r->id, coord_run_state_name(from), coord_run_state_name(to),
             reason);
    coord_ledger(c, r->id, "run_state",
                 json_pack("{s:s, s:s, s:s, s:I}", "from", coord_run_state_name(from), "to",
                           coord_run_state_name(to), "reason", reason, "step",
                           (json_int_t)r->committed_step));
    coord_put_run(c, r);
    return SHOAL_OK;
}

/* ---- sending ---------------------------------------------------------------------------- */

static void s_send(coord_t *c, void *sock, const wire_route_t *route, Shoal__Envelope *env)
{
    env->seq = ++c->seq;
    shoal_err_t rc = wire_send(sock, route, env, ZMQ_DONTWAIT);
    if (rc != SHOAL_OK)
        log_debug("send %s: %s", wire_type_name((int)env->type), shoal_errmsg());
}

static void s_send_worker(coord_t *c, coord_worker_t *w, Shoal__Envelope *env)
{
    if (w->has_route)
        s_send(c, c->wsock, &w->route, env);
}

/* An Error about `about`; its envelope (and `generation`) name the sender's current run `r` and
 * that run's generation (NULL: none), so that the answer carries no stale or foreign pair. */
static void s_reply_error(coord_t *c, const wire_route_t *route, Shoal__ErrorCode code,
                          const Shoal__Envelope *about, const coord_run_t *r, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void s_reply_error(coord_t *c, const wire_route_t *route, Shoal__ErrorCode code,
                          const Shoal__Envelope *about, const coord_run_t *r, const char *fmt, ...)
{
    const uint64_t generation = r ? r->generation : 0;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Shoal__Error e = SHOAL__ERROR__INIT;
    e.code = code;
    e.message = msg;
    e.generation = generation;
    if (about) {
        e.about_type = about->type;
        e.about_seq = about->seq;
    }
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_ERROR, r ? r->id : "", COORD_SENDER, generation,
                       0);
    env.body_case = SHOAL__ENVELOPE__BODY_ERROR;
    env.error = &e;
    s_send(c, c->wsock, route, &env);
}

/* The Ack of every worker message, with what the worker should do next. */
static void s_reply_ack(coord_t *c, const wire_route_t *route, const Shoal__Envelope *about,
                        coord_worker_t *w, coord_run_t *r)
{
    Shoal__Ack ack = SHOAL__ACK__INIT;
    ack.acked_type = about->type;
    ack.acked_seq = about->seq;
    ack.directive = SHOAL__DIRECTIVE__DIRECTIVE_NONE;
    if (r) {
        ack.generation = r->generation;
        ack.committed_step = r->committed_step;
        ack.lease = r->lease;
    }
    if (w && (w->state == WORKER_DRAINING || w->state == WORKER_DRAINED) && !r)
        ack.directive = SHOAL__DIRECTIVE__DIRECTIVE_DRAIN;
    else if (r && (strcmp(about->run_id, r->id) != 0 || about->generation != r->generation))
        ack.directive = SHOAL__DIRECTIVE__DIRECTIVE_FETCH_ASSIGNMENT;
    else if (r && r->state == RUN_PAUSED)
        ack.directive = SHOAL__DIRECTIVE__DIRECTIVE_PAUSE;
    else if (!r && about->run_id[0])
        ack.directive = SHOAL__DIRECTIVE__DIRECTIVE_STOP;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_ACK, r ? r->id : "", COORD_SENDER,
                       r ? r->generation : 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    s_send(c, c->wsock, route, &env);
}

/* Protobuf form of a plan; arrays owned here, freed by s_plan_pb_free(). */
typedef struct {
    Shoal__Plan plan;
    Shoal__Topology topo;
    Shoal__CheckpointRef ckpt;
    Shoal__StageLayers *stages, **stage_ptrs;
    Shoal__ExpertShard *experts, **expert_ptrs;
    uint32_t *expert_ids;
    Shoal__Peer *peers, **peer_ptrs;
    Shoal__Cell *cells;
} s_plan_pb_t;

static void s_plan_pb_free(s_plan_pb_t *pb)
{
    free(pb->stages);
    free(pb->stage_ptrs);
    free(pb->experts);
    free(pb->expert_ptrs);
    free(pb->expert_ids);
    free(pb->peers);
    free(pb->peer_ptrs);
    free(pb->cells);
}

static shoal_err_t s_plan_pb(const plan_t *p, s_plan_pb_t *pb)
{
    memset(pb, 0, sizeof *pb);
    Shoal__Plan plan = SHOAL__PLAN__INIT;
    Shoal__Topology topo = SHOAL__TOPOLOGY__INIT;
    Shoal__CheckpointRef ck = SHOAL__CHECKPOINT_REF__INIT;
    pb->plan = plan;
    pb->topo = topo;
    pb->ckpt = ck;
    size_t n_ids = 0;
    for (uint32_t e = 0; e < p->n_experts; e++)
        n_ids += p->experts[e].count;
    pb->stages = calloc(p->pp + 1, sizeof *pb->stages);
    pb->stage_ptrs = calloc(p->pp + 1, sizeof *pb->stage_ptrs);
    pb->experts = calloc(p->n_experts + 1, sizeof *pb->experts);
    pb->expert_ptrs = calloc(p->n_experts + 1, sizeof *pb->expert_ptrs);
    pb->expert_ids = calloc(n_ids + 1, sizeof *pb->expert_ids);
    pb->peers = calloc(p->n_peers + 1, sizeof *pb->peers);
    pb->peer_ptrs = calloc(p->n_peers + 1, sizeof *pb->peer_ptrs);
    pb->cells = calloc(p->n_peers + 1, sizeof *pb->cells);
    if (!pb->stages || !pb->stage_ptrs || !pb->experts || !pb->expert_ptrs || !pb->expert_ids ||
        !pb->peers || !pb->peer_ptrs || !pb->cells) {
        s_plan_pb_free(pb);
        return shoal_fail(SHOAL_ERR_NOMEM, "plan message");
    }
    pb->plan.run_id = (char *)p->run_id;
    pb->plan.generation = p->generation;
    pb->topo.dp = p->dp;
    pb->topo.pp = p->pp;
    pb->topo.ep = p->ep;
    pb->plan.topology = &pb->topo;
    for (uint32_t s = 0; s < p->pp; s++) {
        Shoal__StageLayers st = SHOAL__STAGE_LAYERS__INIT;
        st.stage = s;
        st.first_layer = p->stages[s].first_layer;
        st.n_layers = p->stages[s].n_layers;
        st.has_embedding = p->stages[s].has_embedding;
        st.has_head = p->stages[s].has_head;
        pb->stages[s] = st;
        pb->stage_ptrs[s] = &pb->stages[s];
    }
    pb->plan.stages = pb->stage_ptrs;
    pb->plan.n_stages = p->pp;
    size_t at = 0;
    for (uint32_t e = 0; e < p->n_experts; e++) {
        Shoal__ExpertShard ex = SHOAL__EXPERT_SHARD__INIT;
        ex.ep_rank = p->experts[e].ep_rank;
        ex.experts = &pb->expert_ids[at];
        ex.n_experts = p->experts[e].count;
        for (uint32_t k = 0; k < p->experts[e].count; k++)
            pb->expert_ids[at++] = p->experts[e].first + k;
        pb->experts[e] = ex;
        pb->expert_ptrs[e] = &pb->experts[e];
    }
    pb->plan.experts = pb->expert_ptrs;
    pb->plan.n_experts = p->n_experts;
    for (uint32_t i = 0; i < p->n_peers; i++) {
        Shoal__Peer peer = SHOAL__PEER__INIT;
        Shoal__Cell cell = SHOAL__CELL__INIT;
        cell.replica = p->peers[i].cell.replica;
        cell.stage = p->peers[i].cell.stage;
        cell.ep_rank = p->peers[i].cell.ep_rank;
        pb->cells[i] = cell;
        peer.worker_id = (char *)p->peers[i].worker_id;
        peer.rank = p->peers[i].rank;
        peer.cell = &pb->cells[i];
        peer.data_endpoint = (char *)p->peers[i].endpoint;
        pb->peers[i] = peer;
        pb->peer_ptrs[i] = &pb->peers[i];
    }
    pb->plan.peers = pb->peer_ptrs;
    pb->plan.n_peers = p->n_peers;
    pb->plan.start_step = p->start_step;
    pb->plan.source = (Shoal__StateSource)p->source;
    if (p->source == PLAN_SOURCE_CHECKPOINT) {
        pb->ckpt.step = p->ckpt_step;
        pb->ckpt.path = (char *)p->ckpt_path;
        pb->plan.checkpoint = &pb->ckpt;
    }
    pb->plan.source_rank = p->source_rank;
    return SHOAL_OK;
}

void coord_push_assignment(coord_t *c, coord_run_t *r, coord_worker_t *w)
{
    const plan_peer_t *me = plan_find_worker(&r->plan, w->id);
    if (!me || !w->has_route)
        return;
    s_plan_pb_t pb;
    if (s_plan_pb(&r->plan, &pb) != SHOAL_OK) {
        log_error("assignment for %s: %s", w->id, shoal_errmsg());
        return;
    }
    Shoal__Cell cell = SHOAL__CELL__INIT;
    cell.replica = me->cell.replica;
    cell.stage = me->cell.stage;
    cell.ep_rank = me->cell.ep_rank;
    Shoal__Assignment a = SHOAL__ASSIGNMENT__INIT;
    a.plan = &pb.plan;
    a.run_name = r->name;
    a.spec_yaml = r->spec_yaml;
    a.cell = &cell;
    a.rank = me->rank;
    a.lease = r->lease;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_ASSIGNMENT, r->id, COORD_SENDER, r->generation,
                       0);
    env.body_case = SHOAL__ENVELOPE__BODY_ASSIGNMENT;
    env.assignment = &a;
    s_send_worker(c, w, &env);
    s_plan_pb_free(&pb);
}

static void s_push_run_control_to(coord_t *c, coord_run_t *r, coord_worker_t *w, int command,
                                  const char *reason)
{
    Shoal__RunControl rc = SHOAL__RUN_CONTROL__INIT;
    rc.command = (Shoal__RunCommand)command;
    rc.reason = (char *)reason;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_RUN_CONTROL, r->id, COORD_SENDER, r->generation,
                       0);
    env.body_case = SHOAL__ENVELOPE__BODY_RUN_CONTROL;
    env.run_control = &rc;
    s_send_worker(c, w, &env);
}

void coord_push_run_control(coord_t *c, coord_run_t *r, int command, const char *reason)
{
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *w = s_worker_by_id(c, r->plan.peers[i].worker_id);
        if (w)
            s_push_run_control_to(c, r, w, command, reason);
    }
}

void coord_push_step_commit(coord_t *c, coord_run_t *r)
{
    Shoal__StepCommit sc = SHOAL__STEP_COMMIT__INIT;
    sc.step = r->committed_step;
    sc.lease = r->lease;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_STEP_COMMIT, r->id, COORD_SENDER, r->generation,
                       0);
    env.body_case = SHOAL__ENVELOPE__BODY_STEP_COMMIT;
    env.step_commit = &sc;
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *w = s_worker_by_id(c, r->plan.peers[i].worker_id);
        if (w)
            s_send_worker(c, w, &env);
    }
}

void coord_push_drain(coord_t *c, coord_worker_t *w, const char *reason)
{
    Shoal__Drain d = SHOAL__DRAIN__INIT;
    d.reason = (char *)reason;
    /* like every push: the worker's run and that run's current generation ("" and 0: none) */
    coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_DRAIN, r ? r->id : "", COORD_SENDER,
                       r ? r->generation : 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_DRAIN;
    env.drain = &d;
    s_send_worker(c, w, &env);
}

/* ---- runs: barrier, checkpoints, plans --------------------------------------------------- */

static int64_t s_lease_for(const coord_t *c, const coord_run_t *r)
{
    int64_t l = r->committed_step + c->cfg.step_window;
    return l < r->total_steps ? l : r->total_steps;
}

static shoal_err_t s_run_reset_ranks(coord_run_t *r)
{
    free(r->reported);
    free(r->rank_loss);
    r->reported = NULL;
    r->rank_loss = NULL;
    uint32_t n = r->plan.n_peers;
    r->reported = calloc(n + 1, sizeof *r->reported);
    r->rank_loss = calloc(n + 1, sizeof *r->rank_loss);
    if (!r->reported || !r->rank_loss)
        return shoal_fail(SHOAL_ERR_NOMEM, "run %s ranks", r->id);
    for (uint32_t i = 0; i < n; i++)
        r->reported[i] = r->committed_step;
    return SHOAL_OK;
}

void coord_run_release_workers(coord_t *c, coord_run_t *r, const char *reason)
{
    for (int i = 0; i < c->n_workers; i++) {
        coord_worker_t *w = c->workers[i];
        if (strcmp(w->run, r->id) != 0)
            continue;
        w->run[0] = 0;
        coord_put_worker(c, w);
        if (w->state == WORKER_DRAINING)
            (void)coord_worker_transition(c, w, WORKER_DRAINED, "run %s ended", r->id);
    }
    /* durable first, then announced */
    coord_txn_commit(c);
    coord_push_run_control(c, r, SHOAL__RUN_COMMAND__RUN_CMD_STOP, reason);
}

static void s_run_check_done(coord_t *c, coord_run_t *r)
{
    if (r->state != RUN_RUNNING || r->committed_step < r->total_steps ||
        r->checkpoint_step < r->total_steps)
        return;
    (void)coord_run_transition(c, r, RUN_DONE, "step %" PRId64 " and its checkpoint committed",
                               r->committed_step);
    coord_run_release_workers(c, r, "run done");
}

/* The step barrier: the committed step is the smallest step every rank has reported. */
static void s_run_advance(coord_t *c, coord_run_t *r)
{
    if (r->plan.n_peers == 0)
        return;
    int64_t low = INT64_MAX;
    for (uint32_t i = 0; i < r->plan.n_peers; i++)
        if (r->reported[i] < low)
            low = r->reported[i];
    if (low <= r->committed_step)
        return;
    r->committed_step = low;
    r->fail_backoff_ms = 0; /* the plan works: the next failure re-plans at once again */
    r->fail_replan_at_ms = 0;
    double sum = 0;
    int n = 0;
    for (uint32_t i = 0; i < r->plan.n_peers; i++)
        if (r->reported[i] == low) {
            sum += r->rank_loss[i];
            n++;
        }
    if (n)
        r->loss = sum / n;
    if (r->state == RUN_RUNNING && !r->replan_pending)
        r->lease = s_lease_for(c, r);
    log_debug("run %s: step %" PRId64 " committed (loss %.4f, lease %" PRId64 ")", r->id,
              r->committed_step, r->loss, r->lease);
    coord_put_run(c, r);
    if (coord_txn_commit(c) != SHOAL_OK)
        return;
    coord_push_step_commit(c, r);
    s_run_check_done(c, r);
}

typedef struct {
    coord_worker_t **list;
    uint32_t n, cap;
} s_wlist_t;

static int s_wlist_has(const s_wlist_t *l, const coord_worker_t *w)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (l->list[i] == w)
            return 1;
    return 0;
}

/* Workers the run's next plan would hold: current members still active first (rank order,
 * so that ranks stay put), then other active free workers by registration order. */
static shoal_err_t s_eligible(coord_t *c, coord_run_t *r, s_wlist_t *out)
{
    out->cap = (uint32_t)c->n_workers + 1;
    out->n = 0;
    out->list = calloc(out->cap, sizeof *out->list);
    if (!out->list)
        return shoal_fail(SHOAL_ERR_NOMEM, "eligible workers");
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *w = s_worker_by_id(c, r->plan.peers[i].worker_id);
        if (w && w->state == WORKER_ACTIVE && strcmp(w->run, r->id) == 0)
            out->list[out->n++] = w;
    }
    for (int i = 0; i < c->n_workers; i++) {
        coord_worker_t *w = c->workers[i];
        if (w->state == WORKER_ACTIVE && (!w->run[0] || strcmp(w->run, r->id) == 0) &&
            !s_wlist_has(out, w))
            out->list[out->n++] = w;
    }
    return SHOAL_OK;
}

/* Generations are unique across runs (each new plan of any run takes the next number), so
 * that a data endpoint, a collective tag or an NCCL id never sees the same generation twice;
 * within a run every new plan is its previous generation + 1 while it holds the cluster. */
static uint64_t s_next_generation(const coord_t *c, const coord_run_t *r)
{
    return (c->last_generation > r->generation ? c->last_generation : r->generation) + 1;
}

static shoal_err_t s_build_plan(coord_run_t *r, uint64_t generation, const s_wlist_t *e, plan_t *p,
                                int64_t *committed_out)
{
    plan_worker_t *pw = calloc(e->n + 1, sizeof *pw);
    if (!pw)
        return shoal_fail(SHOAL_ERR_NOMEM, "plan");
    for (uint32_t i = 0; i < e->n; i++)
        pw[i] = (plan_worker_t){e->list[i]->id, e->list[i]->endpoint};
    shoal_err_t rc = plan_build_dp(p, r->id, generation, pw, e->n, r->n_layers, r->n_experts);
    free(pw);
    if (rc != SHOAL_OK)
        return rc;
    /* where the state comes from: the survivor that got furthest, else the checkpoint */
    int64_t best = -1;
    uint32_t best_rank = 0;
    for (uint32_t i = 0; i < e->n; i++) {
        const plan_peer_t *old = plan_find_worker(&r->plan, e->list[i]->id);
        if (!old || !r->reported || strcmp(e->list[i]->run, r->id) != 0)
            continue; /* not a survivor: new, or restarted without its state */
        int64_t st = r->reported[old->rank];
        if (st > best) {
            best = st;
            best_rank = i;
        }
    }
    if (best > 0 && r->generation > 0) { /* best == 0: nobody trained yet, nothing to copy */
        p->source = PLAN_SOURCE_PEER;
        p->source_rank = best_rank;
        p->start_step = best + 1;
        *committed_out = best;
    } else if (r->checkpoint_step > 0) {
        p->source = PLAN_SOURCE_CHECKPOINT;
        p->ckpt_step = r->checkpoint_step;
        snprintf(p->ckpt_path, sizeof p->ckpt_path, "%s", r->checkpoint_path);
        p->start_step = r->checkpoint_step + 1;
        *committed_out = r->checkpoint_step;
    } else {
        p->source = PLAN_SOURCE_INIT;
        p->start_step = 1;
        *committed_out = 0;
    }
    return SHOAL_OK;
}

shoal_err_t coord_plan_preview(coord_t *c, coord_run_t *r, plan_t *out)
{
    s_wlist_t e;
    memset(out, 0, sizeof *out);
    shoal_err_t rc = s_eligible(c, r, &e);
    if (rc != SHOAL_OK)
        return rc;
    int64_t committed;
    if (e.n == 0)
        rc = shoal_fail(SHOAL_ERR_STATE, "run %s: no active worker to place", r->id);
    else
        rc = s_build_plan(r, s_next_generation(c, r), &e, out, &committed);
    free(e.list);
    return rc;
}

/* Installs a new plan (generation + 1) for `r` with the eligible workers `e`. */
static void s_apply_plan(coord_t *c, coord_run_t *r, const s_wlist_t *e, const char *why)
{
    plan_t p = {0};
    int64_t committed = 0;
    shoal_err_t rc = s_build_plan(r, s_next_generation(c, r), e, &p, &committed);
    if (rc == SHOAL_ERR_INVALID) {
        /* the spec cannot be placed (a layout the model does not allow): retrying cannot help */
        char why_failed[512];
        snprintf(why_failed, sizeof why_failed, "planning failed: %s", shoal_errmsg());
        log_error("run %s: %s", r->id, why_failed);
        if (coord_run_transition(c, r, RUN_FAILED, "%s", why_failed) == SHOAL_OK)
            coord_run_release_workers(c, r, why_failed);
        coord_txn_commit(c);
        return;
    }
    if (rc != SHOAL_OK) {
        log_error("run %s: planning failed: %s", r->id, shoal_errmsg());
        return;
    }
    if (committed < r->committed_step)
        log_warn("run %s: rolling back from step %" PRId64 " to checkpoint %" PRId64
                 ": no live worker holds a later state",
                 r->id, r->committed_step, committed);
    /* workers leaving the plan (told once the plan is durable) */
    coord_worker_t **leaving = calloc(r->plan.n_peers + 1, sizeof *leaving);
    uint32_t n_leaving = 0;
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *w = s_worker_by_id(c, r->plan.peers[i].worker_id);
        if (!w || plan_find_worker(&p, w->id))
            continue;
        if (strcmp(w->run, r->id) == 0)
            w->run[0] = 0;
        if (s_is_live(w->state) && leaving)
            leaving[n_leaving++] = w;
        if (w->state == WORKER_DRAINING)
            (void)coord_worker_transition(c, w, WORKER_DRAINED, "left plan of %s at step %" PRId64,
                                          r->id, committed);
        else
            coord_put_worker(c, w);
    }
    plan_fini(&r->plan);
    r->plan = p;
    r->generation = p.generation;
    c->last_generation = p.generation;
    coord_put_meta(c, "last_generation", c->last_generation);
    r->committed_step = committed;
    r->replan_pending = 0;
    r->replan_now = 0;
    r->reason[0] = 0; /* placed: no "unplaced" note any more (terminal runs never get here) */
    r->lease = r->state == RUN_RUNNING ? s_lease_for(c, r) : committed;
    if (s_run_reset_ranks(r) != SHOAL_OK)
        log_error("%s", shoal_errmsg());
    json_t *ids = json_array();
    for (uint32_t i = 0; i < e->n; i++) {
        coord_worker_t *w = e->list[i];
        json_array_append_new(ids, json_string(w->id));
        if (strcmp(w->run, r->id) != 0) {
            snprintf(w->run, sizeof w->run, "%s", r->id);
            coord_put_worker(c, w);
        }
    }
    log_info("run %s: plan generation %" PRIu64 ": dp=%u pp=%u ep=%u from step %" PRId64
             " (state from %s) (%s)",
             r->id, p.generation, p.dp, p.pp, p.ep, p.start_step, plan_source_name(p.source), why);
    s_put_plan(c, &r->plan);
    coord_put_run(c, r);
    coord_ledger(c, r->id, "plan",
                 json_pack("{s:I, s:i, s:i, s:i, s:I, s:s, s:i, s:o, s:s}", "generation",
                           (json_int_t)p.generation, "dp", (int)p.dp, "pp", (int)p.pp, "ep",
                           (int)p.ep, "start_step", (json_int_t)p.start_step, "source",
                           plan_source_name(p.source), "source_rank", (int)p.source_rank, "workers",
                           ids, "reason", why));
    if (coord_txn_commit(c) == SHOAL_OK) {
        for (uint32_t i = 0; i < n_leaving; i++)
            s_push_run_control_to(c, r, leaving[i], SHOAL__RUN_COMMAND__RUN_CMD_STOP,
                                  "not in the new plan");
        for (uint32_t i = 0; i < e->n; i++)
            coord_push_assignment(c, r, e->list[i]);
    }
    free(leaving);
}

/* After a re-plan caused by a failure: the next one waits replan_backoff_ms, doubling up to
 * replan_backoff_max_ms (reset when a step commits). */
static void s_failure_backoff(coord_t *c, coord_run_t *r)
{
    int64_t b = r->fail_backoff_ms ? 2 * r->fail_backoff_ms : c->cfg.replan_backoff_ms;
    if (b > c->cfg.replan_backoff_max_ms)
        b = c->cfg.replan_backoff_max_ms;
    r->fail_backoff_ms = b;
    r->fail_replan_at_ms = coord_now_mono_ms() + b;
    r->fail_backoff_logged = 0;
}

/* A running run that lost its cells and has no active worker to place stays running, unplaced;
 * its status `reason` says why (quarantined workers with their failure) until a plan is made. */
static void s_note_unplaced(coord_t *c, coord_run_t *r)
{
    char note[sizeof r->reason];
    size_t at = (size_t)snprintf(note, sizeof note, "unplaced: no active worker to place");
    int n_q = 0;
    for (int i = 0; i < c->n_workers; i++) {
        const coord_worker_t *w = c->workers[i];
        if (w->state != WORKER_DRAINED || !w->quarantine[0])
            continue;
        at += (size_t)snprintf(note + at, at < sizeof note ? sizeof note - at : 0, "%s%s %s",
                               n_q++ ? "; " : " (", w->id, w->quarantine);
    }
    if (n_q)
        (void)snprintf(note + at, at < sizeof note ? sizeof note - at : 0,
                       "; shoalctl undrain places a worker again)");
    if (strcmp(note, r->reason) == 0)
        return;
    snprintf(r->reason, sizeof r->reason, "%s", note);
    log_warn("run %s: %s", r->id, note);
    coord_put_run(c, r);
    coord_txn_commit(c);
}

/* Membership check of a running run: a lost member re-plans now (the collectives of the old
 * plan cannot complete); joins and drains re-plan at the boundary (the frozen lease). */
static void s_run_replan_check(coord_t *c, coord_run_t *r)
{
    if (r->state != RUN_RUNNING)
        return;
    s_wlist_t e;
    if (s_eligible(c, r, &e) != SHOAL_OK)
        return;
    char why[256] = "";
    size_t at = 0;
    int lost = 0, changed = 0;
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *w = s_worker_by_id(c, r->plan.peers[i].worker_id);
        if (!w || w->state == WORKER_DEAD || w->state == WORKER_LEFT ||
            strcmp(w->run, r->id) != 0) {
            lost = 1;
            at += (size_t)snprintf(why + at, at < sizeof why ? sizeof why - at : 0, "%s%s %s",
                                   at ? ", " : "", r->plan.peers[i].worker_id,
                                   w ? coord_worker_state_name(w->state) : "gone");
        } else if (!s_wlist_has(&e, w)) {
            changed = 1;
            at += (size_t)snprintf(why + at, at < sizeof why ? sizeof why - at : 0, "%s%s %s",
                                   at ? ", " : "", w->id, coord_worker_state_name(w->state));
        }
    }
    for (uint32_t i = 0; i < e.n; i++)
        if (!plan_find_worker(&r->plan, e.list[i]->id)) {
            changed = 1;
            at += (size_t)snprintf(why + at, at < sizeof why ? sizeof why - at : 0, "%s%s joins",
                                   at ? ", " : "", e.list[i]->id);
        }
    /* a reported failure re-plans at once the first time, then after a back-off that doubles
     * with every further failure re-plan until a step commits: a worker that fails every plan
     * cannot flood the ledger with generations (a lost member still re-plans at once) */
    const int by_failure = r->replan_now && r->generation > 0;
    if (by_failure) {
        int64_t now = coord_now_mono_ms();
        if (lost || now >= r->fail_replan_at_ms) {
            lost = 1;
            at += (size_t)snprintf(why + at, at < sizeof why ? sizeof why - at : 0,
                                   "%sworker failure", at ? ", " : "");
        } else if (!r->fail_backoff_logged) {
            r->fail_backoff_logged = 1;
            log_info("run %s: plan failed again: next plan in %.1f s (back-off %.1f s)", r->id,
                     (double)(r->fail_replan_at_ms - now) / 1000.0,
                     (double)r->fail_backoff_ms / 1000.0);
        }
    }
    if (r->generation > 0 && !lost && !changed && r->replan_pending) {
        /* the change undid itself (a joiner died before the boundary): unfreeze the lease */
        r->replan_pending = 0;
        r->lease = s_lease_for(c, r);
        coord_put_run(c, r);
        coord_txn_commit(c);
        coord_push_step_commit(c, r);
    }
    if (r->generation == 0) {
        if (e.n >= (uint32_t)c->cfg.min_workers)
            s_apply_plan(c, r, &e, why[0] ? why : "first plan");
    } else if (lost || changed) {
        int at_end = r->committed_step >= r->total_steps;
        if (e.n == 0) {
            /* nobody to place: wait for workers; the lease stays frozen */
            r->replan_pending = 1;
            if (lost)
                s_note_unplaced(c, r);
        } else if (lost) {
            const uint64_t gen = r->generation;
            s_apply_plan(c, r, &e, why);
            if (by_failure && r->generation != gen)
                s_failure_backoff(c, r);
        } else if (!at_end) {
            if (!r->replan_pending)
                log_info("run %s: membership changed (%s): new plan after step %" PRId64, r->id,
                         why, r->lease);
            r->replan_pending = 1;
            if (r->committed_step >= r->lease)
                s_apply_plan(c, r, &e, why);
        }
    }
    free(e.list);
}

/* Starts the oldest pending run when no run holds the cluster. */
static void s_schedule(coord_t *c)
{
    for (int i = 0; i < c->n_runs; i++)
        if (c->runs[i]->state == RUN_RUNNING || c->runs[i]->state == RUN_PAUSED)
            return;
    for (int i = 0; i < c->n_runs; i++) {
        coord_run_t *r = c->runs[i];
        if (r->state != RUN_PENDING)
            continue;
        int n = 0;
        for (int k = 0; k < c->n_workers; k++)
            n += c->workers[k]->state == WORKER_ACTIVE && !c->workers[k]->run[0];
        if (n < c->cfg.min_workers)
            return;
        if (coord_run_transition(c, r, RUN_RUNNING, "%d active workers", n) == SHOAL_OK)
            coord_txn_commit(c);
        return;
    }
}

/* Appends a run with the given spec to the in-memory list (no id, nothing persisted). */
static coord_run_t *s_run_alloc(coord_t *c, const char *name, const char *spec_yaml,
                                int64_t total_steps, uint32_t n_layers, uint32_t n_experts)
{
    if (c->n_runs == c->cap_runs) {
        int cap = c->cap_runs ? 2 * c->cap_runs : 8;
        coord_run_t **runs = realloc(c->runs, (size_t)cap * sizeof *runs);
        if (!runs)
            return NULL;
        c->runs = runs;
        c->cap_runs = cap;
    }
    coord_run_t *r = calloc(1, sizeof *r);
    if (!r || !(r->spec_yaml = strdup(spec_yaml))) {
        free(r);
        return NULL;
    }
    snprintf(r->name, sizeof r->name, "%s", name);
    r->total_steps = total_steps;
    r->n_layers = n_layers;
    r->n_experts = n_experts;
    r->state = RUN_PENDING;
    c->runs[c->n_runs++] = r;
    return r;
}

shoal_err_t coord_add_run(coord_t *c, const char *name, const char *spec_yaml, int64_t total_steps,
                          uint32_t n_layers, uint32_t n_experts, coord_run_t **out)
{
    coord_run_t *r = s_run_alloc(c, name, spec_yaml, total_steps, n_layers, n_experts);
    if (!r)
        return shoal_fail(SHOAL_ERR_NOMEM, "run");
    snprintf(r->id, sizeof r->id, "r%" PRIu64, c->next_run++);
    r->submitted_ms = coord_now_wall_ms();
    coord_put_meta(c, "next_run", c->next_run);
    coord_put_run(c, r);
    *out = r;
    return SHOAL_OK;
}

/* ---- worker messages --------------------------------------------------------------------- */

typedef struct {
    coord_t *c;
    const wire_route_t *route;
} s_msg_ctx_t;

static int s_name_ok(const char *s)
{
    if (!s[0])
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static void s_reply_register(coord_t *c, const wire_route_t *route, const char *id, int ok,
                             const char *reason)
{
    Shoal__RegisterReply rep = SHOAL__REGISTER_REPLY__INIT;
    rep.accepted = ok;
    rep.worker_id = (char *)id;
    rep.reason = (char *)reason;
    rep.heartbeat_interval_ms = (uint32_t)c->cfg.heartbeat_interval_ms;
    rep.dead_after_ms = (uint32_t)c->cfg.dead_after_ms;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_REGISTER_REPLY, "", COORD_SENDER, 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_REG_REPLY;
    env.reg_reply = &rep;
    s_send(c, c->wsock, route, &env);
}

static void s_on_register(coord_t *c, const wire_route_t *route, const Shoal__Envelope *env)
{
    const Shoal__Register *rg = env->reg;
    if (!s_name_ok(rg->name)) {
        log_warn("register refused: worker name '%.64s' is not [A-Za-z0-9._-]+", rg->name);
        s_reply_register(c, route, "", 0, "worker name must be [A-Za-z0-9._-]+, 1-64 bytes");
        return;
    }
    coord_worker_t *w = NULL;
    if (rg->prev_id_case_case == SHOAL__REGISTER__PREV_ID_CASE_PREV_ID) {
        w = s_worker_by_id(c, rg->prev_id);
        if (w && strcmp(w->name, rg->name) != 0)
            w = NULL;
    }
    if (!w)
        for (int i = 0; i < c->n_workers && !w; i++)
            if (strcmp(c->workers[i]->name, rg->name) == 0)
                w = c->workers[i];
    int is_new = !w;
    if (is_new) {
        w = calloc(1, sizeof *w);
        if (w)
            snprintf(w->id, sizeof w->id, "w%" PRIu64, c->next_worker);
        if (!w || s_worker_insert(c, w) != SHOAL_OK) {
            free(w);
            log_error("register %s: %s", rg->name, shoal_errmsg());
            s_reply_register(c, route, "", 0, "coordinator out of memory");
            return;
        }
        c->next_worker++;
        snprintf(w->name, sizeof w->name, "%s", rg->name);
        w->state = WORKER_JOINING;
        w->registered_ms = coord_now_wall_ms();
        coord_put_meta(c, "next_worker", c->next_worker);
    }
    snprintf(w->host, sizeof w->host, "%s", rg->host);
    snprintf(w->institution, sizeof w->institution, "%s", rg->institution);
    snprintf(w->version, sizeof w->version, "%s", rg->version);
    snprintf(w->endpoint, sizeof w->endpoint, "%s", rg->data_endpoint);
    size_t at = 0;
    w->devices[0] = 0;
    for (size_t i = 0; i < rg->n_devices && at < sizeof w->devices; i++)
        at += (size_t)snprintf(w->devices + at, sizeof w->devices - at, "%s%s", i ? "," : "",
                               rg->devices[i]);
    w->memory_bytes = rg->memory_bytes;
    w->route = *route;
    w->has_route = 1;
    w->last_seen_ms = coord_now_mono_ms();
    if (is_new) {
        log_info("worker %s: registered as joining (name %s, host %s, %s)", w->id, w->name, w->host,
                 w->institution[0] ? w->institution : "no institution");
        coord_ledger(c, "", "worker_register",
                     json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "worker", w->id, "name", w->name,
                               "host", w->host, "institution", w->institution, "version",
                               w->version, "devices", w->devices));
        coord_put_worker(c, w);
    } else if (w->state == WORKER_DEAD || w->state == WORKER_LEFT) {
        (void)coord_worker_transition(c, w, WORKER_JOINING, "registered again from %s", w->host);
    } else {
        /* a live worker registers again only when its process restarted: whatever cell it
         * held lost its state, so its run re-plans now (the cron sees a lost member) */
        if (w->run[0]) {
            log_info("worker %s: registered again while in %s: its cell is lost", w->id, w->run);
            coord_ledger(c, w->run, "worker_restart",
                         json_pack("{s:s, s:s}", "worker", w->id, "name", w->name));
            w->run[0] = 0;
        } else {
            log_info("worker %s: registered again (%s, state %s)", w->id, w->name,
                     coord_worker_state_name(w->state));
        }
        coord_put_worker(c, w);
    }
    coord_txn_commit(c);
    s_reply_register(c, route, w->id, 1, "");
}

/* Run and generation check of a worker message: the message's run must be the worker's run
 * and its generation the run's current one; otherwise it is dropped, logged and answered with
 * an Error. Returns the run, or NULL when dropped. */
static coord_run_t *s_check_run(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                                const Shoal__Envelope *env)
{
    coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
    const char *what = wire_type_name((int)env->type);
    if (!r || strcmp(env->run_id, r->id) != 0) {
        c->dropped++;
        log_warn("dropped %s from %s: run '%.64s' is not its run '%s'", what, w->id, env->run_id,
                 r ? r->id : "");
        s_reply_error(c, route, SHOAL__ERROR_CODE__ERR_WRONG_RUN, env, r,
                      "run '%.64s' is not your run '%s'", env->run_id, r ? r->id : "");
        return NULL;
    }
    if (env->generation != r->generation) {
        c->dropped++;
        log_warn("dropped %s from %s: generation %" PRIu64 " of run %s is not the current %" PRIu64,
                 what, w->id, env->generation, r->id, r->generation);
        s_reply_error(c, route, SHOAL__ERROR_CODE__ERR_STALE_GENERATION, env, r,
                      "generation %" PRIu64 " is not run %s's current generation %" PRIu64,
                      env->generation, r->id, r->generation);
        return NULL;
    }
    return r;
}

/* Numbers from workers enter the state (and its JSON) only when finite: JSON has no NaN. */
static double s_finite(double x, const coord_worker_t *w, const char *what)
{
    if (isfinite(x))
        return x;
    log_warn("worker %s reports a non-finite %s: stored as 0", w->id, what);
    return 0.0;
}

static int s_rank_of(const coord_run_t *r, const coord_worker_t *w)
{
    const plan_peer_t *p = plan_find_worker(&r->plan, w->id);
    return p ? (int)p->rank : -1;
}

void coord_worker_clear_failures(coord_worker_t *w)
{
    w->fail_count = 0;
    w->fail_gen = 0;
    w->fail_run[0] = 0;
}

/* A member of r's plan other than w that has been silent for a while (or is gone): a collective
 * failing then is most likely that peer's doing, not the reporter's. */
static const coord_worker_t *s_silent_peer(coord_t *c, const coord_run_t *r,
                                           const coord_worker_t *w)
{
    int64_t quiet = 3 * (int64_t)c->cfg.heartbeat_interval_ms;
    if (quiet < 1000)
        quiet = 1000;
    int64_t now = coord_now_mono_ms();
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        const coord_worker_t *p = s_worker_by_id(c, r->plan.peers[i].worker_id);
        if (!p || p == w) /* !p: ids are never removed; nothing to blame */
            continue;
        if (!s_is_live(p->state) || now - p->last_seen_ms > quiet)
            return p;
    }
    return NULL;
}

/* Takes a worker whose plans keep failing out of r's placement: drained (the operator's
 * undrain puts it back), a `quarantine` ledger entry, told to stop; the cron then re-plans
 * without it. */
static void s_quarantine(coord_t *c, coord_run_t *r, coord_worker_t *w, const char *detail)
{
    char why[160]; /* "quarantined: " + why fits w->quarantine */
    snprintf(why, sizeof why, "%s", detail[0] ? detail : "no detail");
    int failures = w->fail_count;
    if (coord_worker_transition(c, w, WORKER_DRAINED, "quarantined: %s", why) != SHOAL_OK) {
        log_error("run %s: %s", r->id, shoal_errmsg());
        return;
    }
    snprintf(w->quarantine, sizeof w->quarantine, "quarantined: %s", why);
    log_warn("run %s: worker %s quarantined after %d failed plans in a row (%s); "
             "`shoalctl undrain %s` places it again",
             r->id, w->id, failures, why, w->id);
    coord_ledger(c, r->id, "quarantine",
                 json_pack("{s:s, s:s, s:I, s:i, s:s}", "worker", w->id, "name", w->name,
                           "generation", (json_int_t)r->generation, "failures", failures,
                           "detail", why));
    w->run[0] = 0;
    coord_worker_clear_failures(w);
    coord_put_worker(c, w);
    if (coord_txn_commit(c) == SHOAL_OK)
        s_push_run_control_to(c, r, w, SHOAL__RUN_COMMAND__RUN_CMD_STOP, w->quarantine);
}

/* A member reports (in a heartbeat of the current generation) that its plan failed: the run
 * re-plans, and the failure counts against the worker once per generation unless a peer of
 * the plan is silent (then the peer is the likely cause). quarantine_after_failures in a row
 * without a step in between quarantine it. */
static void s_on_plan_failed(coord_t *c, coord_run_t *r, coord_worker_t *w, const char *detail)
{
    if (!r->replan_now) {
        log_warn("run %s: worker %s reports its plan failed (%.200s): re-planning", r->id, w->id,
                 detail[0] ? detail : "no detail");
        r->replan_now = 1;
    }
    if (strcmp(w->fail_run, r->id) != 0) {
        coord_worker_clear_failures(w);
        snprintf(w->fail_run, sizeof w->fail_run, "%s", r->id);
    }
    if (w->fail_gen == r->generation)
        return; /* this plan's failure is already counted */
    w->fail_gen = r->generation;
    const coord_worker_t *silent = s_silent_peer(c, r, w);
    if (silent) {
        log_info("run %s: failure of %s in generation %" PRIu64 " not counted against it: "
                 "peer %s is silent",
                 r->id, w->id, r->generation, silent->id);
        return;
    }
    w->fail_count++;
    int limit = c->cfg.quarantine_after_failures;
    log_warn("run %s: worker %s: plan failure %d%s in a row (generation %" PRIu64 ")", r->id,
             w->id, w->fail_count, limit > 0 ? "" : " (quarantine off)", r->generation);
    if (limit > 0 && w->fail_count >= limit)
        s_quarantine(c, r, w, detail);
}

/* A heartbeat proves the worker alive whatever run and generation it names: liveness and the
 * joining -> active transition apply first, always. Its step, loss and activity concern its
 * plan and are applied only when run and generation are current; a stale one is dropped and
 * answered with an Error (the worker then fetches its assignment). */
static void s_on_heartbeat(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                           const Shoal__Envelope *env)
{
    const Shoal__Heartbeat *hb = env->heartbeat;
    w->last_hb_ms = coord_now_wall_ms();
    w->tokens_per_s = s_finite(hb->tokens_per_s, w, "tokens/s");
    w->activity = hb->activity;
    if (w->state == WORKER_JOINING) {
        (void)coord_worker_transition(c, w, WORKER_ACTIVE, "first heartbeat");
        coord_txn_commit(c);
    }
    if (env->run_id[0]) {
        coord_run_t *ok = s_check_run(c, route, w, env);
        if (!ok)
            return;
        int rank = s_rank_of(ok, w);
        const int failed = hb->activity == SHOAL__WORKER_ACTIVITY__ACTIVITY_FAILED;
        if (rank >= 0 && hb->step > ok->reported[rank] && hb->step <= ok->lease) {
            ok->reported[rank] = hb->step;
            ok->rank_loss[rank] = s_finite(hb->loss, w, "loss");
            if (!failed)
                coord_worker_clear_failures(w); /* it completed a step under this plan */
            s_run_advance(c, ok);
        }
        if (rank >= 0 && failed)
            s_on_plan_failed(c, ok, w, hb->detail);
    }
    w->step = hb->step;
    w->loss = s_finite(hb->loss, w, "loss");
    /* after a quarantine the worker holds no run any more: the Ack says DRAIN */
    coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
    s_reply_ack(c, route, env, w, r);
}

static void s_on_step_report(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                             const Shoal__Envelope *env)
{
    coord_run_t *r = s_check_run(c, route, w, env);
    if (!r)
        return;
    const Shoal__StepReport *sr = env->step_report;
    int rank = s_rank_of(r, w);
    if (rank < 0 || sr->step < 1 || sr->step > r->lease) {
        c->dropped++;
        log_warn("dropped step_report from %s: step %" PRId64 " outside run %s's lease %" PRId64,
                 w->id, sr->step, r->id, r->lease);
        s_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, env, r,
                      "step %" PRId64 " is outside the lease %" PRId64, sr->step, r->lease);
        return;
    }
    if (sr->step > r->reported[rank]) {
        r->reported[rank] = sr->step;
        r->rank_loss[rank] = s_finite(sr->loss, w, "loss");
        coord_worker_clear_failures(w); /* it completed a step under this plan */
    }
    w->step = sr->step;
    w->loss = s_finite(sr->loss, w, "loss");
    s_run_advance(c, r);
    s_reply_ack(c, route, env, w, r);
}

typedef struct {
    json_t *shards;
} s_pending_ctx_t;

static int s_pending_one(const char *k, size_t kl, const char *v, size_t vl, void *ctx)
{
    (void)k;
    (void)kl;
    s_pending_ctx_t *p = ctx;
    json_t *j = json_loadb(v, vl, 0, NULL);
    if (j)
        json_array_append_new(p->shards, j);
    return 0;
}

typedef struct {
    coord_t *c;
    int64_t upto;
    size_t prefix_len;
} s_prune_ctx_t;

static int s_prune_one(const char *k, size_t kl, const char *v, size_t vl, void *ctx)
{
    (void)v;
    (void)vl;
    s_prune_ctx_t *p = ctx;
    if (kl < p->prefix_len + 20)
        return 0;
    char step[21];
    memcpy(step, k + p->prefix_len, 20);
    step[20] = 0;
    if (strtoll(step, NULL, 10) <= p->upto) {
        char *key = strndup(k, kl);
        if (key)
            store_batch_delete(s_txn(p->c), STORE_CF_MANIFESTS, key);
        free(key);
    }
    return 0;
}

static void s_on_ckpt_shard(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                            const Shoal__Envelope *env)
{
    coord_run_t *r = s_check_run(c, route, w, env);
    if (!r)
        return;
    const Shoal__CheckpointShardReport *cs = env->ckpt_shard;
    int rank = s_rank_of(r, w);
    if (rank >= 0 && cs->step >= 1 && cs->step <= r->checkpoint_step) {
        /* a retry of a report that is already part of a commit (or superseded by a later
         * checkpoint): nothing to do, and the sender may stop retrying */
        log_debug("run %s: shard of step %" PRId64 " from %s after checkpoint %" PRId64
                  ": already settled",
                  r->id, cs->step, w->id, r->checkpoint_step);
        s_reply_ack(c, route, env, w, r);
        return;
    }
    if (rank < 0 || cs->step < 1 || cs->step > r->lease) {
        c->dropped++;
        log_warn("dropped ckpt_shard from %s: step %" PRId64 " not expected (lease %" PRId64
                 ", last checkpoint %" PRId64 ")",
                 w->id, cs->step, r->lease, r->checkpoint_step);
        s_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, env, r,
                      "checkpoint step %" PRId64 " not expected", cs->step);
        return;
    }
    json_t *files = json_array();
    uint64_t bytes = 0;
    for (size_t i = 0; i < cs->n_files; i++) {
        json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "name", cs->files[i]->name,
                                               "size", (json_int_t)cs->files[i]->size, "sha256",
                                               cs->files[i]->sha256));
        bytes += cs->files[i]->size;
    }
    const plan_peer_t *me = &r->plan.peers[rank];
    json_t *shard = json_pack("{s:s, s:s, s:i, s:{s:i, s:i, s:i}, s:s, s:o, s:I}", "worker", w->id,
                              "holder", cs->holder[0] ? cs->holder : w->id, "rank", rank, "cell",
                              "replica", (int)me->cell.replica, "stage", (int)me->cell.stage,
                              "ep_rank", (int)me->cell.ep_rank, "path", cs->path, "files", files,
                              "generation", (json_int_t)r->generation);
    char key[160];
    snprintf(key, sizeof key, "p/%s/%020" PRId64 "/%s", r->id, cs->step, w->id);
    s_put_json(c, STORE_CF_MANIFESTS, key, shard);
    if (coord_txn_commit(c) != SHOAL_OK) {
        s_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, env, r,
                      "shard report not persisted");
        return;
    }
    /* complete when every cell of the current plan has a shard for this step */
    char prefix[128];
    snprintf(prefix, sizeof prefix, "p/%s/%020" PRId64 "/", r->id, cs->step);
    s_pending_ctx_t pc = {json_array()};
    (void)store_scan(c->st, STORE_CF_MANIFESTS, prefix, NULL, s_pending_one, &pc);
    uint32_t have = 0;
    for (uint32_t i = 0; i < r->plan.n_peers; i++)
        for (size_t k = 0; k < json_array_size(pc.shards); k++) {
            const char *wid =
                json_string_value(json_object_get(json_array_get(pc.shards, k), "worker"));
            if (wid && strcmp(wid, r->plan.peers[i].worker_id) == 0) {
                have++;
                break;
            }
        }
    if (have == r->plan.n_peers) {
        json_t *manifest =
            json_pack("{s:s, s:I, s:I, s:s, s:O, s:I}", "run", r->id, "step", (json_int_t)cs->step,
                      "generation", (json_int_t)r->generation, "path", cs->path, "shards",
                      pc.shards, "committed_ms", (json_int_t)coord_now_wall_ms());
        snprintf(key, sizeof key, "c/%s/%020" PRId64, r->id, cs->step);
        s_put_json(c, STORE_CF_MANIFESTS, key, manifest);
        char pprefix[128];
        snprintf(pprefix, sizeof pprefix, "p/%s/", r->id);
        s_prune_ctx_t pr = {c, cs->step, strlen(pprefix)};
        (void)store_scan(c->st, STORE_CF_MANIFESTS, pprefix, NULL, s_prune_one, &pr);
        r->checkpoint_step = cs->step;
        snprintf(r->checkpoint_path, sizeof r->checkpoint_path, "%s", cs->path);
        log_info("run %s: checkpoint of step %" PRId64 " committed (%u shards)", r->id, cs->step,
                 have);
        coord_ledger(c, r->id, "checkpoint",
                     json_pack("{s:I, s:I, s:i, s:s}", "step", (json_int_t)cs->step, "generation",
                               (json_int_t)r->generation, "shards", (int)have, "path", cs->path));
        coord_put_run(c, r);
        s_run_check_done(c, r);
        coord_txn_commit(c);
    } else {
        log_debug("run %s: shard of step %" PRId64 " from %s (%u/%u) %" PRIu64 " bytes", r->id,
                  cs->step, w->id, have, r->plan.n_peers, bytes);
    }
    json_decref(pc.shards);
    s_reply_ack(c, route, env, w, r);
}

static void s_on_comm_id(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                         const Shoal__Envelope *env)
{
    coord_run_t *r = s_check_run(c, route, w, env);
    if (!r)
        return;
    Shoal__CommId cid = *env->comm_id;
    Shoal__Envelope fwd;
    wire_envelope_init(&fwd, SHOAL__MSG_TYPE__MSG_COMM_ID, r->id, w->id, r->generation, 0);
    fwd.body_case = SHOAL__ENVELOPE__BODY_COMM_ID;
    fwd.comm_id = &cid;
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *p = s_worker_by_id(c, r->plan.peers[i].worker_id);
        if (p && p != w)
            s_send_worker(c, p, &fwd);
    }
    s_reply_ack(c, route, env, w, r);
}

static void s_on_worker_msg(const Shoal__Envelope *env, void *ctxp)
{
    s_msg_ctx_t *ctx = ctxp;
    coord_t *c = ctx->c;
    const wire_route_t *route = ctx->route;
    c->handled++;
    switch (env->type) {
    case SHOAL__MSG_TYPE__MSG_REGISTER:
        s_on_register(c, route, env);
        return;
    case SHOAL__MSG_TYPE__MSG_HEARTBEAT:
    case SHOAL__MSG_TYPE__MSG_STEP_REPORT:
    case SHOAL__MSG_TYPE__MSG_CKPT_SHARD:
    case SHOAL__MSG_TYPE__MSG_LEAVE:
    case SHOAL__MSG_TYPE__MSG_GET_ASSIGNMENT:
    case SHOAL__MSG_TYPE__MSG_COMM_ID:
        break;
    case SHOAL__MSG_TYPE__MSG_ACK:
    case SHOAL__MSG_TYPE__MSG_ERROR:
        if (env->type == SHOAL__MSG_TYPE__MSG_ERROR)
            log_warn("worker %.64s reports error %d: %s", env->sender, env->error->code,
                     env->error->message);
        return; /* answers are not answered */
    default:
        c->dropped++;
        log_warn("dropped %s from '%.64s': not a worker message", wire_type_name((int)env->type),
                 env->sender);
        s_reply_error(c, route, SHOAL__ERROR_CODE__ERR_UNKNOWN_TYPE, env, NULL,
                      "%s is not accepted on the worker socket", wire_type_name((int)env->type));
        return;
    }
    coord_worker_t *w = s_worker_by_id(c, env->sender);
    if (!w || !s_is_live(w->state)) {
        if (env->type == SHOAL__MSG_TYPE__MSG_LEAVE) {
            s_reply_ack(c, route, env, NULL, NULL);
            return;
        }
        c->dropped++;
        log_warn("dropped %s from '%.64s': %s", wire_type_name((int)env->type), env->sender,
                 w ? "worker must register again" : "unknown worker");
        s_reply_error(c, route, SHOAL__ERROR_CODE__ERR_UNKNOWN_WORKER, env, NULL,
                      "worker '%.64s' is %s: register again", env->sender,
                      w ? coord_worker_state_name(w->state) : "unknown");
        return;
    }
    w->last_seen_ms = coord_now_mono_ms();
    w->route = *route;
    w->has_route = 1;
    switch (env->type) {
    case SHOAL__MSG_TYPE__MSG_HEARTBEAT:
        s_on_heartbeat(c, route, w, env);
        break;
    case SHOAL__MSG_TYPE__MSG_STEP_REPORT:
        s_on_step_report(c, route, w, env);
        break;
    case SHOAL__MSG_TYPE__MSG_CKPT_SHARD:
        s_on_ckpt_shard(c, route, w, env);
        break;
    case SHOAL__MSG_TYPE__MSG_LEAVE:
        (void)coord_worker_transition(c, w, WORKER_LEFT, "left: %s",
                                      env->leave->reason[0] ? env->leave->reason : "no reason");
        coord_txn_commit(c);
        s_reply_ack(c, route, env, w, NULL);
        break;
    case SHOAL__MSG_TYPE__MSG_GET_ASSIGNMENT: {
        coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
        if (r && !s_run_is_terminal(r->state) && plan_find_worker(&r->plan, w->id))
            coord_push_assignment(c, r, w);
        else
            s_reply_ack(c, route, env, w, NULL);
        break;
    }
    case SHOAL__MSG_TYPE__MSG_COMM_ID:
        s_on_comm_id(c, route, w, env);
        break;
    default:
        break;
    }
}

static void s_on_control_msg(const Shoal__Envelope *env, void *ctxp)
{
    s_msg_ctx_t *ctx = ctxp;
    ctx->c->handled++;
    control_handle(ctx->c, ctx->route, env);
}

/* ---- loading state ----------------------------------------------------------------------- */

typedef struct {
    coord_t *c;
    shoal_err_t rc;
} s_load_ctx_t;

static const char *s_jstr(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static json_int_t s_jint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static int s_load_worker(const char *k, size_t kl, const char *v, size_t vl, void *ctxp)
{
    s_load_ctx_t *ctx = ctxp;
    coord_t *c = ctx->c;
    json_t *j = json_loadb(v, vl, 0, NULL);
    int st = j ? s_parse_state(s_jstr(j, "state"), s_worker_states, WORKER__COUNT) : -1;
    if (st < 0) {
        log_error("workers/%.*s: malformed record skipped", (int)kl, k);
        json_decref(j);
        return 0;
    }
    coord_worker_t *w = calloc(1, sizeof *w);
    if (!w) {
        ctx->rc = shoal_fail(SHOAL_ERR_NOMEM, "loading workers");
        json_decref(j);
        return 1;
    }
    snprintf(w->id, sizeof w->id, "%s", s_jstr(j, "id"));
    snprintf(w->name, sizeof w->name, "%s", s_jstr(j, "name"));
    snprintf(w->host, sizeof w->host, "%s", s_jstr(j, "host"));
    snprintf(w->devices, sizeof w->devices, "%s", s_jstr(j, "devices"));
    snprintf(w->institution, sizeof w->institution, "%s", s_jstr(j, "institution"));
    snprintf(w->version, sizeof w->version, "%s", s_jstr(j, "version"));
    snprintf(w->endpoint, sizeof w->endpoint, "%s", s_jstr(j, "data_endpoint"));
    snprintf(w->run, sizeof w->run, "%s", s_jstr(j, "run"));
    snprintf(w->quarantine, sizeof w->quarantine, "%s", s_jstr(j, "quarantine"));
    w->memory_bytes = (uint64_t)s_jint(j, "memory_bytes");
    w->registered_ms = s_jint(j, "registered_ms");
    w->state = (worker_state_t)st;
    /* live workers get a full dead_after period to reconnect to the restarted coordinator */
    w->last_seen_ms = coord_now_mono_ms();
    json_decref(j);
    if (s_worker_insert(c, w) != SHOAL_OK) {
        log_error("workers/%.*s: %s: record skipped", (int)kl, k, shoal_errmsg());
        free(w);
    }
    return 0;
}

static int s_load_run(const char *k, size_t kl, const char *v, size_t vl, void *ctxp)
{
    s_load_ctx_t *ctx = ctxp;
    coord_t *c = ctx->c;
    json_t *j = json_loadb(v, vl, 0, NULL);
    int st = j ? s_parse_state(s_jstr(j, "state"), s_run_states, RUN__COUNT) : -1;
    coord_run_t *r = NULL;
    if (st < 0) {
        log_error("runs/%.*s: malformed record skipped", (int)kl, k);
        json_decref(j);
        return 0;
    }
    r = s_run_alloc(c, s_jstr(j, "name"), s_jstr(j, "spec_yaml"), s_jint(j, "total_steps"),
                    (uint32_t)s_jint(j, "n_layers"), (uint32_t)s_jint(j, "n_experts"));
    if (!r) {
        ctx->rc = shoal_fail(SHOAL_ERR_NOMEM, "loading runs");
        json_decref(j);
        return 1;
    }
    snprintf(r->id, sizeof r->id, "%s", s_jstr(j, "id"));
    r->state = (run_state_t)st;
    r->generation = (uint64_t)s_jint(j, "generation");
    r->committed_step = s_jint(j, "committed_step");
    r->lease = s_jint(j, "lease");
    r->checkpoint_step = s_jint(j, "checkpoint_step");
    snprintf(r->checkpoint_path, sizeof r->checkpoint_path, "%s", s_jstr(j, "checkpoint_path"));
    r->loss = json_number_value(json_object_get(j, "loss"));
    r->submitted_ms = s_jint(j, "submitted_ms");
    snprintf(r->reason, sizeof r->reason, "%s", s_jstr(j, "reason"));
    json_decref(j);
    if (r->generation > 0) {
        char key[PLAN_ID_MAX + 24], *pv = NULL;
        snprintf(key, sizeof key, "%s/%020" PRIu64, r->id, r->generation);
        json_t *pj = NULL;
        if (store_get(c->st, STORE_CF_PLANS, key, &pv, NULL) != SHOAL_OK ||
            !(pj = json_loads(pv, 0, NULL)) || plan_from_json(pj, &r->plan) != SHOAL_OK)
            log_error("run %s: plan generation %" PRIu64 " unreadable (%s): re-planning", r->id,
                      r->generation, shoal_errmsg());
        json_decref(pj);
        free(pv);
    }
    if (s_run_reset_ranks(r) != SHOAL_OK) {
        ctx->rc = SHOAL_ERR_NOMEM;
        return 1;
    }
    return 0;
}

static uint64_t s_meta(coord_t *c, const char *key, uint64_t dflt)
{
    char *v = NULL;
    uint64_t n = dflt;
    if (store_get(c->st, STORE_CF_META, key, &v, NULL) == SHOAL_OK)
        n = strtoull(v, NULL, 10);
    free(v);
    return n > dflt ? n : dflt;
}

static shoal_err_t s_load(coord_t *c)
{
    s_load_ctx_t ctx = {c, SHOAL_OK};
    shoal_err_t rc = store_scan(c->st, STORE_CF_WORKERS, "", NULL, s_load_worker, &ctx);
    if (rc == SHOAL_OK)
        rc = ctx.rc;
    if (rc == SHOAL_OK)
        rc = store_scan(c->st, STORE_CF_RUNS, "", NULL, s_load_run, &ctx);
    if (rc == SHOAL_OK)
        rc = ctx.rc;
    c->next_run = s_meta(c, "next_run", 1);
    c->next_worker = s_meta(c, "next_worker", 1);
    c->last_generation = s_meta(c, "last_generation", 0);
    for (int i = 0; i < c->n_runs; i++)
        if (c->runs[i]->generation > c->last_generation)
            c->last_generation = c->runs[i]->generation;
    return rc;
}

/* ---- sockets, loop ----------------------------------------------------------------------- */

static shoal_err_t s_bind(void *sock, const char *endpoint, const char *what)
{
    if (strncmp(endpoint, "ipc://", 6) == 0) {
        /* a killed coordinator leaves its socket file behind; we hold the state dir's RocksDB
         * lock, so no live coordinator can own it */
        if (unlink(endpoint + 6) == 0)
            log_debug("removed stale %s", endpoint + 6);
    }
    if (wire_socket_limits(sock) != SHOAL_OK)
        return SHOAL_ERR_IO;
    int mandatory = 0;
    zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    if (zmq_bind(sock, endpoint) != 0)
        return shoal_fail(SHOAL_ERR_IO, "binding the %s endpoint %s: %s", what, endpoint,
                          zmq_strerror(errno));
    return SHOAL_OK;
}

shoal_err_t coord_new(const coord_config_t *cfg, coord_t **out)
{
    shoal_err_t rc = SHOAL_OK;
    *out = NULL;
    coord_t *c = calloc(1, sizeof *c);
    if (!c)
        return shoal_fail(SHOAL_ERR_NOMEM, "coordinator");
    c->cfg = *cfg;
    SHOAL_CHECK_GOTO(store_open(cfg->state_dir, &c->st), rc, fail);
    c->ledger = ledger_new(c->st);
    if (!c->ledger) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "ledger");
        goto fail;
    }
    SHOAL_CHECK_GOTO(s_load(c), rc, fail);
    c->zctx = zmq_ctx_new();
    c->wsock = zmq_socket(c->zctx, ZMQ_ROUTER);
    c->csock = zmq_socket(c->zctx, ZMQ_ROUTER);
    if (!c->wsock || !c->csock) {
        rc = shoal_fail(SHOAL_ERR_IO, "zmq_socket: %s", zmq_strerror(errno));
        goto fail;
    }
    SHOAL_CHECK_GOTO(s_bind(c->wsock, cfg->listen, "worker"), rc, fail);
    SHOAL_CHECK_GOTO(s_bind(c->csock, cfg->control, "control"), rc, fail);
    int n_live = 0, n_active_runs = 0;
    for (int i = 0; i < c->n_workers; i++)
        n_live += s_is_live(c->workers[i]->state);
    for (int i = 0; i < c->n_runs; i++)
        n_active_runs += !s_run_is_terminal(c->runs[i]->state);
    coord_ledger(c, "", "coordinator_start",
                 json_pack("{s:i, s:i, s:i, s:s, s:s}", "workers", c->n_workers, "live_workers",
                           n_live, "open_runs", n_active_runs, "listen", cfg->listen, "control",
                           cfg->control));
    SHOAL_CHECK_GOTO(coord_txn_commit(c), rc, fail);
    log_info("state %s (%d runs, %d workers), workers on %s, control on %s", cfg->state_dir,
             c->n_runs, c->n_workers, cfg->listen, cfg->control);
    c->notify = getenv("NOTIFY_SOCKET") != NULL;
    c->watchdog_every_ms = 1000;
#ifdef SHOAL_HAVE_SYSTEMD
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
        c->watchdog_every_ms = (int64_t)(usec / 2000);
#endif
    *out = c;
    return SHOAL_OK;
fail:
    coord_destroy(&c);
    return rc;
}

void coord_destroy(coord_t **self_p)
{
    coord_t *c = *self_p;
    if (!c)
        return;
    if (c->wsock)
        zmq_close(c->wsock);
    if (c->csock)
        zmq_close(c->csock);
    if (c->zctx)
        zmq_ctx_term(c->zctx);
    store_batch_destroy(&c->txn);
    for (int i = 0; i < c->n_workers; i++)
        free(c->workers[i]);
    free(c->workers);
    free(c->by_num);
    for (int i = 0; i < c->n_runs; i++) {
        coord_run_t *r = c->runs[i];
        plan_fini(&r->plan);
        free(r->reported);
        free(r->rank_loss);
        free(r->spec_yaml);
        free(r);
    }
    free(c->runs);
    ledger_destroy(&c->ledger);
    store_destroy(&c->st);
    free(c);
    *self_p = NULL;
}

void coord_counters(const coord_t *c, unsigned long long *handled, unsigned long long *dropped)
{
    *handled = c->handled;
    *dropped = c->dropped;
}

static void s_notify(coord_t *c, const char *what)
{
    if (!c->notify)
        return;
#ifdef SHOAL_HAVE_SYSTEMD
    sd_notify(0, what);
#else
    (void)what;
#endif
}

static void s_cron(coord_t *c)
{
    int64_t now = coord_now_mono_ms();
    for (int i = 0; i < c->n_workers; i++) {
        coord_worker_t *w = c->workers[i];
        if (s_is_live(w->state) && now - w->last_seen_ms > c->cfg.dead_after_ms)
            (void)coord_worker_transition(c, w, WORKER_DEAD, "no heartbeat for %.1f s",
                                          (double)(now - w->last_seen_ms) / 1000.0);
    }
    coord_txn_commit(c);
    for (int i = 0; i < c->n_runs; i++)
        s_run_replan_check(c, c->runs[i]);
    s_schedule(c);
    coord_txn_commit(c);
    if (now >= c->next_watchdog_ms) {
        s_notify(c, "WATCHDOG=1");
        c->next_watchdog_ms = now + c->watchdog_every_ms;
    }
}

/* Reads up to COORD_BURST messages from one socket; every message gets an answer. */
static void s_drain_socket(coord_t *c, void *sock, wire_handler_fn fn)
{
    for (int i = 0; i < COORD_BURST; i++) {
        wire_route_t route;
        s_msg_ctx_t ctx = {c, &route};
        shoal_err_t rc = wire_recv(sock, ZMQ_DONTWAIT, &route, fn, &ctx);
        if (rc == SHOAL_ERR_TIMEOUT)
            return;
        if (rc == SHOAL_OK)
            continue;
        if (route.n == 0) {
            log_warn("receive failed: %s", shoal_errmsg());
            return;
        }
        c->dropped++;
        log_warn("dropped a bad message on the %s socket: %s",
                 sock == c->wsock ? "worker" : "control", shoal_errmsg());
        Shoal__ErrorCode code = rc == SHOAL_ERR_INVALID ? SHOAL__ERROR_CODE__ERR_UNKNOWN_TYPE
                                                        : SHOAL__ERROR_CODE__ERR_BAD_MESSAGE;
        if (sock == c->csock)
            control_reply(c, &route, 0, code, shoal_errmsg(), NULL);
        else
            s_reply_error(c, &route, code, NULL, NULL, "%s", shoal_errmsg());
    }
}

shoal_err_t coord_poll_once(coord_t *c, int timeout_ms)
{
    zmq_pollitem_t items[2] = {{c->wsock, 0, ZMQ_POLLIN, 0}, {c->csock, 0, ZMQ_POLLIN, 0}};
    int64_t now = coord_now_mono_ms();
    int64_t until_cron = c->next_cron_ms - now;
    if (until_cron < 0)
        until_cron = 0;
    if (timeout_ms > until_cron)
        timeout_ms = (int)until_cron;
    int n = zmq_poll(items, 2, timeout_ms);
    if (n < 0 && errno != EINTR)
        return shoal_fail(SHOAL_ERR_IO, "zmq_poll: %s", zmq_strerror(errno));
    if (n > 0 && (items[0].revents & ZMQ_POLLIN))
        s_drain_socket(c, c->wsock, s_on_worker_msg);
    if (n > 0 && (items[1].revents & ZMQ_POLLIN))
        s_drain_socket(c, c->csock, s_on_control_msg);
    now = coord_now_mono_ms();
    if (now >= c->next_cron_ms) {
        s_cron(c);
        c->next_cron_ms = now + COORD_CRON_MS;
    }
    return SHOAL_OK;
}

shoal_err_t coord_run(coord_t *c, volatile sig_atomic_t *stop)
{
    s_notify(c, "READY=1");
    while (!*stop) {
        shoal_err_t rc = coord_poll_once(c, COORD_CRON_MS);
        if (rc != SHOAL_OK)
            return rc;
    }
    s_notify(c, "STOPPING=1");
    log_info("stopping (%llu messages handled, %llu dropped)", c->handled, c->dropped);
    return SHOAL_OK;
}
