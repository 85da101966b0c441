/* comm_nccl.c: the NCCL backend of the data plane (comm_nccl.h): non-blocking communicators,
 * one CUDA stream each, every operation waited for under a watchdog that aborts the
 * communicator on timeout, asynchronous error or request. */
#include "comm_nccl.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "clock.h"
#include "log.h"

_Static_assert(COMM_NCCL_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "NCCL unique id size");

struct comm_nccl {
    ncclComm_t comm; /* NULL once aborted or destroyed */
    cudaStream_t stream;
    int64_t *scratch; /* one element on the device: the barrier's all-reduce */
    int rank, nranks, device, timeout_ms;
    uint64_t generation;
    uint32_t group;
    int broken;           /* an operation failed: only destroy remains */
    atomic_int abort_req; /* comm_nccl_abort was called */
};

/* Sleeps a little between polls: a few spins first (most small ops finish within
 * microseconds), then 20 us, then 200 us, so a long wait costs no core. */
static void s_backoff(unsigned *polls)
{
    unsigned n = (*polls)++;
    if (n < 64)
        return;
    struct timespec ts = {0, n < 1024 ? 20000 : 200000};
    nanosleep(&ts, NULL);
}

/* Aborts the communicator (its resources freed, its peers' operations fail) and marks the comm
 * broken. */
static void s_abort_now(comm_nccl_t *c)
{
    if (c->comm) {
        ncclResult_t r = ncclCommAbort(c->comm);
        if (r != ncclSuccess)
            log_warn("nccl abort on group %u gen %" PRIu64 ": %s", c->group, c->generation,
                     ncclGetErrorString(r));
        c->comm = NULL;
    }
    c->broken = 1;
}

/* Records a failure of `op` (NCCL result r, its last error message) and aborts. */
static shoal_err_t s_fail_nccl(comm_nccl_t *c, const char *op, ncclResult_t r)
{
    const char *last = c->comm ? ncclGetLastError(c->comm) : "";
    shoal_err_t rc = shoal_fail(SHOAL_ERR_CUDA, "nccl %s on group %u gen %" PRIu64 ": %s%s%s", op,
                                c->group, c->generation, ncclGetErrorString(r),
                                last && last[0] ? ": " : "", last ? last : "");
    s_abort_now(c);
    return rc;
}

static shoal_err_t s_fail_cuda(comm_nccl_t *c, const char *op, cudaError_t e)
{
    shoal_err_t rc = shoal_fail(SHOAL_ERR_CUDA, "nccl %s on group %u gen %" PRIu64 ": CUDA: %s",
                                op, c->group, c->generation, cudaGetErrorString(e));
    s_abort_now(c);
    return rc;
}

/* The watchdog: waits until the communicator has left ncclInProgress (the call was taken) and,
 * when `stream`, the comm's stream has drained; aborts on a request, an asynchronous error or
 * timeout_ms after t0. */
static shoal_err_t s_wait(comm_nccl_t *c, const char *op, int64_t t0, int stream)
{
    unsigned polls = 0;
    for (;;) {
        if (atomic_load(&c->abort_req)) {
            s_abort_now(c);
            return shoal_fail(SHOAL_ERR_ABORTED, "nccl %s on group %u gen %" PRIu64 ": aborted",
                              op, c->group, c->generation);
        }
        ncclResult_t state = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(c->comm, &state);
        if (r != ncclSuccess)
            return s_fail_nccl(c, op, r);
        if (state != ncclSuccess && state != ncclInProgress)
            return s_fail_nccl(c, op, state);
        if (state == ncclSuccess) {
            if (!stream)
                return SHOAL_OK;
            cudaError_t q = cudaStreamQuery(c->stream);
            if (q == cudaSuccess)
                return SHOAL_OK;
            if (q != cudaErrorNotReady)
                return s_fail_cuda(c, op, q);
        }
        const int64_t waited = clock_mono_ms() - t0;
        if (waited > c->timeout_ms) {
            s_abort_now(c);
            return shoal_fail(SHOAL_ERR_TIMEOUT,
                              "nccl %s on group %u gen %" PRIu64 ": no progress for %lld ms "
                              "(a peer of the %d ranks is dead, stuck or not calling it)",
                              op, c->group, c->generation, (long long)waited, c->nranks);
        }
        s_backoff(&polls);
    }
}

/* Before an operation: the comm usable, this thread on its device. */
static shoal_err_t s_enter(comm_nccl_t *c, const char *op)
{
    if (!c)
        return shoal_fail(SHOAL_ERR_INVALID, "nccl %s: no comm", op);
    if (atomic_load(&c->abort_req)) {
        s_abort_now(c);
        return shoal_fail(SHOAL_ERR_ABORTED, "nccl %s on group %u gen %" PRIu64 ": aborted", op,
                          c->group, c->generation);
    }
    if (c->broken || !c->comm)
        return shoal_fail(SHOAL_ERR_STATE, "nccl %s on group %u gen %" PRIu64 ": the comm is "
                          "broken by an earlier failure", op, c->group, c->generation);
    cudaError_t e = cudaSetDevice(c->device);
    if (e != cudaSuccess)
        return s_fail_cuda(c, op, e);
    return SHOAL_OK;
}

/* After enqueueing (r: the NCCL call's result, ncclInProgress allowed): waits under the
 * watchdog until done. */
static shoal_err_t s_finish(comm_nccl_t *c, const char *op, ncclResult_t r, int64_t t0)
{
    if (r != ncclSuccess && r != ncclInProgress)
        return s_fail_nccl(c, op, r);
    return s_wait(c, op, t0, 1);
}

shoal_err_t comm_nccl_id_new(uint8_t id[COMM_NCCL_ID_BYTES])
{
    ncclUniqueId uid;
    ncclResult_t r = ncclGetUniqueId(&uid);
    if (r != ncclSuccess)
        return shoal_fail(SHOAL_ERR_CUDA, "ncclGetUniqueId: %s", ncclGetErrorString(r));
    memcpy(id, uid.internal, COMM_NCCL_ID_BYTES);
    return SHOAL_OK;
}

shoal_err_t comm_nccl_new(const comm_nccl_config_t *cfg, comm_nccl_t **out)
{
    if (!cfg || !out || !cfg->id || cfg->nranks < 1 || cfg->rank < 0 ||
        cfg->rank >= cfg->nranks || cfg->device < 0 || cfg->timeout_ms <= 0)
        return shoal_fail(SHOAL_ERR_INVALID, "nccl comm: bad config (rank %d of %d, device %d, "
                          "timeout %d ms, id %s)", cfg ? cfg->rank : -1, cfg ? cfg->nranks : -1,
                          cfg ? cfg->device : -1, cfg ? cfg->timeout_ms : -1,
                          cfg && cfg->id ? "given" : "missing");
    comm_nccl_t *c = calloc(1, sizeof *c);
    if (!c)
        return shoal_fail(SHOAL_ERR_NOMEM, "nccl comm: out of memory");
    c->rank = cfg->rank;
    c->nranks = cfg->nranks;
    c->device = cfg->device;
    c->timeout_ms = cfg->timeout_ms;
    c->generation = cfg->generation;
    c->group = cfg->group;
    atomic_init(&c->abort_req, 0);
    shoal_err_t rc;
    const int64_t t0 = clock_mono_ms();
    cudaError_t e = cudaSetDevice(c->device);
    if (e == cudaSuccess)
        e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&c->scratch, sizeof *c->scratch);
    if (e != cudaSuccess) {
        rc = shoal_fail(SHOAL_ERR_CUDA, "nccl init on group %u gen %" PRIu64 ": device %d: %s",
                        c->group, c->generation, c->device, cudaGetErrorString(e));
        goto fail;
    }
    ncclConfig_t nc = NCCL_CONFIG_INITIALIZER;
    nc.blocking = 0; /* so that a peer that never joins is a timeout here, not a hang */
    ncclUniqueId uid;
    memcpy(uid.internal, cfg->id, COMM_NCCL_ID_BYTES);
    ncclResult_t r = ncclCommInitRankConfig(&c->comm, c->nranks, uid, c->rank, &nc);
    if (r != ncclSuccess && r != ncclInProgress) {
        rc = s_fail_nccl(c, "init", r);
        goto fail;
    }
    if (!c->comm) {
        rc = shoal_fail(SHOAL_ERR_CUDA, "nccl init on group %u gen %" PRIu64 ": no communicator",
                        c->group, c->generation);
        goto fail;
    }
    if ((rc = s_wait(c, "init", t0, 0)) != SHOAL_OK)
        goto fail;
    log_debug("nccl comm: group %u gen %" PRIu64 " rank %d of %d on cuda:%d in %lld ms",
              c->group, c->generation, c->rank, c->nranks, c->device,
              (long long)(clock_mono_ms() - t0));
    *out = c;
    return SHOAL_OK;
fail:
    c->broken = 1;
    comm_nccl_destroy(&c);
    return rc;
}

void comm_nccl_destroy(comm_nccl_t **cp)
{
    if (!cp || !*cp)
        return;
    comm_nccl_t *c = *cp;
    *cp = NULL;
    cudaSetDevice(c->device);
    if (c->comm && !c->broken && !atomic_load(&c->abort_req)) {
        /* flush what was issued, bounded like an operation, then free */
        const int64_t t0 = clock_mono_ms();
        ncclResult_t r = ncclCommFinalize(c->comm);
        if (r != ncclSuccess && r != ncclInProgress) {
            (void)s_fail_nccl(c, "finalize", r);
        } else if (s_wait(c, "finalize", t0, 0) != SHOAL_OK) {
            log_warn("%s", shoal_errmsg());
        } else {
            r = ncclCommDestroy(c->comm);
            if (r != ncclSuccess)
                log_warn("nccl destroy on group %u gen %" PRIu64 ": %s", c->group,
                         c->generation, ncclGetErrorString(r));
            c->comm = NULL;
        }
    }
    s_abort_now(c); /* no-op once destroyed */
    if (c->scratch)
        cudaFree(c->scratch);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
}

void comm_nccl_abort(comm_nccl_t *c)
{
    if (c)
        atomic_store(&c->abort_req, 1);
}

shoal_err_t comm_nccl_allreduce_sum_f32(comm_nccl_t *c, float *dbuf, size_t n)
{
    shoal_err_t rc = s_enter(c, "all-reduce f32");
    if (rc != SHOAL_OK || n == 0)
        return rc;
    if (!dbuf)
        return shoal_fail(SHOAL_ERR_INVALID, "nccl all-reduce f32: NULL buffer");
    const int64_t t0 = clock_mono_ms();
    return s_finish(c, "all-reduce f32",
                    ncclAllReduce(dbuf, dbuf, n, ncclFloat32, ncclSum, c->comm, c->stream), t0);
}

shoal_err_t comm_nccl_allreduce_sum_i64(comm_nccl_t *c, int64_t *dbuf, size_t n)
{
    shoal_err_t rc = s_enter(c, "all-reduce i64");
    if (rc != SHOAL_OK || n == 0)
        return rc;
    if (!dbuf)
        return shoal_fail(SHOAL_ERR_INVALID, "nccl all-reduce i64: NULL buffer");
    const int64_t t0 = clock_mono_ms();
    return s_finish(c, "all-reduce i64",
                    ncclAllReduce(dbuf, dbuf, n, ncclInt64, ncclSum, c->comm, c->stream), t0);
}

/* n must split into nranks equal pieces (NCCL's reduce-scatter and all-gather). */
static shoal_err_t s_check_split(const comm_nccl_t *c, const char *op, const void *dbuf, size_t n)
{
    if (!dbuf)
        return shoal_fail(SHOAL_ERR_INVALID, "nccl %s: NULL buffer", op);
    if (n % (size_t)c->nranks)
        return shoal_fail(SHOAL_ERR_INVALID, "nccl %s on group %u: %zu elements do not split "
                          "into %d equal pieces", op, c->group, n, c->nranks);
    return SHOAL_OK;
}

shoal_err_t comm_nccl_reduce_scatter_sum_f32(comm_nccl_t *c, float *dbuf, size_t n)
{
    shoal_err_t rc = s_enter(c, "reduce-scatter f32");
    if (rc != SHOAL_OK || n == 0 || (rc = s_check_split(c, "reduce-scatter f32", dbuf, n)))
        return rc;
    const size_t piece = n / (size_t)c->nranks;
    const int64_t t0 = clock_mono_ms();
    /* in place: NCCL allows recvbuff == sendbuff + rank * recvcount */
    return s_finish(c, "reduce-scatter f32",
                    ncclReduceScatter(dbuf, dbuf + (size_t)c->rank * piece, piece, ncclFloat32,
                                      ncclSum, c->comm, c->stream),
                    t0);
}

shoal_err_t comm_nccl_allgather_f32(comm_nccl_t *c, float *dbuf, size_t n)
{
    shoal_err_t rc = s_enter(c, "all-gather f32");
    if (rc != SHOAL_OK || n == 0 || (rc = s_check_split(c, "all-gather f32", dbuf, n)))
        return rc;
    const size_t piece = n / (size_t)c->nranks;
    const int64_t t0 = clock_mono_ms();
    return s_finish(c, "all-gather f32",
                    ncclAllGather(dbuf + (size_t)c->rank * piece, dbuf, piece, ncclFloat32,
                                  c->comm, c->stream),
                    t0);
}

shoal_err_t comm_nccl_broadcast(comm_nccl_t *c, void *dbuf, size_t bytes, int root)
{
    shoal_err_t rc = s_enter(c, "broadcast");
    if (rc != SHOAL_OK || bytes == 0)
        return rc;
    if (!dbuf || root < 0 || root >= c->nranks)
        return shoal_fail(SHOAL_ERR_INVALID, "nccl broadcast on group %u: %s", c->group,
                          dbuf ? "root out of range" : "NULL buffer");
    const int64_t t0 = clock_mono_ms();
    return s_finish(c, "broadcast",
                    ncclBroadcast(dbuf, dbuf, bytes, ncclUint8, root, c->comm, c->stream), t0);
}

/* Ends an NCCL group of point-to-point calls begun by the caller; `r` is the first failure of
 * the calls in it (ncclSuccess if none). ncclGroupEnd is always called so no group stays
 * open on this thread. */
static shoal_err_t s_group_end(comm_nccl_t *c, const char *op, ncclResult_t r, int64_t t0)
{
    ncclResult_t end = ncclGroupEnd();
    if (r != ncclSuccess && r != ncclInProgress)
        return s_fail_nccl(c, op, r);
    return s_finish(c, op, end, t0);
}

shoal_err_t comm_nccl_sendrecv(comm_nccl_t *c, int dst, const void *sbuf, size_t send_bytes,
                               int src, void *rbuf, size_t recv_bytes)
{
    shoal_err_t rc = s_enter(c, "send/recv");
    if (rc != SHOAL_OK)
        return rc;
    if ((dst >= 0 && (dst >= c->nranks || dst == c->rank || (!sbuf && send_bytes))) ||
        (src >= 0 && (src >= c->nranks || src == c->rank || (!rbuf && recv_bytes))))
        return shoal_fail(SHOAL_ERR_INVALID, "nccl send/recv on group %u: rank %d sends to %d "
                          "and receives from %d of %d (or a NULL buffer)", c->group, c->rank,
                          dst, src, c->nranks);
    if (dst < 0 && src < 0)
        return SHOAL_OK;
    const int64_t t0 = clock_mono_ms();
    ncclResult_t r = ncclGroupStart();
    if (r != ncclSuccess)
        return s_fail_nccl(c, "send/recv", r);
    if (dst >= 0)
        r = ncclSend(sbuf, send_bytes, ncclUint8, dst, c->comm, c->stream);
    if (src >= 0 && (r == ncclSuccess || r == ncclInProgress))
        r = ncclRecv(rbuf, recv_bytes, ncclUint8, src, c->comm, c->stream);
    return s_group_end(c, "send/recv", r, t0);
}

shoal_err_t comm_nccl_alltoallv(comm_nccl_t *c, const void *sendbuf, const size_t *send_bytes,
                                const size_t *send_offs, void *recvbuf, const size_t *recv_bytes,
                                const size_t *recv_offs)
{
    shoal_err_t rc = s_enter(c, "all-to-all");
    if (rc != SHOAL_OK)
        return rc;
    if (!send_bytes || !send_offs || !recv_bytes || !recv_offs)
        return shoal_fail(SHOAL_ERR_INVALID, "nccl all-to-all: NULL size or offset array");
    if (send_bytes[c->rank] != recv_bytes[c->rank])
        return shoal_fail(SHOAL_ERR_INVALID, "nccl all-to-all on group %u: the self block is "
                          "%zu bytes sent, %zu received", c->group, send_bytes[c->rank],
                          recv_bytes[c->rank]);
    const char *sb = sendbuf;
    char *rb = recvbuf;
    const int64_t t0 = clock_mono_ms();
    if (send_bytes[c->rank]) {
        cudaError_t e = cudaMemcpyAsync(rb + recv_offs[c->rank], sb + send_offs[c->rank],
                                        send_bytes[c->rank], cudaMemcpyDeviceToDevice, c->stream);
        if (e != cudaSuccess)
            return s_fail_cuda(c, "all-to-all", e);
    }
    ncclResult_t r = ncclGroupStart();
    if (r != ncclSuccess)
        return s_fail_nccl(c, "all-to-all", r);
    /* zero-byte pairs are still posted: NCCL completes them at once, and every rank posts the
     * same pattern */
    for (int k = 1; k < c->nranks && (r == ncclSuccess || r == ncclInProgress); k++) {
        const int to = (c->rank + k) % c->nranks, from = (c->rank - k + c->nranks) % c->nranks;
        r = ncclSend(sb + send_offs[to], send_bytes[to], ncclUint8, to, c->comm, c->stream);
        if (r == ncclSuccess || r == ncclInProgress)
            r = ncclRecv(rb + recv_offs[from], recv_bytes[from], ncclUint8, from, c->comm,
                         c->stream);
    }
    return s_group_end(c, "all-to-all", r, t0);
}

shoal_err_t comm_nccl_barrier(comm_nccl_t *c)
{
    shoal_err_t rc = s_enter(c, "barrier");
    if (rc != SHOAL_OK)
        return rc;
    const int64_t t0 = clock_mono_ms();
    return s_finish(c, "barrier",
                    ncclAllReduce(c->scratch, c->scratch, 1, ncclInt64, ncclSum, c->comm,
                                  c->stream),
                    t0);
}

int comm_nccl_rank(const comm_nccl_t *c)
{
    return c->rank;
}

int comm_nccl_nranks(const comm_nccl_t *c)
{
    return c->nranks;
}

uint64_t comm_nccl_generation(const comm_nccl_t *c)
{
    return c->generation;
}

uint32_t comm_nccl_group(const comm_nccl_t *c)
{
    return c->group;
}

void comm_nccl_versions(char *buf, size_t cap)
{
    int nv = 0, cv = 0;
    if (ncclGetVersion(&nv) != ncclSuccess)
        nv = 0;
    if (cudaRuntimeGetVersion(&cv) != cudaSuccess)
        cv = 0;
    /* NCCL >= 2.9 encodes major*10000 + minor*100 + patch; CUDA major*1000 + minor*10 */
    snprintf(buf, cap, "NCCL %d.%d.%d, CUDA runtime %d.%d", nv / 10000, nv / 100 % 100, nv % 100,
             cv / 1000, cv / 10 % 100);
}
