/* plan.h: a run's plan as plain C (topology, layer ranges per stage, expert ranges per ep rank,
 * peers), the planner that builds one from the live workers, and its JSON form (RocksDB, the
 * control API). Protobuf types never reach this module: coord.c converts at the edge. */
#ifndef SHOAL_PLAN_H
#define SHOAL_PLAN_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define PLAN_ID_MAX 68
#define PLAN_ENDPOINT_MAX 256
#define PLAN_PATH_MAX 1024

typedef enum {
    PLAN_SOURCE_INIT = 0,
    PLAN_SOURCE_CHECKPOINT = 1,
    PLAN_SOURCE_PEER = 2
} plan_source_t;

typedef struct {
    uint32_t replica, stage, ep_rank;
} plan_cell_t;

typedef struct {
    uint32_t first_layer, n_layers;
    int has_embedding, has_head;
} plan_stage_t;

/* Routed experts [first, first + count) of every MoE layer held by one ep rank. */
typedef struct {
    uint32_t ep_rank, first, count;
} plan_experts_t;

typedef struct {
    char worker_id[PLAN_ID_MAX];
    uint32_t rank;
    plan_cell_t cell;
    char endpoint[PLAN_ENDPOINT_MAX];
} plan_peer_t;

typedef struct {
    char run_id[PLAN_ID_MAX];
    uint64_t generation;
    uint32_t dp, pp, ep;
    plan_stage_t *stages;    /* pp entries */
    plan_experts_t *experts; /* ep entries (0 when the model has no routed experts) */
    uint32_t n_experts;
    plan_peer_t *peers; /* dp * pp * ep entries, by rank */
    uint32_t n_peers;
    int64_t start_step;
    plan_source_t source;
    int64_t ckpt_step;
    char ckpt_path[PLAN_PATH_MAX];
    uint32_t source_rank;
} plan_t;

/* A candidate worker for placement. */
typedef struct {
    const char *worker_id;
    const char *endpoint;
} plan_worker_t;

/* Rank of a cell: (replica * pp + stage) * ep + ep_rank. */
static inline uint32_t plan_rank(const plan_t *p, plan_cell_t c)
{
    return (c.replica * p->pp + c.stage) * p->ep + c.ep_rank;
}

/* Fills the layer ranges (n_layers split into pp contiguous stages, the remainder spread over
 * the first stages; embedding on stage 0, head on the last) and expert ranges (n_experts split
 * contiguously over ep ranks). SHOAL_ERR_INVALID when pp > n_layers or ep does not divide
 * n_experts. Frees what `p` held before. */
shoal_err_t plan_layout(plan_t *p, uint32_t dp, uint32_t pp, uint32_t ep, uint32_t n_layers,
                        uint32_t n_experts);

/* The data-parallel plan of this issue: dp = n workers, pp = ep = 1, worker i gets replica i
 * (workers in the given order). `p` gets run id and generation; the caller sets start_step and
 * the state source. SHOAL_ERR_INVALID when n == 0. */
shoal_err_t plan_build_dp(plan_t *p, const char *run_id, uint64_t generation,
                          const plan_worker_t *workers, uint32_t n, uint32_t n_layers,
                          uint32_t n_experts);

/* The peer entry of a worker, or NULL. */
const plan_peer_t *plan_find_worker(const plan_t *p, const char *worker_id);

/* New JSON object (caller decref) / parse one (SHOAL_ERR_FORMAT naming the field). */
json_t *plan_to_json(const plan_t *p);
shoal_err_t plan_from_json(const json_t *j, plan_t *p);

const char *plan_source_name(plan_source_t s);

/* Frees the arrays and zeroes `p`; idempotent. */
void plan_fini(plan_t *p);

#endif
