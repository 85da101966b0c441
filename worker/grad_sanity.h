/* grad_sanity.h: which data-parallel replicas' gradients enter a step's aggregate, and the
 * coordinate-wise trimmed mean (train.grad_sanity_k, train.aggregation, train.trim).
 *
 * Every rank of a data-parallel group calls these with the same inputs (the replicas' reports,
 * exchanged exactly over the group) and the same history, so that every rank reaches the same
 * decision and the same aggregate bits without another round of communication. Pure: no I/O,
 * no comm; the trainer does the exchange. */
#ifndef SHOAL_WORKER_GRAD_SANITY_H
#define SHOAL_WORKER_GRAD_SANITY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most replicas a decision covers (a bit each in the rejected mask). */
#define GRAD_SANITY_MAX_REPLICAS 64
/* Accepted norms the running distribution keeps (the newest). */
#define GRAD_SANITY_WINDOW 64
/* Accepted norms needed before the norm test applies to fewer than 3 replicas with data. */
#define GRAD_SANITY_MIN_HISTORY 8

/* What a replica tells its peers about its share of the step. */
typedef struct {
    int finite;     /* every element of its gradient is finite */
    double norm;    /* L2 norm of its gradient scaled to the whole batch (n_micro / micro) */
    int64_t micro;  /* micro-batches it computed (0: it holds no data this step) */
} grad_report_t;

typedef struct {
    double k; /* reject a norm > k x the running median; 0: checks off (accept everything) */
    double hist[GRAD_SANITY_WINDOW];
    int n_hist, next;
    uint64_t generation; /* of the group the history belongs to */
} grad_sanity_t;

/* Starts an empty history for the group of `generation` with threshold k (0: off). */
void grad_sanity_reset(grad_sanity_t *s, double k, uint64_t generation);

/* Decides one step over n replicas (1 <= n <= GRAD_SANITY_MAX_REPLICAS): bit i of *rejected
 * is set for a replica with data whose gradient is non-finite, or whose norm exceeds k x the
 * lower median of the history and this step's finite norms (the norm test only with 3 or more
 * finite replicas this step or GRAD_SANITY_MIN_HISTORY norms in the history). The accepted norms join the
 * history. why (cap bytes) names the first rejection ("" when none). SHOAL_ERR_NUMERIC when
 * every replica holding data is rejected (nothing left to aggregate; the history is kept),
 * SHOAL_ERR_INVALID for n out of range. */
shoal_err_t grad_sanity_decide(grad_sanity_t *s, const grad_report_t *rep, int n,
                               uint64_t *rejected, char *why, size_t cap);

/* Coordinate-wise trimmed mean of the accepted rows of rows (row i at rows + i x ld, n
 * elements each; row i accepted when
 * bit i of `rejected` is clear and use[i] != 0) into out[n]: per element, the accepted values
 * sorted, floor(trim x count) dropped from each end, the rest averaged in sorted order (the
 * same bits on every rank). NaN stays in a row only if the row was accepted. scratch holds
 * n_rows doubles. */
void grad_trimmed_mean(const float *rows, int n_rows, size_t ld, int64_t n, const int *use,
                       uint64_t rejected, double trim, double *scratch, float *out);

#ifdef __cplusplus
}
#endif
#endif
