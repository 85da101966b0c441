/* expert_ep.h: expert parallelism on the CPU: the model's expert exchange (model.h) over an ep
 * group's comm. Each ep rank of a (replica, stage) routes its own tokens; the rows for experts
 * held elsewhere travel by all-to-all(v) to the rank that holds them, run there, and come back
 * the same way, in the forward and again (as gradients) in the backward.
 *
 * Order. The holder runs each of its experts over the rows of every source rank at once, source
 * by source in rank order (within a source in that source's row order), so the result depends
 * only on the plan, not on message timing. */
#ifndef SHOAL_WORKER_EXPERT_EP_H
#define SHOAL_WORKER_EXPERT_EP_H

#include <stdint.h>

#include "comm.h"
#include "err.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct expert_ep expert_ep_t;

/* For a part holding experts [ep_rank·N/ep, +N/ep) of every MoE layer, with `slots`
 * micro-batches of up to max_M tokens in flight. */
shoal_err_t expert_ep_new(const model_layout_t *lay, int ep, int ep_rank, int slots, int max_M,
                          expert_ep_t **out);
void expert_ep_destroy(expert_ep_t **x);

/* The comm of the ep group (ep ranks, group rank = ep rank) and the step that tags the next
 * exchanges. */
void expert_ep_bind(expert_ep_t *x, comm_t *ep_comm, uint64_t step);

/* Exact sums (train.grad_sum exact): called in the backward after the expert weight gradients of
 * one source rank's micro-batch for one MoE layer are complete in the buffer `g` points into,
 * with the range [lo, hi) they occupy (the layer's experts held here); it must take them and
 * leave the range zeroed. With it set, the holder runs each (source, expert) block of rows on
 * its own, in source order, so each micro-batch's expert gradients are computed exactly as
 * without expert parallelism; without it, each expert runs once over every source's rows. */
typedef shoal_err_t (*expert_ep_flush_fn)(void *ctx, float *lo, float *hi);
void expert_ep_set_flush(expert_ep_t *x, expert_ep_flush_fn fn, void *ctx);

/* The exchange to give model_set_expert_exchange (valid while x lives). */
model_expert_exchange_t expert_ep_exchange(expert_ep_t *x);

/* Seconds spent inside comm calls since the last call (then reset). */
double expert_ep_comm_seconds(expert_ep_t *x);

#ifdef __cplusplus
}
#endif
#endif
