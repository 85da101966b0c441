/* comm_zmq_p2p.c: point to point (send/recv) and all-to-all(v) of the ZeroMQ comm backend.
 *
 * Send/recv. Message k from rank a to rank b travels as P2P frames tagged seq = k (a per-pair
 * count, independent of the collective op numbers), total = its size, pieces of chunk_bytes in
 * order (one empty piece for an empty message). comm_send queues every piece at once (no send
 * high-water mark) and returns; the receiver holds messages that arrive before their comm_recv,
 * so send never waits for the receiver and p2p interleaves freely with collectives.
 * All-to-all(v): a collective op; rank i sends its block for j as A2A pieces (total = the block
 * size, at least one piece even when empty: that piece also tells j that i entered the op), and
 * receives every block in order from every rank. A block or message whose size differs from what
 * the receiver was told is a hard error (SHOAL_ERR_INVALID) naming both sizes. */
#include <inttypes.h>
#include <string.h>

#include "comm_zmq_int.h"

static size_t s_min(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Pieces of a message or block of `bytes`: at least one. */
static size_t s_npieces(const comm_t *c, size_t bytes)
{
    return bytes ? comm_zmq_div_up(bytes, c->chunk) : 1;
}

/* The next in-order piece of a message or block of `want` bytes from h->src, copied to dst.
 * Sets op->fatal on a size mismatch (`what` names the sizes' meaning). */
static bool s_take_piece(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m,
                         unsigned char *dst, size_t want, const char **why)
{
    peer_t *p = &c->peers[h->src];
    if (h->total != want) {
        op->fatal = shoal_fail(SHOAL_ERR_INVALID,
                               "comm %s (generation %" PRIu64 ", group %" PRIu32
                               ", step %" PRIu64 "): rank %" PRIu32 " sends %" PRIu64
                               " bytes, rank %d expects %zu",
                               op->name, c->generation, c->group, op->step, h->src, h->total,
                               c->rank, want);
        *why = "size differs from the receiver's";
        return false;
    }
    if (p->rs_got >= s_npieces(c, want) || h->offset != p->got_bytes ||
        h->count != s_min(want - p->got_bytes, c->chunk)) {
        *why = "piece out of order, duplicate or of the wrong length";
        return false;
    }
    if (h->count)
        memcpy(dst + h->offset, (const unsigned char *)zmq_msg_data(m) + HDR_SIZE, h->count);
    p->got_bytes += h->count;
    p->rs_got++;
    zmq_msg_close(m);
    return true;
}

/* Builds piece k of a message or block [data, data + bytes) into m (data may be NULL when bytes
 * is 0). */
static shoal_err_t s_piece(comm_t *c, op_t *op, zmq_msg_t *m, int kind, uint64_t seq,
                           const unsigned char *data, size_t bytes, size_t k)
{
    size_t off = k * c->chunk, cnt = bytes ? s_min(bytes - off, c->chunk) : 0;
    frame_t f = {kind, seq, bytes, off, (uint32_t)cnt, cnt ? data + off : NULL, cnt};
    return comm_zmq_build(c, op, &f, m);
}

/* ---------------------------------------------------------------------------------------------
 * Send and receive. */

/* The argument checks of send and recv: `peer` is the other rank. */
static shoal_err_t s_p2p_usable(comm_t *c, const char *what, int peer, const void *buf,
                                size_t bytes)
{
    shoal_err_t rc = comm_zmq_usable(c, what);
    if (rc != SHOAL_OK)
        return rc;
    if (peer < 0 || peer >= c->nranks || peer == c->rank)
        return shoal_fail(SHOAL_ERR_INVALID, "comm %s: peer rank %d outside 0..%d or this rank",
                          what, peer, c->nranks - 1);
    if (!buf && bytes)
        return shoal_fail(SHOAL_ERR_INVALID, "comm %s: NULL buffer of %zu bytes", what, bytes);
    return SHOAL_OK;
}

shoal_err_t comm_send(comm_t *c, int dst, const void *buf, size_t bytes, uint64_t step)
{
    shoal_err_t rc = s_p2p_usable(c, "send", dst, buf, bytes);
    if (rc != SHOAL_OK)
        return rc;
    peer_t *p = &c->peers[dst];
    op_t op = {.name = "send", .step = step};
    uint64_t seq = p->p2p_sent + 1;
    for (size_t k = 0, np = s_npieces(c, bytes); k < np; k++) {
        zmq_msg_t m;
        if ((rc = s_piece(c, &op, &m, KIND_P2P, seq, buf, bytes, k)) != SHOAL_OK)
            goto fail;
        if ((rc = comm_zmq_send_now(c, dst, &m, "send")) != SHOAL_OK)
            goto fail;
    }
    p->p2p_sent = seq;
    return SHOAL_OK;

fail:
    /* Part of a message left: the pair's stream is broken, and with it the comm. */
    c->broken = rc;
    return rc;
}

static bool s_recv_accept(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m,
                          const char **why)
{
    if (h->kind != KIND_P2P) {
        *why = "not a point-to-point message";
        return false;
    }
    return s_take_piece(c, op, h, m, op->buf, op->total, why);
}

static bool s_recv_waiting_on(const comm_t *c, const op_t *op, int j)
{
    return j == op->src && c->peers[j].rs_got < s_npieces(c, op->total);
}

static bool s_no_out(comm_t *c, op_t *op, int j, shoal_err_t *rc)
{
    (void)c;
    (void)op;
    (void)j;
    *rc = SHOAL_OK;
    return false;
}

static bool s_sent_nothing(const comm_t *c, const op_t *op, int j)
{
    (void)c;
    (void)op;
    (void)j;
    return true;
}

static const op_vt_t s_recv_vt = {s_no_out, s_recv_accept, s_recv_waiting_on, s_sent_nothing,
                                  comm_zmq_true};

shoal_err_t comm_recv(comm_t *c, int src, void *buf, size_t bytes, uint64_t step)
{
    shoal_err_t rc = s_p2p_usable(c, "recv", src, buf, bytes);
    if (rc != SHOAL_OK)
        return rc;
    op_t op = {.vt = &s_recv_vt,
               .name = "recv",
               .p2p = true,
               .step = step,
               .seq = c->peers[src].p2p_recvd + 1,
               .total = bytes,
               .buf = buf,
               .src = src};
    rc = comm_zmq_run(c, &op);
    if (rc == SHOAL_OK)
        c->peers[src].p2p_recvd = op.seq;
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * All-to-all(v). */

static bool s_a2a_next_out(comm_t *c, op_t *op, int j, shoal_err_t *rc)
{
    peer_t *p = &c->peers[j];
    *rc = SHOAL_OK;
    if (p->rs_next >= s_npieces(c, op->sbytes[j]))
        return false;
    size_t bytes = op->sbytes[j];
    *rc = s_piece(c, op, &p->out, KIND_A2A, op->seq, bytes ? op->sbuf + op->soffs[j] : NULL,
                  bytes, p->rs_next++);
    return *rc == SHOAL_OK;
}

static bool s_a2a_accept(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m,
                         const char **why)
{
    if (h->kind != KIND_A2A || h->root != 0) {
        *why = "not an all-to-all piece";
        return false;
    }
    size_t want = op->rbytes[h->src];
    return s_take_piece(c, op, h, m, want ? op->buf + op->roffs[h->src] : NULL, want, why);
}

static bool s_a2a_waiting_on(const comm_t *c, const op_t *op, int j)
{
    return c->peers[j].rs_got < s_npieces(c, op->rbytes[j]);
}

static bool s_a2a_sent_all(const comm_t *c, const op_t *op, int j)
{
    return c->peers[j].rs_next >= s_npieces(c, op->sbytes[j]);
}

static const op_vt_t s_a2a_vt = {s_a2a_next_out, s_a2a_accept, s_a2a_waiting_on, s_a2a_sent_all,
                                 comm_zmq_true};

shoal_err_t comm_alltoallv(comm_t *c, const void *sendbuf, const size_t *send_bytes,
                           const size_t *send_offs, void *recvbuf, const size_t *recv_bytes,
                           const size_t *recv_offs, uint64_t step)
{
    shoal_err_t rc = comm_zmq_usable(c, "alltoallv");
    if (rc != SHOAL_OK)
        return rc;
    if (!send_bytes || !send_offs || !recv_bytes || !recv_offs)
        return shoal_fail(SHOAL_ERR_INVALID, "comm alltoallv: NULL count or offset array");
    for (int j = 0; j < c->nranks; j++) {
        if ((send_bytes[j] && !sendbuf) || (recv_bytes[j] && !recvbuf))
            return shoal_fail(SHOAL_ERR_INVALID, "comm alltoallv: NULL buffer for rank %d's block",
                              j);
    }
    int me = c->rank;
    if (send_bytes[me] != recv_bytes[me])
        return shoal_fail(SHOAL_ERR_INVALID,
                          "comm alltoallv: rank %d sends itself %zu bytes but expects %zu", me,
                          send_bytes[me], recv_bytes[me]);
    if (send_bytes[me])
        memmove((unsigned char *)recvbuf + recv_offs[me],
                (const unsigned char *)sendbuf + send_offs[me], send_bytes[me]);
    if (c->nranks == 1)
        return SHOAL_OK;
    op_t op = {.vt = &s_a2a_vt,
               .name = "alltoallv",
               .step = step,
               .buf = recvbuf,
               .unit = c->chunk,
               .sbuf = sendbuf,
               .sbytes = send_bytes,
               .soffs = send_offs,
               .rbytes = recv_bytes,
               .roffs = recv_offs};
    return comm_zmq_run(c, &op);
}
