/* coord.c: the coordinator's core: the worker and run lists, the zmq_poll loop over the worker
 * and control sockets, the periodic cron, new/destroy. The rest lives in coord_*.c (coord_int.h).
 */
#include "coord_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#ifdef SHOAL_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"
#include "numparse.h"

#define COORD_CRON_MS 50
/* Connections that closed within this long after one whose grace ran out are judged with it:
 * workers lost together (a host, a part's every holder) die in one sweep and get one re-plan.
 * Judged one cron apart, the first re-plan named a dead worker as a state source. */
#define COORD_DEATH_COALESCE_MS 100
#define COORD_BURST 256 /* messages drained per socket per poll round */
#define COORD_BACKLOG_SILENCE 10 /* silence unjudged under a backlog for up to this many
                                  * dead_after_ms (s_silence_judgeable) */

coord_worker_t *coord_find_worker(coord_t *c, const char *id_or_name)
{
    coord_worker_t *w = coord_worker_by_id(c, id_or_name);
    return w ? w : coord_worker_by_name(c, id_or_name);
}

coord_worker_t *coord_worker_by_name(coord_t *c, const char *name)
{
    return idmap_get(&c->by_name, name, strlen(name));
}

/* Worker ids are "w<N>" (assigned here), so the number indexes c->by_num: every message's
 * sender is found in O(1) however many workers there are. */
static int s_id_number(const char *id, uint64_t *n)
{
    if (id[0] != 'w' || id[1] < '1' || id[1] > '9')
        return 0;
    return numparse_u64(id + 1, 1ull << 31, n) == SHOAL_OK;
}

coord_worker_t *coord_worker_by_id(coord_t *c, const char *id)
{
    uint64_t n;
    if (!s_id_number(id, &n) || n >= c->cap_by_num || !c->by_num[n])
        return NULL;
    return strcmp(c->by_num[n]->id, id) == 0 ? c->by_num[n] : NULL;
}

/* Appends a worker to the list and the index. SHOAL_ERR_NOMEM, or SHOAL_ERR_INVALID for an id
 * not of the form w<N>. */
shoal_err_t coord_worker_insert(coord_t *c, coord_worker_t *w)
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
    /* the first of a name keeps it (a store never holds two; a scan found the first) */
    if (!coord_worker_by_name(c, w->name) &&
        idmap_put(&c->by_name, w->name, strlen(w->name), w) != SHOAL_OK)
        return SHOAL_ERR_NOMEM;
    c->workers[c->n_workers++] = w;
    c->by_num[n] = w;
    return SHOAL_OK;
}

static void s_fd_unlink(coord_t *c, coord_worker_t *w)
{
    if (w->conn_fd >= 0 && w->conn_fd < c->cap_by_fd)
        for (coord_worker_t **pp = &c->by_fd[w->conn_fd]; *pp; pp = &(*pp)->fd_next)
            if (*pp == w) {
                *pp = w->fd_next;
                break;
            }
    w->fd_next = NULL;
}

void coord_worker_set_conn(coord_t *c, coord_worker_t *w, int fd)
{
    if (fd == w->conn_fd)
        return;
    s_fd_unlink(c, w);
    w->conn_fd = fd;
    if (fd < 0)
        return;
    if (fd >= c->cap_by_fd) {
        int cap = c->cap_by_fd ? c->cap_by_fd : 256;
        while (cap <= fd)
            cap *= 2;
        coord_worker_t **idx = realloc(c->by_fd, (size_t)cap * sizeof *idx);
        if (!idx) {
            /* unindexed: its closed connection is not seen; silence still judges it */
            log_error("worker %s: connection index: out of memory", w->id);
            return;
        }
        memset(idx + c->cap_by_fd, 0, (size_t)(cap - c->cap_by_fd) * sizeof *idx);
        c->by_fd = idx;
        c->cap_by_fd = cap;
    }
    w->fd_next = c->by_fd[fd];
    c->by_fd[fd] = w;
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

shoal_err_t coord_run_insert(coord_t *c, coord_run_t *r)
{
    if (c->n_runs == c->cap_runs) {
        int cap = c->cap_runs ? 2 * c->cap_runs : 8;
        coord_run_t **runs = realloc(c->runs, (size_t)cap * sizeof *runs);
        if (!runs)
            return shoal_fail(SHOAL_ERR_NOMEM, "runs");
        c->runs = runs;
        c->cap_runs = cap;
    }
    c->runs[c->n_runs++] = r;
    return SHOAL_OK;
}

static int s_index_valid(const coord_run_t *r)
{
    return r->indexed_peers == r->plan.peers && r->indexed_n_peers == r->plan.n_peers &&
           r->indexed_spares == r->plan.spares && r->indexed_n_spares == r->plan.n_spares &&
           (r->plan.peers || r->plan.spares);
}

void coord_run_index_plan(coord_run_t *r)
{
    idmap_clear(&r->member_index);
    idmap_clear(&r->spare_index);
    r->indexed_peers = NULL;
    r->indexed_spares = NULL;
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        plan_peer_t *p = &r->plan.peers[i];
        if (idmap_put(&r->member_index, p->worker_id, strlen(p->worker_id), p) != SHOAL_OK)
            return; /* logged; lookups scan */
    }
    for (uint32_t i = 0; i < r->plan.n_spares; i++) {
        plan_spare_t *s = &r->plan.spares[i];
        if (idmap_put(&r->spare_index, s->worker_id, strlen(s->worker_id), s) != SHOAL_OK)
            return;
    }
    r->indexed_peers = r->plan.peers;
    r->indexed_n_peers = r->plan.n_peers;
    r->indexed_spares = r->plan.spares;
    r->indexed_n_spares = r->plan.n_spares;
}

const plan_peer_t *coord_plan_member(const coord_run_t *r, const char *worker_id)
{
    if (!s_index_valid(r))
        return plan_find_worker(&r->plan, worker_id);
    return idmap_get(&r->member_index, worker_id, strlen(worker_id));
}

int coord_plan_is_spare(const coord_run_t *r, const char *worker_id)
{
    if (!s_index_valid(r))
        return plan_is_spare(&r->plan, worker_id);
    return idmap_get(&r->spare_index, worker_id, strlen(worker_id)) != NULL;
}

void coord_run_free(coord_run_t *r)
{
    if (!r)
        return;
    idmap_fini(&r->member_index);
    idmap_fini(&r->spare_index);
    idmap_fini(&r->holders);
    free(r->holder_ids);
    coord_push_forget_pulls(r);
    free(r->ckpt_seen);
    plan_fini(&r->plan);
    free(r->reported);
    free(r->rank_loss);
    free(r->rank_step);
    coord_experts_free(r);
    plan_peers_clear(&r->sent_peers);
    plan_peers_clear(&r->prev_peers);
    free(r->spec_yaml);
    free(r);
}

shoal_err_t coord_add_run(coord_t *c, const char *name, const char *spec_yaml, int64_t total_steps,
                          uint32_t n_layers, uint32_t n_experts, coord_run_t **out)
{
    coord_run_t *r = calloc(1, sizeof *r);
    if (!r || !(r->spec_yaml = strdup(spec_yaml)) || coord_run_insert(c, r) != SHOAL_OK) {
        coord_run_free(r);
        return shoal_fail(SHOAL_ERR_NOMEM, "run");
    }
    snprintf(r->name, sizeof r->name, "%s", name);
    r->total_steps = total_steps;
    r->n_layers = n_layers;
    r->n_experts = n_experts;
    r->state = RUN_PENDING;
    snprintf(r->id, sizeof r->id, "r%" PRIu64, c->next_run++);
    r->submitted_ms = clock_wall_ms();
    coord_put_meta(c, "next_run", c->next_run);
    coord_put_run(c, r);
    *out = r;
    return SHOAL_OK;
}

void coord_set_control(coord_t *c, const coord_control_t *control)
{
    c->control = *control;
}

static void s_on_control_msg(const Shoal__Envelope *env, void *ctxp)
{
    coord_msg_ctx_t *ctx = ctxp;
    coord_t *c = ctx->c;
    c->handled++;
    if (c->control.handle) {
        c->control.handle(c, ctx->route, env);
        return;
    }
    c->dropped++; /* no control module attached (a test or benchmark driving coord alone) */
    log_warn("dropped %s on the control socket: no control handler",
             wire_type_name((int)env->type));
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
    coord_keys_ipc_perms(endpoint);
    return SHOAL_OK;
}

/* A killed worker's connection closes at once: the worker socket's monitor reports it, and a
 * worker that sends nothing (on a new connection) for a heartbeat period plus closed_grace_ms
 * is dead in well under a second (s_cron), not after dead_after_ms of silence. */
static shoal_err_t s_monitor_open(coord_t *c)
{
    char addr[64];
    snprintf(addr, sizeof addr, "inproc://shoal-coord-wmon-%p", (void *)c);
    if (zmq_socket_monitor(c->wsock, addr, ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_ACCEPTED) != 0 ||
        !(c->wmon = zmq_socket(c->zctx, ZMQ_PAIR)) || zmq_connect(c->wmon, addr) != 0)
        return shoal_fail(SHOAL_ERR_IO, "monitoring the worker socket: %s", zmq_strerror(errno));
    return SHOAL_OK;
}

/* Reads the monitor's events: the live worker whose last message came on a closed connection is
 * marked (cleared by its next message). */
static void s_monitor_drain(coord_t *c)
{
    uint16_t what;
    uint32_t fd;
    while (wire_monitor_event(c->wmon, &what, &fd)) {
        /* the workers whose last message came on descriptor fd (O(1), was a scan of all) */
        coord_worker_t *on_fd = (int)fd >= 0 && (int)fd < c->cap_by_fd ? c->by_fd[fd] : NULL;
        if (what == ZMQ_EVENT_DISCONNECTED) {
            for (coord_worker_t *w = on_fd; w; w = w->fd_next) {
                if (!coord_worker_is_live(w->state) || w->conn_lost_ms)
                    continue;
                /* conn_fd stays: messages still queued from that connection (a busy
                 * coordinator reads them after this event) must not undo it */
                w->conn_lost_ms = clock_mono_ms();
                log_debug("worker %s: its connection closed", w->id);
            }
        } else if (what == ZMQ_EVENT_ACCEPTED) {
            /* a new connection got a closed one's descriptor: messages on it are news */
            for (coord_worker_t *w = on_fd, *next; w; w = next) {
                next = w->fd_next;
                if (w->conn_lost_ms)
                    coord_worker_set_conn(c, w, -1);
            }
        }
    }
}

/* The ledger's signing key: the configured file, else STATE_DIR/ledger_signing.key, made (0600,
 * with its .pub beside it) at the first start. A configured file that is missing is an error: a
 * typo must not silently give the run a new identity. pk_hex receives the public key. */
static shoal_err_t s_signing_key(coord_t *c, const coord_config_t *cfg,
                                 char pk_hex[LEDGER_PUBKEY_HEX])
{
    uint8_t pk[LEDGER_PUBKEY_LEN], sk[LEDGER_SECKEY_LEN];
    char path[CONFIG_STR_MAX + 32];
    int dflt = cfg->ledger_signing_key[0] == 0;
    if (dflt)
        snprintf(path, sizeof path, "%s/%s", cfg->state_dir, LEDGER_KEY_FILE);
    else
        snprintf(path, sizeof path, "%s", cfg->ledger_signing_key);
    shoal_err_t rc = ledger_key_load(path, pk, sk);
    if (rc == SHOAL_ERR_NOTFOUND && dflt) {
        rc = ledger_key_generate(pk, sk);
        if (rc == SHOAL_OK)
            rc = ledger_key_write(cfg->state_dir, pk, sk);
        if (rc == SHOAL_OK)
            log_info("created the ledger signing key %s", path);
    }
    if (rc != SHOAL_OK) {
        sodium_memzero(sk, sizeof sk);
        return shoal_fail_context(rc, "ledger signing key");
    }
    ledger_set_signing_key(c->ledger, sk);
    sodium_memzero(sk, sizeof sk);
    ledger_hex(pk, sizeof pk, pk_hex);
    log_info("ledger signed with Ed25519 public key %s (shoalctl verify --pubkey)", pk_hex);
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
    char pk_hex[LEDGER_PUBKEY_HEX];
    SHOAL_CHECK_GOTO(s_signing_key(c, cfg, pk_hex), rc, fail);
    SHOAL_CHECK_GOTO(coord_load(c), rc, fail);
    c->zctx = zmq_ctx_new();
    /* Two I/O threads: the workers' connections on one, the control socket's on the other.
     * With one, 10,000 workers' traffic kept it busy and operators' requests were not read at
     * all while the backlog lasted (bench_coord_load: `status` unanswered for minutes). */
    if (c->zctx)
        zmq_ctx_set(c->zctx, ZMQ_IO_THREADS, 2);
    c->wsock = zmq_socket(c->zctx, ZMQ_ROUTER);
    c->csock = zmq_socket(c->zctx, ZMQ_ROUTER);
    if (!c->wsock || !c->csock) {
        rc = shoal_fail(SHOAL_ERR_IO, "zmq_socket: %s", zmq_strerror(errno));
        goto fail;
    }
    const uint64_t io_workers = 1, io_control = 2; /* ZMQ_AFFINITY: I/O thread bitmasks */
    zmq_setsockopt(c->wsock, ZMQ_AFFINITY, &io_workers, sizeof io_workers);
    zmq_setsockopt(c->csock, ZMQ_AFFINITY, &io_control, sizeof io_control);
    SHOAL_CHECK_GOTO(coord_keys_open(c), rc, fail);
    SHOAL_CHECK_GOTO(s_bind(c->wsock, cfg->listen, "worker"), rc, fail);
    SHOAL_CHECK_GOTO(s_bind(c->csock, cfg->control, "control"), rc, fail);
    SHOAL_CHECK_GOTO(s_monitor_open(c), rc, fail);
    int n_live = 0, n_active_runs = 0;
    for (int i = 0; i < c->n_workers; i++)
        n_live += coord_worker_is_live(c->workers[i]->state);
    for (int i = 0; i < c->n_runs; i++)
        n_active_runs += !coord_run_is_terminal(c->runs[i]->state);
    coord_ledger(c, "", "coordinator_start",
                 json_pack("{s:i, s:i, s:i, s:s, s:s, s:s}", "workers", c->n_workers,
                           "live_workers", n_live, "open_runs", n_active_runs, "listen",
                           cfg->listen, "control", cfg->control, "ledger_pubkey", pk_hex));
    SHOAL_CHECK_GOTO(coord_txn_commit(c), rc, fail);
    log_info("state %s (%d runs, %d workers), workers on %s, control on %s", cfg->state_dir,
             c->n_runs, c->n_workers, cfg->listen, cfg->control);
    SHOAL_CHECK_GOTO(coord_metrics_start(c), rc, fail);
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
    if (c->wmon)
        zmq_close(c->wmon);
    if (c->wsock)
        zmq_close(c->wsock);
    if (c->csock)
        zmq_close(c->csock);
    coord_keys_close(c);
    if (c->zctx)
        zmq_ctx_term(c->zctx);
    store_batch_destroy(&c->txn);
    coord_outbox_discard(c);
    free(c->outbox);
    for (int i = 0; i < c->n_workers; i++)
        free(c->workers[i]);
    free(c->workers);
    free(c->by_num);
    idmap_fini(&c->by_name);
    free(c->by_fd);
    coord_guard_free(c);
    coord_replicas_free(c);
    for (int i = 0; i < c->n_runs; i++)
        coord_run_free(c->runs[i]);
    free(c->runs);
    coord_metrics_stop(c);
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

void coord_set_reload_flag(coord_t *c, volatile sig_atomic_t *flag)
{
    c->reload_flag = flag;
}

static void s_drain_socket(coord_t *c, void *sock, wire_handler_fn fn);

/* Whether the socket holds a message not read yet. */
static int s_has_input(void *sock)
{
    int events = 0;
    size_t len = sizeof events;
    return zmq_getsockopt(sock, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN);
}

/* Silence is judged on an empty worker socket only: a heartbeat queued behind a backlog is not
 * silence (a coordinator that fell behind declared live workers dead, and their
 * re-registrations made the backlog longer: a 5,000-worker simulation on an oversubscribed
 * machine fell from 1,446 live workers to 477 in 4 s while its socket stayed backlogged, with
 * silence judged after dead_after_ms of backlog). Reads the socket for
 * up to a cron period first; returns whether silence may be judged now: the socket is empty,
 * or it has not been for COORD_BACKLOG_SILENCE x dead_after_ms (a coordinator that never
 * catches up still declares the silent dead, that much later). Closed connections are judged
 * regardless. */
static int s_silence_judgeable(coord_t *c)
{
    const int64_t until = clock_mono_ms() + COORD_CRON_MS;
    while (s_has_input(c->wsock) && !c->fail_stopped && clock_mono_ms() < until)
        s_drain_socket(c, c->wsock, coord_on_worker_msg);
    const int64_t now = clock_mono_ms();
    if (!s_has_input(c->wsock)) {
        c->backlog_since_ms = 0;
        return 1;
    }
    if (!c->backlog_since_ms) {
        c->backlog_since_ms = now;
        log_debug("the worker socket has a backlog: silence is not judged until it is read");
    }
    return now - c->backlog_since_ms > COORD_BACKLOG_SILENCE * (int64_t)c->cfg.dead_after_ms;
}

static void s_cron(coord_t *c)
{
    if (c->reload_flag && *c->reload_flag) {
        *c->reload_flag = 0;
        if (coord_reload_keys(c) != SHOAL_OK)
            log_error("SIGHUP: %s", shoal_errmsg());
    }
    const int judge_silence = s_silence_judgeable(c);
    int64_t now = clock_mono_ms();
    /* a closed connection is judged once its grace ran out, or with one that did */
    const int64_t closed_due = now - c->cfg.heartbeat_interval_ms - c->cfg.closed_grace_ms;
    int64_t closed_cut = closed_due;
    for (int i = 0; i < c->n_workers; i++) {
        const coord_worker_t *w = c->workers[i];
        if (coord_worker_is_live(w->state) && w->conn_lost_ms && w->conn_lost_ms < closed_due)
            closed_cut = closed_due + COORD_DEATH_COALESCE_MS;
    }
    for (int i = 0; i < c->n_workers; i++) {
        coord_worker_t *w = c->workers[i];
        if (!coord_worker_is_live(w->state))
            continue;
        if (judge_silence && now - w->last_seen_ms > c->cfg.dead_after_ms)
            (void)coord_worker_transition(c, w, WORKER_DEAD, "no heartbeat for %.1f s",
                                          (double)(now - w->last_seen_ms) / 1000.0);
        else if (w->conn_lost_ms && c->cfg.closed_grace_ms > 0 && w->conn_lost_ms < closed_cut)
            (void)coord_worker_transition(c, w, WORKER_DEAD, "connection closed %.2f s ago "
                                          "and no message since",
                                          (double)(now - w->conn_lost_ms) / 1000.0);
    }
    coord_txn_commit(c);
    for (int i = 0; i < c->n_runs; i++)
        coord_run_replan_check(c, c->runs[i]);
    coord_schedule(c);
    coord_txn_commit(c);
    coord_replicas_cron(c, now);
    coord_metrics_cron(c, now);
    if (now >= c->next_watchdog_ms) {
        s_notify(c, "WATCHDOG=1");
        c->next_watchdog_ms = now + c->watchdog_every_ms;
    }
}

/* Reads up to COORD_BURST messages from one socket; every message gets an answer. */
static void s_drain_burst(coord_t *c, void *sock, wire_handler_fn fn)
{
    for (int i = 0; i < COORD_BURST; i++) {
        wire_route_t route;
        coord_msg_ctx_t ctx = {c, &route};
        shoal_err_t rc = wire_recv(sock, ZMQ_DONTWAIT, &route, fn, &ctx);
        if (rc == SHOAL_ERR_TIMEOUT)
            return;
        /* what the message changed is on disk before any answer or push goes out */
        (void)coord_txn_commit(c);
        if (c->fail_stopped)
            return;
        if (rc == SHOAL_OK)
            continue;
        if (route.n == 0) {
            log_warn("receive failed: %s", shoal_errmsg());
            return;
        }
        if (sock == c->csock) {
            c->dropped++;
            log_warn("dropped a bad message on the control socket: %s", shoal_errmsg());
            if (c->control.reject)
                c->control.reject(c, &route,
                                  rc == SHOAL_ERR_INVALID ? SHOAL__ERROR_CODE__ERR_UNKNOWN_TYPE
                                                          : SHOAL__ERROR_CODE__ERR_BAD_MESSAGE,
                                  shoal_errmsg());
        } else if (coord_guard_admit(c, &route)) {
            coord_worker_msg_bad(c, &route, rc, "on the worker socket");
        } else {
            c->dropped++;
        }
        coord_outbox_flush(c);
    }
}

/* A burst of messages; registrations and heartbeats in it share one synced write (group commit:
 * their answers wait in the outbox until it is done, so "durable before the answer" holds). A
 * join took two fsyncs before (register, first heartbeat): 10,000 workers coming up, or a busy
 * disk, queued every heartbeat behind them until live workers were declared dead. */
static void s_drain_socket(coord_t *c, void *sock, wire_handler_fn fn)
{
    c->in_burst = 1;
    s_drain_burst(c, sock, fn);
    c->in_burst = 0;
    c->defer_commit = 0;
    (void)coord_txn_commit(c);
}

shoal_err_t coord_poll_once(coord_t *c, int timeout_ms)
{
    zmq_pollitem_t items[3] = {{c->wsock, 0, ZMQ_POLLIN, 0},
                               {c->csock, 0, ZMQ_POLLIN, 0},
                               {c->wmon, 0, ZMQ_POLLIN, 0}};
    int64_t now = clock_mono_ms();
    int64_t until_cron = c->next_cron_ms - now;
    if (until_cron < 0)
        until_cron = 0;
    if (timeout_ms > until_cron)
        timeout_ms = (int)until_cron;
    int n = zmq_poll(items, 3, timeout_ms);
    if (n < 0 && errno != EINTR)
        return shoal_fail(SHOAL_ERR_IO, "zmq_poll: %s", zmq_strerror(errno));
    if (n > 0 && (items[0].revents & ZMQ_POLLIN))
        s_drain_socket(c, c->wsock, coord_on_worker_msg);
    if (n > 0 && (items[1].revents & ZMQ_POLLIN))
        s_drain_socket(c, c->csock, s_on_control_msg);
    if (n > 0 && (items[2].revents & ZMQ_POLLIN))
        s_monitor_drain(c);
    now = clock_mono_ms();
    if (now >= c->next_cron_ms && !c->fail_stopped) {
        s_cron(c);
        c->next_cron_ms = now + COORD_CRON_MS;
    }
    if (c->fail_stopped)
        return shoal_fail(SHOAL_ERR_DB, "fail-stop after a failed state write (%s): restart to "
                                        "resume from the state on disk",
                          c->fail_why);
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
