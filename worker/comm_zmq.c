/* comm_zmq.c: the ZeroMQ backend of comm.h: collectives between CPU workers over each worker's own
 * PULL listener and one PUSH socket per peer, every operation tagged and bounded by a timeout.
 *
 * Wire: one frame per message, a 72-byte little-endian header (wire_hdr_t) then the payload.
 * All-reduce of n floats over R ranks (direct reduce-scatter + all-gather, pipelined by chunks):
 *   - rank j owns elements [lo_j, hi_j) (balanced split); each owned range is cut into pieces of
 *     chunk_bytes/4 floats;
 *   - every rank sends each piece of owner j's range to j (AR_RS);
 *   - the owner folds the contributions of a piece strictly in rank order 0, 1, ..., R-1
 *     (out-of-order arrivals wait in their zmq message), then sends the finished piece to every
 *     other rank (AR_AG), which copies it in. Bytes sent per rank: 2 (R-1)/R of the buffer, like a
 *     ring, in R-1 parallel streams instead of R-1 sequential hops.
 * Broadcast: the root sends pieces to every rank (at most a window of unacknowledged pieces per
 * peer); receivers acknowledge cumulatively (BC_ACK), so the root too learns of a dead receiver;
 * once every rank has acknowledged everything the root tells them so (BC_DONE), and only then do
 * receivers complete.
 * Barrier: one empty message from every rank to every other.
 *
 * Why a peer is at most one operation ahead: no operation completes on any rank before every rank
 * has entered it (each needs data, an acknowledgement or a token from every rank; that is why
 * broadcast receivers wait for BC_DONE), so while we run op s a live peer can only send messages of
 * s or s+1. Messages of s+1 (and of the first op of a newer generation,
 * sent by a peer that moved on first) are kept in the listener's stash; all others are dropped. */
#include "comm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "log.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "comm_zmq.c writes its wire header in host order and assumes a little-endian host"
#endif

#define WIRE_MAGIC 0x4d434853u /* "SHCM" */
#define WIRE_VERSION 1
/* Bytes of early messages (next op, newer generation) a listener holds before dropping more. */
#define STASH_MAX_BYTES ((size_t)1 << 30)
/* Unconfirmed bytes in flight to one peer (broadcast pieces not yet acknowledged, all-reduce
 * contributions whose reduced piece has not come back): bounds the queues on a slow link. */
#define WINDOW_BYTES ((size_t)64 << 20)
#define WINDOW_PIECES_MAX 256
/* Longest a healthy comm's last messages may linger after comm_destroy. */
#define FLUSH_MAX_MS 1000
/* Messages received per loop turn before the send side gets a chance again. */
#define RECV_BATCH 256

/* Numbered once, never reused. */
enum {
    KIND_AR_RS = 1, /* all-reduce: a rank's contribution to a piece, to the piece's owner */
    KIND_AR_AG,     /* all-reduce: a reduced piece, from its owner to every rank */
    KIND_BC_DATA,   /* broadcast: a piece from the root */
    KIND_BC_ACK,    /* broadcast: pieces received so far, to the root */
    KIND_BARRIER,   /* barrier token */
    KIND_BC_DONE,   /* broadcast: every rank has everything (root to every rank) */
    KIND__END
};
enum { OP_ALLREDUCE = 1, OP_BCAST, OP_BARRIER };

typedef struct {
    uint32_t magic;
    uint8_t version;
    uint8_t kind;
    uint16_t flags;  /* 0 */
    uint32_t src;    /* sender's rank */
    uint32_t nranks; /* sender's comm size */
    uint64_t generation;
    uint64_t step;
    uint64_t seq;      /* op sequence number in the generation, from 1 */
    uint64_t total;    /* floats (all-reduce) or bytes (broadcast) of the whole op; 0 barrier */
    uint64_t offset;   /* first float/byte of the piece; for BC_ACK: pieces received */
    uint32_t count;    /* floats/bytes in the piece */
    uint32_t root;     /* broadcast root, else 0 */
    uint32_t chunk;    /* sender's chunk_bytes */
    uint32_t reserved; /* 0 */
} wire_hdr_t;
_Static_assert(sizeof(wire_hdr_t) == 72, "wire header must be 72 bytes without padding");
#define HDR_SIZE sizeof(wire_hdr_t)

/* A received message kept for later: the parsed header and the frame. */
typedef struct {
    wire_hdr_t h;
    zmq_msg_t msg;
} held_t;

struct comm_listener {
    void *ctx;
    void *pull;
    char endpoint[256];
    comm_t *active; /* the live comm on this listener, if any */
    bool used;      /* a comm existed: generations must increase */
    uint64_t last_generation;
    held_t **stash; /* early messages, arrival order */
    size_t nstash, cap_stash, stash_bytes;
};

typedef struct {
    void *push;
    char *endpoint;
    zmq_msg_t out; /* built but not yet accepted by zmq (EAGAIN) */
    bool has_out;
    /* per operation */
    unsigned heard;  /* messages accepted from this peer */
    size_t rs_next;  /* all-reduce: next piece of its range to send; bcast root: next piece */
    size_t ag_next;  /* all-reduce: index into done[] of the next piece to send it */
    size_t ag_got;   /* all-reduce: pieces of its range received */
    size_t rs_got;   /* all-reduce: its contributions to our pieces received */
    size_t acked;    /* bcast root: pieces it acknowledged */
    size_t ack_sent; /* bcast receiver (peer = root): pieces acknowledged so far */
    bool sent_token, got_token; /* barrier token; broadcast DONE */
} peer_t;

struct comm {
    comm_listener_t *l;
    int rank, nranks;
    uint64_t generation;
    int timeout_ms;
    size_t chunk;
    peer_t *peers;
    zmq_pollitem_t *items;
    uint64_t seq;       /* of the last started op */
    shoal_err_t broken; /* first failure; SHOAL_OK while healthy */
    atomic_int aborted;
    int wake[2]; /* comm_abort writes here to end a zmq_poll at once */
};

/* State of the operation in progress. */
typedef struct {
    int kind;
    const char *name;
    uint64_t step, seq, total;
    int root;
    unsigned char *buf;
    size_t unit; /* chunk in elements: floats (all-reduce) or bytes (broadcast) */
    /* all-reduce */
    size_t own_lo, own_hi, own_np;
    int *next_rank;         /* per owned piece: next rank to fold */
    zmq_msg_t **held;       /* own_np x nranks out-of-order contributions */
    unsigned char *scratch; /* our own contribution to the owned range (rank > 0) */
    size_t *done;           /* owned pieces finished, in completion order */
    size_t ndone;
    unsigned char *ag_have; /* per piece of all ranges (ag_base indexing) */
    size_t *ag_base;
    /* broadcast */
    size_t np;
    unsigned char *bc_have;
    size_t bc_got;
    int bc_acked_all; /* root: peers that acknowledged every piece */
    size_t window;    /* pieces in flight per peer (both ops) */
    /* diagnostics */
    unsigned dropped;
    char why[200];
} op_t;

static size_t s_div_up(size_t a, size_t b)
{
    return a / b + (a % b != 0);
}

/* Pieces in flight per peer: WINDOW_BYTES, and at most WINDOW_PIECES_MAX small ones. */
static size_t s_window(const comm_t *c)
{
    size_t w = WINDOW_BYTES / c->chunk;
    return w > WINDOW_PIECES_MAX ? WINDOW_PIECES_MAX : w;
}

/* Balanced split of n elements over R ranks: rank j owns [s_lo(j), s_lo(j + 1)). */
static size_t s_lo(size_t n, int nranks, int j)
{
    size_t q = n / (size_t)nranks, r = n % (size_t)nranks;
    return q * (size_t)j + ((size_t)j < r ? (size_t)j : r);
}

/* ---------------------------------------------------------------------------------------------
 * Listener and its stash. */

static void s_peers_close(comm_t *c, int linger);

static void s_held_free(held_t **hp)
{
    if (*hp) {
        zmq_msg_close(&(*hp)->msg);
        free(*hp);
        *hp = NULL;
    }
}

/* Takes `msg` into the stash (or drops it when the stash is full). */
static void s_stash_put(comm_listener_t *l, const wire_hdr_t *h, zmq_msg_t *msg)
{
    size_t size = zmq_msg_size(msg);
    if (l->stash_bytes + size > STASH_MAX_BYTES) {
        log_warn("comm: stash full (%zu bytes): dropping early message from rank %" PRIu32
                 " (generation %" PRIu64 ", op %" PRIu64 ")",
                 l->stash_bytes, h->src, h->generation, h->seq);
        zmq_msg_close(msg);
        return;
    }
    if (l->nstash == l->cap_stash) {
        size_t cap = l->cap_stash ? 2 * l->cap_stash : 64;
        held_t **s = realloc(l->stash, cap * sizeof *s);
        if (!s) {
            zmq_msg_close(msg);
            return;
        }
        l->stash = s;
        l->cap_stash = cap;
    }
    held_t *e = malloc(sizeof *e);
    if (!e) {
        zmq_msg_close(msg);
        return;
    }
    e->h = *h;
    zmq_msg_init(&e->msg);
    zmq_msg_move(&e->msg, msg);
    zmq_msg_close(msg);
    l->stash[l->nstash++] = e;
    l->stash_bytes += size;
}

/* Drops stashed messages of generations <= gen_max. */
static void s_stash_purge(comm_listener_t *l, uint64_t gen_max)
{
    size_t k = 0;
    for (size_t i = 0; i < l->nstash; i++) {
        if (l->stash[i]->h.generation <= gen_max) {
            l->stash_bytes -= zmq_msg_size(&l->stash[i]->msg);
            s_held_free(&l->stash[i]);
        } else {
            l->stash[k++] = l->stash[i];
        }
    }
    l->nstash = k;
}

static shoal_err_t s_advertised(const char *last, const char *host, char *out, size_t cap)
{
    /* ZMQ_LAST_ENDPOINT of a wildcard bind reads tcp://0.0.0.0:PORT or tcp://[::]:PORT. */
    const char *wild[] = {"tcp://0.0.0.0:", "tcp://[::]:", "tcp://*:"};
    for (size_t i = 0; i < sizeof wild / sizeof wild[0]; i++) {
        size_t n = strlen(wild[i]);
        if (strncmp(last, wild[i], n) == 0) {
            int w = snprintf(out, cap, "tcp://%s:%s", host ? host : "127.0.0.1", last + n);
            if (w < 0 || (size_t)w >= cap)
                return shoal_fail(SHOAL_ERR_INVALID, "advertised endpoint for %s too long", last);
            return SHOAL_OK;
        }
    }
    if (strlen(last) >= cap)
        return shoal_fail(SHOAL_ERR_INVALID, "endpoint %s too long", last);
    snprintf(out, cap, "%s", last);
    return SHOAL_OK;
}

shoal_err_t comm_listener_new_advertise(const char *bind_endpoint, const char *advertise_host,
                                        comm_listener_t **out)
{
    shoal_err_t rc = SHOAL_OK;
    *out = NULL;
    if (!bind_endpoint)
        return shoal_fail(SHOAL_ERR_INVALID, "comm listener: no bind endpoint");
    comm_listener_t *l = calloc(1, sizeof *l);
    if (!l)
        return shoal_fail(SHOAL_ERR_NOMEM, "comm listener: out of memory");
    l->ctx = zmq_ctx_new();
    if (!l->ctx) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm listener: zmq_ctx_new: %s", zmq_strerror(errno));
        goto out_free;
    }
    l->pull = zmq_socket(l->ctx, ZMQ_PULL);
    if (!l->pull) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm listener: zmq_socket: %s", zmq_strerror(errno));
        goto out_ctx;
    }
    int linger = 0;
    /* A frame larger than a header plus the largest chunk is hostile: zmq drops the sender. */
    int64_t maxmsg = (int64_t)(HDR_SIZE + COMM_CHUNK_MAX);
    zmq_setsockopt(l->pull, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(l->pull, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (zmq_bind(l->pull, bind_endpoint) != 0) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "comm listener: cannot bind %s: %s", bind_endpoint,
                        zmq_strerror(errno));
        goto out_sock;
    }
    char last[256];
    size_t len = sizeof last;
    if (zmq_getsockopt(l->pull, ZMQ_LAST_ENDPOINT, last, &len) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm listener: %s: ZMQ_LAST_ENDPOINT: %s", bind_endpoint,
                        zmq_strerror(errno));
        goto out_sock;
    }
    SHOAL_CHECK_GOTO(s_advertised(last, advertise_host, l->endpoint, sizeof l->endpoint), rc,
                     out_sock);
    log_debug("comm: listening on %s (bound %s)", l->endpoint, bind_endpoint);
    *out = l;
    return SHOAL_OK;

out_sock:
    zmq_close(l->pull);
out_ctx:
    zmq_ctx_term(l->ctx);
out_free:
    free(l);
    return rc;
}

shoal_err_t comm_listener_new(const char *bind_endpoint, comm_listener_t **out)
{
    return comm_listener_new_advertise(bind_endpoint, NULL, out);
}

const char *comm_listener_endpoint(const comm_listener_t *l)
{
    return l->endpoint;
}

void comm_listener_destroy(comm_listener_t **lp)
{
    comm_listener_t *l = *lp;
    if (!l)
        return;
    if (l->active) {
        /* A programmer error; close the comm's sockets so that zmq_ctx_term cannot hang. */
        log_error("comm: listener %s destroyed under a live comm (destroy the comm first)",
                  l->endpoint);
        s_peers_close(l->active, 0);
        l->active->l = NULL;
    }
    s_stash_purge(l, UINT64_MAX);
    free(l->stash);
    zmq_close(l->pull);
    /* Waits only for sockets of healthy comms still flushing, each at most FLUSH_MAX_MS. */
    zmq_ctx_term(l->ctx);
    free(l);
    *lp = NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Comm lifetime. */

int comm_rank(const comm_t *c)
{
    return c->rank;
}

int comm_nranks(const comm_t *c)
{
    return c->nranks;
}

uint64_t comm_generation(const comm_t *c)
{
    return c->generation;
}

static void s_peers_close(comm_t *c, int linger)
{
    if (!c->peers)
        return;
    for (int j = 0; j < c->nranks; j++) {
        peer_t *p = &c->peers[j];
        if (p->has_out) {
            zmq_msg_close(&p->out);
            p->has_out = false;
        }
        if (p->push) {
            zmq_setsockopt(p->push, ZMQ_LINGER, &linger, sizeof linger);
            zmq_close(p->push);
            p->push = NULL;
        }
        free(p->endpoint);
        p->endpoint = NULL;
    }
}

void comm_destroy(comm_t **cp)
{
    comm_t *c = *cp;
    if (!c)
        return;
    int linger = 0;
    if (c->broken == SHOAL_OK && !atomic_load(&c->aborted))
        linger = c->timeout_ms < FLUSH_MAX_MS ? c->timeout_ms : FLUSH_MAX_MS;
    s_peers_close(c, linger);
    free(c->peers);
    free(c->items);
    if (c->wake[0] >= 0)
        close(c->wake[0]);
    if (c->wake[1] >= 0)
        close(c->wake[1]);
    if (c->l) {
        /* Early messages of this generation are of no use to a later comm. */
        s_stash_purge(c->l, c->generation);
        c->l->active = NULL;
    }
    free(c);
    *cp = NULL;
}

shoal_err_t comm_new(comm_listener_t *l, const comm_config_t *cfg, comm_t **out)
{
    shoal_err_t rc = SHOAL_OK;
    *out = NULL;
    if (!l || !cfg)
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: NULL listener or config");
    if (cfg->nranks < 1 || cfg->nranks > COMM_MAX_RANKS)
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: nranks %d outside 1..%d", cfg->nranks,
                          COMM_MAX_RANKS);
    if (cfg->rank < 0 || cfg->rank >= cfg->nranks)
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: rank %d outside 0..%d", cfg->rank,
                          cfg->nranks - 1);
    if (cfg->timeout_ms <= 0)
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: timeout_ms %d must be > 0",
                          cfg->timeout_ms);
    size_t chunk = cfg->chunk_bytes ? cfg->chunk_bytes : COMM_CHUNK_DEFAULT;
    if (chunk % 4 != 0 || chunk > COMM_CHUNK_MAX)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "comm_new: chunk_bytes %zu must be a multiple of 4 up to %u",
                          cfg->chunk_bytes, COMM_CHUNK_MAX);
    if (cfg->nranks > 1 && !cfg->endpoints)
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: no endpoint list");
    if (l->active)
        return shoal_fail(SHOAL_ERR_STATE,
                          "comm_new: listener %s already carries the comm of generation %" PRIu64,
                          l->endpoint, l->active->generation);
    if (l->used && cfg->generation <= l->last_generation)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "comm_new: generation %" PRIu64 " not newer than %" PRIu64
                          " already used on %s",
                          cfg->generation, l->last_generation, l->endpoint);

    comm_t *c = calloc(1, sizeof *c);
    if (!c)
        return shoal_fail(SHOAL_ERR_NOMEM, "comm_new: out of memory");
    c->rank = cfg->rank;
    c->nranks = cfg->nranks;
    c->generation = cfg->generation;
    c->timeout_ms = cfg->timeout_ms;
    c->chunk = chunk;
    c->wake[0] = c->wake[1] = -1;
    atomic_init(&c->aborted, 0);
    if (pipe2(c->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm_new: pipe2: %s", strerror(errno));
        goto out_free;
    }
    c->peers = calloc((size_t)c->nranks, sizeof *c->peers);
    c->items = calloc((size_t)c->nranks + 2, sizeof *c->items);
    if (!c->peers || !c->items) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "comm_new: out of memory for %d peers", c->nranks);
        goto out_free;
    }
    for (int j = 0; j < c->nranks && c->nranks > 1; j++) {
        if (!cfg->endpoints[j]) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "comm_new: no endpoint for rank %d", j);
            goto out_free;
        }
        if (j == c->rank)
            continue;
        peer_t *p = &c->peers[j];
        p->endpoint = strdup(cfg->endpoints[j]);
        p->push = zmq_socket(l->ctx, ZMQ_PUSH);
        if (!p->endpoint || !p->push) {
            rc = shoal_fail(SHOAL_ERR_IO, "comm_new: socket for rank %d: %s", j,
                            zmq_strerror(errno));
            goto out_free;
        }
        int linger = 0;
        zmq_setsockopt(p->push, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_connect(p->push, p->endpoint) != 0) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "comm_new: rank %d endpoint '%s': %s", j,
                            p->endpoint, zmq_strerror(errno));
            goto out_free;
        }
    }
    c->l = l;
    l->active = c;
    l->used = true;
    l->last_generation = c->generation;
    if (c->generation > 0)
        s_stash_purge(l, c->generation - 1);
    log_debug("comm: rank %d/%d generation %" PRIu64 " on %s, chunk %zu, timeout %d ms", c->rank,
              c->nranks, c->generation, l->endpoint, c->chunk, c->timeout_ms);
    *out = c;
    return SHOAL_OK;

out_free:
    comm_destroy(&c);
    return rc;
}

void comm_abort(comm_t *c)
{
    if (!c)
        return;
    atomic_store(&c->aborted, 1);
    ssize_t w = write(c->wake[1], "a", 1); /* async-signal-safe; a full pipe already wakes */
    (void)w;
}

/* ---------------------------------------------------------------------------------------------
 * Operations: building, accepting, progress. */

static shoal_err_t s_build(comm_t *c, const op_t *op, zmq_msg_t *m, int kind, uint64_t offset,
                           uint32_t count, const void *payload, size_t bytes)
{
    if (zmq_msg_init_size(m, HDR_SIZE + bytes) != 0)
        return shoal_fail(SHOAL_ERR_NOMEM, "comm: message of %zu bytes: %s", HDR_SIZE + bytes,
                          zmq_strerror(errno));
    wire_hdr_t h = {
        .magic = WIRE_MAGIC,
        .version = WIRE_VERSION,
        .kind = (uint8_t)kind,
        .src = (uint32_t)c->rank,
        .nranks = (uint32_t)c->nranks,
        .generation = c->generation,
        .step = op->step,
        .seq = op->seq,
        .total = op->total,
        .offset = offset,
        .count = count,
        .root = (uint32_t)op->root,
        .chunk = (uint32_t)c->chunk,
    };
    unsigned char *d = zmq_msg_data(m);
    memcpy(d, &h, HDR_SIZE);
    if (bytes)
        memcpy(d + HDR_SIZE, payload, bytes);
    return SHOAL_OK;
}

/* Checks what can be checked without an operation: framing, field ranges, payload size. */
static bool s_hdr_parse(const zmq_msg_t *m, wire_hdr_t *h, const char **why)
{
    size_t size = zmq_msg_size((zmq_msg_t *)m);
    if (size < HDR_SIZE) {
        *why = "frame shorter than a header";
        return false;
    }
    memcpy(h, zmq_msg_data((zmq_msg_t *)m), HDR_SIZE);
    if (h->magic != WIRE_MAGIC || h->version != WIRE_VERSION || h->flags || h->reserved) {
        *why = "bad magic, version or reserved field";
        return false;
    }
    if (h->kind < KIND_AR_RS || h->kind >= KIND__END) {
        *why = "unknown message kind";
        return false;
    }
    if (h->nranks < 2 || h->nranks > COMM_MAX_RANKS || h->src >= h->nranks) {
        *why = "bad rank or comm size";
        return false;
    }
    if (h->chunk < 4 || h->chunk % 4 || h->chunk > COMM_CHUNK_MAX) {
        *why = "bad chunk size";
        return false;
    }
    size_t unit = h->kind == KIND_AR_RS || h->kind == KIND_AR_AG ? 4
                  : h->kind == KIND_BC_DATA                      ? 1
                                                                 : 0;
    if (unit == 0 ? h->count != 0 : (h->count == 0 || (size_t)h->count * unit > h->chunk)) {
        *why = "bad piece length";
        return false;
    }
    if (size != HDR_SIZE + (size_t)h->count * unit) {
        *why = "frame size does not match the header";
        return false;
    }
    return true;
}

static void s_drop(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m, const char *why)
{
    if (op) {
        op->dropped++;
        if (h)
            snprintf(op->why, sizeof op->why,
                     "rank %" PRIu32 " gen %" PRIu64 " op %" PRIu64 " step %" PRIu64 ": %s", h->src,
                     h->generation, h->seq, h->step, why);
        else
            snprintf(op->why, sizeof op->why, "%s", why);
    }
    if (h)
        log_debug("comm gen %" PRIu64 " rank %d: dropped message from rank %" PRIu32
                  " (gen %" PRIu64 ", op %" PRIu64 ", step %" PRIu64 ", kind %u): %s",
                  c->generation, c->rank, h->src, h->generation, h->seq, h->step, h->kind, why);
    else
        log_debug("comm gen %" PRIu64 " rank %d: dropped frame: %s", c->generation, c->rank, why);
    zmq_msg_close(m);
}

/* Folds contribution `src` (raw little-endian floats) of a rank into owned piece p. */
static void s_fold(const comm_t *c, op_t *op, size_t p, int r, const unsigned char *src)
{
    size_t off = op->own_lo + p * op->unit;
    size_t cnt = op->own_hi - off < op->unit ? op->own_hi - off : op->unit;
    float *acc = (float *)op->buf + off;
    if (r == 0) {
        if (c->rank != 0) /* rank 0's own data already lies in buf */
            memcpy(acc, src, cnt * 4);
        return;
    }
    for (size_t i = 0; i < cnt; i++) {
        float v;
        memcpy(&v, src + 4 * i, 4); /* frame payloads carry no alignment promise */
        acc[i] += v;
    }
}

/* Folds every contribution of piece p that is next in rank order and present. */
static void s_fold_ready(comm_t *c, op_t *op, size_t p)
{
    int R = c->nranks;
    while (op->next_rank[p] < R) {
        int r = op->next_rank[p];
        zmq_msg_t **slot = &op->held[p * (size_t)R + (size_t)r];
        if (r == c->rank) {
            s_fold(c, op, p, r, op->scratch ? op->scratch + p * op->unit * 4 : NULL);
        } else if (*slot) {
            s_fold(c, op, p, r, (const unsigned char *)zmq_msg_data(*slot) + HDR_SIZE);
            zmq_msg_close(*slot);
            free(*slot);
            *slot = NULL;
        } else {
            return;
        }
        op->next_rank[p]++;
    }
    op->done[op->ndone++] = p;
}

/* Piece index of [offset, offset+count) in owner j's range, or SIZE_MAX if it is not one. */
static size_t s_piece_of(const comm_t *c, const op_t *op, int j, const wire_hdr_t *h)
{
    size_t lo = s_lo(op->total, c->nranks, j), hi = s_lo(op->total, c->nranks, j + 1);
    if (h->offset < lo || h->offset >= hi || (h->offset - lo) % op->unit)
        return SIZE_MAX;
    size_t want = hi - h->offset < op->unit ? hi - h->offset : op->unit;
    if (h->count != want)
        return SIZE_MAX;
    return (h->offset - lo) / op->unit;
}

/* Applies a message of the current op; takes `m`. Returns true when it was accepted. */
static bool s_accept(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m)
{
    int src = (int)h->src;
    peer_t *p = &c->peers[src];
    const unsigned char *payload = (const unsigned char *)zmq_msg_data(m) + HDR_SIZE;
    const char *why = NULL;
    if (h->step != op->step) {
        why = "step differs from this operation's step";
        goto out_drop;
    }
    if (h->total != op->total || h->chunk != c->chunk || h->root != (uint32_t)op->root) {
        why = "size, chunk or root differs from this operation's";
        goto out_drop;
    }
    switch (h->kind) {
    case KIND_AR_RS: {
        size_t pi;
        if (op->kind != OP_ALLREDUCE || (pi = s_piece_of(c, op, c->rank, h)) == SIZE_MAX) {
            why = "not a piece of this rank's range";
            goto out_drop;
        }
        zmq_msg_t **slot = &op->held[pi * (size_t)c->nranks + (size_t)src];
        if (op->next_rank[pi] > src || *slot) {
            why = "duplicate contribution";
            goto out_drop;
        }
        if (op->next_rank[pi] == src) {
            s_fold(c, op, pi, src, payload);
            op->next_rank[pi]++;
            s_fold_ready(c, op, pi);
            zmq_msg_close(m);
            p->rs_got++;
        } else {
            *slot = malloc(sizeof **slot);
            if (!*slot) {
                why = "out of memory holding a contribution";
                goto out_drop;
            }
            zmq_msg_init(*slot);
            zmq_msg_move(*slot, m);
            zmq_msg_close(m);
            p->rs_got++;
        }
        break;
    }
    case KIND_AR_AG: {
        size_t pi;
        if (op->kind != OP_ALLREDUCE || (pi = s_piece_of(c, op, src, h)) == SIZE_MAX) {
            why = "not a piece of the sender's range";
            goto out_drop;
        }
        unsigned char *have = &op->ag_have[op->ag_base[src] + pi];
        if (*have) {
            why = "duplicate reduced piece";
            goto out_drop;
        }
        *have = 1;
        memcpy((float *)op->buf + h->offset, payload, (size_t)h->count * 4);
        p->ag_got++;
        zmq_msg_close(m);
        break;
    }
    case KIND_BC_DATA: {
        if (op->kind != OP_BCAST || src != op->root || c->rank == op->root ||
            h->offset >= op->total || h->offset % op->unit ||
            h->count != (op->total - h->offset < op->unit ? op->total - h->offset : op->unit)) {
            why = "not a broadcast piece from the root";
            goto out_drop;
        }
        unsigned char *have = &op->bc_have[h->offset / op->unit];
        if (*have) {
            why = "duplicate broadcast piece";
            goto out_drop;
        }
        *have = 1;
        memcpy(op->buf + h->offset, payload, h->count);
        op->bc_got++;
        zmq_msg_close(m);
        break;
    }
    case KIND_BC_ACK:
        if (op->kind != OP_BCAST || c->rank != op->root || h->offset > op->np) {
            why = "not an acknowledgement for this broadcast";
            goto out_drop;
        }
        if (h->offset > p->acked) {
            p->acked = h->offset;
            op->bc_acked_all += p->acked == op->np;
        }
        zmq_msg_close(m);
        break;
    case KIND_BC_DONE:
        if (op->kind != OP_BCAST || src != op->root || h->offset != op->np || p->got_token ||
            op->bc_got != op->np) {
            why = "not the end of this broadcast";
            goto out_drop;
        }
        p->got_token = true;
        zmq_msg_close(m);
        break;
    case KIND_BARRIER:
        if (op->kind != OP_BARRIER || h->total != 0 || p->got_token) {
            why = "not a barrier token for this barrier";
            goto out_drop;
        }
        p->got_token = true;
        zmq_msg_close(m);
        break;
    default:
        why = "unknown kind";
        goto out_drop;
    }
    p->heard++;
    return true;

out_drop:
    s_drop(c, op, h, m, why);
    return false;
}

/* Routes a parsed message by (generation, op): accept, stash or drop. Takes `m`. */
static bool s_route(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m)
{
    if (h->generation < c->generation) {
        s_drop(c, op, h, m, "older generation");
        return false;
    }
    if (h->generation > c->generation) {
        if (h->seq == 1) /* a peer already in the next generation's first op */
            s_stash_put(c->l, h, m);
        else
            s_drop(c, op, h, m, "newer generation beyond its first op");
        return false;
    }
    if (h->nranks != (uint32_t)c->nranks || (int)h->src == c->rank) {
        s_drop(c, op, h, m, "comm size or source rank does not fit this comm");
        return false;
    }
    if (h->seq < op->seq || h->seq > op->seq + 1) {
        s_drop(c, op, h, m, h->seq < op->seq ? "earlier operation" : "operation too far ahead");
        return false;
    }
    if (h->seq == op->seq + 1) {
        s_stash_put(c->l, h, m);
        return false;
    }
    return s_accept(c, op, h, m);
}

/* Receives one frame if any. Returns 1 when a frame was handled, 0 when none waits, or -1 with
 * *rc set on a socket error. *accepted tells whether it counted as progress. */
static int s_recv_one(comm_t *c, op_t *op, bool *accepted, shoal_err_t *rc)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, c->l->pull, ZMQ_DONTWAIT) < 0) {
        int e = errno;
        zmq_msg_close(&m);
        if (e == EAGAIN || e == EINTR)
            return 0;
        *rc = shoal_fail(SHOAL_ERR_IO, "comm: receive on %s: %s", c->l->endpoint, zmq_strerror(e));
        return -1;
    }
    *accepted = false;
    if (zmq_msg_more(&m)) {
        /* Our frames are single-part: swallow the rest of a multipart message. */
        while (zmq_msg_more(&m)) {
            zmq_msg_close(&m);
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, c->l->pull, ZMQ_DONTWAIT) < 0)
                break;
        }
        s_drop(c, op, NULL, &m, "multipart message");
        return 1;
    }
    wire_hdr_t h;
    const char *why = NULL;
    if (!s_hdr_parse(&m, &h, &why)) {
        s_drop(c, op, NULL, &m, why);
        return 1;
    }
    *accepted = s_route(c, op, &h, &m);
    return 1;
}

/* Builds the next message owed to peer j into p->out. Returns false when there is none now. */
static bool s_next_out(comm_t *c, op_t *op, int j, shoal_err_t *rc)
{
    peer_t *p = &c->peers[j];
    *rc = SHOAL_OK;
    switch (op->kind) {
    case OP_ALLREDUCE: {
        if (p->ag_next < op->ndone) {
            size_t pi = op->done[p->ag_next++];
            size_t off = op->own_lo + pi * op->unit;
            size_t cnt = op->own_hi - off < op->unit ? op->own_hi - off : op->unit;
            *rc = s_build(c, op, &p->out, KIND_AR_AG, off, (uint32_t)cnt, (float *)op->buf + off,
                          cnt * 4);
            return *rc == SHOAL_OK;
        }
        size_t lo = s_lo(op->total, c->nranks, j), hi = s_lo(op->total, c->nranks, j + 1);
        size_t off = lo + p->rs_next * op->unit;
        /* The owner returns each reduced piece only after it has ours: that is the credit. */
        if (off >= hi || p->rs_next - p->ag_got >= op->window)
            return false;
        size_t cnt = hi - off < op->unit ? hi - off : op->unit;
        p->rs_next++;
        *rc = s_build(c, op, &p->out, KIND_AR_RS, off, (uint32_t)cnt, (float *)op->buf + off,
                      cnt * 4);
        return *rc == SHOAL_OK;
    }
    case OP_BCAST:
        if (c->rank == op->root) {
            if (op->bc_acked_all == c->nranks - 1 && !p->sent_token) {
                p->sent_token = true;
                *rc = s_build(c, op, &p->out, KIND_BC_DONE, op->np, 0, NULL, 0);
                return *rc == SHOAL_OK;
            }
            if (p->rs_next >= op->np || p->rs_next - p->acked >= op->window)
                return false;
            size_t off = p->rs_next * op->unit;
            size_t cnt = op->total - off < op->unit ? op->total - off : op->unit;
            p->rs_next++;
            *rc = s_build(c, op, &p->out, KIND_BC_DATA, off, (uint32_t)cnt, op->buf + off, cnt);
            return *rc == SHOAL_OK;
        }
        if (j != op->root || p->ack_sent == op->bc_got)
            return false;
        p->ack_sent = op->bc_got;
        *rc = s_build(c, op, &p->out, KIND_BC_ACK, op->bc_got, 0, NULL, 0);
        return *rc == SHOAL_OK;
    case OP_BARRIER:
        if (p->sent_token)
            return false;
        p->sent_token = true;
        *rc = s_build(c, op, &p->out, KIND_BARRIER, 0, 0, NULL, 0);
        return *rc == SHOAL_OK;
    }
    return false;
}

/* Whether we still expect a message from peer j in this op. */
static bool s_waiting_on(const comm_t *c, const op_t *op, int j)
{
    const peer_t *p = &c->peers[j];
    switch (op->kind) {
    case OP_ALLREDUCE: {
        size_t lo = s_lo(op->total, c->nranks, j), hi = s_lo(op->total, c->nranks, j + 1);
        return p->ag_got < s_div_up(hi - lo, op->unit) || p->rs_got < op->own_np;
    }
    case OP_BCAST:
        if (c->rank == op->root)
            return p->acked < op->np;
        return j == op->root && !p->got_token;
    case OP_BARRIER:
        return !p->got_token;
    }
    return false;
}

static bool s_done(const comm_t *c, const op_t *op)
{
    for (int j = 0; j < c->nranks; j++) {
        if (j == c->rank)
            continue;
        const peer_t *p = &c->peers[j];
        if (p->has_out || s_waiting_on(c, op, j))
            return false;
        switch (op->kind) {
        case OP_ALLREDUCE: {
            size_t lo = s_lo(op->total, c->nranks, j), hi = s_lo(op->total, c->nranks, j + 1);
            if (p->rs_next < s_div_up(hi - lo, op->unit) || p->ag_next < op->own_np)
                return false;
            break;
        }
        case OP_BCAST:
            if (c->rank != op->root && j == op->root && p->ack_sent < op->np)
                return false;
            if (c->rank == op->root && !p->sent_token)
                return false;
            break;
        case OP_BARRIER:
            if (!p->sent_token)
                return false;
            break;
        }
    }
    return op->kind != OP_ALLREDUCE || op->ndone == op->own_np;
}

/* Appends ",j" (or "j") to a rank list. */
static void s_list_add(char *list, size_t cap, int j)
{
    size_t n = strlen(list);
    if (n < cap)
        snprintf(list + n, cap - n, "%s%d", n ? "," : "", j);
}

static shoal_err_t s_timeout(const comm_t *c, const op_t *op, uint64_t idle_ms)
{
    char silent[200] = "", waiting[200] = "", blocked[200] = "";
    for (int j = 0; j < c->nranks; j++) {
        if (j == c->rank)
            continue;
        if (c->peers[j].has_out)
            s_list_add(blocked, sizeof blocked, j);
        if (!s_waiting_on(c, op, j))
            continue;
        s_list_add(waiting, sizeof waiting, j);
        if (c->peers[j].heard == 0)
            s_list_add(silent, sizeof silent, j);
    }
    return shoal_fail(SHOAL_ERR_TIMEOUT,
                      "comm %s (generation %" PRIu64 ", step %" PRIu64 ", op %" PRIu64
                      ", rank %d/%d): no progress for %" PRIu64 " ms;%s%s%s waiting on rank(s) "
                      "%s%s%s%s%s%s",
                      op->name, c->generation, op->step, op->seq, c->rank, c->nranks, idle_ms,
                      silent[0] ? " no message from rank " : "", silent, silent[0] ? ";" : "",
                      waiting[0] ? waiting : "none", blocked[0] ? "; cannot send to rank(s) " : "",
                      blocked, op->dropped ? " (dropped messages; last: " : "",
                      op->dropped ? op->why : "", op->dropped ? ")" : "");
}

/* Drives op to completion: sends what is owed, receives and routes, waits in zmq_poll. */
static shoal_err_t s_progress(comm_t *c, op_t *op)
{
    shoal_err_t rc = SHOAL_OK;
    comm_listener_t *l = c->l;
    uint64_t last = clock_mono_ns();
    uint64_t timeout_ns = (uint64_t)c->timeout_ms * 1000000ull;

    /* Early messages of this op, kept while we were behind. */
    size_t k = 0;
    for (size_t i = 0; i < l->nstash; i++) {
        held_t *e = l->stash[i];
        if (e->h.generation == c->generation && e->h.seq <= op->seq) {
            l->stash_bytes -= zmq_msg_size(&e->msg);
            s_route(c, op, &e->h, &e->msg);
            free(e);
        } else {
            l->stash[k++] = e;
        }
    }
    l->nstash = k;

    for (;;) {
        if (atomic_load(&c->aborted))
            return shoal_fail(SHOAL_ERR_ABORTED,
                              "comm %s (generation %" PRIu64 ", step %" PRIu64 "): aborted",
                              op->name, c->generation, op->step);
        bool moved = false;
        /* Sends: one message per peer per pass so that every peer's stream starts early. */
        for (bool any = true; any;) {
            any = false;
            for (int j = 0; j < c->nranks; j++) {
                peer_t *p = &c->peers[j];
                if (j == c->rank)
                    continue;
                if (!p->has_out) {
                    if (!s_next_out(c, op, j, &rc)) {
                        if (rc != SHOAL_OK)
                            return rc;
                        continue;
                    }
                    p->has_out = true;
                }
                if (zmq_msg_send(&p->out, p->push, ZMQ_DONTWAIT) >= 0) {
                    p->has_out = false; /* zmq owns the content now; p->out is empty */
                    any = moved = true;
                } else if (errno != EAGAIN && errno != EINTR) {
                    return shoal_fail(SHOAL_ERR_IO, "comm %s: send to rank %d (%s): %s", op->name,
                                      j, p->endpoint, zmq_strerror(errno));
                }
            }
        }
        for (int n = 0; n < RECV_BATCH; n++) {
            bool accepted = false;
            int r = s_recv_one(c, op, &accepted, &rc);
            if (r < 0)
                return rc;
            if (r == 0)
                break;
            moved = true;
            if (accepted)
                last = clock_mono_ns();
        }
        if (s_done(c, op))
            return SHOAL_OK;
        uint64_t now = clock_mono_ns();
        if (now - last >= timeout_ns)
            return s_timeout(c, op, (now - last) / 1000000ull);
        if (moved)
            continue;
        int ni = 0;
        c->items[ni++] = (zmq_pollitem_t){.fd = c->wake[0], .events = ZMQ_POLLIN};
        c->items[ni++] = (zmq_pollitem_t){.socket = l->pull, .events = ZMQ_POLLIN};
        for (int j = 0; j < c->nranks; j++)
            if (c->peers[j].has_out)
                c->items[ni++] =
                    (zmq_pollitem_t){.socket = c->peers[j].push, .events = ZMQ_POLLOUT};
        long wait_ms = (long)((timeout_ns - (now - last)) / 1000000ull) + 1;
        if (zmq_poll(c->items, ni, wait_ms) < 0 && errno != EINTR)
            return shoal_fail(SHOAL_ERR_IO, "comm %s: zmq_poll: %s", op->name, zmq_strerror(errno));
        if (c->items[0].revents & ZMQ_POLLIN) {
            char drain[64];
            while (read(c->wake[0], drain, sizeof drain) > 0) {
            }
        }
    }
}

static void s_op_free(comm_t *c, op_t *op)
{
    if (op->held) {
        size_t n = op->own_np * (size_t)c->nranks;
        for (size_t i = 0; i < n; i++) {
            if (op->held[i]) {
                zmq_msg_close(op->held[i]);
                free(op->held[i]);
            }
        }
    }
    free(op->held);
    free(op->next_rank);
    free(op->scratch);
    free(op->done);
    free(op->ag_have);
    free(op->ag_base);
    free(op->bc_have);
}

/* Common entry: state checks, sequence number, per-peer reset, progress, failure bookkeeping. */
static shoal_err_t s_run(comm_t *c, op_t *op)
{
    shoal_err_t rc = SHOAL_OK;
    op->seq = ++c->seq;
    for (int j = 0; j < c->nranks; j++) {
        peer_t *p = &c->peers[j];
        p->heard = 0;
        p->rs_next = p->ag_next = p->ag_got = p->rs_got = p->acked = p->ack_sent = 0;
        p->sent_token = p->got_token = false;
    }
    rc = s_progress(c, op);
    if (rc != SHOAL_OK) {
        c->broken = rc;
        for (int j = 0; j < c->nranks; j++) {
            if (c->peers[j].has_out) {
                zmq_msg_close(&c->peers[j].out);
                c->peers[j].has_out = false;
            }
        }
        log_debug("%s", shoal_errmsg()); /* the caller reports it (err.h) */
    }
    return rc;
}

static shoal_err_t s_usable(comm_t *c, const char *what)
{
    if (!c)
        return shoal_fail(SHOAL_ERR_INVALID, "comm %s: NULL comm", what);
    if (atomic_load(&c->aborted))
        return shoal_fail(SHOAL_ERR_ABORTED, "comm %s (generation %" PRIu64 "): comm aborted", what,
                          c->generation);
    if (!c->l)
        return shoal_fail(SHOAL_ERR_STATE, "comm %s (generation %" PRIu64 "): listener destroyed",
                          what, c->generation);
    if (c->broken != SHOAL_OK)
        return shoal_fail(SHOAL_ERR_STATE,
                          "comm %s (generation %" PRIu64 "): an earlier operation failed (%s); "
                          "create a new comm",
                          what, c->generation, shoal_strerror(c->broken));
    return SHOAL_OK;
}

shoal_err_t comm_allreduce_sum_f32(comm_t *c, float *buf, size_t n, uint64_t step)
{
    shoal_err_t rc = s_usable(c, "allreduce");
    if (rc != SHOAL_OK)
        return rc;
    if (n == 0 || c->nranks == 1)
        return SHOAL_OK;
    if (!buf)
        return shoal_fail(SHOAL_ERR_INVALID, "comm allreduce: NULL buffer of %zu floats", n);
    int R = c->nranks;
    op_t op = {
        .kind = OP_ALLREDUCE,
        .name = "allreduce",
        .step = step,
        .total = n,
        .buf = (unsigned char *)buf,
        .unit = c->chunk / 4,
        .window = s_window(c),
    };
    op.own_lo = s_lo(n, R, c->rank);
    op.own_hi = s_lo(n, R, c->rank + 1);
    op.own_np = s_div_up(op.own_hi - op.own_lo, op.unit);
    op.ag_base = calloc((size_t)R + 1, sizeof *op.ag_base);
    if (!op.ag_base) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "comm allreduce: out of memory");
        goto out;
    }
    for (int j = 0; j < R; j++)
        op.ag_base[j + 1] = op.ag_base[j] + s_div_up(s_lo(n, R, j + 1) - s_lo(n, R, j), op.unit);
    op.ag_have = calloc(op.ag_base[R] + 1, 1);
    op.next_rank = calloc(op.own_np + 1, sizeof *op.next_rank);
    op.held = calloc(op.own_np * (size_t)R + 1, sizeof *op.held);
    op.done = calloc(op.own_np + 1, sizeof *op.done);
    if (c->rank > 0 && op.own_np) {
        op.scratch = malloc((op.own_hi - op.own_lo) * 4);
        if (op.scratch)
            memcpy(op.scratch, buf + op.own_lo, (op.own_hi - op.own_lo) * 4);
    }
    if (!op.ag_have || !op.next_rank || !op.held || !op.done ||
        (c->rank > 0 && op.own_np && !op.scratch)) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "comm allreduce: out of memory for %zu floats", n);
        goto out;
    }
    /* Rank 0 folds its own contribution at once; the others wait for rank 0's first. */
    for (size_t pi = 0; pi < op.own_np; pi++)
        s_fold_ready(c, &op, pi);
    rc = s_run(c, &op);
out:
    s_op_free(c, &op);
    return rc;
}

shoal_err_t comm_broadcast(comm_t *c, void *buf, size_t bytes, int root, uint64_t step)
{
    shoal_err_t rc = s_usable(c, "broadcast");
    if (rc != SHOAL_OK)
        return rc;
    if (root < 0 || root >= c->nranks)
        return shoal_fail(SHOAL_ERR_INVALID, "comm broadcast: root %d outside 0..%d", root,
                          c->nranks - 1);
    if (bytes == 0 || c->nranks == 1)
        return SHOAL_OK;
    if (!buf)
        return shoal_fail(SHOAL_ERR_INVALID, "comm broadcast: NULL buffer of %zu bytes", bytes);
    op_t op = {
        .kind = OP_BCAST,
        .name = "broadcast",
        .step = step,
        .total = bytes,
        .root = root,
        .buf = buf,
        .unit = c->chunk,
    };
    op.np = s_div_up(bytes, op.unit);
    op.window = s_window(c);
    op.bc_have = calloc(op.np, 1);
    if (!op.bc_have) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "comm broadcast: out of memory for %zu bytes", bytes);
        goto out;
    }
    rc = s_run(c, &op);
out:
    s_op_free(c, &op);
    return rc;
}

shoal_err_t comm_barrier(comm_t *c, uint64_t step)
{
    shoal_err_t rc = s_usable(c, "barrier");
    if (rc != SHOAL_OK || c->nranks == 1)
        return rc;
    op_t op = {.kind = OP_BARRIER, .name = "barrier", .step = step, .unit = 1};
    return s_run(c, &op);
}
