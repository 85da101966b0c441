/* comm_zmq_coll.c: the collectives of the ZeroMQ comm backend: all-reduce, reduce-scatter and
 * all-gather (one reduction op with two phases), broadcast and barrier.
 *
 * Reduction of n floats (or int64: sum, maximum) over R ranks (direct reduce-scatter + all-gather, pipelined by chunks):
 *   - rank j owns [lo_j, hi_j) (comm_chunk_range); each owned range is cut into pieces of
 *     chunk_bytes/4 floats;
 *   - RS phase: every rank sends each piece of owner j's range to j (AR_RS); the owner folds the
 *     contributions of a piece strictly in rank order 0, 1, ..., R-1 (out-of-order arrivals wait
 *     in their zmq message), straight from the received frame;
 *   - AG phase: the owner sends every finished piece to every other rank (AR_AG), which copies it
 *     in. Bytes sent per rank: 2 (R-1)/R of the buffer, like a ring, in R-1 parallel streams.
 * All-reduce runs both phases, and the returned reduced piece is the credit of the contribution
 * window. Reduce-scatter alone ends with an RS_ACK from each owner to each contributor, sent once
 * the owner has folded every rank's contributions; an all-gather owner of an empty range sends one
 * empty piece. So a rank completes an op only with a message from every rank, or from an owner
 * that has one from every rank (ranks with empty ranges never talk to each other): no op
 * completes before every rank has entered it, the routing relies on it.
 * Broadcast: the root sends pieces to every rank (at most a window of unacknowledged pieces per
 * peer); receivers acknowledge cumulatively (BC_ACK), so the root too learns of a dead receiver;
 * once every rank has acknowledged everything the root tells them so (BC_DONE), and only then do
 * receivers complete.
 * Barrier: one empty message from every rank to every other. */
#include <stdlib.h>
#include <string.h>

#include "comm_zmq_int.h"

/* Unconfirmed bytes in flight to one peer (broadcast pieces not yet acknowledged, all-reduce
 * contributions whose reduced piece has not come back): bounds the queues on a slow link. */
#define WINDOW_BYTES ((size_t)64 << 20)
#define WINDOW_PIECES_MAX 256

/* Pieces in flight per peer: WINDOW_BYTES, and at most WINDOW_PIECES_MAX small ones. */
static size_t s_window(const comm_t *c)
{
    size_t w = WINDOW_BYTES / c->chunk;
    return w > WINDOW_PIECES_MAX ? WINDOW_PIECES_MAX : w;
}

static size_t s_lo(size_t n, int nranks, int j)
{
    size_t lo, hi;
    comm_chunk_range(n, nranks, j, &lo, &hi);
    return lo;
}

static size_t s_min(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* ---------------------------------------------------------------------------------------------
 * Reduction: all-reduce, reduce-scatter, all-gather. */

/* Pieces of owner j's range. */
static size_t s_pieces(const comm_t *c, const op_t *op, int j)
{
    size_t lo = s_lo(op->total, c->nranks, j), hi = s_lo(op->total, c->nranks, j + 1);
    return comm_zmq_div_up(hi - lo, op->unit);
}

/* AG messages owed by owner j: its pieces, or one empty piece for an empty range (all-gather). */
static size_t s_ag_msgs(const comm_t *c, const op_t *op, int j)
{
    size_t np = s_pieces(c, op, j);
    return np == 0 && !op->rs ? 1 : np;
}

/* Bytes per element of a reduction's buffer. */
static size_t s_esz(const op_t *op)
{
    return (op->wire_flags & WIRE_FLAG_I64) ? 8 : 4;
}

/* Folds `src` (raw little-endian elements, no alignment promise) into acc: float sum, int64 sum
 * (wrapping, as two's complement adds do: the caller keeps sums in range) or int64 maximum. */
static void s_add(const op_t *op, unsigned char *acc_bytes, const unsigned char *restrict src,
                  size_t cnt)
{
    if (!(op->wire_flags & WIRE_FLAG_I64)) {
        float *restrict acc = (float *)acc_bytes;
        for (size_t i = 0; i < cnt; i++) {
            float v;
            memcpy(&v, src + 4 * i, 4);
            acc[i] += v;
        }
        return;
    }
    int64_t *restrict acc = (int64_t *)acc_bytes;
    const bool max = op->wire_flags & WIRE_FLAG_MAX;
    for (size_t i = 0; i < cnt; i++) {
        int64_t v;
        memcpy(&v, src + 8 * i, 8);
        if (max)
            acc[i] = v > acc[i] ? v : acc[i];
        else
            acc[i] = (int64_t)((uint64_t)acc[i] + (uint64_t)v);
    }
}

/* Folds the contribution of rank r (raw elements) into owned piece p. */
static void s_fold(const comm_t *c, op_t *op, size_t p, int r, const unsigned char *src)
{
    const size_t esz = s_esz(op);
    size_t off = op->own_lo + p * op->unit;
    size_t cnt = s_min(op->own_hi - off, op->unit);
    unsigned char *acc = op->buf + off * esz;
    if (r == c->rank) {
        /* Rank 0's and rank 1's own data is already in buf (see below); rank >= 2 kept a copy. */
        if (op->scratch)
            s_add(op, acc, op->scratch + p * op->unit * esz, cnt);
    } else if (r == 0 && c->rank == 1) {
        /* acc holds x_1: x_1 + x_0 has the same bits as x_0 + x_1 (IEEE addition commutes, as
         * do integer sums and maxima), so rank 1 needs neither a copy of its own data nor a
         * copy of rank 0's. */
        s_add(op, acc, src, cnt);
    } else if (r == 0) {
        memcpy(acc, src, cnt * esz);
    } else {
        s_add(op, acc, src, cnt);
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
            s_fold(c, op, p, r, NULL);
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
    if (lo == hi) /* the empty piece of an empty range (all-gather) */
        return h->offset == lo && h->count == 0 && !op->rs ? 0 : SIZE_MAX;
    if (h->offset < lo || h->offset >= hi || (h->offset - lo) % op->unit)
        return SIZE_MAX;
    if (h->count != s_min(hi - h->offset, op->unit))
        return SIZE_MAX;
    return (h->offset - lo) / op->unit;
}

static bool s_red_next_out(comm_t *c, op_t *op, int j, shoal_err_t *rc)
{
    peer_t *p = &c->peers[j];
    *rc = SHOAL_OK;
    frame_t f = {.seq = op->seq, .total = op->total};
    if (op->ag && p->ag_next < op->ndone) {
        size_t pi = op->done[p->ag_next++];
        size_t off = op->own_lo + pi * op->unit, cnt = s_min(op->own_hi - off, op->unit);
        f = (frame_t){KIND_AR_AG, op->seq, op->total, off, (uint32_t)cnt,
                      op->buf + off * s_esz(op), cnt * s_esz(op)};
    } else if (op->ag && !op->rs && op->own_np == 0 && !p->sent_token) {
        p->sent_token = true;
        f.kind = KIND_AR_AG;
        f.offset = op->own_lo;
    } else if (op->rs && p->rs_next < s_pieces(c, op, j) &&
               (!op->ag || p->rs_next - p->ag_got < op->window)) {
        /* All-reduce: the owner returns each reduced piece only after it has ours (the credit). */
        size_t lo = s_lo(op->total, c->nranks, j), hi = s_lo(op->total, c->nranks, j + 1);
        size_t off = lo + p->rs_next++ * op->unit, cnt = s_min(hi - off, op->unit);
        f = (frame_t){KIND_AR_RS, op->seq, op->total, off, (uint32_t)cnt,
                      op->buf + off * s_esz(op), cnt * s_esz(op)};
    } else if (op->rs && !op->ag && op->own_np > 0 && op->ndone == op->own_np && !p->sent_token) {
        /* Only once every rank's contributions are in, not just j's: else j could finish before
         * another rank entered this op and reach it two ops ahead, where routing drops frames. */
        p->sent_token = true;
        f.kind = KIND_RS_ACK;
    } else {
        return false;
    }
    *rc = comm_zmq_build(c, op, &f, &p->out);
    return *rc == SHOAL_OK;
}

static bool s_red_accept(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m,
                         const char **why)
{
    int src = (int)h->src;
    peer_t *p = &c->peers[src];
    const unsigned char *payload = (const unsigned char *)zmq_msg_data(m) + HDR_SIZE;
    size_t pi;
    if (h->total != op->total || h->root != 0) {
        *why = "size differs from this operation's";
        return false;
    }
    if (h->flags != op->wire_flags) {
        *why = "element type or fold differs from this operation's";
        return false;
    }
    switch (h->kind) {
    case KIND_AR_RS: {
        if (!op->rs || (pi = s_piece_of(c, op, c->rank, h)) == SIZE_MAX) {
            *why = "not a piece of this rank's range";
            return false;
        }
        zmq_msg_t **slot = &op->held[pi * (size_t)c->nranks + (size_t)src];
        if (op->next_rank[pi] > src || *slot) {
            *why = "duplicate contribution";
            return false;
        }
        if (op->next_rank[pi] == src) {
            s_fold(c, op, pi, src, payload);
            op->next_rank[pi]++;
            s_fold_ready(c, op, pi);
            zmq_msg_close(m);
        } else {
            *slot = malloc(sizeof **slot);
            if (!*slot) {
                *why = "out of memory holding a contribution";
                return false;
            }
            zmq_msg_init(*slot);
            zmq_msg_move(*slot, m);
            zmq_msg_close(m);
        }
        p->rs_got++;
        return true;
    }
    case KIND_AR_AG: {
        if (!op->ag || (pi = s_piece_of(c, op, src, h)) == SIZE_MAX) {
            *why = "not a piece of the sender's range";
            return false;
        }
        unsigned char *have = &op->ag_have[op->ag_base[src] + pi];
        if (*have) {
            *why = "duplicate reduced piece";
            return false;
        }
        *have = 1;
        memcpy(op->buf + h->offset * s_esz(op), payload, (size_t)h->count * s_esz(op));
        p->ag_got++;
        zmq_msg_close(m);
        return true;
    }
    case KIND_RS_ACK:
        if (!op->rs || op->ag || s_pieces(c, op, src) == 0 || p->got_token) {
            *why = "not an acknowledgement for this reduce-scatter";
            return false;
        }
        p->got_token = true;
        zmq_msg_close(m);
        return true;
    default:
        return comm_zmq_reject(c, op, h, why, "not a message of a reduction");
    }
}

static bool s_red_waiting_on(const comm_t *c, const op_t *op, int j)
{
    const peer_t *p = &c->peers[j];
    if (op->rs && p->rs_got < op->own_np)
        return true;
    if (op->ag)
        return p->ag_got < s_ag_msgs(c, op, j);
    return s_pieces(c, op, j) > 0 && !p->got_token; /* reduce-scatter's RS_ACK */
}

static bool s_red_sent_all(const comm_t *c, const op_t *op, int j)
{
    const peer_t *p = &c->peers[j];
    if (op->rs && p->rs_next < s_pieces(c, op, j))
        return false;
    if (op->ag)
        return p->ag_next >= op->own_np && (op->rs || op->own_np > 0 || p->sent_token);
    return op->own_np == 0 || p->sent_token;
}

static bool s_red_finished(const comm_t *c, const op_t *op)
{
    (void)c;
    return op->ndone == op->own_np;
}

static const op_vt_t s_red_vt = {s_red_next_out, s_red_accept, s_red_waiting_on, s_red_sent_all,
                                 s_red_finished};

static void s_red_free(comm_t *c, op_t *op)
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
}

static shoal_err_t s_reduction(comm_t *c, void *buf, size_t n, uint64_t step, const char *name,
                               bool rs, bool ag, uint16_t wire_flags)
{
    const size_t esz = (wire_flags & WIRE_FLAG_I64) ? 8 : 4;
    shoal_err_t rc = comm_zmq_usable(c, name);
    if (rc != SHOAL_OK)
        return rc;
    if (n == 0 || c->nranks == 1)
        return SHOAL_OK;
    if (!buf)
        return shoal_fail(SHOAL_ERR_INVALID, "comm %s: NULL buffer of %zu elements", name, n);
    if (c->chunk < esz)
        return shoal_fail(SHOAL_ERR_INVALID, "comm %s: chunk_bytes %zu is smaller than one "
                          "element (%zu bytes)", name, c->chunk, esz);
    if (comm_zmq_shm_fits(c, n * esz, esz))
        return comm_zmq_shm_reduction(c, buf, n, step, name, rs, ag, wire_flags);
    int R = c->nranks;
    op_t op = {
        .vt = &s_red_vt,
        .name = name,
        .step = step,
        .total = n,
        .buf = (unsigned char *)buf,
        .unit = c->chunk / esz,
        .wire_flags = wire_flags,
        .rs = rs,
        .ag = ag,
        .window = s_window(c),
    };
    comm_chunk_range(n, R, c->rank, &op.own_lo, &op.own_hi);
    op.own_np = comm_zmq_div_up(op.own_hi - op.own_lo, op.unit);
    op.ag_base = calloc((size_t)R + 1, sizeof *op.ag_base);
    if (!op.ag_base) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "comm %s: out of memory", name);
        goto out;
    }
    for (int j = 0; j < R; j++)
        op.ag_base[j + 1] = op.ag_base[j] + s_ag_msgs(c, &op, j);
    op.ag_have = calloc(op.ag_base[R] + 1, 1);
    op.next_rank = calloc(op.own_np + 1, sizeof *op.next_rank);
    op.held = calloc(op.own_np * (size_t)R + 1, sizeof *op.held);
    op.done = calloc(op.own_np + 1, sizeof *op.done);
    if (rs && c->rank >= 2 && op.own_np) {
        op.scratch = malloc((op.own_hi - op.own_lo) * esz);
        if (op.scratch)
            memcpy(op.scratch, (unsigned char *)buf + op.own_lo * esz,
                   (op.own_hi - op.own_lo) * esz);
    }
    if (!op.ag_have || !op.next_rank || !op.held || !op.done ||
        (rs && c->rank >= 2 && op.own_np && !op.scratch)) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "comm %s: out of memory for %zu elements", name, n);
        goto out;
    }
    if (rs) {
        /* Rank 0 folds its own contribution at once; the others wait for rank 0's first. */
        for (size_t pi = 0; pi < op.own_np; pi++)
            s_fold_ready(c, &op, pi);
    } else {
        for (size_t pi = 0; pi < op.own_np; pi++)
            op.done[op.ndone++] = pi; /* all-gather: our range is final already */
    }
    rc = comm_zmq_run(c, &op);
out:
    s_red_free(c, &op);
    return rc;
}

shoal_err_t comm_allreduce_sum_f32(comm_t *c, float *buf, size_t n, uint64_t step)
{
    return s_reduction(c, buf, n, step, "allreduce", true, true, 0);
}

shoal_err_t comm_allreduce_sum_i64(comm_t *c, int64_t *buf, size_t n, uint64_t step)
{
    return s_reduction(c, buf, n, step, "allreduce_i64", true, true, WIRE_FLAG_I64);
}

shoal_err_t comm_allreduce_max_i64(comm_t *c, int64_t *buf, size_t n, uint64_t step)
{
    return s_reduction(c, buf, n, step, "allreduce_max_i64", true, true,
                       WIRE_FLAG_I64 | WIRE_FLAG_MAX);
}

shoal_err_t comm_reduce_scatter_sum_f32(comm_t *c, float *buf, size_t n, uint64_t step)
{
    return s_reduction(c, buf, n, step, "reduce_scatter", true, false, 0);
}

shoal_err_t comm_allgather_f32(comm_t *c, float *buf, size_t n, uint64_t step)
{
    return s_reduction(c, buf, n, step, "allgather", false, true, 0);
}

/* ---------------------------------------------------------------------------------------------
 * Broadcast. */

static bool s_bc_next_out(comm_t *c, op_t *op, int j, shoal_err_t *rc)
{
    peer_t *p = &c->peers[j];
    *rc = SHOAL_OK;
    frame_t f = {.seq = op->seq, .total = op->total};
    if (c->rank == op->root) {
        if (op->bc_acked_all == c->nranks - 1 && !p->sent_token) {
            p->sent_token = true;
            f.kind = KIND_BC_DONE;
            f.offset = op->np;
        } else if (p->rs_next < op->np && p->rs_next - p->acked < op->window) {
            size_t off = p->rs_next++ * op->unit, cnt = s_min(op->total - off, op->unit);
            f = (frame_t){KIND_BC_DATA, op->seq, op->total, off, (uint32_t)cnt, op->buf + off,
                          cnt};
        } else {
            return false;
        }
    } else {
        if (j != op->root || p->ack_sent == op->bc_got)
            return false;
        p->ack_sent = op->bc_got;
        f.kind = KIND_BC_ACK;
        f.offset = op->bc_got;
    }
    *rc = comm_zmq_build(c, op, &f, &p->out);
    return *rc == SHOAL_OK;
}

static bool s_bc_accept(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m, const char **why)
{
    int src = (int)h->src;
    peer_t *p = &c->peers[src];
    if (h->total != op->total || h->root != (uint32_t)op->root) {
        *why = "size or root differs from this operation's";
        return false;
    }
    switch (h->kind) {
    case KIND_BC_DATA: {
        if (src != op->root || c->rank == op->root || h->offset >= op->total ||
            h->offset % op->unit || h->count != s_min(op->total - h->offset, op->unit)) {
            *why = "not a broadcast piece from the root";
            return false;
        }
        unsigned char *have = &op->bc_have[h->offset / op->unit];
        if (*have) {
            *why = "duplicate broadcast piece";
            return false;
        }
        *have = 1;
        memcpy(op->buf + h->offset, (const unsigned char *)zmq_msg_data(m) + HDR_SIZE, h->count);
        op->bc_got++;
        break;
    }
    case KIND_BC_ACK:
        if (c->rank != op->root || h->offset > op->np) {
            *why = "not an acknowledgement for this broadcast";
            return false;
        }
        if (h->offset > p->acked) {
            p->acked = h->offset;
            op->bc_acked_all += p->acked == op->np;
        }
        break;
    case KIND_BC_DONE:
        if (src != op->root || h->offset != op->np || p->got_token || op->bc_got != op->np) {
            *why = "not the end of this broadcast";
            return false;
        }
        p->got_token = true;
        break;
    default:
        return comm_zmq_reject(c, op, h, why, "not a message of a broadcast");
    }
    zmq_msg_close(m);
    return true;
}

static bool s_bc_waiting_on(const comm_t *c, const op_t *op, int j)
{
    const peer_t *p = &c->peers[j];
    if (c->rank == op->root)
        return p->acked < op->np;
    return j == op->root && !p->got_token;
}

static bool s_bc_sent_all(const comm_t *c, const op_t *op, int j)
{
    const peer_t *p = &c->peers[j];
    if (c->rank == op->root)
        return p->sent_token;
    return j != op->root || p->ack_sent >= op->np;
}

static const op_vt_t s_bc_vt = {s_bc_next_out, s_bc_accept, s_bc_waiting_on, s_bc_sent_all,
                                comm_zmq_true};

shoal_err_t comm_broadcast(comm_t *c, void *buf, size_t bytes, int root, uint64_t step)
{
    shoal_err_t rc = comm_zmq_usable(c, "broadcast");
    if (rc != SHOAL_OK)
        return rc;
    if (root < 0 || root >= c->nranks)
        return shoal_fail(SHOAL_ERR_INVALID, "comm broadcast: root %d outside 0..%d", root,
                          c->nranks - 1);
    if (bytes == 0 || c->nranks == 1)
        return SHOAL_OK;
    if (!buf)
        return shoal_fail(SHOAL_ERR_INVALID, "comm broadcast: NULL buffer of %zu bytes", bytes);
    if (comm_zmq_shm_fits(c, bytes, 1))
        return comm_zmq_shm_broadcast(c, buf, bytes, root, step);
    op_t op = {
        .vt = &s_bc_vt,
        .name = "broadcast",
        .step = step,
        .total = bytes,
        .root = root,
        .buf = buf,
        .unit = c->chunk,
        .window = s_window(c),
    };
    op.np = comm_zmq_div_up(bytes, op.unit);
    op.bc_have = calloc(op.np, 1);
    if (!op.bc_have)
        return shoal_fail(SHOAL_ERR_NOMEM, "comm broadcast: out of memory for %zu bytes", bytes);
    rc = comm_zmq_run(c, &op);
    free(op.bc_have);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Barrier. */

static bool s_bar_next_out(comm_t *c, op_t *op, int j, shoal_err_t *rc)
{
    peer_t *p = &c->peers[j];
    *rc = SHOAL_OK;
    if (p->sent_token)
        return false;
    p->sent_token = true;
    frame_t f = {.kind = KIND_BARRIER, .seq = op->seq};
    *rc = comm_zmq_build(c, op, &f, &p->out);
    return *rc == SHOAL_OK;
}

static bool s_bar_accept(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m,
                         const char **why)
{
    (void)op;
    peer_t *p = &c->peers[h->src];
    if (h->kind != KIND_BARRIER || h->total != 0 || h->root != 0 || p->got_token) {
        *why = "not a barrier token for this barrier";
        return false;
    }
    p->got_token = true;
    zmq_msg_close(m);
    return true;
}

static bool s_bar_waiting_on(const comm_t *c, const op_t *op, int j)
{
    (void)op;
    return !c->peers[j].got_token;
}

static bool s_bar_sent_all(const comm_t *c, const op_t *op, int j)
{
    (void)op;
    return c->peers[j].sent_token;
}

static const op_vt_t s_bar_vt = {s_bar_next_out, s_bar_accept, s_bar_waiting_on, s_bar_sent_all,
                                 comm_zmq_true};

shoal_err_t comm_barrier(comm_t *c, uint64_t step)
{
    shoal_err_t rc = comm_zmq_usable(c, "barrier");
    if (rc != SHOAL_OK || c->nranks == 1)
        return rc;
    op_t op = {.vt = &s_bar_vt, .name = "barrier", .step = step, .unit = 1};
    return comm_zmq_run(c, &op);
}
