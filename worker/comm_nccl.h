/* comm_nccl.h: the data-plane collectives of GPU workers over NCCL, with the guarantees of
 * worker/comm.h where NCCL allows them: one communicator per (plan generation, process group),
 * a unique id made by the group's rank 0 and relayed through the coordinator (CommId, see
 * worker/comm_ids.h), non-blocking creation, and a watchdog on every operation so that a dead or
 * silent peer is an error, never a hang. Built only when CUDA and NCCL are found
 * (SHOAL_HAVE_NCCL); ops/COMM.md describes it.
 *
 * Model. Buffers are device memory of the comm's GPU. Every operation is enqueued on the comm's
 * own CUDA stream and waited for before it returns: on return the result is in the buffer and
 * the stream is idle. The caller's inputs must be complete on the device (synchronise the
 * stream that wrote them first). Every rank of a comm calls the same operations in the same
 * order with the same sizes.
 *
 * Watchdog. While waiting, the calling thread polls cudaStreamQuery and ncclCommGetAsyncError.
 * An operation (or the creation) that has not completed after timeout_ms is aborted
 * (ncclCommAbort): SHOAL_ERR_TIMEOUT, "nccl <op> on group <g> gen <n>: no progress for <ms> ms".
 * An asynchronous NCCL error (a peer's connection lost, ...) aborts too: SHOAL_ERR_CUDA naming
 * NCCL's message. comm_nccl_abort (from another thread) makes the current and every later
 * operation fail with SHOAL_ERR_ABORTED. After any failure the comm is broken: later operations
 * return SHOAL_ERR_STATE; create the next generation's comm instead.
 *
 * Reproducibility. NCCL chooses its own reduction order (rings, trees, chunking), so f32 sums
 * over more than 2 ranks are not bitwise reproducible across topologies (2 ranks are: a + b is
 * commutative). The exact, order-independent gradient sum runs on comm_nccl_allreduce_sum_i64:
 * integer sums are exact in any order, so the fixed-point gradients keep their bitwise
 * guarantee on GPUs.
 *
 * Threads: one thread uses a comm; only comm_nccl_abort may be called from another thread (not
 * from a signal handler: it takes no lock but it is not async-signal-safe by contract of
 * CUDA). */
#ifndef SHOAL_COMM_NCCL_H
#define SHOAL_COMM_NCCL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Size of an NCCL unique id (NCCL_UNIQUE_ID_BYTES). */
#define COMM_NCCL_ID_BYTES 128

typedef struct comm_nccl comm_nccl_t;

typedef struct {
    int rank;           /* this worker's rank in the group, 0 <= rank < nranks */
    int nranks;         /* group size >= 1 */
    const uint8_t *id;  /* COMM_NCCL_ID_BYTES from rank 0's comm_nccl_id_new (copied) */
    int device;         /* CUDA ordinal of this rank's GPU (one rank per GPU in a comm) */
    uint64_t generation; /* plan generation (named in messages) */
    uint32_t group;     /* group tag (named in messages) */
    int timeout_ms;     /* > 0: the longest an operation or the creation may take */
} comm_nccl_config_t;

/* A new unique id (ncclGetUniqueId), made by rank 0 of a group and sent to its peers.
 * Errors: SHOAL_ERR_CUDA naming NCCL's message. */
shoal_err_t comm_nccl_id_new(uint8_t id[COMM_NCCL_ID_BYTES]);

/* Creates the communicator of one group of one generation: ncclCommInitRankConfig with
 * blocking = 0, then polls until every rank has joined, at most timeout_ms (then
 * ncclCommAbort and SHOAL_ERR_TIMEOUT "nccl init on group <g> gen <n>: no progress ..."). On
 * success *out owns the comm (free with comm_nccl_destroy). Errors: SHOAL_ERR_INVALID (bad
 * config), SHOAL_ERR_CUDA (the device or NCCL failed, its message named), SHOAL_ERR_TIMEOUT,
 * SHOAL_ERR_ABORTED, SHOAL_ERR_NOMEM. */
shoal_err_t comm_nccl_new(const comm_nccl_config_t *cfg, comm_nccl_t **out);

/* Healthy: ncclCommFinalize (flushes, bounded by timeout_ms) then ncclCommDestroy; broken or
 * aborted: ncclCommAbort. Idempotent; nulls *c. */
void comm_nccl_destroy(comm_nccl_t **c);

/* In-place sum of dbuf[0..n) over all ranks (ncclFloat32). n == 0 returns at once. Errors:
 * SHOAL_ERR_INVALID (NULL buffer), SHOAL_ERR_TIMEOUT, SHOAL_ERR_CUDA, SHOAL_ERR_ABORTED,
 * SHOAL_ERR_STATE (broken comm). */
shoal_err_t comm_nccl_allreduce_sum_f32(comm_nccl_t *c, float *dbuf, size_t n);

/* In-place exact sum of dbuf[0..n) over all ranks (ncclInt64, ncclSum): the same bits on every
 * rank and in any order (wrapping as int64 arithmetic does). Errors as above. */
shoal_err_t comm_nccl_allreduce_sum_i64(comm_nccl_t *c, int64_t *dbuf, size_t n);

/* Sum of dbuf[0..n) over all ranks into dbuf[rank*n/R, (rank+1)*n/R) (comm_chunk_range of
 * comm.h when R divides n; NCCL needs equal pieces, so n must be a multiple of nranks, else
 * SHOAL_ERR_INVALID). The rest of dbuf is unspecified. Errors as above. */
shoal_err_t comm_nccl_reduce_scatter_sum_f32(comm_nccl_t *c, float *dbuf, size_t n);

/* Copies rank r's dbuf[r*n/R, (r+1)*n/R) into that range of every rank's dbuf, for every r
 * (n a multiple of nranks). Errors as above. */
shoal_err_t comm_nccl_allgather_f32(comm_nccl_t *c, float *dbuf, size_t n);

/* Copies root's dbuf[0..bytes) into every rank's. Errors as above, and SHOAL_ERR_INVALID for a
 * root out of range. */
shoal_err_t comm_nccl_broadcast(comm_nccl_t *c, void *dbuf, size_t bytes, int root);

/* Point to point: sends dbuf[0..send_bytes) to rank dst and receives recv_bytes from rank src
 * into rbuf, as one NCCL group (either side may be skipped with dst or src = -1). Unlike
 * comm_send of comm.h it returns once both have completed, so a send waits for its receiver:
 * pair them (as a pipeline's 1F1B does). Sizes must match the peer's. Errors as above, and
 * SHOAL_ERR_INVALID for a peer out of range or this rank. */
shoal_err_t comm_nccl_sendrecv(comm_nccl_t *c, int dst, const void *sbuf, size_t send_bytes,
                               int src, void *rbuf, size_t recv_bytes);

/* All-to-all of byte blocks as in comm_alltoallv (nranks entries in each array, offsets into
 * device buffers): one NCCL group of send/recv pairs, the self block a device copy (its two
 * sizes must be equal). recv_bytes must match what each sender sends (NCCL cannot check: a
 * mismatch is undefined; exchange counts first with a fixed-size call). Errors as above. */
shoal_err_t comm_nccl_alltoallv(comm_nccl_t *c, const void *sendbuf, const size_t *send_bytes,
                                const size_t *send_offs, void *recvbuf, const size_t *recv_bytes,
                                const size_t *recv_offs);

/* Returns once every rank has entered the barrier (a one-element all-reduce). Errors as
 * above. */
shoal_err_t comm_nccl_barrier(comm_nccl_t *c);

/* Makes the operation in progress (if any) and every later one fail with SHOAL_ERR_ABORTED;
 * the waiting thread calls ncclCommAbort. Safe from another thread as long as it cannot race
 * with comm_nccl_destroy of the same comm. */
void comm_nccl_abort(comm_nccl_t *c);

int comm_nccl_rank(const comm_nccl_t *c);
int comm_nccl_nranks(const comm_nccl_t *c);
uint64_t comm_nccl_generation(const comm_nccl_t *c);
uint32_t comm_nccl_group(const comm_nccl_t *c);

/* "NCCL 2.28.9, CUDA runtime 13.0" (the libraries loaded, not the headers). */
void comm_nccl_versions(char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
