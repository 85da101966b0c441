/* session.h: a worker daemon's session with the coordinator, on its own thread: register,
 * heartbeat, reconnect with backoff, validate every message, and trade plain C events with the
 * training thread over an inproc pair (protobuf types never leave session.c and its edge,
 * sess_plan.c).
 *
 * Threads: session_new() starts the session thread. The training thread posts requests
 * (session_post) and takes events (session_wait); session_track_comm() is the one piece of
 * shared state, so that the session thread can abort a collective that a new plan, a stop, or
 * the SIGTERM grace deadline made pointless. */
#ifndef SHOAL_WORKER_SESSION_H
#define SHOAL_WORKER_SESSION_H

#include <signal.h>
#include <stdint.h>

#include "cell_comms.h"
#include "comm.h"
#include "comm_ids.h"
#include "comm_watch.h"
#include "err.h"
#include "sess_plan.h"
#include "vouch.h"
#include "zsec.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SESS_MAX_FILES 16   /* files of one checkpoint report */

/* Worker activity as the proto numbers it (WorkerActivity). */
typedef enum {
    SESS_ACT_IDLE = 0,
    SESS_ACT_LOADING = 1,
    SESS_ACT_TRAINING = 2,
    SESS_ACT_WAITING = 3,
    SESS_ACT_CHECKPOINTING = 4,
    SESS_ACT_DRAINING = 5,
    SESS_ACT_FAILED = 6,
    SESS_ACT_STATE_MISSING = 7, /* failed: no rank holds the state the plan names */
} sess_activity_t;

typedef enum {
    SESS_EV_PLAN = 1,    /* a new assignment (plan owned by the event) */
    SESS_EV_LEASE,       /* step commit / lease of the current generation */
    SESS_EV_CONTROL,     /* pause, resume, stop, drain */
    SESS_EV_LEFT,        /* the Leave was sent (and acknowledged, or timed out): exit now */
    SESS_EV_REPLICATE,   /* copy committed checkpoint shards (copies[0..n_copies) of step) */
} sess_ev_kind_t;

typedef enum { SESS_CTL_PAUSE = 1, SESS_CTL_RESUME, SESS_CTL_STOP, SESS_CTL_DRAIN } sess_ctl_t;

typedef struct {
    sess_ev_kind_t kind;
    char run_id[SESS_ID_MAX];
    uint64_t generation;
    sess_plan_t *plan;     /* PLAN */
    int64_t committed;     /* LEASE: committed step (-1 = unknown) */
    int64_t lease;         /* LEASE */
    sess_ctl_t control;    /* CONTROL */
    char reason[256];
    /* REPLICATE: the checkpoint step and the shards to copy (owned by the event) */
    int64_t step;
    sess_shard_t *copies;
    int n_copies;
    /* CONTROL STOP of a worker leaving its plan: hand the cell's state after handover_step to
     * handover_to (a 2-rank comm of generation handover_gen) first; "" = no hand-over */
    char handover_to[SESS_TEXT_MAX];
    char handover_to_key[SESS_TEXT_MAX]; /* the taker's CURVE key ("" without CURVE) */
    int64_t handover_step;
    uint64_t handover_gen;
} sess_event_t;

void sess_event_destroy(sess_event_t **ev);

typedef enum {
    SESS_REQ_STATUS = 1,   /* latest status for heartbeats (not sent by itself) */
    SESS_REQ_STEP,         /* StepReport */
    SESS_REQ_CKPT,         /* CheckpointShardReport */
    SESS_REQ_GET_ASSIGNMENT,
    SESS_REQ_LEAVE,        /* Leave; answered by SESS_EV_LEFT */
    SESS_REQ_COMM_ID,      /* CommId: an NCCL unique id for the plan's other workers */
    SESS_REQ_LEAVE_DRAIN,  /* Leave{drain_first}: ask for a drain (a hand-over) before leaving */
    SESS_REQ_SHARD_HELD,   /* MSG_SHARD_HELD: a copy of replica_of's shard is held at path */
    SESS_REQ_BAD_FRAMES,   /* a heartbeat now, naming bad_key's bad data-plane frames */
    SESS_REQ_SHARD_CORRUPT, /* MSG_SHARD_CORRUPT: holder's copy of replica_of's shard of step
                               failed its digests */
} sess_req_kind_t;

typedef struct {
    char name[256];
    uint64_t size;
    char sha256[65];
} sess_file_t;

typedef struct {
    sess_req_kind_t kind;
    char run_id[SESS_ID_MAX];  /* the run and generation the training thread acts under */
    uint64_t generation;
    /* STATUS */
    int64_t step;              /* STATUS, STEP, CKPT */
    float loss, tokens_per_s;  /* STATUS, STEP */
    sess_activity_t activity;
    char detail[256];          /* STATUS detail, LEAVE reason */
    /* STEP */
    uint64_t tokens;
    float duration_s, grad_norm;
    float comm_seconds;         /* of duration_s, inside collectives (metrics) */
    uint64_t rejected_replicas; /* gradient sanity: replicas left out of the step (bit each) */
    char reject_detail[160];    /* why the first was */
    /* CKPT */
    char path[SESS_TEXT_MAX];
    int n_files;
    sess_file_t files[SESS_MAX_FILES];
    uint32_t replica, stage, ep_rank;
    /* COMM_ID: the group ("<generation>/<tag>") and the id */
    char comm_group[32];
    uint8_t comm_id[256];
    size_t comm_id_len;
    char replica_of[SESS_ID_MAX]; /* SHARD_HELD, SHARD_CORRUPT: the shard's writer */
    char holder[SESS_ID_MAX];     /* SHARD_CORRUPT: the worker that served the corrupt copy */
    /* BAD_FRAMES: the sending connection's CURVE key, its frames dropped, the last reason in
     * detail */
    char bad_key[41];
    uint32_t bad_frames;
    /* STEP, hot experts: tokens per routed expert of n_expert_layers MoE layers from model
     * layer first_expert_layer, n_experts each, layer-major (sess_req_new_step sizes it) */
    uint32_t n_expert_layers, first_expert_layer, n_experts;
    uint64_t expert_counts[];
} sess_req_t;

typedef struct {
    const char *coordinator;    /* the coordinator's worker endpoint */
    const char *name;           /* unique worker name */
    const char *host;
    const char *device;         /* e.g. "cpu" */
    const char *institution;
    const char *version;
    const char *data_endpoint;  /* connectable data-plane endpoint */
    const char *shard_endpoint; /* its checkpoint shard server (NULL or "": none) */
    uint64_t memory_bytes;
    const volatile sig_atomic_t *stop_flag; /* SIGTERM: arms the grace deadline (may be NULL) */
    double grace_seconds;       /* > 0 */
    int notify;                 /* send sd_notify READY/WATCHDOG/STATUS */
    const char *prev_id;        /* id this worker held before (state dir), sent as prev_id */
    const char *id_file;        /* the id given is written here (NULL: not kept) */
    const zsec_keys_t *keys;    /* CURVE: this worker's key pair (NULL: plaintext) */
    const char *coordinator_key; /* CURVE: the coordinator's public key (required with keys) */
    vouch_t *vouch; /* keys the shard server asks about: queried, answers filed (NULL: none) */
} session_config_t;

typedef struct session session_t;

/* Creates the inproc pair on `zctx` and starts the session thread (which connects, registers
 * and heartbeats). Strings in cfg are copied. Errors: SHOAL_ERR_IO, SHOAL_ERR_NOMEM. */
shoal_err_t session_new(void *zctx, const session_config_t *cfg, session_t **out);

/* Stops the thread (without a Leave) and frees everything; idempotent, nulls *s. */
void session_destroy(session_t **s);

/* Hands a request to the session thread; takes ownership (nulls *req) even on failure. */
shoal_err_t session_post(session_t *s, sess_req_t **req);

/* Convenience: a new zeroed request of `kind` under (run_id, generation); NULL on OOM. */
sess_req_t *sess_req_new(sess_req_kind_t kind, const char *run_id, uint64_t generation);
/* A STEP request with room for n_layers x n_experts expert counts; NULL on OOM. */
sess_req_t *sess_req_new_step(const char *run_id, uint64_t generation, uint32_t n_layers,
                              uint32_t n_experts);

/* Waits up to timeout_ms (0 = poll) for the next event; *ev is owned by the caller.
 * SHOAL_ERR_TIMEOUT when none arrived. */
shoal_err_t session_wait(session_t *s, int timeout_ms, sess_event_t **ev);

/* Tells the session which comms the training thread uses (NULL = none), their generation and
 * the step whose collectives are in flight (0 = none). The session aborts them when a newer plan
 * starts at or before that step, on a run stop, and at the SIGTERM grace deadline, also when
 * that plan or stop came after their creation but before this call (comm_watch.h). Call with
 * NULL before destroying the comms. */
void session_track_comms(session_t *s, cell_comms_t *c, uint64_t generation,
                         int64_t inflight_step);
/* The same, aborted only for the causes in `causes` (COMM_WATCH_*): a hand-over's giver, whose
 * hand-over a stop starts, is not aborted by a stop. */
void session_track_comms_on(session_t *s, cell_comms_t *c, uint64_t generation,
                            int64_t inflight_step, unsigned causes);

/* Whether the SIGTERM grace deadline has passed (the training thread abandons work then). */
int session_grace_expired(const session_t *s);

/* Seconds since the session saw the stop request (-1 before one). */
double session_since_stop_s(const session_t *s);

/* The worker id the coordinator gave (copied into out; "" before registration). */
void session_worker_id(session_t *s, char *out, size_t cap);

/* The NCCL unique ids the coordinator relayed to this worker (CommId of the current run),
 * owned by the session: a comm creation waits there with comm_ids_wait. Valid until
 * session_destroy. */
comm_ids_t *session_comm_ids(session_t *s);

/* Rank 0 of a group: sends its NCCL unique id (len <= 256) for group `tag` of (run_id,
 * generation) to the coordinator, which relays it to the plan's other workers. Sent once, when
 * registered (else dropped, logged): the peers' wait then times out and the plan fails as any
 * comm failure does. Errors: SHOAL_ERR_INVALID (size), SHOAL_ERR_NOMEM, SHOAL_ERR_IO. */
shoal_err_t session_send_comm_id(session_t *s, const char *run_id, uint64_t generation,
                                 uint32_t tag, const uint8_t *id, size_t len);

#ifdef __cplusplus
}
#endif
#endif
