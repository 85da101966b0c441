/* gradsum.h: exact gradient sums for a trainer (train.grad_sum: exact): each micro-batch's
 * gradients are computed alone and added to binned int64 counters (kernels/xsum.h), the
 * counters are summed over the workers of a group as integers, and the global norm adds
 * per-tensor sums of squares in the model's canonical tensor order. Every result is a function of
 * the step's micro-batches alone: the same bits on 1 or many data-parallel workers, with or
 * without pipeline stages or expert shards, whatever the faults in between. */
#ifndef SHOAL_WORKER_GRADSUM_H
#define SHOAL_WORKER_GRADSUM_H

#include <stdint.h>
#include <string.h>

#include "comm.h"
#include "err.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gradsum gradsum_t;

/* A double's bits as an int64 and back: exact all-reduces of doubles where one rank holds each
 * value and the others add zero bits. */
static inline int64_t gradsum_bits(double v)
{
    int64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static inline double gradsum_double(int64_t b)
{
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

/* For the tensors of `lay` (which must outlive it) and steps of n_micro micro-batches.
 * SHOAL_ERR_INVALID when n_micro exceeds the counters' capacity (XSUM_MAX_DEPOSITS). */
shoal_err_t gradsum_new(const model_layout_t *lay, int n_micro, gradsum_t **out);
void gradsum_destroy(gradsum_t **g);

/* Starts a step: every counter zero. */
void gradsum_begin(gradsum_t *g);

/* The zeroed buffer (the layout's n_params floats) the next micro-batch's backward accumulates
 * into; gradsum_micro_add then adds it to the counters exactly. */
float *gradsum_micro_buffer(gradsum_t *g);
shoal_err_t gradsum_micro_add(gradsum_t *g);
/* The micro-batch buffer as it is now (not zeroed): what the next gradsum_micro_add adds. */
float *gradsum_micro_buffer_current(gradsum_t *g);

/* Adds the tensors of the micro-batch buffer lying in [lo, hi) (pointers into it, whole tensors)
 * exactly and zeroes them there: expert parallelism runs the experts of several micro-batches in
 * one backward call and hands each micro-batch's expert gradients over as soon as they are
 * complete, so that each is its own deposit, as without expert parallelism. */
shoal_err_t gradsum_micro_add_range(gradsum_t *g, float *lo, float *hi);

/* Sums the step's gradients: the non-expert tensors ([0, n_shared_params) of the flat array)
 * over the ranks of `shared`, the experts over `experts` (either NULL: this rank alone; a part
 * holding every expert has no separate expert range): windows by a maximum, counters by an
 * int64 sum, then each element as one float into out (indexed like the flat parameter array).
 * Comm errors come back as they are. */
shoal_err_t gradsum_reduce(gradsum_t *g, comm_t *shared, comm_t *experts, uint64_t step,
                           float *out);

/* Squared L2 norm of `grads` over the whole model held here (every tensor of lay), each tensor's
 * sum of squares (grad_sum_squares) added in canonical order: the same bits as
 * gradsum_norm_world() over any split of the model. */
double gradsum_norm_local(const gradsum_t *g, const float *grads);

/* The squared global norm of a split model and the step's loss sum: this cell contributes the
 * sum of squares of the tensors it counts (count_shared: its non-expert tensors; count_experts:
 * its experts) and, when has_loss, *loss; every cell gets the total norm (tensors added in
 * canonical order) and the loss. */
shoal_err_t gradsum_norm_world(gradsum_t *g, comm_t *world, const float *grads, int count_shared,
                               int count_experts, int has_loss, double *loss, uint64_t step,
                               double *norm_sq);

#ifdef __cplusplus
}
#endif
#endif
