/* plan.h: a run's plan as plain C (topology, layer ranges per stage, expert ranges per ep rank,
 * peers, spares), the planner that builds one from the live workers (plan_place.c: placement;
 * plan_cost.c: FLOPs, stage balance, memory per cell), and its JSON form (plan.c: RocksDB, the
 * control API). Protobuf types never reach this module: coord.c converts at the edge. */
#ifndef SHOAL_PLAN_H
#define SHOAL_PLAN_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "model_config.h"

#define PLAN_ID_MAX 68
#define PLAN_ENDPOINT_MAX 256
#define PLAN_PATH_MAX 1024
#define PLAN_HOST_MAX 256
#define PLAN_INSTITUTION_MAX 128
#define PLAN_NOTE_MAX 512

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

/* Where a worker is and what it declared at registration. */
typedef struct {
    char host[PLAN_HOST_MAX];
    char institution[PLAN_INSTITUTION_MAX];
    uint64_t memory_bytes; /* declared (0 = unknown: every cell fits) */
    int gpu;               /* a CUDA device (declared "cuda:N ..."): memory_bytes is its memory */
} plan_site_t;

typedef struct {
    char worker_id[PLAN_ID_MAX];
    uint32_t rank;
    plan_cell_t cell;
    char endpoint[PLAN_ENDPOINT_MAX];
    plan_site_t site;
    uint64_t mem_est; /* the planner's estimate of the cell's bytes (0 = not estimated) */
} plan_peer_t;

/* A live worker beyond the plan's whole replicas: no cell; state `standby` until a later plan
 * needs it. */
typedef struct {
    char worker_id[PLAN_ID_MAX];
    plan_site_t site;
} plan_spare_t;

/* One shard directory of the committed checkpoint a plan restores from, and the cell (of the
 * plan that wrote it) whose tensors it holds. */
typedef struct {
    plan_cell_t cell;
    char path[PLAN_PATH_MAX];
} plan_ckpt_shard_t;

/* A part of the model whose state only a worker leaving the plan (draining) holds: at the
 * plan's boundary that worker hands it to the cell `to_rank` (a 2-rank comm of the plan's
 * generation), instead of the run rolling back to its checkpoint. */
typedef struct {
    uint32_t to_rank;
    char from_worker[PLAN_ID_MAX];
    char from_endpoint[PLAN_ENDPOINT_MAX];
} plan_handover_t;

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
    plan_ckpt_shard_t *ckpt_shards; /* source CHECKPOINT: every shard of its manifest */
    uint32_t n_ckpt_shards;
    uint32_t source_rank;
    plan_spare_t *spares; /* live workers left out, in placement order */
    uint32_t n_spares;
    char note[PLAN_NOTE_MAX]; /* why the shape differs from the spec's ("" = as asked) */
    plan_handover_t *handovers; /* source PEER: parts handed over by leaving workers */
    uint32_t n_handovers;
} plan_t;

/* A candidate worker for placement (strings borrowed; NULL reads as ""). */
typedef struct {
    const char *worker_id;
    const char *endpoint;
    const char *host, *institution, *device;
    uint64_t memory_bytes; /* declared at registration (0 = unknown) */
} plan_worker_t;

/* train.precision as the planner sees it: AUTO computes in bf16 on GPUs and fp32 on CPUs; BF16
 * runs on GPUs or on CPU workers that declare "cpu bf16" (oneDNN, AVX512_BF16/AMX), never both
 * in one plan (different math). */
typedef enum {
    PLAN_PRECISION_AUTO = 0,
    PLAN_PRECISION_FP32,
    PLAN_PRECISION_BF16
} plan_precision_t;

/* Napkin speed of a GPU cell against a CPU cell (one CPU worker process of a few cores at
 * ~0.1-0.5 TFLOP/s against a data-centre GPU at tens of fp32 TFLOP/s): only ranks choices where
 * the slowest replica sets a step's time. */
#define PLAN_GPU_SPEED 64

/* What the planner places: the spec's parallel.* keys and what sizes a cell. */
typedef struct {
    uint32_t pp, ep, dp; /* dp 0 = auto: as many whole replicas as the workers allow */
    const model_config_t *model;
    uint32_t seq_len, micro_batch, global_batch;
    plan_precision_t precision; /* train.precision (0: auto) */
} plan_request_t;

/* Whether a declared device ("cuda:0 NVIDIA H200", "cpu", "" ...) is a GPU: it starts with
 * "cuda". */
int plan_device_is_gpu(const char *device);

/* Whether a declared CPU device can compute in bf16: "cpu" followed by the word "bf16"
 * ("cpu bf16"), which a worker declares when it was built with oneDNN on a CPU with
 * AVX512_BF16 or AMX-BF16. */
int plan_device_cpu_bf16(const char *device);

/* The run spec's train.precision ("fp32", "bf16"; anything else, "auto" included: AUTO). */
plan_precision_t plan_precision_from_name(const char *name);

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

/* The planner. Places dp replicas of pp stages of ep ranks on `workers` (any order: the result
 * depends only on the set): stages are contiguous layer ranges balanced by FLOPs per token, each
 * ep rank holds N/ep routed experts; workers are taken in (institution, host, id) order so that
 * an ep group shares a host and a replica an institution where the workers allow; a dp of 0
 * takes the most whole replicas whose dp * ep divides the step's micro-batches; the rest are
 * spares. When a cell's estimated bytes exceed its worker's declared memory, pp is raised to the
 * smallest that fits (p->note says so). `p` gets run id and generation; the caller sets
 * start_step and the state source.
 * GPU and CPU workers: a pipeline or an ep group is all GPU or all CPU (NCCL on GPUs, ZeroMQ on
 * CPUs), GPU replicas first; a dp of 0 takes the replicas that give the most throughput (dp x
 * the slowest replica's speed, PLAN_GPU_SPEED). Replicas of both kinds share a data-parallel
 * group only under precision FP32 (AUTO computes bf16 on GPUs, fp32 on CPUs: different math);
 * under AUTO with both kinds the GPU workers are placed if they can form the plan, else the CPU
 * workers, the others are spares and p->note says why; BF16 places GPU workers if they can
 * form the plan, else the CPU workers that declare bf16 (plan_device_cpu_bf16); other CPU
 * workers are spares.
 * Errors: SHOAL_ERR_INVALID when the spec can never be placed (pp > layers, ep not dividing the
 * experts); SHOAL_ERR_STATE when these workers cannot hold it (too few for one replica, a fixed
 * dp, or no pp that fits, or kinds that cannot be mixed), the message naming what is missing
 * (worker, cell, bytes) or why the kinds do not mix. */
shoal_err_t plan_build(plan_t *p, const char *run_id, uint64_t generation,
                       const plan_request_t *req, const plan_worker_t *workers, uint32_t n);

/* A member of the previous plan that keeps its training state into the next plan, and the
 * step that state is at. */
typedef struct {
    const char *worker_id;
    int64_t step;
} plan_survivor_t;

/* State stays where it is: each survivor (s[0..n)) goes back to the cell it held in `old` when
 * `p` has that cell with the same part of the model (the same layers and experts), by swapping
 * workers between cells of `p`, or with a spare of `p` when the planner made the survivor a
 * spare (the worker placed on its cell becomes the spare): the cells, the shape and the groups
 * stay as placed, so a join that only adds a worker keeps the same cells. A swap that would
 * break a worker's declared memory, or put a GPU worker in a CPU cell's place or the reverse,
 * is skipped. */
void plan_keep_holders(plan_t *p, const plan_t *old, const plan_survivor_t *s, uint32_t n);

/* A worker leaving the plan (draining) that still holds its cell's state, at `step`. */
typedef struct {
    const char *worker_id;
    const char *endpoint;
    int64_t step;
} plan_donor_t;

/* Hand-over: for each part of `p` that no survivor (s[0..n)) holds at `step` but a donor
 * (d[0..nd)) held in `old` at `step`, the first cell of `p` with that part pulls it from that
 * donor (p->handovers). Frees what p->handovers held before. SHOAL_ERR_NOMEM. */
shoal_err_t plan_add_handovers(plan_t *p, const plan_t *old, const plan_survivor_t *s, uint32_t n,
                               const plan_donor_t *d, uint32_t nd, int64_t step);

/* Whether every part of `p` (each (stage, ep_rank)) sits on at least one survivor that held the
 * same part in `old` at `step`, or on a cell a donor hands it to (p->handovers); if so
 * *source_rank is the rank of the first such survivor (or taker). When not, the state of some
 * part exists only in the checkpoint. */
int plan_parts_held(const plan_t *p, const plan_t *old, const plan_survivor_t *s, uint32_t n,
                    int64_t step, uint32_t *source_rank);

/* Forward FLOPs per token: layer `l` at sequence length T (attention, then the dense FFN or the
 * router, shared experts and K active routed experts), the embedding (stage 0), and the final
 * norm, head and loss (last stage). Backward costs about twice as much everywhere, so these
 * rank stages as the whole step does. */
double plan_layer_flops(const model_config_t *m, uint32_t l, uint32_t seq_len);
double plan_embed_flops(const model_config_t *m);
double plan_head_flops(const model_config_t *m);

/* Splits the layers into p->pp contiguous stages, each >= 1 layer, minimising the costliest
 * stage (ties: the earliest split points); fills p->stages. SHOAL_ERR_INVALID when pp > layers,
 * SHOAL_ERR_NOMEM. */
shoal_err_t plan_balance_stages(plan_t *p, const model_config_t *m, uint32_t seq_len);

/* Estimated bytes of one cell of `stage` of plan `p` (stages and topology set): fp32 parameters,
 * gradients and Adam m, v of what it holds, activations of the micro-batches 1F1B keeps in flight
 * (pp - stage, at most the cell's share of a step), logits on the last stage, and the
 * all-to-all receive buffers of its MoE layers when ep > 1. */
uint64_t plan_cell_bytes(const plan_t *p, const plan_request_t *req, uint32_t stage);

/* The peer entry of a worker, or NULL. */
const plan_peer_t *plan_find_worker(const plan_t *p, const char *worker_id);
/* Whether a worker is one of the plan's spares. */
int plan_is_spare(const plan_t *p, const char *worker_id);
/* Whether two plans give every rank the same worker and cell (spares and sources aside). */
int plan_same_cells(const plan_t *a, const plan_t *b);

/* New JSON object (caller decref) / parse one (SHOAL_ERR_FORMAT naming the field). */
json_t *plan_to_json(const plan_t *p);
shoal_err_t plan_from_json(const json_t *j, plan_t *p);

const char *plan_source_name(plan_source_t s);

/* Frees the arrays and zeroes `p`; idempotent. */
void plan_fini(plan_t *p);

/* Hot-expert placement of one MoE layer within one ep group (plan_eplb.c, DeepSeek's EPLB in its
 * hierarchical form). Rank r of the group is on host r / (ep / n_nodes). */
typedef struct {
    uint32_t ep, slots;     /* ranks, physical expert slots per rank (N/ep + redundant) */
    uint32_t n_experts;
    uint32_t n_nodes;       /* hosts the placement spreads over (1 when not node-limited) */
    int node_limited;       /* whole expert groups per host */
    uint32_t *slot_expert;  /* ep * slots, rank-major: the routed expert of each slot */
    uint32_t *replicas;     /* n_experts: copies of each expert (>= 1) */
    uint32_t *expert_node;  /* n_experts: the host holding every copy of the expert */
    double max_rank_load, mean_rank_load; /* tokens per rank (load split evenly over copies) */
} plan_eplb_t;

/* Places n_experts routed experts (load[x]: tokens routed to expert x over the window observed;
 * NULL = uniform) in `n_groups` routing groups on `ep` ranks of `n_nodes` hosts with `redundant`
 * extra slots per rank: whole groups per host (heaviest group onto the lightest host), each
 * host's extra slots copy its experts with the most load per copy, copies packed heaviest first
 * onto the host's lightest rank. When the groups do not divide over the hosts the placement is
 * one pool (node_limited 0). Frees what `out` held. SHOAL_ERR_INVALID when ep does not divide
 * the experts or the hosts do not divide ep; SHOAL_ERR_NOMEM. */
shoal_err_t plan_eplb_place(plan_eplb_t *out, const double *load, uint32_t n_experts,
                            uint32_t n_groups, uint32_t n_nodes, uint32_t ep, uint32_t redundant);
/* The most hosts one token's routed experts can reach when its router keeps `topk_group` of the
 * `n_groups` groups: at most topk_group for a node-limited placement. */
uint32_t plan_eplb_token_hosts(const plan_eplb_t *e, uint32_t n_groups, uint32_t topk_group);
void plan_eplb_fini(plan_eplb_t *e);

/* Hosts the ep group (replica, stage) of `p` spans when its ranks come in equal runs, one host a
 * run, in ep_rank order (what node-limited placement needs); 1 otherwise, 0 for no such group. */
uint32_t plan_ep_hosts(const plan_t *p, uint32_t replica, uint32_t stage);

/* Cells of plan `b` whose worker did not hold the same cell (replica, stage, ep_rank) in plan `a`
 * (every cell when pp or ep differ): the cells a re-plan moves. */
uint32_t plan_cells_moved(const plan_t *a, const plan_t *b);

#endif
