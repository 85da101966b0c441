/* sess_plan.h: the worker's plan (one assignment as plain C) and the session's protobuf edge:
 * the pure conversion of an Assignment envelope into a plan, with every check a worker makes
 * before it trusts one. Protobuf types stop here and in session.c; the training thread only
 * ever sees sess_plan_t. */
#ifndef SHOAL_WORKER_SESS_PLAN_H
#define SHOAL_WORKER_SESS_PLAN_H

#include <stdint.h>

#include "ckpt_repl.h"
#include "err.h"
#include "shoal.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SESS_ID_MAX 65     /* run and worker ids (wire bound 64 + NUL) */
#define SESS_TEXT_MAX 4097 /* paths, endpoints, reasons (wire bound 4096 + NUL) */

typedef enum {
    SESS_SOURCE_INIT = 0,
    SESS_SOURCE_CHECKPOINT = 1,
    SESS_SOURCE_PEER = 2
} sess_source_t;

/* A committed checkpoint shard as the coordinator lists it: the cell (of the plan that wrote
 * it) it holds, its writer, the digests of its files and its live holders (ckpt_repl.h). */
typedef struct {
    uint32_t replica, stage, ep_rank;
    char writer[SESS_ID_MAX];
    ckpt_digests_t want;
    int n_src;
    ckpt_source_t src[CKPT_REPL_MAX_SOURCES];
} sess_shard_t;

/* Converts a shard's cell, files and holders (wire-checked; at most CKPT_REPL_MAX_SOURCES
 * holders kept) into *out. 0, or -1 when they do not fit (too many files, a name or path too
 * long, no cell). Pure. */
int sess_shard_from_pb(const Shoal__Cell *cell, const char *writer, Shoal__FileDigest *const *f,
                       size_t n_files, Shoal__ShardSource *const *src, size_t n_src,
                       sess_shard_t *out);

/* One assignment, converted and checked (this worker is peers[rank], peers ordered by rank). */
typedef struct {
    char run_id[SESS_ID_MAX];
    char run_name[SESS_ID_MAX];
    uint64_t generation;
    uint32_t dp, pp, ep;
    int64_t start_step; /* >= 1 */
    sess_source_t source;
    int64_t ckpt_step; /* source CHECKPOINT: start_step - 1 */
    char ckpt_path[SESS_TEXT_MAX];
    uint32_t source_rank; /* source PEER */
    uint32_t rank, nranks;
    uint32_t replica, stage, ep_rank;
    /* this cell's part of the model: its stage's layers, its ep rank's experts */
    uint32_t first_layer, n_layers;
    int has_embedding, has_head;
    uint32_t expert_first, expert_count; /* expert_count 0: the model has no routed experts */
    char **endpoints; /* nranks data endpoints, by rank */
    char **public_keys; /* nranks CURVE public keys, by rank ("" = plaintext) */
    /* source CHECKPOINT: the shard dirs of the committed checkpoint (every cell of the plan
     * that wrote it), for loading under another plan shape (resharding) */
    char **ckpt_shards;
    uint32_t n_ckpt_shards;
    /* NULL, or per ckpt_shards[i]: its digests and live holders, to fetch a shard whose dir is
     * not on this host (n_src 0 / want.n_files 0: the coordinator listed none) */
    sess_shard_t *ckpt_shard_info;
    int64_t lease;
    char *spec_yaml;
    /* source PEER: a worker leaving the plan hands this cell the state after start_step - 1
     * over a 2-rank comm of the plan's generation (CELL_GROUP_HANDOVER): its data endpoint
     * ("" = no hand-over to this cell) */
    char handover_from[SESS_TEXT_MAX];
    char handover_from_key[SESS_TEXT_MAX]; /* the giver's CURVE key ("" without CURVE) */
} sess_plan_t;

/* Frees a plan from sess_plan_from_assignment (or a session event); idempotent, nulls *p. */
void sess_plan_destroy(sess_plan_t **p);

/* Converts the Assignment in `env` (a validated, borrowed envelope: wire_check bounds hold)
 * into a new plan for the worker whose coordinator-given id is `self`. Pure: no state, no I/O,
 * no logging. Checks, in this order: an assignment body with a plan and topology; plan run id
 * equal to the envelope's; 1..COMM_MAX_RANKS peers with rank among them; start_step >= 1; a
 * known state source; a CHECKPOINT source carries the checkpoint of start_step - 1; a PEER
 * source_rank among the peers; a run spec; dp*pp*ep equal to the number of peers; peers ordered
 * by rank, each with a data endpoint; peers[rank] is `self`.
 * On success *plan is owned by the caller (sess_plan_destroy) and *why is NULL.
 * Errors: SHOAL_ERR_INVALID when refused, with *why a static reason (the message too);
 * SHOAL_ERR_NOMEM with *why "out of memory". *plan stays NULL on any error. */
shoal_err_t sess_plan_from_assignment(const Shoal__Envelope *env, const char *self,
                                      sess_plan_t **plan, const char **why);

#ifdef __cplusplus
}
#endif
#endif
