/* comm.h: the data-plane communication of a worker (collectives, point to point, all-to-all,
 * abort), one interface for every backend. comm_zmq*.c implement it over ZeroMQ for CPU workers.
 *
 * Model. A worker binds one data endpoint (a listener) for its whole life and publishes its
 * connectable address through the coordinator. For each plan generation it creates one comm_t per
 * process group it belongs to (world, stage, expert, ...) from the listener and the endpoint list
 * of the group's members; at the next generation it destroys them all and creates the next
 * generation's on the same listener. Several live comms share the listener and, between two
 * workers, one connection. Every rank of a comm calls the same collectives in the same order with
 * the same sizes (as with NCCL or MPI); point-to-point messages are matched per (source,
 * destination) pair in send order, independently of the collectives.
 *
 * Guarantees (ZeroMQ backend).
 * - Every message carries (generation, group, step, sequence number): the op sequence number of
 *   the comm for collectives, the per-pair message number for point to point. A message of an
 *   older generation or an earlier op is dropped (logged at debug); one of the next op (a peer may
 *   legally be one op ahead), any later point-to-point message, or one for a group whose comm is
 *   not created yet on this listener (current or newer generation) is held until it is used;
 *   nothing else is ever mixed into a result. Every frame is validated (size, header, piece
 *   bounds) before use.
 * - Timeouts: an operation fails with SHOAL_ERR_TIMEOUT once timeout_ms pass without any expected
 *   message arriving. The detail message (shoal_errmsg) names the ranks that sent nothing in this
 *   operation ("no message from rank 2") and all ranks still owing data. A comm whose operation
 *   failed is broken: later operations return SHOAL_ERR_STATE; create a new comm (new generation).
 * - Reproducibility: all-reduce computes, for every element i,
 *       out[i] = ((x_0[i] + x_1[i]) + x_2[i]) + ... + x_{n-1}[i]
 *   in float32, left to right in rank order, whatever the chunking or message arrival order; the
 *   owner of each chunk computes it and sends the same bytes to every rank, so the result is
 *   bitwise reproducible and bitwise identical on every rank. Reduce-scatter computes the same
 *   bytes, so all-reduce == reduce-scatter then all-gather, bitwise.
 * Not thread-safe: one thread uses all the comms of a listener (and the listener); only
 * comm_abort may be called from another thread or a signal handler. */
#ifndef SHOAL_COMM_H
#define SHOAL_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "zsec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default and bounds of comm_config_t.chunk_bytes (the pipeline unit of large transfers). */
#define COMM_CHUNK_DEFAULT (1u << 20)
#define COMM_CHUNK_MAX (16u << 20)
/* Most ranks a comm may have. */
#define COMM_MAX_RANKS 4096
/* Most live comms on one listener (process groups of one generation). */
#define COMM_MAX_GROUPS 64

typedef struct comm_listener comm_listener_t; /* a worker's data endpoint, bound once */

/* How a listener binds. */
typedef struct {
    const char *bind_endpoint;  /* e.g. "tcp://127.0.0.1:0" or "tcp://0.0.0.0:0" (port 0: any
                                 * free port; the host may be the "*" wildcard), or ipc:// */
    const char *advertise_host; /* host peers use for a wildcard bind; NULL means 127.0.0.1 */
    const char *ipc_dir;        /* where the same-host ipc socket lives; NULL means /tmp */
    int no_ipc;                 /* nonzero: tcp only (no ipc socket, never connect over ipc) */
    int no_shm;                 /* nonzero: no shared-memory data path (also when the environment
                                 * sets SHOAL_COMM_NO_SHM to a value other than "0") */
    const zsec_keys_t *keys;    /* CURVE: this worker's key pair; NULL: plaintext. With keys,
                                 * every connection (tcp and ipc) is CURVE, a peer is dialled
                                 * with the key comm_listener_peer_keys gave its endpoint, and a
                                 * frame whose connection key is not the key of the rank it
                                 * claims is dropped and counted (comm_dropped_frames). Only
                                 * the keys of the last two plans (comm_listener_peer_keys)
                                 * complete a handshake; another key is held up to
                                 * admit_hold_ms for a plan that lists it, then refused and
                                 * counted (comm_listener_denied_handshakes) */
    int admit_hold_ms;          /* CURVE: 0 means COMM_ADMIT_HOLD_MS */
} comm_listener_opts_t;

/* How long a CURVE listener holds the handshake of a key that no plan it holds lists yet (a
 * peer that got the next plan first): below libzmq's 30 s handshake timeout. */
#define COMM_ADMIT_HOLD_MS 20000

/* Same-host shared memory. A comm whose peers are all reached over the same-host ipc socket (and
 * whose listener, like every peer's, has shm on) moves all-reduce, reduce-scatter, all-gather and
 * broadcast of at least COMM_SHM_MIN_BYTES (below it the sockets were as fast, 2 ranks) through
 * POSIX shared memory: each rank copies its data into its own segment (/dev/shm, named after its
 * listener's ipc socket, generation and group, removed once every peer mapped it), owners fold
 * the peers' pieces from their segments in rank order, and small ZeroMQ frames say when a piece
 * is ready and when it has been read. Results, tags, timeouts (naming the silent rank), abort and
 * checks are the same as over sockets; results are bitwise identical. Memory per rank and comm:
 * reductions (nranks + 1) rings of max(2 MiB, chunk_bytes), all-gather and broadcast one of
 * max(8 MiB, chunk_bytes) (less for small ops); kept until comm_destroy. Every rank of a
 * comm must agree: a rank with shm off talking to one with shm on fails the op with
 * SHOAL_ERR_INVALID saying so (or, if its peer failed first and dropped its frames, with
 * SHOAL_ERR_TIMEOUT). Point to point and all-to-all always use the sockets; listeners bound on
 * ipc:// endpoints never use shm. */
#define COMM_SHM_MIN_BYTES ((size_t)128 << 10)

/* Binds a data endpoint. A tcp listener also binds a same-host ipc socket, named after its
 * advertised host and port ("<ipc_dir>/shoal-comm-<hash(host)>-<port>"), so that the advertised
 * endpoint stays a plain tcp endpoint: a comm_new on the same host (advertised host equal, or
 * loopback) that finds that socket connects to it instead of tcp. On success *out owns the
 * listener (free with comm_listener_destroy). Errors: SHOAL_ERR_INVALID (NULL or unbindable
 * endpoint), SHOAL_ERR_IO, SHOAL_ERR_NOMEM. */
shoal_err_t comm_listener_new_opts(const comm_listener_opts_t *opts, comm_listener_t **out);

/* comm_listener_new_opts with bind_endpoint only (a wildcard host is advertised as 127.0.0.1). */
shoal_err_t comm_listener_new(const char *bind_endpoint, comm_listener_t **out);

/* As comm_listener_new, but a wildcard host ("*", 0.0.0.0, [::]) is advertised as
 * `advertise_host` (a host name or address that peers can reach; NULL means 127.0.0.1). */
shoal_err_t comm_listener_new_advertise(const char *bind_endpoint, const char *advertise_host,
                                        comm_listener_t **out);

/* The connectable endpoint with the real port, e.g. "tcp://127.0.0.1:43127". Owned by the
 * listener, valid until it is destroyed. */
const char *comm_listener_endpoint(const comm_listener_t *l);

/* Closes the listener (destroy its comms first). Messages still queued to peers by comms that were
 * destroyed healthy get at most their flush time (see comm_destroy) to leave. Idempotent; nulls
 * *l. */
void comm_listener_destroy(comm_listener_t **l);

/* CURVE listeners: the public key (Z85) of the worker at each of n endpoints, as the
 * coordinator's plan publishes them; later calls add to and update the map. comm_new fails
 * (SHOAL_ERR_INVALID) for a peer endpoint without a key. Each call is one plan: from then on
 * only the keys of this call and of the previous one complete a handshake on this listener
 * (connections already up stay). No-op on a plaintext listener. */
shoal_err_t comm_listener_peer_keys(comm_listener_t *l, const char *const *endpoints,
                                    const char *const *keys, int n);

/* Handshakes this listener refused (a key of no plan it holds); 0 without CURVE. */
unsigned long long comm_listener_denied_handshakes(const comm_listener_t *l);

/* Most sending keys whose bad frames a listener keeps between two takes (more are not kept:
 * the report is evidence, not an account). */
#define COMM_BAD_SENDERS_MAX 16

/* Frames dropped as malformed (header, size, multipart) or as claiming a rank whose key is not
 * their connection's, per the CURVE key of the connection they came on: the sender that holds
 * that key's secret sent them (CURVE authenticates every frame), whatever rank they claimed. */
typedef struct {
    char key[ZSEC_KEY_LEN + 1];
    unsigned frames;
    char why[96]; /* the last one's reason */
} comm_bad_sender_t;

/* Moves up to max entries of bad-frame senders seen since the last call into out and forgets
 * them; returns how many. Safe from another thread than the comms' (a lock). Plaintext listeners
 * never record any (no authenticated sender to name). */
int comm_listener_take_bad_senders(comm_listener_t *l, comm_bad_sender_t *out, int max);

/* Frames dropped in this process because their connection's CURVE key was not the key of the
 * rank they claimed (never summed). */
unsigned long long comm_dropped_frames(void);

typedef struct {
    int rank;                     /* this worker's rank in the group, 0 <= rank < nranks */
    int nranks;                   /* group size, 1 .. COMM_MAX_RANKS */
    const char *const *endpoints; /* data endpoint of each group member, in group-rank order
                                   * (nranks entries; copied) */
    uint64_t generation;          /* plan generation; every rank of the comm uses the same */
    uint32_t group;               /* group tag: the same on every member, unique among the live
                                   * comms of one generation on a listener; 0 is fine for a
                                   * single comm */
    int timeout_ms;               /* > 0: longest wait without progress in one operation */
    size_t chunk_bytes;           /* pipeline unit: multiple of 4, 4 .. COMM_CHUNK_MAX, the same
                                   * on every rank; 0 means COMM_CHUNK_DEFAULT */
} comm_config_t;

typedef struct comm comm_t; /* one communicator per (plan generation, process group) */

/* Creates the communicator of one group of one generation on listener `l` (which must outlive
 * it). Connects to the peers' endpoints without waiting for them (a peer already connected by
 * another live comm of this listener shares that connection). All comms of one generation must be
 * destroyed before the next generation's are created; a (generation, group) pair is used once.
 * On success *out owns the comm. Errors: SHOAL_ERR_INVALID (bad config or endpoint, the message
 * names the rank; a generation older than the listener's, or a (generation, group) already used
 * and destroyed), SHOAL_ERR_STATE (a live comm with the same (generation, group), live comms of an
 * older generation, or COMM_MAX_GROUPS live comms), SHOAL_ERR_IO, SHOAL_ERR_NOMEM. */
shoal_err_t comm_new(comm_listener_t *l, const comm_config_t *cfg, comm_t **out);

/* Destroys the comm; the listener's other comms are not disturbed. A healthy comm lets the messages of its last operation leave in the
 * background for at most min(timeout_ms, 1 s) (they are needed by peers still finishing that
 * operation); an aborted or failed comm drops them at once (ZMQ_LINGER 0), unless it gave up
 * (comm_give_up: the frames telling the peers leave as a healthy comm's). Never blocks.
 * Idempotent; nulls *c. */
void comm_destroy(comm_t **c);

/* In-place sum of buf[0..n) over all ranks, in the order documented above. n == 0 or nranks == 1
 * returns at once without communicating. Errors: SHOAL_ERR_INVALID (NULL buf), SHOAL_ERR_TIMEOUT,
 * SHOAL_ERR_ABORTED, SHOAL_ERR_STATE (comm broken by an earlier failure), SHOAL_ERR_IO. */
shoal_err_t comm_allreduce_sum_f32(comm_t *c, float *buf, size_t n, uint64_t step);

/* Exact integer all-reduces, same algorithm and guarantees as comm_allreduce_sum_f32 on 8-byte
 * elements: the sum (two's complement, wrapping: keep sums in range) or the maximum of buf[i]
 * over all ranks. Integer folds do not depend on order, so these give the same bits whatever the
 * number of ranks (the exact gradient sums of worker/trainer.c rely on it). Same-host comms move
 * them through shared memory like the float ones. chunk_bytes must be at least 8
 * (SHOAL_ERR_INVALID otherwise). Errors as all-reduce; a rank calling the f32 all-reduce where
 * another calls an int64 one sees that rank's frames dropped and times out naming it. */
shoal_err_t comm_allreduce_sum_i64(comm_t *c, int64_t *buf, size_t n, uint64_t step);
shoal_err_t comm_allreduce_max_i64(comm_t *c, int64_t *buf, size_t n, uint64_t step);

/* Copies root's buf[0..bytes) into every rank's buf (every rank passes the same bytes and root).
 * No rank completes before every rank has received everything (acknowledgements to the root, then
 * its DONE), so a missing receiver is a timeout everywhere. bytes == 0 or nranks == 1 returns at
 * once. Errors as all-reduce, and SHOAL_ERR_INVALID for a root out of range. */
shoal_err_t comm_broadcast(comm_t *c, void *buf, size_t bytes, int root, uint64_t step);

/* Returns once every rank has entered the barrier. Errors as all-reduce. */
shoal_err_t comm_barrier(comm_t *c, uint64_t step);

/* The f32 chunking of reduce-scatter and all-gather (and the all-reduce owner split): rank r of
 * nranks holds [*lo, *hi) of n elements, where lo(r) = r*(n/R) + min(r, n%R): balanced, the first
 * n%R ranks one element more, in rank order, covering [0, n). */
void comm_chunk_range(size_t n, int nranks, int r, size_t *lo, size_t *hi);

/* Sum of buf[0..n) over all ranks, in the all-reduce order, into buf[lo(rank)..hi(rank)) of each
 * rank (comm_chunk_range); the rest of buf is left unspecified (today: unchanged). Same bits as
 * all-reduce. n == 0 or nranks == 1 returns at once. Errors as all-reduce. */
shoal_err_t comm_reduce_scatter_sum_f32(comm_t *c, float *buf, size_t n, uint64_t step);

/* Copies rank r's buf[lo(r)..hi(r)) into that range of every rank's buf, for every r. n == 0 or
 * nranks == 1 returns at once. Errors as all-reduce. */
shoal_err_t comm_allgather_f32(comm_t *c, float *buf, size_t n, uint64_t step);

/* Sends buf[0..bytes) to rank dst (!= this rank). Returns once the data is queued: buf may be
 * reused at once, and it never waits for the receiver. Messages from one rank to another are
 * received in send order, whatever collectives run in between; `step` must equal the receiver's.
 * Errors: SHOAL_ERR_INVALID (dst out of range or this rank, NULL buf with bytes > 0),
 * SHOAL_ERR_ABORTED, SHOAL_ERR_STATE (broken comm), SHOAL_ERR_NOMEM, SHOAL_ERR_IO. */
shoal_err_t comm_send(comm_t *c, int dst, const void *buf, size_t bytes, uint64_t step);

/* Receives the next message from rank src into buf[0..bytes). Blocks until it has arrived, at most
 * timeout_ms without progress; abortable. A message of another size is SHOAL_ERR_INVALID naming
 * both sizes (and breaks the comm). Errors otherwise as all-reduce. */
shoal_err_t comm_recv(comm_t *c, int src, void *buf, size_t bytes, uint64_t step);

/* All-to-all of byte blocks (nranks entries in each array): rank j receives
 * sendbuf[send_offs[j] .. + send_bytes[j]); this rank receives from rank i into
 * recvbuf[recv_offs[i] .. + recv_bytes[i]). The self block is a memcpy (its two sizes must be
 * equal). Zero-size blocks are fine (still one small message, so completion means every rank took
 * part). recv_bytes must match what each sender sends: a mismatch is SHOAL_ERR_INVALID naming both
 * sizes (and breaks the comm); exchange counts first with a fixed-size call. Errors otherwise as
 * all-reduce. */
shoal_err_t comm_alltoallv(comm_t *c, const void *sendbuf, const size_t *send_bytes,
                           const size_t *send_offs, void *recvbuf, const size_t *recv_bytes,
                           const size_t *recv_offs, uint64_t step);

/* Makes the operation in progress (if any) and every later one fail with SHOAL_ERR_ABORTED. Safe
 * from another thread and from a signal handler (an atomic store and one write(2)), as long as it
 * cannot race with comm_destroy of the same comm. */
void comm_abort(comm_t *c);

/* Aborts c (as comm_abort) and tells every peer that this rank gave it up: a KIND_GIVE_UP
 * frame, queued without waiting, that makes the op in progress on the peer's comm of the same
 * (generation, group), or its next op if it has none or has not created that comm yet, fail at
 * once with SHOAL_ERR_ABORTED naming this rank (comm_given_up_by), instead of after its
 * timeout. comm_destroy then lets those frames leave (at most min(timeout_ms, 1 s)). Best effort:
 * a peer it cannot queue to waits out its timeout, as a dead rank's peers do. Call from the
 * comm's thread (e.g. once an op returned SHOAL_ERR_ABORTED), not from a signal handler. */
void comm_give_up(comm_t *c);

/* The rank whose comm_give_up aborted c, or -1 (none, or aborted here). */
int comm_given_up_by(const comm_t *c);

/* Whether c was aborted (comm_abort here, or a peer's comm_give_up seen by an op). Safe from
 * any thread, like comm_abort. */
int comm_is_aborted(const comm_t *c);

int comm_rank(const comm_t *c);
int comm_nranks(const comm_t *c);
uint64_t comm_generation(const comm_t *c);
uint32_t comm_group(const comm_t *c);

#ifdef __cplusplus
}
#endif
#endif
