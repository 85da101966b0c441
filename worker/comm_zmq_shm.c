/* comm_zmq_shm.c: the same-host shared-memory path of the ZeroMQ comm backend: all-reduce,
 * reduce-scatter, all-gather and broadcast of at least COMM_SHM_MIN_BYTES when every peer of the
 * comm is on this host. The data goes through POSIX shared memory (comm_shm.c); the engine
 * (comm_zmq_engine.c) still carries small payload-less frames that say what is ready, so tags,
 * timeouts naming the silent rank, abort and frame checks are those of the socket path.
 *
 * Every rank writes only its own segment and reads its peers'. Reduction of n floats over R
 * ranks, with the owner ranges and pieces of the socket path (comm_chunk_range, chunk_bytes):
 *   - rank r copies each piece of owner j's range into its segment's ring for j and tells j
 *     (SHM_IN), at most a window of pieces ahead of j's SHM_OUT for them;
 *   - owner j, once every peer's SHM_IN of a piece is in, folds it in rank order
 *     ((x_0 + x_1) + x_2) + ... reading the peers' rings and its own buffer, writes the result
 *     into its buffer (and, for all-reduce, its segment's result ring), and tells every rank
 *     (SHM_OUT);
 *   - all-reduce: a rank copies each SHM_OUT piece from the owner's result ring into its buffer,
 *     and once it has all of owner j's pieces tells j (SHM_ACK).
 * The rings are small (SHM_WINDOW_BYTES per owner), so a piece is read from the shared cache
 * while it is still there and the segment's lines are rewritten in cache instead of being written
 * back: 64 MiB over 2 ranks took 27 ms with segments as large as the buffer, 18 ms with rings.
 * All-gather: each owner copies its pieces into one ring of its segment (SHM_COPY_WINDOW_BYTES)
 * and sends SHM_OUT; the others copy them out and acknowledge how many they have (SHM_ACK), which
 * frees the slots. Broadcast: the root is the owner of everything, and once every rank has
 * acknowledged all it sends SHM_DONE, which receivers wait for, as over sockets. Rings made the
 * 64 MiB broadcast 6.2 ms instead of 10-11 ms with a segment as large as the op.
 * Why this is safe without locks: a rank writes a region of its segment only once every reader of
 * what was there said it is done (s_in_off has the ring rules; across ops: it completes an op only
 * after SHM_OUT for the contributions the owners read and SHM_ACK for the pieces the peers copied
 * out); it reads a peer's region only after the peer's frame of this op said it is written. A
 * rank completes only with a frame from every rank, or from an owner that has one from every
 * rank, so no op completes before every rank entered it (the routing relies on it). A segment's
 * name is removed at the end of the first op that wrote it: by then every peer has mapped it.
 * Segments grow (shm_bytes) at the same ops on every rank (the rule depends on op sizes only), so
 * no frame needs to carry a segment's name or size. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_zmq_int.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Contribution bytes copied in per owner ahead of its SHM_OUT, and the size of each ring: enough
 * to keep both sides busy, small enough to stay in cache (2-rank 64 MiB all-reduce on the 2-core
 * build machine: 18 ms with 1-2 MiB, 27 ms with 8 MiB). */
#define SHM_WINDOW_BYTES ((size_t)2 << 20)
/* The same for all-gather and broadcast: pieces copied in ahead of the slowest peer's SHM_ACK
 * (64 MiB broadcast, 2 ranks: 6.2 ms with 8 MiB, 7.0-8.5 ms with 2 MiB). */
#define SHM_COPY_WINDOW_BYTES ((size_t)8 << 20)
/* Segment sizes are multiples of this, so that ops of nearby sizes share one segment. */
#define SHM_ROUND_BYTES ((size_t)1 << 20)
/* Floats added per block of the fold (a stack buffer: the compiler vectorises it freely). */
#define FOLD_BLOCK 512

static size_t s_min(size_t a, size_t b)
{
    return a < b ? a : b;
}

bool comm_zmq_shm_fits(const comm_t *c, size_t bytes, size_t esz)
{
    /* Every owner range non-empty: no rank is left without a frame from every owner. */
    return c->shm && bytes >= COMM_SHM_MIN_BYTES && bytes / esz >= (size_t)c->nranks;
}

void comm_zmq_shm_fini(comm_t *c)
{
    comm_shm_close(&c->seg);
    for (int j = 0; c->peers && j < c->nranks; j++)
        comm_shm_close(&c->peers[j].seg);
}

/* [lo, hi) of the elements owned by rank j: its reduction range; broadcast: all for the root. */
static void s_range(const comm_t *c, const op_t *op, int j, size_t *lo, size_t *hi)
{
    if (op->esz == 1) {
        *lo = 0;
        *hi = j == op->root ? op->total : 0;
        return;
    }
    comm_chunk_range(op->total, c->nranks, j, lo, hi);
}

static size_t s_pieces(const comm_t *c, const op_t *op, int j)
{
    size_t lo, hi;
    s_range(c, op, j, &lo, &hi);
    return comm_zmq_div_up(hi - lo, op->unit);
}

/* Piece index of [offset, offset+count) in owner j's range, or SIZE_MAX if it is not one. */
static size_t s_piece_of(const comm_t *c, const op_t *op, int j, const wire_hdr_t *h)
{
    size_t lo, hi;
    s_range(c, op, j, &lo, &hi);
    if (h->offset < lo || h->offset >= hi || (h->offset - lo) % op->unit ||
        h->count != s_min(hi - h->offset, op->unit))
        return SIZE_MAX;
    return (h->offset - lo) / op->unit;
}

/* Reductions keep segments small enough to stay in the shared cache: rank r's segment holds one
 * ring of `window` slots per owner j (r's contributions to j's pieces, piece k in slot k mod
 * window) and one ring of r's own results. A contribution slot is rewritten only once the owner's
 * SHM_OUT said it folded the piece there (the window); a result slot only when every peer's
 * SHM_IN of piece k came in, which each peer sends only after it copied out piece k - window
 * (its copy-out happens on receipt, and its window covers our SHM_OUTs too). All-gather and
 * broadcast have the result ring only; its slot of piece k is rewritten once every peer has
 * acknowledged piece k - window (s_slot_free). Offsets in elements. */
static size_t s_in_off(const comm_t *c, const op_t *op, int owner, size_t k)
{
    (void)c;
    return ((size_t)owner * op->window + k % op->window) * op->slot;
}

static size_t s_res_off(const comm_t *c, const op_t *op, size_t k)
{
    return s_in_off(c, op, op->rs ? c->nranks : 0, k);
}

/* All-gather, broadcast: whether our result slot of piece k is free, i.e. every peer has
 * acknowledged copying out piece k - window. */
static bool s_slot_free(const comm_t *c, const op_t *op, size_t k)
{
    for (int j = 0; j < c->nranks && k >= op->window; j++)
        if (j != c->rank && c->peers[j].acked + op->window <= k)
            return false;
    return true;
}

static void s_seg_name(const comm_t *c, const char *id, char *out, size_t cap)
{
    snprintf(out, cap, "/%s-%" PRIu64 "-%" PRIu32 "-%u", id, c->generation, c->group, c->shm_k);
}

/* Our segment of the current size, created on first use; NULL with *rc set on failure. */
static unsigned char *s_mine(comm_t *c, shoal_err_t *rc)
{
    if (c->seg.base && c->seg_k == c->shm_k)
        return c->seg.base;
    comm_shm_close(&c->seg);
    char name[COMM_SHM_NAME_MAX];
    s_seg_name(c, c->shm_id, name, sizeof name);
    if ((*rc = comm_shm_create(&c->seg, name, c->shm_bytes)) != SHOAL_OK)
        return NULL;
    c->seg_k = c->shm_k;
    return c->seg.base;
}

/* Peer j's segment of the current size, mapped on first use (j's frame of this op says it
 * exists); NULL with op->fatal set on failure. */
static const unsigned char *s_peer(comm_t *c, op_t *op, int j)
{
    peer_t *p = &c->peers[j];
    if (p->seg.base && p->seg_k == c->shm_k)
        return p->seg.base;
    comm_shm_close(&p->seg);
    char id[sizeof c->shm_id], name[COMM_SHM_NAME_MAX];
    if (!comm_zmq_shm_id(p->conn->target, id, sizeof id)) {
        op->fatal = shoal_fail(SHOAL_ERR_STATE, "comm %s: rank %d is not on this host", op->name,
                               j);
        return NULL;
    }
    s_seg_name(c, id, name, sizeof name);
    shoal_err_t rc = comm_shm_open(&p->seg, name, c->shm_bytes, p->seg_nonce);
    if (rc != SHOAL_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", shoal_errmsg());
        op->fatal = shoal_fail(rc,
                               "comm %s (generation %" PRIu64 ", group %" PRIu32 ", step %" PRIu64
                               "): segment of rank %d: %s",
                               op->name, c->generation, c->group, op->step, j, why);
        return NULL;
    }
    p->seg_k = c->shm_k;
    return p->seg.base;
}

/* Copies into the caller's buffer, which nobody reads before the op ends: streaming stores skip
 * reading each destination line first (glibc's memcpy does the same only for copies larger than
 * the shared cache, and a piece is smaller), a third of the memory traffic of the copy. */
static void s_copy_out(void *dst, const void *src, size_t bytes)
{
#ifdef __SSE2__
    unsigned char *d = dst;
    const unsigned char *s = src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    if (bytes < 256 || head > bytes) {
        memcpy(d, s, bytes);
        return;
    }
    memcpy(d, s, head);
    d += head;
    s += head;
    bytes -= head;
    size_t n = bytes / 64;
    for (size_t i = 0; i < n; i++, d += 64, s += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s), b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 32)), f = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), e);
        _mm_stream_si128((__m128i *)(d + 48), f);
    }
    memcpy(d, s, bytes % 64);
#else
    memcpy(dst, src, bytes);
#endif
}

/* out[i] (streamed, when out) and keep[i] (cached for a reader soon, when keep) = a[i] + b[i]
 * (floats, or with WIRE_FLAG_I64 int64 sums or, with WIRE_FLAG_MAX, maxima). Any of them may
 * be the same array (same index only), hence the block buffer, not restrict. */
static void s_add2(const op_t *op, unsigned char *out, unsigned char *keep,
                   const unsigned char *a, const unsigned char *b, size_t n)
{
    union {
        float f[FOLD_BLOCK];
        int64_t i[FOLD_BLOCK];
    } t;
    const size_t esz = op->esz;
    const bool i64 = op->wire_flags & WIRE_FLAG_I64, max = op->wire_flags & WIRE_FLAG_MAX;
    for (size_t i = 0; i < n; i += FOLD_BLOCK) {
        size_t m = s_min(n - i, FOLD_BLOCK);
        if (!i64) {
            const float *x = (const float *)a + i, *y = (const float *)b + i;
            for (size_t k = 0; k < m; k++)
                t.f[k] = x[k] + y[k];
        } else {
            const int64_t *x = (const int64_t *)a + i, *y = (const int64_t *)b + i;
            for (size_t k = 0; k < m; k++)
                t.i[k] = max ? (x[k] > y[k] ? x[k] : y[k])
                             : (int64_t)((uint64_t)x[k] + (uint64_t)y[k]);
        }
        if (out)
            s_copy_out(out + i * esz, &t, m * esz);
        if (keep)
            memcpy(keep + i * esz, &t, m * esz);
    }
}

/* Folds owned piece pi in rank order from the peers' segments and our buffer: partial sums in our
 * segment's copy of the piece, the last one into our buffer (and the segment, for all-reduce). */
static void s_fold(comm_t *c, op_t *op, size_t pi)
{
    shoal_err_t rc = SHOAL_OK;
    size_t off = op->own_lo + pi * op->unit, cnt = s_min(op->own_hi - off, op->unit);
    unsigned char *own = op->buf + off * op->esz;
    unsigned char *mine = s_mine(c, &rc);
    if (!mine) {
        op->fatal = rc;
        return;
    }
    unsigned char *acc = mine + s_res_off(c, op, pi) * op->esz;
    const unsigned char *prev = NULL;
    for (int r = 0; r < c->nranks; r++) {
        const unsigned char *x = own;
        if (r != c->rank) {
            const unsigned char *seg = s_peer(c, op, r);
            if (!seg)
                return;
            x = seg + s_in_off(c, op, c->rank, pi) * op->esz;
        }
        if (r == 0) {
            prev = x;
            continue;
        }
        bool last = r == c->nranks - 1;
        if (!last)
            s_add2(op, NULL, acc, prev, x, cnt);
        else
            s_add2(op, own, op->ag ? acc : NULL, prev, x, cnt);
        prev = acc;
    }
}

/* Copies our next own piece into our segment (all-gather, broadcast root). */
static bool s_copy_own(comm_t *c, op_t *op, shoal_err_t *rc)
{
    unsigned char *mine = s_mine(c, rc);
    if (!mine)
        return false;
    size_t pi = op->ndone, off = op->own_lo + pi * op->unit;
    size_t cnt = s_min(op->own_hi - off, op->unit);
    memcpy(mine + s_res_off(c, op, pi) * op->esz, op->buf + off * op->esz, cnt * op->esz);
    op->done[op->ndone++] = pi;
    return true;
}

static bool s_next_out(comm_t *c, op_t *op, int j, shoal_err_t *rc)
{
    peer_t *p = &c->peers[j];
    size_t npj = s_pieces(c, op, j);
    *rc = SHOAL_OK;
    frame_t f = {.seq = op->seq, .total = op->total};
    if (!op->rs && p->ag_next == op->ndone && op->ndone < op->own_np &&
        s_slot_free(c, op, op->ndone) && !s_copy_own(c, op, rc))
        return false;
    if (p->ag_next < op->ndone) {
        size_t off = op->own_lo + op->done[p->ag_next++] * op->unit;
        f.kind = KIND_SHM_OUT;
        f.offset = off;
        f.count = (uint32_t)s_min(op->own_hi - off, op->unit);
    } else if (op->rs && p->rs_next < npj && p->rs_next - p->ag_got < op->window) {
        unsigned char *mine = s_mine(c, rc);
        if (!mine)
            return false;
        size_t lo, hi, k = p->rs_next++;
        s_range(c, op, j, &lo, &hi);
        size_t off = lo + k * op->unit, cnt = s_min(hi - off, op->unit);
        memcpy(mine + s_in_off(c, op, j, k) * op->esz, op->buf + off * op->esz, cnt * op->esz);
        f.kind = KIND_SHM_IN;
        f.offset = off;
        f.count = (uint32_t)cnt;
    } else if (op->ag && p->ack_sent < p->ag_got && (!op->rs || p->ag_got == npj)) {
        /* Pieces copied out so far: all-gather and broadcast free their slots with it; an
         * all-reduce needs only the last (its SHM_IN frames free the result slots). */
        p->ack_sent = p->ag_got;
        f.kind = KIND_SHM_ACK;
        f.offset = p->ack_sent;
    } else if (op->esz == 1 && c->rank == op->root && op->bc_acked_all == c->nranks - 1 &&
               !p->sent_token) {
        p->sent_token = true;
        f.kind = KIND_SHM_DONE;
    } else {
        return false;
    }
    /* Where a frame points into our segment, it names the segment by its nonce: the peer maps
     * only the segment we made, which the CURVE connection vouches for. */
    if (f.kind == KIND_SHM_IN || f.kind == KIND_SHM_OUT) {
        f.payload = c->seg.nonce;
        f.bytes = sizeof c->seg.nonce;
    }
    /* Our copies happen before the frame that announces them (zmq's queues order them too). */
    atomic_thread_fence(memory_order_release);
    *rc = comm_zmq_build(c, op, &f, &p->out);
    return *rc == SHOAL_OK;
}

static bool s_accept(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m, const char **why)
{
    int src = (int)h->src, R = c->nranks;
    peer_t *p = &c->peers[src];
    size_t pi;
    if (h->total != op->total || h->root != (uint32_t)op->root) {
        *why = "size or root differs from this operation's";
        return false;
    }
    if ((h->kind == KIND_SHM_IN || h->kind == KIND_SHM_OUT) && h->flags != op->wire_flags) {
        *why = "element type or fold differs from this operation's";
        return false;
    }
    atomic_thread_fence(memory_order_acquire);
    if (h->kind == KIND_SHM_IN || h->kind == KIND_SHM_OUT)
        memcpy(p->seg_nonce, (const unsigned char *)zmq_msg_data(m) + HDR_SIZE,
               sizeof p->seg_nonce);
    switch (h->kind) {
    case KIND_SHM_IN: {
        if (!op->rs || (pi = s_piece_of(c, op, c->rank, h)) == SIZE_MAX) {
            *why = "not a piece of this rank's range";
            return false;
        }
        unsigned char *have = &op->in_have[pi * (size_t)R + (size_t)src];
        if (*have) {
            *why = "duplicate contribution";
            return false;
        }
        *have = 1;
        p->rs_got++;
        if (++op->next_rank[pi] == R - 1) {
            s_fold(c, op, pi);
            op->done[op->ndone++] = pi;
        }
        break;
    }
    case KIND_SHM_OUT: {
        if ((pi = s_piece_of(c, op, src, h)) == SIZE_MAX) {
            *why = "not a piece of the sender's range";
            return false;
        }
        unsigned char *have = &op->ag_have[op->ag_base[src] + pi];
        if (*have) {
            *why = "duplicate piece";
            return false;
        }
        if (op->ag) {
            const unsigned char *seg = s_peer(c, op, src);
            if (!seg) {
                *why = "sender's segment cannot be mapped";
                return false;
            }
            size_t from = s_res_off(c, op, pi);
            s_copy_out(op->buf + h->offset * op->esz, seg + from * op->esz,
                       (size_t)h->count * op->esz);
        }
        *have = 1;
        p->ag_got++;
        break;
    }
    case KIND_SHM_DONE:
        if (op->esz != 1 || src != op->root || p->got_token || p->ag_got != s_pieces(c, op, src)) {
            *why = "not the end of this broadcast";
            return false;
        }
        p->got_token = true;
        break;
    case KIND_SHM_ACK:
        if (!op->ag || h->offset <= p->acked || h->offset > p->ag_next ||
            (op->rs && h->offset != op->own_np)) {
            *why = "not an acknowledgement for this operation";
            return false;
        }
        p->acked = h->offset;
        op->bc_acked_all += p->acked == op->own_np;
        break;
    default:
        return comm_zmq_reject(c, op, h, why, "not a message of a shared-memory operation");
    }
    zmq_msg_close(m);
    return true;
}

static bool s_sent_all(const comm_t *c, const op_t *op, int j)
{
    const peer_t *p = &c->peers[j];
    size_t npj = s_pieces(c, op, j);
    if ((op->rs && p->rs_next < npj) || p->ag_next < op->own_np)
        return false;
    if (op->ag && p->ack_sent < npj)
        return false;
    return op->esz != 1 || c->rank != op->root || p->sent_token;
}

static bool s_waiting_on(const comm_t *c, const op_t *op, int j)
{
    const peer_t *p = &c->peers[j];
    if (op->rs && p->rs_got < op->own_np)
        return true;
    if (p->ag_got < s_pieces(c, op, j))
        return true;
    if (op->ag && p->acked < op->own_np)
        return true;
    return op->esz == 1 && j == op->root && !p->got_token;
}

static bool s_finished(const comm_t *c, const op_t *op)
{
    (void)c;
    return op->ndone == op->own_np;
}

static const op_vt_t s_shm_vt = {s_next_out, s_accept, s_waiting_on, s_sent_all, s_finished};

bool comm_zmq_reject(comm_t *c, op_t *op, const wire_hdr_t *h, const char **why,
                     const char *otherwise)
{
    bool shm_kind = h->kind >= KIND_SHM_IN && h->kind <= KIND_SHM_DONE;
    bool data_kind = h->kind != KIND_BARRIER && h->kind != KIND_P2P && h->kind != KIND_A2A;
    *why = otherwise;
    if (!data_kind || shm_kind == (op->esz != 0))
        return false;
    op->fatal = shoal_fail(SHOAL_ERR_INVALID,
                           "comm %s (generation %" PRIu64 ", group %" PRIu32 ", step %" PRIu64
                           "): rank %" PRIu32 " moves data over %s, rank %d over %s (shared memory "
                           "must be on or off on every rank: no_shm, SHOAL_COMM_NO_SHM)",
                           op->name, c->generation, c->group, op->step, h->src,
                           shm_kind ? "shared memory" : "sockets", c->rank,
                           shm_kind ? "sockets" : "shared memory");
    *why = "the other data path";
    return false;
}

/* Runs a prepared shm op: grows the segment size rule, allocates the bookkeeping, runs. */
static shoal_err_t s_run(comm_t *c, op_t *op)
{
    shoal_err_t rc = SHOAL_OK;
    int R = c->nranks;
    /* The rings (s_in_off): R + 1 of `window` slots for a reduction, one for all-gather and
     * broadcast; each slot a piece, or the largest range when that is smaller. */
    size_t range = op->esz == 1 ? op->total : comm_zmq_div_up(op->total, (size_t)R);
    size_t ahead = op->rs ? SHM_WINDOW_BYTES : SHM_COPY_WINDOW_BYTES;
    op->slot = s_min(op->unit, range);
    op->window = s_min(comm_zmq_div_up(ahead, c->chunk), comm_zmq_div_up(range, op->unit));
    size_t need = (op->rs ? (size_t)R + 1 : 1) * op->window * op->slot * op->esz;
    if (need > c->shm_bytes) {
        c->shm_k++;
        c->shm_bytes = comm_zmq_div_up(need, SHM_ROUND_BYTES) * SHM_ROUND_BYTES;
    }
    s_range(c, op, c->rank, &op->own_lo, &op->own_hi);
    op->own_np = s_pieces(c, op, c->rank);
    op->ag_base = calloc((size_t)R + 1, sizeof *op->ag_base);
    if (!op->ag_base) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "comm %s: out of memory", op->name);
        goto out;
    }
    for (int j = 0; j < R; j++)
        op->ag_base[j + 1] = op->ag_base[j] + s_pieces(c, op, j);
    op->ag_have = calloc(op->ag_base[R] + 1, 1);
    op->next_rank = calloc(op->own_np + 1, sizeof *op->next_rank);
    op->in_have = calloc(op->rs ? op->own_np * (size_t)R + 1 : 1, 1);
    op->done = calloc(op->own_np + 1, sizeof *op->done);
    if (!op->ag_have || !op->next_rank || !op->in_have || !op->done) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "comm %s: out of memory for %" PRIu64 " elements",
                        op->name, op->total);
        goto out;
    }
    rc = comm_zmq_run(c, op);
#ifdef __SSE2__
    _mm_sfence(); /* the streamed stores into the caller's buffer (s_copy_out) */
#endif
    if (rc == SHOAL_OK)
        comm_shm_unlink(&c->seg); /* every peer has mapped it by now */
out:
    free(op->ag_base);
    free(op->ag_have);
    free(op->next_rank);
    free(op->in_have);
    free(op->done);
    return rc;
}

shoal_err_t comm_zmq_shm_reduction(comm_t *c, void *buf, size_t n, uint64_t step,
                                   const char *name, bool rs, bool ag, uint16_t wire_flags)
{
    const size_t esz = (wire_flags & WIRE_FLAG_I64) ? 8 : 4;
    op_t op = {
        .vt = &s_shm_vt,
        .name = name,
        .step = step,
        .total = n,
        .buf = (unsigned char *)buf,
        .unit = c->chunk / esz,
        .esz = esz,
        .wire_flags = wire_flags,
        .rs = rs,
        .ag = ag,
    };
    return s_run(c, &op);
}

shoal_err_t comm_zmq_shm_broadcast(comm_t *c, void *buf, size_t bytes, int root, uint64_t step)
{
    op_t op = {
        .vt = &s_shm_vt,
        .name = "broadcast",
        .step = step,
        .total = bytes,
        .root = root,
        .buf = buf,
        .unit = c->chunk,
        .esz = 1,
        .ag = true,
    };
    return s_run(c, &op);
}
