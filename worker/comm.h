/* comm.h: the data-plane collectives of a worker (all-reduce, broadcast, barrier, abort), one
 * interface for every backend. comm_zmq.c implements it over ZeroMQ for CPU workers.
 *
 * Model. A worker binds one data endpoint (a listener) for its whole life and publishes its
 * connectable address through the coordinator. For each plan generation it creates a comm_t from
 * the listener and the endpoint list of the generation's ranks; at the next generation it destroys
 * that comm and creates another on the same listener. Every rank of a comm calls the same
 * collectives in the same order with the same sizes (as with NCCL or MPI).
 *
 * Guarantees (ZeroMQ backend).
 * - Every message carries (generation, step, op sequence number). A message of an older generation
 *   or an earlier op is dropped (logged at debug); one of the next op (a peer may legally be one op
 *   ahead) or of a newer generation's first op is held back until that op runs; nothing else is
 *   ever mixed into a result. Every frame is validated (size, header, piece bounds) before use.
 * - Timeouts: an operation fails with SHOAL_ERR_TIMEOUT once timeout_ms pass without any expected
 *   message arriving. The detail message (shoal_errmsg) names the ranks that sent nothing in this
 *   operation ("no message from rank 2") and all ranks still owing data. A comm whose operation
 *   failed is broken: later operations return SHOAL_ERR_STATE; create a new comm (new generation).
 * - Reproducibility: all-reduce computes, for every element i,
 *       out[i] = ((x_0[i] + x_1[i]) + x_2[i]) + ... + x_{n-1}[i]
 *   in float32, left to right in rank order, whatever the chunking or message arrival order; the
 *   owner of each chunk computes it and sends the same bytes to every rank, so the result is
 *   bitwise reproducible and bitwise identical on every rank.
 * Not thread-safe: one thread uses a comm (and its listener); only comm_abort may be called from
 * another thread or a signal handler. */
#ifndef SHOAL_COMM_H
#define SHOAL_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default and bounds of comm_config_t.chunk_bytes (the pipeline unit of large transfers). */
#define COMM_CHUNK_DEFAULT (1u << 20)
#define COMM_CHUNK_MAX (16u << 20)
/* Most ranks a comm may have. */
#define COMM_MAX_RANKS 4096

typedef struct comm_listener comm_listener_t; /* a worker's data endpoint, bound once */

/* Binds a data endpoint, e.g. "tcp://127.0.0.1:0" or "tcp://0.0.0.0:0" (port 0: any free port;
 * the host may also be the "*" wildcard), or an ipc endpoint. A wildcard host is advertised as
 * 127.0.0.1. On success *out owns the listener (free with comm_listener_destroy). Errors:
 * SHOAL_ERR_INVALID (NULL or unbindable endpoint), SHOAL_ERR_IO, SHOAL_ERR_NOMEM. */
shoal_err_t comm_listener_new(const char *bind_endpoint, comm_listener_t **out);

/* As comm_listener_new, but a wildcard host ("*", 0.0.0.0, [::]) is advertised as
 * `advertise_host` (a host name or address that peers can reach; NULL means 127.0.0.1). */
shoal_err_t comm_listener_new_advertise(const char *bind_endpoint, const char *advertise_host,
                                        comm_listener_t **out);

/* The connectable endpoint with the real port, e.g. "tcp://127.0.0.1:43127". Owned by the
 * listener, valid until it is destroyed. */
const char *comm_listener_endpoint(const comm_listener_t *l);

/* Closes the listener (destroy its comm first). Messages still queued to peers by comms that were
 * destroyed healthy get at most their flush time (see comm_destroy) to leave. Idempotent; nulls
 * *l. */
void comm_listener_destroy(comm_listener_t **l);

typedef struct {
    int rank;                     /* this worker's rank, 0 <= rank < nranks */
    int nranks;                   /* 1 .. COMM_MAX_RANKS */
    const char *const *endpoints; /* data endpoint of each rank (nranks entries; copied) */
    uint64_t generation;          /* plan generation; every rank of the comm uses the same */
    int timeout_ms;               /* > 0: longest wait without progress in one operation */
    size_t chunk_bytes;           /* pipeline unit: multiple of 4, 4 .. COMM_CHUNK_MAX, the same
                                   * on every rank; 0 means COMM_CHUNK_DEFAULT */
} comm_config_t;

typedef struct comm comm_t; /* one communicator per plan generation */

/* Creates the communicator of one generation on listener `l` (which must outlive it and carry no
 * other live comm). Connects to the peers' endpoints without waiting for them. On success *out
 * owns the comm. Errors: SHOAL_ERR_INVALID (bad config or endpoint; the message names the rank),
 * SHOAL_ERR_STATE (the listener already has a live comm), SHOAL_ERR_IO, SHOAL_ERR_NOMEM. */
shoal_err_t comm_new(comm_listener_t *l, const comm_config_t *cfg, comm_t **out);

/* Destroys the comm. A healthy comm lets the messages of its last operation leave in the
 * background for at most min(timeout_ms, 1 s) (they are needed by peers still finishing that
 * operation); an aborted or failed comm drops them at once (ZMQ_LINGER 0). Never blocks.
 * Idempotent; nulls *c. */
void comm_destroy(comm_t **c);

/* In-place sum of buf[0..n) over all ranks, in the order documented above. n == 0 or nranks == 1
 * returns at once without communicating. Errors: SHOAL_ERR_INVALID (NULL buf), SHOAL_ERR_TIMEOUT,
 * SHOAL_ERR_ABORTED, SHOAL_ERR_STATE (comm broken by an earlier failure), SHOAL_ERR_IO. */
shoal_err_t comm_allreduce_sum_f32(comm_t *c, float *buf, size_t n, uint64_t step);

/* Copies root's buf[0..bytes) into every rank's buf (every rank passes the same bytes and root).
 * No rank completes before every rank has received everything (acknowledgements to the root, then
 * its DONE), so a missing receiver is a timeout everywhere. bytes == 0 or nranks == 1 returns at
 * once. Errors as all-reduce, and SHOAL_ERR_INVALID for a root out of range. */
shoal_err_t comm_broadcast(comm_t *c, void *buf, size_t bytes, int root, uint64_t step);

/* Returns once every rank has entered the barrier. Errors as all-reduce. */
shoal_err_t comm_barrier(comm_t *c, uint64_t step);

/* Makes the operation in progress (if any) and every later one fail with SHOAL_ERR_ABORTED. Safe
 * from another thread and from a signal handler (an atomic store and one write(2)), as long as it
 * cannot race with comm_destroy of the same comm. */
void comm_abort(comm_t *c);

int comm_rank(const comm_t *c);
int comm_nranks(const comm_t *c);
uint64_t comm_generation(const comm_t *c);

#ifdef __cplusplus
}
#endif
#endif
