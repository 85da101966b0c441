/* daemon_int.h: what the worker daemon's files share (internal, not an interface): the daemon
 * state and the calls between the loop (daemon.c) and plan application (daemon_plan.c). The
 * state directory has its own module (statedir.h). Everything here runs on the training
 * thread. */
#ifndef SHOAL_WORKER_DAEMON_INT_H
#define SHOAL_WORKER_DAEMON_INT_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#include "cell_comms.h"
#include "ckpt_repl.h"
#include "comm.h"
#include "daemon.h"
#include "device.h"
#include "metrics_http.h"
#include "prom_text.h"
#include "runspec.h"
#include "session.h"
#include "statedir.h"
#include "trainer.h"

typedef struct {
    daemon_config_t cfg;
    statedir_t state; /* the state dir, locked */
    char name[SESS_ID_MAX];
    device_t device; /* selected from cfg.device at start; what Register reports */
    void *zctx;
    comm_listener_t *listener;
    /* CURVE (cfg.keys_dir): our pair and the coordinator's public key; curve 0 = plaintext */
    int curve;
    zsec_keys_t keys;
    char coordinator_key[ZSEC_KEY_LEN + 1];
    session_t *sess;
    FILE *metrics;

    sess_plan_t *plan;    /* the plan being trained (NULL: none) */
    sess_plan_t *pending; /* a newer plan, applied at the next step boundary */
    runspec_t *spec;
    trainer_t *tr;
    char tr_run[SESS_ID_MAX];
    char *tr_spec_yaml;
    char ckpt_root[PATH_MAX];
    int have_state; /* the trainer holds the state after trainer_next_step() steps */
    cell_comms_t comms; /* the plan generation's group comms */
    int have_comms;
    uint64_t comms_gen; /* the newest generation whose comms were created on the listener */
    void *snap; /* packed state before the last apply, for a rollback */
    size_t snap_len;
    int64_t snap_step; /* -1: none */
    int64_t lease, committed;
    int paused, failed, draining;
    int64_t handover_ask_ms; /* SIGTERM: when a hand-over (Leave{drain_first}) was last asked */
    int loading; /* between a plan switch and its agreed state */
    int copies_held; /* checkpoint copies wait: a plan came and no step has run under it yet */
    uint64_t failed_gen;
    int64_t failed_ms, last_ask_ms;
    int64_t ckpt_pending; /* step of a checkpoint being written (0: none) */
    ckpt_server_t *shards;   /* serves this worker's shards and copies to its peers */
    vouch_t *vouch; /* CURVE: the keys the coordinator vouches for, asked by the session */
    ckpt_replicator_t *repl; /* makes the copies the coordinator orders, in the background */
    char served_root[PATH_MAX]; /* the checkpoint root last added to the shard server */
    float last_loss, tokens_per_s;
    sess_activity_t activity;
    int64_t status_step;
    char status_run[SESS_ID_MAX];
    uint64_t status_gen;
    char detail[256];
    /* Prometheus /metrics (daemon_metrics.c; NULL: no --metrics-listen) */
    metrics_http_t *http;
    prom_text_t http_text;
    double last_step_s, last_comm_s; /* the last step's wall time and time in collectives */
    uint64_t steps_trained;
} daemon_t;

/* ---- daemon.c ----------------------------------------------------------------------------- */

/* Whether a stop (SIGTERM/SIGINT) was requested. */
int daemon_stopping(const daemon_t *d);

/* Posts the status the heartbeats carry, when it changed (fmt may be NULL: no detail). */
void daemon_status(daemon_t *d, sess_activity_t act, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The assignment failed: logs why, drops the comm, reports FAILED and asks for the next plan. */
void daemon_fail(daemon_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* daemon_fail with the activity the heartbeats report (SESS_ACT_STATE_MISSING: no rank holds
 * the state the plan names, the plan's fault and not this worker's). */
void daemon_fail_as(daemon_t *d, sess_activity_t act, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Destroys the plan's comm (untracked by the session first); no-op without one. */
void daemon_drop_comm(daemon_t *d);

/* d->snap sized for the trainer's packed state (NULL when out of memory). The snapshot buffer
 * doubles as the buffer a recovery sends or receives the state in: its pages are already
 * mapped (a fresh 20 MiB buffer costs ~5,000 page faults, 0.1-0.5 s on a loaded VM) and the
 * first step's snapshot finds it warm. Whoever writes anything but the snapshot into it sets
 * d->snap_step = -1. */
void *daemon_state_buffer(daemon_t *d);

/* Takes every waiting session event; waits up to timeout_ms for the first. */
void daemon_pump(daemon_t *d, int timeout_ms);

/* Waits for the checkpoint being written (if any) and, when `report`, reports it to the
 * coordinator once durable (statedir_ckpt_report). */
void daemon_ckpt_finish(daemon_t *d, int report);

/* ---- daemon_metrics.c: Prometheus /metrics ---------------------------------------------- */

/* Starts the HTTP server when cfg.metrics_listen is set. */
shoal_err_t daemon_metrics_start(daemon_t *d);
/* Renders the worker's status and publishes it (nothing without a server). */
void daemon_metrics_publish(daemon_t *d);
/* Tells the coordinator which plan peers' keys sent this worker's listener malformed or forged
 * data-plane frames since the last call (one heartbeat per key; the coordinator strikes them). */
void daemon_report_bad_frames(daemon_t *d);
void daemon_metrics_stop(daemon_t *d);

/* ---- daemon_replicas.c: checkpoint replication ------------------------------------------ */

/* Starts the shard server (on the data endpoint's interface, an ephemeral port; serving the
 * state dir) and the replicator; the endpoint peers reach it at into out[cap]. */
shoal_err_t daemon_replicas_start(daemon_t *d, const char *data_endpoint, char *out, size_t cap);
/* Stops both; idempotent. */
void daemon_replicas_stop(daemon_t *d);
/* A Replicate order: queues each copy on the replicator (never waits for I/O). */
void daemon_replicas_order(daemon_t *d, const sess_event_t *ev);
/* Confirms the copies the replicator finished (MSG_SHARD_HELD); cheap, called every loop. */
void daemon_replicas_poll(daemon_t *d);
/* The dir to load the plan's checkpoint shard i from: the writer's dir when this host has it
 * and it verifies against the recorded digests, else this worker's copy (fetched from a live
 * holder when missing or corrupt, written into buf[cap]); the writer's dir when neither works
 * (the load then fails naming what is missing). */
const char *daemon_replicas_shard_dir(daemon_t *d, uint32_t i, char *buf, size_t cap);

/* ---- daemon_plan.c ------------------------------------------------------------------------ */

/* Applies `p` (owned) at a step boundary: the run's trainer, the comm of the new generation,
 * the state to start from (kept, rolled back, fresh, local checkpoint, or a peer's), and the
 * checkpoint of the boundary. Failures go through daemon_fail. */
void daemon_plan_switch(daemon_t *d, sess_plan_t *p);

/* Finishes (and reports) a checkpoint in flight and frees the trainer and its state. */
void daemon_plan_drop_trainer(daemon_t *d);

/* ---- daemon_handover.c -------------------------------------------------------------------- */

/* A worker leaving its plan (drained, preempted) gives its cell's state after `step` to the
 * worker taking the cell (`to`, its data endpoint; `to_key` its CURVE key, "" without CURVE)
 * over a 2-rank comm of generation `gen`; the
 * comms of the old plan must be gone. When it does not hold that state it says so (the taker
 * fails at once, and the coordinator's next plan loads the checkpoint). Bounded by the comm
 * timeout, and by the SIGTERM grace when one runs. */
shoal_err_t daemon_handover_give(daemon_t *d, const char *to, const char *to_key, int64_t step,
                                 uint64_t gen);

/* The taker's side (plan->handover_from set): receives the state after `want` steps into the
 * trainer. SHOAL_ERR_NOTFOUND when the giver lacks it; comm errors as comm_recv. */
shoal_err_t daemon_handover_take(daemon_t *d, int64_t want);

#endif
