/* v3_shape.h: the DeepSeek-V3 shape the planner is checked at (issue 13): the model (61 layers,
 * the first 3 dense, 256 routed + 1 shared experts, top-8, 8 groups keep 4), the layout (pp 16,
 * ep 64, dp over the rest) and a cluster of hosts of 8 GPUs of 80 GB in 4 institutions, plus
 * skewed per-expert loads from a seed. Shared by test_plan_v3 and bench_plan_v3. */
#ifndef SHOAL_V3_SHAPE_H
#define SHOAL_V3_SHAPE_H

#include <stdint.h>

#include "plan.h"

#define V3_GPUS_PER_HOST 8
#define V3_INSTITUTIONS 4
#define V3_GPU_BYTES (80ull << 30)

/* The model: DeepSeek-V3's sizes in shoal's v1 terms (MHA attention stands in for MLA, so the
 * attention parameters differ from V3's; the experts, groups and layers are V3's). */
void v3_model(model_config_t *m);

/* pp 16, ep 64, dp 0 (auto), 4096-token sequences, micro-batches of 1, G 15360 (V3's batch). */
plan_request_t v3_request(const model_config_t *m);

/* A cluster of n_hosts hosts h000.. of 8 GPU workers each ("cuda:0 NVIDIA H100") declaring
 * `memory` bytes (V3_GPU_BYTES, or 0: unknown, every cell fits), hosts dealt round-robin over the
 * 4 institutions; worker i is "w<i+1>". The strings live in the returned object; free with
 * v3_cluster_free. skip_host (or -1) is left out (a dead host).
 * shoal's own trainer does not fit V3 in 80 GB: plan_cell_bytes counts fp32 Adam states, every
 * activation of the micro-batches in flight (no recomputation, full attention probabilities)
 * and worst-case all-to-all buffers (ep * tokens * K rows), terabytes a cell at T 4096
 * (ops/CAPACITY.md). The placement checks therefore declare 0. */
typedef struct v3_cluster v3_cluster_t;
v3_cluster_t *v3_cluster_new(uint32_t n_hosts, int skip_host, uint64_t memory);
const plan_worker_t *v3_cluster_workers(const v3_cluster_t *c, uint32_t *n);
void v3_cluster_free(v3_cluster_t **cp);

/* Per-expert loads with a heavy tail (a few hot experts take several times the mean), from a
 * seed: n values. */
void v3_expert_loads(double *load, uint32_t n, uint32_t seed);

#endif
