/* coord_int.h: the coordinator's in-memory state and helpers shared by coord.c (worker protocol,
 * cron, persistence) and control.c (shoalctl verbs). Internal: only coordinator/ includes it. */
#ifndef SHOAL_COORD_INT_H
#define SHOAL_COORD_INT_H

#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "coord.h"
#include "ledger.h"
#include "plan.h"
#include "store.h"
#include "wire.h"

#define COORD_ID_MAX 24
#define COORD_SENDER "coordinator"

typedef enum {
    WORKER_JOINING = 0, /* registered, no heartbeat yet */
    WORKER_ACTIVE,      /* heartbeating; eligible for plans */
    WORKER_DRAINING,    /* operator drain: leaves its plan at the next step boundary */
    WORKER_DRAINED,     /* out of every plan until undrained */
    WORKER_DEAD,        /* silent for dead_after_ms; must register again */
    WORKER_LEFT,        /* left cleanly (Leave); must register again */
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

typedef struct {
    char id[COORD_ID_MAX];
    char name[WIRE_MAX_ID_LEN + 1];
    char host[256];
    char institution[128];
    char version[64];
    char endpoint[PLAN_ENDPOINT_MAX];
    char devices[512];
    uint64_t memory_bytes;
    worker_state_t state;
    char run[COORD_ID_MAX]; /* run whose plan holds this worker ("" = none) */
    int64_t registered_ms;
    /* volatile (not persisted) */
    int64_t last_seen_ms; /* monotonic: any message */
    int64_t last_hb_ms;   /* wall clock of the last heartbeat (0 = none since start) */
    int64_t step;
    double loss, tokens_per_s;
    int activity;
    wire_route_t route;
    int has_route;
    /* failure streak: plans of run fail_run that failed on this worker in a row, no step in
     * between (one count per generation, fail_gen the last counted) */
    char fail_run[COORD_ID_MAX];
    int fail_count;
    uint64_t fail_gen;
    char quarantine[192]; /* why it was quarantined (persisted; "" = not quarantined) */
} coord_worker_t;

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
    char reason[256]; /* why failed / cancelled */
    plan_t plan;
    /* volatile: per rank of the plan */
    int64_t *reported;
    double *rank_loss;
    int replan_pending; /* membership changed: lease frozen until the boundary */
    int replan_now;     /* a member reported its plan failed: new plan (after the back-off) */
    int64_t fail_backoff_ms;      /* wait after the last failure re-plan (0: none yet) */
    int64_t fail_replan_at_ms;    /* monotonic: no failure re-plan before this */
    int fail_backoff_logged;      /* the current wait was logged */
} coord_run_t;

struct coord {
    coord_config_t cfg;
    store_t *st;
    ledger_t *ledger;
    void *zctx, *wsock, *csock;
    coord_worker_t **workers; /* in registration (or load) order */
    int n_workers, cap_workers;
    coord_worker_t **by_num; /* index: worker "w<N>" at [N] */
    uint64_t cap_by_num;
    coord_run_t **runs;
    int n_runs, cap_runs;
    uint64_t next_worker, next_run, seq;
    uint64_t last_generation; /* highest plan generation of any run */
    int64_t next_cron_ms, next_watchdog_ms, watchdog_every_ms;
    int notify;
    unsigned long long handled, dropped;
    store_batch_t *txn; /* the state change being built; one synced batch */
};

int64_t coord_now_mono_ms(void);
int64_t coord_now_wall_ms(void);
const char *coord_worker_state_name(worker_state_t s);
const char *coord_run_state_name(run_state_t s);

coord_worker_t *coord_find_worker(coord_t *c, const char *id_or_name);
coord_run_t *coord_find_run(coord_t *c, const char *id_or_name);

/* Persistence: records and ledger entries go into c->txn; coord_txn_commit() writes them as
 * one synced batch (logging and returning the error if RocksDB fails). */
void coord_put_worker(coord_t *c, const coord_worker_t *w);
void coord_put_run(coord_t *c, const coord_run_t *r);
void coord_put_meta(coord_t *c, const char *key, uint64_t value);
/* Appends a ledger entry (detail stolen, may be NULL) for `run` ("" = cluster chain). */
void coord_ledger(coord_t *c, const char *run, const char *kind, json_t *detail);
shoal_err_t coord_txn_commit(coord_t *c);

/* The one place worker and run states change: logs "worker w3: active -> dead (reason)",
 * appends the ledger entry and stages the record. SHOAL_ERR_STATE for a forbidden change. */
shoal_err_t coord_worker_transition(coord_t *c, coord_worker_t *w, worker_state_t to,
                                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
shoal_err_t coord_run_transition(coord_t *c, coord_run_t *r, run_state_t to, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Messages to workers (through their last route; dropped silently when unreachable). */
void coord_push_assignment(coord_t *c, coord_run_t *r, coord_worker_t *w);
void coord_push_run_control(coord_t *c, coord_run_t *r, int command, const char *reason);
void coord_push_step_commit(coord_t *c, coord_run_t *r);
void coord_push_drain(coord_t *c, coord_worker_t *w, const char *reason);

/* Clears a worker's plan-failure streak (a step completed, or the operator undrained it). */
void coord_worker_clear_failures(coord_worker_t *w);

/* The plan the live workers would get now (dry run): fills `out` (caller plan_fini()s).
 * SHOAL_ERR_STATE when no worker is eligible. */
shoal_err_t coord_plan_preview(coord_t *c, coord_run_t *r, plan_t *out);
/* Adds a submitted run (spec checked by the caller). */
shoal_err_t coord_add_run(coord_t *c, const char *name, const char *spec_yaml, int64_t total_steps,
                          uint32_t n_layers, uint32_t n_experts, coord_run_t **out);
/* Releases a finished run's workers and tells them to stop. */
void coord_run_release_workers(coord_t *c, coord_run_t *r, const char *reason);

/* control.c: answers one control request (every request gets a CtlReply). */
void control_handle(coord_t *c, const wire_route_t *route, const Shoal__Envelope *env);
void control_reply(coord_t *c, const wire_route_t *route, int ok, Shoal__ErrorCode code,
                   const char *message, json_t *json);

#endif
