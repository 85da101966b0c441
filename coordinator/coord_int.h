/* coord_int.h: the coordinator's in-memory state and the helpers shared by coord.c and its
 * coord_*.c parts, and used by control.c (shoalctl verbs). Internal: only coordinator/ includes it.
 */
#ifndef SHOAL_COORD_INT_H
#define SHOAL_COORD_INT_H

#include <signal.h>
#include <stdint.h>

#include <jansson.h>

#include "clock.h"
#include "config.h"
#include "idmap.h"
#include "coord.h"
#include "ledger.h"
#include "metrics_http.h"
#include "plan.h"
#include "plan_delta.h"
#include "prom_text.h"
#include "store.h"
#include "wire.h"
#include "zsec.h"

#define COORD_ID_MAX 24
#define COORD_SENDER "coordinator"

typedef enum {
    WORKER_JOINING = 0, /* registered, no heartbeat yet */
    WORKER_ACTIVE,      /* heartbeating; eligible for plans */
    WORKER_DRAINING,    /* operator drain: leaves its plan at the next step boundary */
    WORKER_DRAINED,     /* out of every plan until undrained */
    WORKER_DEAD,        /* silent for dead_after_ms; must register again */
    WORKER_LEFT,        /* left cleanly (Leave); must register again */
    WORKER_QUARANTINED, /* heartbeating, in no plan until undrained: its plans kept failing, it
                           sent malformed or out-of-plan data, or its peers rejected its
                           gradients (the reason is in `quarantine` and the ledger) */
    WORKER__COUNT
} worker_state_t;

typedef enum {
    RUN_PENDING = 0,
    RUN_RUNNING,
    RUN_PAUSED,
    RUN_DONE,
    RUN_FAILED,
    RUN_CANCELLED,
    RUN__COUNT
} run_state_t;

typedef struct coord_worker {
    char id[COORD_ID_MAX];
    char name[WIRE_MAX_ID_LEN + 1];
    char host[256];
    char institution[128];
    char version[64];
    char endpoint[PLAN_ENDPOINT_MAX];
    char shard_endpoint[PLAN_ENDPOINT_MAX]; /* its checkpoint shard server ("" = none) */
    char devices[512];
    char public_key[ZSEC_KEY_LEN + 1]; /* its CURVE key (from the connection; "" plaintext) */
    uint64_t memory_bytes;
    worker_state_t state;
    char run[COORD_ID_MAX]; /* run whose plan holds this worker ("" = none) */
    int64_t registered_ms;
    /* volatile (not persisted) */
    int64_t last_seen_ms; /* monotonic: any message */
    int conn_fd;          /* the connection its last message came on (-1: unknown) */
    struct coord_worker *fd_next; /* the next worker of c->by_fd[conn_fd] (coord_worker_set_conn) */
    int64_t conn_lost_ms; /* monotonic: that connection closed with no message since (0: no) */
    int64_t last_hb_ms;   /* wall clock of the last heartbeat (0 = none since start) */
    int64_t step;
    double loss, tokens_per_s;
    double step_seconds, comm_wait_ratio; /* of its last StepReport (metrics) */
    int activity;
    wire_route_t route;
    int has_route;
    /* failure streak: plans of run fail_run that failed on this worker in a row, no step in
     * between (one count per generation, fail_gen the last counted) */
    char fail_run[COORD_ID_MAX];
    int fail_count;
    uint64_t fail_gen;
    char quarantine[192]; /* why it was quarantined (persisted; "" = not quarantined) */
    int strikes;          /* malformed or out-of-plan messages since its last quarantine or
                           * undrain (volatile) */
    int64_t peer_frames_ms; /* last strike for bad data-plane frames its peers reported */
    int key_refused;        /* its quarantine's refusal of its key went to the shard servers
                             * and no admission has followed yet (volatile) */
    /* the plan generation of the last assignment sent to it (volatile; 0: none): a re-plan
     * sends it a delta when that is the generation the delta is based on (one it did not get
     * fails the worker's base or digest check: it pulls the full plan); 0 again when it
     * registers again (a restarted process holds nothing) */
    uint64_t sent_gen;
    int64_t sent_ms;        /* monotonic: when sent_gen was sent (coord_assignment_in_flight) */
    uint64_t pull_delta_gen; /* a GetAssignment of this generation was answered with a delta:
                              * the next one gets the full plan (the worker refused it) */
    /* an operator's drain (persisted; "" = none): like Slurm's DRAIN it outlives the worker's
     * restarts and ends only with undrain */
    char drain[96];
} coord_worker_t;

/* When a step committed (metrics: a checkpoint's duration counts from its step's commit). */
#define COORD_STEP_TIMES 64
typedef struct {
    int64_t step, wall_ms;
} coord_step_time_t;

/* A rank's newest StepReport figures (the history row of a committed step is made of them). */
typedef struct {
    int64_t step;
    double tokens, seconds, grad_norm;
} coord_rank_step_t;

typedef struct {
    char id[COORD_ID_MAX];
    char name[128];
    char *spec_yaml;
    int64_t total_steps;
    uint32_t n_layers, n_experts;
    run_state_t state;
    uint64_t generation;     /* of the current plan (0 = none yet) */
    int64_t committed_step;  /* every cell of the plan reported it */
    int64_t lease;           /* workers may train up to this step */
    int64_t checkpoint_step; /* last committed checkpoint (0 = none) */
    char checkpoint_path[PLAN_PATH_MAX];
    double loss;
    int64_t submitted_ms;
    char reason[256]; /* why failed / cancelled / paused waiting for workers ("unplaced: ...") */
    uint32_t unplaced; /* paused because no plan fits the live workers (not by the operator):
                          the cron places it again, and it runs again, once one does */
    plan_t plan;
    /* volatile: per rank of the plan */
    int64_t *reported;
    double *rank_loss;
    int replan_pending;      /* membership changed: lease frozen until the boundary */
    int replan_now;          /* a member reported its plan failed: new plan (after the back-off) */
    int distrust_peers;      /* a plan's peer source held no state: plan from the checkpoint
                                until a step commits again */
    int64_t fail_backoff_ms; /* wait after the last failure re-plan (0: none yet) */
    int64_t fail_replan_at_ms; /* monotonic: no failure re-plan before this */
    int fail_backoff_logged;   /* the current wait was logged */
    int repl_lost;             /* a holder of the newest checkpoint was lost: the cron orders the
                                  copies, after pushing the re-plan the loss causes (the plan
                                  reaches its workers first, and they hold the copies until they
                                  train again: worker/daemon.c) */
    /* coord_push.c: the answer to GetAssignment pulls of generation pull_msg_gen with deltas on
     * the table of pull_msg_base, built once (NULL: none; stale: its checkpoint holders changed) */
    struct coord_plan_msg *pull_msg;
    uint64_t pull_msg_gen, pull_msg_base;
    int pull_msg_stale;
    /* coord_replicas.c: the workers holding a shard of the checkpoint of holders_step (0: none
     * built; a manifest write forgets it), so that a death looks its worker up instead of
     * parsing the manifest (0.8 MB of JSON at 2,048 shards) */
    idmap_t holders;
    char (*holder_ids)[COORD_ID_MAX];
    int64_t holders_step;
    /* gradient-sanity votes of generation votes_gen: [replica] = the replicas that reported it */
    uint64_t grad_votes[64];
    uint64_t votes_gen;
    coord_step_time_t step_times[COORD_STEP_TIMES]; /* recent commits, at [step % N] */
    struct coord_experts *experts; /* coord_experts.c: observed expert loads (NULL: none yet) */
    /* volatile, coord_history.c: per rank, the figures of its newest StepReport */
    coord_rank_step_t *rank_step;
    double tokens_per_s;     /* of the newest history row */
    int tokens_per_s_known;  /* set by a commit, or once read back from the store after a load */
    /* worker id -> its plan_peer_t / plan_spare_t in `plan` (coord_run_index_plan); valid
     * while plan.peers/spares are the arrays indexed (checked: a stale index is not used) */
    idmap_t member_index, spare_index;
    const plan_peer_t *indexed_peers;
    const plan_spare_t *indexed_spares;
    uint32_t indexed_n_peers, indexed_n_spares;
    /* coord_manifest.c: the plan members (by index in plan.peers) that reported a shard of
     * ckpt_count_step under generation ckpt_count_gen, and how many (0 step: not counting) */
    int64_t ckpt_count_step;
    uint64_t ckpt_count_gen;
    uint8_t *ckpt_seen;
    uint32_t ckpt_seen_n, ckpt_have;
    /* volatile, coord_push.c: the peer table last pushed to the plan's members (the base of
     * the next re-plan's deltas; empty: none yet, every member gets the full plan) */
    plan_peers_t sent_peers;
    /* the table pushed before sent_peers (the base a stale member still holds: a GetAssignment
     * naming its generation is answered with a delta; empty: none) */
    plan_peers_t prev_peers;
} coord_run_t;

/* What serves the control socket: control.c attaches it (control_attach, control.h), so that
 * the dependency runs one way, control -> coord. Unset, control requests are dropped. */
typedef struct {
    /* answers one decoded request (every request gets a reply) */
    void (*handle)(coord_t *c, const wire_route_t *route, const Shoal__Envelope *env);
    /* answers a message that could not be decoded */
    void (*reject)(coord_t *c, const wire_route_t *route, Shoal__ErrorCode code, const char *why);
} coord_control_t;

/* A message packed and held back until the state it may announce is on disk. */
typedef struct {
    void *sock;
    wire_route_t route;
    uint8_t *buf;
    size_t len;
} coord_outmsg_t;

struct coord {
    coord_config_t cfg;
    store_t *st;
    ledger_t *ledger;
    void *zctx, *wsock, *csock;
    void *wmon; /* the worker socket's monitor: connections that close */
    coord_worker_t **workers; /* in registration (or load) order */
    int n_workers, cap_workers;
    coord_worker_t **by_num; /* index: worker "w<N>" at [N] */
    idmap_t by_name;         /* index: worker name -> worker (names never change) */
    coord_worker_t **by_fd;  /* index: the workers whose conn_fd is fd, a list at [fd] (the
                              * socket monitor's events name a descriptor) */
    int cap_by_fd;
    uint64_t cap_by_num;
    coord_run_t **runs;
    int n_runs, cap_runs;
    uint64_t next_worker, next_run, seq;
    uint64_t last_generation; /* highest plan generation of any run */
    int64_t next_cron_ms, next_watchdog_ms, watchdog_every_ms;
    int64_t backlog_since_ms; /* monotonic: the worker socket has had unread input at every
                               * cron since then (0: it was empty at the last one) */
    int notify;
    unsigned long long handled, dropped;
    unsigned long long gone_dropped; /* messages of dead, gone or unknown workers (logged 1/1000) */
    unsigned long long wrong_run_dropped; /* messages naming a run not the worker's (1/1000) */
    unsigned long long relay_refused; /* relayed messages refused under CURVE (logged 1/1000) */
    unsigned long long relay_batches; /* RelayBatch messages handled (answered in batches too) */
    unsigned long long stale_dropped; /* messages naming a past generation (logged 1/1000) */
    /* coord_guard.c: per-connection message rate buckets and what the guards counted */
    struct coord_rate **rates;
    int n_rates, cap_rates;
    idmap_t rate_index; /* route id -> bucket */
    unsigned long long rate_dropped, bad_messages, quarantines;
    store_batch_t *txn; /* the state change being built; one synced batch */
    /* durable first: every message waits here until coord_txn_commit() has written what came
     * before it; a failed write discards them and fail-stops the coordinator */
    coord_outmsg_t *outbox;
    size_t n_out, cap_out;
    int fail_stopped;
    int in_burst, defer_commit; /* s_drain_socket: commits of write-only messages wait for the
                                 * burst's end (coord_txn_commit returns SHOAL_OK meanwhile) */
    unsigned long long state_writes; /* synced batches written (metrics: group commit at work) */
    char fail_why[512];
    coord_control_t control;
    /* Prometheus /metrics (coord_metrics.c): NULL when --metrics-listen is unset */
    metrics_http_t *metrics_http;
    prom_text_t metrics_text;
    int64_t next_metrics_ms;
    /* CURVE (coord_keys.c): NULL zap = plaintext (--insecure or ipc only) */
    zsec_zap_t *zap;
    zsec_keys_t keys;
    zsec_allow_t allow;
    volatile sig_atomic_t *reload_flag; /* SIGHUP: reload the allow-list at the next cron */
    /* coord_replicas.c: Replicate orders whose copy is not confirmed yet (volatile: a restarted
     * coordinator orders again what the loss of a holder calls for) */
    struct coord_repl_order *repl_orders;
    int n_repl_orders, cap_repl_orders;
    int64_t repl_repair_at_ms; /* monotonic: the next under-replication scan (0: not yet set) */
};

/* ---- coord_keys.c: CURVE, the allow-list, operator roles ---------------------------------- */
#define COORD_ZAP_WORKERS "shoal-workers"
#define COORD_ZAP_CONTROL "shoal-control"
/* Loads the key pair and allow-list, starts the ZAP handler and makes the TCP sockets CURVE
 * servers (before bind); with insecure, warns about plaintext TCP instead. */
shoal_err_t coord_keys_open(coord_t *c);
/* Stops the ZAP handler (before the context is terminated). */
void coord_keys_close(coord_t *c);
/* Re-reads the allow-list; on any error the old list stays in force and the error is returned. */
shoal_err_t coord_keys_reload(coord_t *c);
/* Whether the control request `type` may run for the connection of `route`: "" (ipc, whose
 * file permissions decide, or --insecure) and admin keys may do all; read keys only look. */
int coord_keys_may(const wire_route_t *route, int type);
/* An ipc control socket: mode 0660, group shoal when that group exists. */
void coord_keys_ipc_perms(const char *endpoint);
/* MSG_KEY_QUERY from live worker w: may the key fetch w's checkpoint shards? Admitted when it
 * is a worker key of the allow-list held by a live worker that is not quarantined; answered
 * with MSG_KEY_ANSWER (the worker's shard server caches it, ops/SECURITY.md). */
void coord_on_key_query(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                        coord_run_t *unused_r, const Shoal__Envelope *env);
/* Tells every live worker's shard server that `key` is refused from now on (a key removed from
 * the allow-list, a quarantined worker's): its cached admission ends (nothing without CURVE). */
void coord_keys_revoke(coord_t *c, const char *key, const char *why);
/* The opposite, once a quarantined worker is undrained: tells every live worker's shard server
 * that `key` is admitted again, ending a refusal it cached (nothing when the key is still
 * refused for another reason, or without CURVE). */
void coord_keys_readmit(coord_t *c, const char *key);

/* The receive context of one message: the coordinator and the sender's route. */
typedef struct {
    coord_t *c;
    const wire_route_t *route;
} coord_msg_ctx_t;

/* ---- coord.c: clocks, the worker and run lists, control attachment ------------------------ */

coord_worker_t *coord_find_worker(coord_t *c, const char *id_or_name);
/* Whether an operator's drain or a quarantine holds the worker out of every plan. */
static inline int coord_worker_held(const coord_worker_t *w)
{
    return w->drain[0] || w->quarantine[0];
}
coord_run_t *coord_find_run(coord_t *c, const char *id_or_name);
/* The worker with id "w<N>" in O(1) (NULL: none). */
coord_worker_t *coord_worker_by_id(coord_t *c, const char *id);
/* The worker named `name` in O(1) (NULL: none). */
coord_worker_t *coord_worker_by_name(coord_t *c, const char *name);
/* Appends a worker (ownership passes on success) to the list and the index. SHOAL_ERR_NOMEM, or
 * SHOAL_ERR_INVALID for an id not of the form w<N>. */
shoal_err_t coord_worker_insert(coord_t *c, coord_worker_t *w);
/* Appends a run (ownership passes on success). SHOAL_ERR_NOMEM. */
shoal_err_t coord_run_insert(coord_t *c, coord_run_t *r);
/* Indexes r->plan's members and spares by worker id; call after r->plan changes (until then,
 * and when indexing fails, the lookups below scan the plan). */
void coord_run_index_plan(coord_run_t *r);
/* w's entry in r's plan as a member (NULL: not one), and whether it is a spare: O(1). */
const plan_peer_t *coord_plan_member(const coord_run_t *r, const char *worker_id);
int coord_plan_is_spare(const coord_run_t *r, const char *worker_id);
/* Frees a run that is in no list (NULL: nothing). */
void coord_run_free(coord_run_t *r);
/* Adds a submitted run (spec checked by the caller). */
shoal_err_t coord_add_run(coord_t *c, const char *name, const char *spec_yaml, int64_t total_steps,
                          uint32_t n_layers, uint32_t n_experts, coord_run_t **out);
/* Installs what serves the control socket (copied). */
void coord_set_control(coord_t *c, const coord_control_t *control);

/* ---- coord_state.c: states and their transitions ------------------------------------------ */
const char *coord_worker_state_name(worker_state_t s);
const char *coord_run_state_name(run_state_t s);
/* The state named `name`, or -1. */
int coord_worker_state_parse(const char *name);
int coord_run_state_parse(const char *name);
/* joining, active, draining or drained: registered and not dead or gone */
int coord_worker_is_live(worker_state_t s);
/* A message from live worker w arrived on `route`: seen now, its route and connection kept. */
void coord_worker_heard(coord_t *c, coord_worker_t *w, const wire_route_t *route);
/* w's connection is now descriptor fd (-1: none), in c->by_fd too. */
void coord_worker_set_conn(coord_t *c, coord_worker_t *w, int fd);
/* done, failed or cancelled */
int coord_run_is_terminal(run_state_t s);

/* The one place worker and run states change: logs "worker w3: active -> dead (reason)",
 * appends the ledger entry and stages the record. SHOAL_ERR_STATE for a forbidden change. */
shoal_err_t coord_worker_transition(coord_t *c, coord_worker_t *w, worker_state_t to,
                                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
shoal_err_t coord_run_transition(coord_t *c, coord_run_t *r, run_state_t to, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- coord_records.c: persistence ---------------------------------------------------------- */
/* Records and ledger entries go into c->txn; coord_txn_commit() writes them as one synced batch
 * and then sends every message queued so far (coord_send): nothing is announced before the
 * state it follows is on disk. Policy on a failed write: fail-stop. The batch and every queued
 * message are discarded, the coordinator writes and announces nothing more, and
 * coord_poll_once() returns SHOAL_ERR_DB so that the daemon exits and systemd restarts it from
 * what is on disk. Callers may skip work on an error; they need not undo anything. */
store_batch_t *coord_txn(coord_t *c);
/* Stages `j` (stolen, may be NULL: logged) as the value of cf/key. */
void coord_put_json(coord_t *c, store_cf_t cf, const char *key, json_t *j);
void coord_put_worker(coord_t *c, const coord_worker_t *w);
void coord_put_run(coord_t *c, const coord_run_t *r);
void coord_put_plan(coord_t *c, const plan_t *p);
void coord_put_meta(coord_t *c, const char *key, uint64_t value);
/* Appends a ledger entry (detail stolen, may be NULL) for `run` ("" = cluster chain). */
void coord_ledger(coord_t *c, const char *run, const char *kind, json_t *detail);
shoal_err_t coord_txn_commit(coord_t *c);
/* Loads every worker, run (with its current plan) and counter from the store. */
shoal_err_t coord_load(coord_t *c);

/* ---- coord_push.c: replies and pushes to workers ------------------------------------------- */
/* Sends on `sock` with the next sequence number; a failure is logged at debug and dropped. */
/* Packs `env` and queues it for `sock`/`route` (sent by the next coord_txn_commit). After a
 * fail-stop only refusals (Error, a failed CtlReply) still go out, at once. */
void coord_send(coord_t *c, void *sock, const wire_route_t *route, Shoal__Envelope *env);
/* Sends every queued message, in order (coord_txn_commit calls it once the state is on disk). */
void coord_outbox_flush(coord_t *c);
/* Drops every queued message (their state could not be written). */
void coord_outbox_discard(coord_t *c);
/* Sends to a worker through its last route (nothing when it has none). */
void coord_send_worker(coord_t *c, coord_worker_t *w, Shoal__Envelope *env);
/* An Error about `about`; its envelope (and `generation`) name the sender's current run `r` and
 * that run's generation (NULL: none), so that the answer carries no stale or foreign pair. */
void coord_reply_error(coord_t *c, const wire_route_t *route, Shoal__ErrorCode code,
                       const Shoal__Envelope *about, const coord_run_t *r, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* The Ack of every worker message, with what the worker should do next. */
void coord_reply_ack(coord_t *c, const wire_route_t *route, const Shoal__Envelope *about,
                     coord_worker_t *w, coord_run_t *r);
/* Messages to workers (through their last route; dropped silently when unreachable). */
/* Member w's assignment, answering its GetAssignment that names generation held_gen of the
 * run (0: none): a delta when the coordinator holds that table as a base and this generation's
 * pulls of w got no delta yet (a second pull means it refused one), else the full plan. */
void coord_push_assignment(coord_t *c, coord_run_t *r, coord_worker_t *w, uint64_t held_gen);
/* Frees r's cached answer to pulls (coord_run_free). */
void coord_push_forget_pulls(coord_run_t *r);
/* Whether w was sent r's current generation within the last few heartbeat periods: a message
 * of w naming an older one was sent before w got it, and is answered without FETCH_ASSIGNMENT
 * or ERR_STALE_GENERATION (half the full assignments at 10,000 workers were such pulls). */
int coord_assignment_in_flight(const coord_t *c, const coord_run_t *r, const coord_worker_t *w);
/* A re-plan's assignments to the members among ws[n] (non-members skipped): the plan message
 * is built once; a member last sent the generation last pushed gets a delta (plan_delta.h)
 * when that is smaller. The table pushed becomes the next deltas' base. */
void coord_push_assignments(coord_t *c, coord_run_t *r, coord_worker_t **ws, uint32_t n);
void coord_push_run_control_to(coord_t *c, coord_run_t *r, coord_worker_t *w, int command,
                               const char *reason);
void coord_push_run_control(coord_t *c, coord_run_t *r, int command, const char *reason);
void coord_push_step_commit(coord_t *c, coord_run_t *r);
void coord_push_drain(coord_t *c, coord_worker_t *w, const char *reason);
/* RunControl{STOP} to a member the run's new plan left out; when the plan names it as the giver
 * of a hand-over, the STOP carries it (hand the cell's state to the taker, then leave). */
void coord_push_leave_plan(coord_t *c, coord_run_t *r, coord_worker_t *w);

/* ---- coord_sched.c: barrier, plans, scheduling --------------------------------------------- */
/* The lease of a running run: committed step + step_window, at most total_steps. */
int64_t coord_run_lease_for(const coord_t *c, const coord_run_t *r);
/* Sizes the per-rank arrays for r's plan, every rank at the committed step. SHOAL_ERR_NOMEM. */
shoal_err_t coord_run_reset_ranks(coord_run_t *r);
/* The step barrier: commits the smallest step every rank reported (and pushes it). */
void coord_run_advance(coord_t *c, coord_run_t *r);
/* Marks a running run done once its last step and that step's checkpoint are committed. */
void coord_run_check_done(coord_t *c, coord_run_t *r);
/* Membership check of a running run (cron): re-plans now, at the boundary, or after back-off. */
void coord_run_replan_check(coord_t *c, coord_run_t *r);
/* Starts the oldest pending run when no run holds the cluster (cron). */
void coord_schedule(coord_t *c);
/* The plan the live workers would get now (dry run): fills `out` (caller plan_fini()s).
 * SHOAL_ERR_STATE when no worker is eligible. */
shoal_err_t coord_plan_preview(coord_t *c, coord_run_t *r, plan_t *out);
/* Whether an active worker is a spare (state `standby` in the control replies): a running or
 * paused run's plan lists it among its spares and it holds no cell. Its stored state stays
 * active: standby is a flag on active, not a state of its own. */
int coord_worker_is_standby(const coord_t *c, const coord_worker_t *w);
/* Releases a finished run's workers and tells them to stop. */
void coord_run_release_workers(coord_t *c, coord_run_t *r, const char *reason);

/* ---- coord_worker.c: the worker protocol --------------------------------------------------- */
/* A worker message that did not decode (rc: wire_decode's error, shoal_errmsg() its reason),
 * from `route` (where: "on the worker socket", "relayed by ..."): counted, logged, answered with
 * an Error and a strike against its sender. */
void coord_worker_msg_bad(coord_t *c, const wire_route_t *route, shoal_err_t rc,
                          const char *where);
/* wire_handler_fn for the worker socket (ctx: coord_msg_ctx_t); every message is answered. */
void coord_on_worker_msg(const Shoal__Envelope *env, void *ctx);
/* Run and generation check of a worker message: the message's run must be the worker's run
 * and its generation the run's current one; otherwise it is dropped, logged and answered with
 * an Error. Returns the run, or NULL when dropped. */
coord_run_t *coord_check_run(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                             const Shoal__Envelope *env);
/* w's rank in r's plan, or -1. */
int coord_rank_of(const coord_run_t *r, const coord_worker_t *w);
/* Quarantines a live worker (no-op when it is quarantined already or not live): state
 * `quarantined` with its reason, a `quarantine` ledger entry {worker, name, generation,
 * failures, cause, detail}, out of its run (told to stop; the cron re-plans without it). cause
 * names the rule ("plan failures", "bad messages", "gradient rejected"). Commits. */
void coord_worker_quarantine(coord_t *c, coord_worker_t *w, const char *cause,
                             const char *detail);
/* Clears a worker's plan-failure streak (a step completed, or the operator undrained it). */
void coord_worker_clear_failures(coord_worker_t *w);

/* ---- coord_metrics.c: Prometheus /metrics ------------------------------------------------- */
/* Starts the HTTP server when cfg.metrics_listen is set (errors: metrics_http_start). */
shoal_err_t coord_metrics_start(coord_t *c);
void coord_metrics_stop(coord_t *c);
/* Cron: renders and publishes a snapshot every 500 ms. */
void coord_metrics_cron(coord_t *c, int64_t now_mono_ms);
/* Renders and publishes now (nothing without a server). */
void coord_metrics_publish(coord_t *c);
/* Renders the whole exposition into t (reset first); tests call it directly. */
void coord_metrics_render(coord_t *c, prom_text_t *t);
/* r->committed_step just advanced: note when. */
void coord_metrics_on_step_commit(coord_run_t *r);

/* ---- coord_experts.c: observed per-expert loads (hot experts, EPLB placement) ------------- */
typedef struct coord_experts coord_experts_t;
/* Folds the expert loads of sr (from w, rank `rank` of r's plan) into r's decayed loads; loads
 * that do not fit the model or the sender's stage are dropped, counted and a strike. */
void coord_experts_note(coord_t *c, coord_run_t *r, coord_worker_t *w, int rank,
                        const Shoal__StepReport *sr);
/* shoalctl experts: per layer the loads, hottest experts, the contiguous split's imbalance and
 * the EPLB placement for ep (0: the plan's) over `hosts` (0: the plan's ep group's) with
 * `redundant` extra slots per rank. NULL with shoal_fail set when it cannot be made. */
json_t *coord_experts_json(coord_t *c, coord_run_t *r, uint32_t ep, uint32_t hosts,
                           uint32_t redundant);
/* shoal_expert_load_imbalance{run,layer} of the live runs. */
void coord_experts_render(coord_t *c, prom_text_t *t);
void coord_experts_free(coord_run_t *r);

/* ---- coord_history.c: the per-step history of a run (store family "history") ------------- */
/* Rank `rank` of r reported step report sr (a step past its last): its figures are kept. */
void coord_history_note(coord_run_t *r, int rank, const Shoal__StepReport *sr);
/* r->committed_step just advanced: stages its row (in the transaction of the run record). */
void coord_history_put(coord_t *c, coord_run_t *r);
/* Rows of `run` with step > after, at most limit (0: 1000; capped at 5000), appended to out.
 * *next: the step to ask `after` next, or 0 when the history ends here. */
shoal_err_t coord_history_list(store_t *st, const char *run, int64_t after, unsigned limit,
                               json_t *out, int64_t *next);
/* The run's tokens/s: its newest history row's (read back from the store once after a load). */
double coord_history_tokens_per_s(coord_t *c, coord_run_t *r);

/* ---- coord_guard.c: rate limit, bad-message strikes, gradient votes ------------------------ */
/* Whether a message from this worker connection is within its rate (a token taken); when not
 * it is counted and must be dropped unanswered. */
int coord_guard_admit(coord_t *c, const wire_route_t *route);
/* Frees the rate buckets (coord_destroy). */
void coord_guard_free(coord_t *c);
/* A malformed or out-of-plan message from w (NULL: from no known worker; only counted): after
 * quarantine_after_bad_messages of them w is quarantined. */
void coord_guard_strike(coord_t *c, coord_worker_t *w, const char *why);
/* The same for a message that could not be decoded: the worker whose last route it came on. */
void coord_guard_strike_route(coord_t *c, const wire_route_t *route, const char *why);
/* A StepReport of w (a member of r's current plan) naming replicas its step left out: each
 * named replica's worker (in w's stage and ep rank) is quarantined once at least two and a
 * strict majority of its dp - 1 peers named it in this generation. */
void coord_guard_grad_report(coord_t *c, coord_run_t *r, coord_worker_t *w, uint64_t rejected,
                             const char *detail);
/* A heartbeat of w (a member of r's current plan) saying that `frames` data-plane frames it
 * dropped came on a connection authenticated with CURVE key `key`: one strike against the
 * other member of the plan holding that key, at most one per COORD_PEER_FRAMES_MS per accused
 * worker whoever reports (a lying member cannot strike faster). */
void coord_guard_peer_frames(coord_t *c, coord_run_t *r, coord_worker_t *w, const char *key,
                             uint32_t frames, const char *why);
#define COORD_PEER_FRAMES_MS 30000

/* ---- coord_manifest.c: checkpoints --------------------------------------------------------- */
/* A checkpoint shard report (run already checked): stores it, commits the manifest when every
 * cell of the plan has reported that step, answers. */
void coord_on_ckpt_shard(coord_t *c, const wire_route_t *route, coord_worker_t *w, coord_run_t *r,
                         const Shoal__Envelope *env);

/* ---- coord_replicas.c: checkpoint.replicas -------------------------------------------------- */
/* At the commit of `step`'s manifest (before it is stored): lists each shard's writer as its
 * first holder and pushes Replicate to the live workers chosen to copy it. */
void coord_replicas_on_commit(coord_t *c, coord_run_t *r, int64_t step, json_t *manifest);
/* Up to n holders for a copy of the shard `writer` wrote, best first, into out; returns how
 * many: live workers with a shard server other than the writer, on other hosts first, then in
 * other institutions, then by worker id following the writer's (cyclic), so that copies
 * spread. */
int coord_replicas_choose(coord_t *c, const coord_worker_t *writer, int n, coord_worker_t **out);
/* A worker died or left: for each active run's newest checkpoint holding a shard on it, the
 * next cron orders new copies from the live holders so that every shard is back to replicas + 1
 * live holders (after the re-plan the loss causes: its workers get the plan first). */
void coord_replicas_on_loss(coord_t *c, const coord_worker_t *w);
/* Cron: a Replicate order whose copy is not confirmed within replicate_ack_ms is sent again
 * (up to replicate_retries times, the wait doubling); one whose target died, already holds
 * the copy or belongs to an older checkpoint is dropped. Every replica_repair_ms (the first
 * time that long after the start, so that the workers have registered again) each active
 * run's newest checkpoint gets copies ordered for its shards that have too few live holders
 * and no order in flight: orders live in memory, and this is what brings a shard back to
 * replicas + 1 after a coordinator restart. */
void coord_replicas_cron(coord_t *c, int64_t now_mono_ms);
/* Frees the unconfirmed orders (coord_destroy). */
void coord_replicas_free(coord_t *c);
/* MSG_SHARD_HELD (any generation): a worker confirms a copy; it joins the shard's holders. */
void coord_on_shard_held(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                         coord_run_t *unused, const Shoal__Envelope *env);
/* MSG_SHARD_CORRUPT (any generation): w fetched a copy of replica_of's shard from `holder` and
 * it failed its digests: that holder leaves the shard's holders (a `shard_corrupt` ledger
 * entry) and copies are ordered until the shard has replicas + 1 live holders again. */
void coord_on_shard_corrupt(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                            coord_run_t *unused, const Shoal__Envelope *env);
/* Fills the files and live holders of plan->ckpt_shards from `step`'s committed manifest;
 * *keep owns what they point to until coord_replicas_detach (NULL when nothing was added). */
typedef struct coord_shard_src coord_shard_src_t;
void coord_replicas_attach(coord_t *c, const coord_run_t *r, int64_t step, Shoal__Plan *plan,
                           coord_shard_src_t **keep);
void coord_replicas_detach(coord_shard_src_t **keep);
/* The newest committed checkpoint step (<= r->checkpoint_step) whose every shard has a live
 * holder, its path into path[cap]; r->checkpoint_step and its path when none has (a host that
 * still reads the dead writer's dir may load it: single-host runs). */
int64_t coord_replicas_restorable(coord_t *c, const coord_run_t *r, char *path, size_t cap);

#endif
