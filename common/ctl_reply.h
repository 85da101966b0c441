/* ctl_reply.h: the JSON bodies of the coordinator's control replies (CtlReply.json), defined once
 * for both sides: the field names, and encode (coordinator) / decode (shoalctl) functions. */
#ifndef SHOAL_CTL_REPLY_H
#define SHOAL_CTL_REPLY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

/* submit: {id, name, state}; drain, undrain, pause, resume, cancel: {id, state} */
#define CTL_F_ID "id"
#define CTL_F_NAME "name"
#define CTL_F_STATE "state"

/* status: {runs: [run status], active_workers} */
#define CTL_F_RUNS "runs"
#define CTL_F_ACTIVE_WORKERS "active_workers"
#define CTL_F_STANDBY_WORKERS "standby_workers" /* active workers that are a plan's spares */
/* run status: {id, name, state, step, total_steps, loss, generation, checkpoint_step, lease,
 * workers, reason} */
#define CTL_F_STEP "step"
#define CTL_F_TOTAL_STEPS "total_steps"
#define CTL_F_LOSS "loss"
#define CTL_F_GENERATION "generation"
#define CTL_F_CHECKPOINT_STEP "checkpoint_step"
#define CTL_F_LEASE "lease"
#define CTL_F_WORKERS "workers" /* run status: plan size; workers reply: the list */
#define CTL_F_REASON "reason"

/* workers: {workers: [worker]}; worker: {id, name, state, run, cell, last_heartbeat_ms, host,
 * institution, step, loss, tokens_per_s}; cell: {replica, stage, ep_rank} or null */
#define CTL_F_CELL "cell"
#define CTL_F_REPLICA "replica"
#define CTL_F_STAGE "stage"
#define CTL_F_EP_RANK "ep_rank"
#define CTL_F_LAST_HEARTBEAT_MS "last_heartbeat_ms"
#define CTL_F_HOST "host"
#define CTL_F_INSTITUTION "institution"
#define CTL_F_TOKENS_PER_S "tokens_per_s"

/* events: {run, events: [ledger entries]}; a ledger entry (coordinator/ledger.c stores it):
 * {seq, time_ms, run, kind, detail, prev_hash, hash} */
#define CTL_F_RUN "run"
#define CTL_F_EVENTS "events"
#define CTL_F_ROWS "rows" /* history reply: the per-step rows of one page */
#define CTL_F_NEXT "next" /* history reply: the step to ask after next (0: the end) */
#define CTL_F_SEQ "seq"
#define CTL_F_TIME_MS "time_ms"
#define CTL_F_KIND "kind"
#define CTL_F_DETAIL "detail"
#define CTL_F_PREV_HASH "prev_hash"
#define CTL_F_HASH "hash"

/* verify: {run, entries, ok, first_bad, reason} */
#define CTL_F_ENTRIES "entries"
#define CTL_F_OK "ok"
#define CTL_F_FIRST_BAD "first_bad"

/* plan: {run, dry_run, plan}; the plan document (coordinator/plan.c writes and stores it):
 * {run_id, generation, topology: {dp, pp, ep}, stages: [{stage, first_layer, n_layers,
 * has_embedding, has_head}], experts: [{ep_rank, first, count}], peers: [{worker, rank, cell,
 * data_endpoint, host, institution, memory_bytes, mem_est_bytes}], spares: [{worker, host,
 * institution, memory_bytes}], start_step, source, checkpoint_step, checkpoint_path,
 * ckpt_shards: [{cell, path}], source_rank, note, groups: [{kind ("ep": one (replica, stage);
 * "pipeline": one replica; "dp": one stage), replica, stage (-1: all), hosts, institutions}]}
 * (groups is derived from peers: written, never read back) */
#define CTL_F_DRY_RUN "dry_run"
#define CTL_F_PLAN "plan"
#define CTL_F_RUN_ID "run_id"
#define CTL_F_TOPOLOGY "topology"
#define CTL_F_DP "dp"
#define CTL_F_PP "pp"
#define CTL_F_EP "ep"
#define CTL_F_STAGES "stages"
#define CTL_F_FIRST_LAYER "first_layer"
#define CTL_F_N_LAYERS "n_layers"
#define CTL_F_HAS_EMBEDDING "has_embedding"
#define CTL_F_HAS_HEAD "has_head"
#define CTL_F_EXPERTS "experts"
#define CTL_F_FIRST "first"
#define CTL_F_COUNT "count"
#define CTL_F_PEERS "peers"
#define CTL_F_WORKER "worker"
#define CTL_F_RANK "rank"
#define CTL_F_DATA_ENDPOINT "data_endpoint"
#define CTL_F_START_STEP "start_step"
#define CTL_F_SOURCE "source"
#define CTL_F_CHECKPOINT_PATH "checkpoint_path"
#define CTL_F_SOURCE_RANK "source_rank"
#define CTL_F_MEMORY_BYTES "memory_bytes"
#define CTL_F_GPU "gpu" /* plan peer or spare on a GPU (declared device cuda:N) */
#define CTL_F_MEM_EST_BYTES "mem_est_bytes"
#define CTL_F_SPARES "spares"
#define CTL_F_CKPT_SHARDS "ckpt_shards" /* {cell, path}: CTL_F_PATH below */
#define CTL_F_HANDOVERS "handovers" /* {to_rank, worker, data_endpoint} */
#define CTL_F_TO_RANK "to_rank"
#define CTL_F_NOTE "note"
#define CTL_F_GROUPS "groups"
#define CTL_F_HOSTS "hosts"
#define CTL_F_INSTITUTIONS "institutions"

/* manifest: {run, step, manifest}; the manifest document (coordinator/coord_manifest.c stores
 * it when every cell reported its shard): {run, step, generation, path, committed_ms, shards:
 * [{worker, holder, rank, cell, path, files: [{name, size, sha256}], generation}]}; a shard's
 * path is its checkpoint directory on the holder's machine */
#define CTL_F_MANIFEST "manifest"
#define CTL_F_SHARDS "shards"
#define CTL_F_PATH "path"
#define CTL_F_HOLDER "holder"
#define CTL_F_HOLDERS "holders" /* a shard's [{worker, path}]: its writer, then confirmed copies */

/* One run of a status reply. Strings are borrowed: from the coordinator's run when encoding,
 * from the decoded document when decoding (valid while it lives). */
typedef struct {
    const char *id, *name, *state, *reason;
    int64_t step, total_steps, generation, checkpoint_step, lease;
    double loss;
    bool has_loss; /* decode: the document carried a number */
    int workers;
} ctl_run_status_t;

/* The JSON object of one run status (NULL when out of memory). */
json_t *ctl_run_status_encode(const ctl_run_status_t *s);
/* Reads one run status: a missing or mistyped field reads as "" / 0 (has_loss false). */
void ctl_run_status_decode(const json_t *obj, ctl_run_status_t *out);

/* A verify reply (strings borrowed as above). */
typedef struct {
    const char *run, *reason;
    uint64_t entries, first_bad; /* first_bad: seq of the first broken entry, 0 = none */
    bool ok;                     /* the chain is intact */
} ctl_verify_t;

json_t *ctl_verify_encode(const ctl_verify_t *v);
/* SHOAL_ERR_FORMAT when a field is missing or of the wrong type. */
shoal_err_t ctl_verify_decode(const json_t *doc, ctl_verify_t *out);

/* One worker of a workers reply (strings borrowed as above). */
typedef struct {
    const char *id, *name, *state, *run, *host, *institution; /* run: "" when unassigned */
    bool has_cell;                                            /* cell is an object, not null */
    int replica, stage, ep_rank;
    int64_t last_heartbeat_ms; /* ms since the last heartbeat, -1 when none (decode: also absent) */
    int64_t step;
    double loss, tokens_per_s;
    const char *reason; /* what holds it out of plans: its quarantine, else its drain ("" none) */
} ctl_worker_t;

/* The JSON object of one worker (NULL when out of memory). */
json_t *ctl_worker_encode(const ctl_worker_t *w);
/* Reads one worker: a missing or mistyped field reads as "" / 0 (last_heartbeat_ms -1); a cell
 * that is not an object reads as has_cell false. */
void ctl_worker_decode(const json_t *obj, ctl_worker_t *out);

#endif
