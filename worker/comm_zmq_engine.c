/* comm_zmq_engine.c: the operation engine of the ZeroMQ comm backend: frames (build, validate,
 * drop), routing of every received frame to the operation in progress, to the stash or to the
 * bin, and the progress loop that sends what is owed, receives, and bounds the wait.
 *
 * Routing. One PULL socket receives for all the live comms of a listener; the frame's
 * (generation, group) picks the comm. For that comm:
 *   - a collective frame of its current op is accepted by the op in progress; one of its next op
 *     is held (a peer may be one op ahead: no collective completes on any rank before every rank
 *     has entered it, since each needs data, an acknowledgement or a token from every rank, or
 *     from an owner that has one from every rank; see comm_zmq_coll.c); anything else is dropped;
 *   - a point-to-point frame is accepted when it is the next message of its (src, dst) pair and a
 *     receive from src runs; a later message is held (a sender never waits); an earlier one is
 *     dropped;
 *   - with no live comm: a frame of an older generation, or of a group whose comm is already gone,
 *     is dropped; otherwise (a peer created its comm first) its first op and any point-to-point
 *     message are held until the comm exists.
 * Only frames accepted by the op in progress count as its progress for the timeout. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "comm_zmq_int.h"
#include "log.h"

/* Messages received per loop turn before the send side gets a chance again. */
#define RECV_BATCH 256

size_t comm_zmq_div_up(size_t a, size_t b)
{
    return a / b + (a % b != 0);
}

bool comm_zmq_true(const comm_t *c, const op_t *op)
{
    (void)c;
    (void)op;
    return true;
}

shoal_err_t comm_zmq_build(const comm_t *c, const op_t *op, const frame_t *f, zmq_msg_t *m)
{
    if (zmq_msg_init_size(m, HDR_SIZE + f->bytes) != 0)
        return shoal_fail(SHOAL_ERR_NOMEM, "comm: message of %zu bytes: %s", HDR_SIZE + f->bytes,
                          zmq_strerror(errno));
    wire_hdr_t h = {
        .magic = WIRE_MAGIC,
        .version = WIRE_VERSION,
        .kind = (uint8_t)f->kind,
        .flags = (f->kind == KIND_AR_RS || f->kind == KIND_AR_AG || f->kind == KIND_SHM_IN ||
                  f->kind == KIND_SHM_OUT)
                     ? op->wire_flags
                     : 0,
        .src = (uint32_t)c->rank,
        .nranks = (uint32_t)c->nranks,
        .generation = c->generation,
        .step = op->step,
        .seq = f->seq,
        .total = f->total,
        .offset = f->offset,
        .count = f->count,
        .root = (uint32_t)op->root,
        .chunk = (uint32_t)c->chunk,
        .group = c->group,
    };
    unsigned char *d = zmq_msg_data(m);
    memcpy(d, &h, HDR_SIZE);
    if (f->bytes)
        memcpy(d + HDR_SIZE, f->payload, f->bytes);
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
    const bool reduction = h->kind == KIND_AR_RS || h->kind == KIND_AR_AG ||
                           h->kind == KIND_SHM_IN || h->kind == KIND_SHM_OUT;
    if (h->magic != WIRE_MAGIC || h->version != WIRE_VERSION ||
        (h->flags && !(reduction && (h->flags == WIRE_FLAG_I64 ||
                                     h->flags == (WIRE_FLAG_I64 | WIRE_FLAG_MAX))))) {
        *why = "bad magic, version or flags";
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
    size_t unit = 0;
    bool empty_ok = false; /* an empty piece: an empty range, message or block */
    switch (h->kind) {
    case KIND_AR_AG:
        empty_ok = true;
        /* fall through */
    case KIND_AR_RS:
        unit = (h->flags & WIRE_FLAG_I64) ? 8 : 4;
        break;
    case KIND_P2P:
    case KIND_A2A:
        empty_ok = true;
        /* fall through */
    case KIND_BC_DATA:
        unit = 1;
        break;
    case KIND_SHM_IN:
    case KIND_SHM_OUT:
        /* The piece lives in the sender's shared segment: its length, and the segment's nonce
         * as the payload. */
        if (h->count == 0 || h->count > h->chunk) {
            *why = "bad piece length";
            return false;
        }
        if (size != HDR_SIZE + COMM_SHM_NONCE_BYTES) {
            *why = "frame size does not match the header";
            return false;
        }
        return true;
    default:
        break;
    }
    if (unit == 0 ? h->count != 0
                  : ((h->count == 0 && !empty_ok) || (size_t)h->count * unit > h->chunk)) {
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
    op->dropped++;
    if (h)
        snprintf(op->why, sizeof op->why,
                 "rank %" PRIu32 " gen %" PRIu64 " group %" PRIu32 " seq %" PRIu64
                 " step %" PRIu64 ": %s",
                 h->src, h->generation, h->group, h->seq, h->step, why);
    else
        snprintf(op->why, sizeof op->why, "%s", why);
    if (h)
        log_debug("comm gen %" PRIu64 " group %" PRIu32 " rank %d: dropped message from rank %" PRIu32
                  " (gen %" PRIu64 ", group %" PRIu32 ", seq %" PRIu64 ", step %" PRIu64
                  ", kind %u): %s",
                  c->generation, c->group, c->rank, h->src, h->generation, h->group, h->seq,
                  h->step, h->kind, why);
    else
        log_debug("comm gen %" PRIu64 " rank %d: dropped frame: %s", c->generation, c->rank, why);
    zmq_msg_close(m);
}

/* Offers a frame of the op in progress to it; takes `m`. */
static bool s_accept(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m)
{
    const char *why = "not part of this operation";
    if (h->step != op->step)
        why = "step differs from this operation's step";
    else if (h->chunk != c->chunk)
        why = "chunk size differs from this comm's";
    else if (op->vt->accept(c, op, h, m, &why)) {
        c->peers[h->src].heard++;
        return true;
    }
    s_drop(c, op, h, m, why);
    return false;
}

/* Routes a parsed frame (see the file comment): accept, stash or drop. Takes `m`. Returns true
 * when the op in progress accepted it. */
static bool s_route(comm_t *c, op_t *op, const wire_hdr_t *h, zmq_msg_t *m)
{
    comm_listener_t *l = c->l;
    comm_t *t = comm_zmq_find(l, h->generation, h->group);
    bool p2p = h->kind == KIND_P2P, give_up = h->kind == KIND_GIVE_UP;
    if (!t) {
        if (l->used && h->generation < l->generation)
            s_drop(c, op, h, m, "older generation");
        else if (comm_zmq_group_gone(l, h->generation, h->group))
            s_drop(c, op, h, m, "the comm of its group is gone");
        else if (p2p || give_up || h->seq == 1)
            comm_zmq_stash_put(l, h, m);
        else
            s_drop(c, op, h, m, "comm not created yet and the message beyond its first op");
        return false;
    }
    if (h->nranks != (uint32_t)t->nranks || (int)h->src == t->rank) {
        s_drop(c, op, h, m, "comm size or source rank does not fit this comm");
        return false;
    }
    if (l->curve) {
        /* the connection's key (User-Id from our ZAP handler) must be the claimed rank's */
        char user[ZSEC_USER_MAX];
        zsec_msg_user(m, user);
        if (strcmp(user, t->peers[h->src].key) != 0) {
            unsigned long long n = comm_zmq_count_forged();
            if ((n & (n - 1)) == 0) /* 1, 2, 4, ...: a flood does not flood the log */
                log_warn("comm gen %" PRIu64 " group %" PRIu32 ": dropped a frame claiming rank %" PRIu32
                         " from a connection with another CURVE key (%s; %llu so far)",
                         h->generation, h->group, h->src, user[0] ? user : "none", n);
            comm_zmq_note_bad(l, m, "claims a rank whose key is not its connection's");
            s_drop(c, op, h, m, "CURVE key is not the claimed rank's");
            return false;
        }
    }
    if (give_up) {
        /* whatever op runs on t (or the next one) fails at once, naming the sender */
        if (!t->given_up_by)
            t->given_up_by = (int)h->src + 1;
        atomic_store(&t->aborted, 1);
        zmq_msg_close(m);
        return false;
    }
    if (p2p) {
        uint64_t next = t->peers[h->src].p2p_recvd + 1;
        if (h->seq < next) {
            s_drop(c, op, h, m, "earlier point-to-point message");
            return false;
        }
        if (t == c && op->p2p && op->src == (int)h->src && h->seq == next)
            return s_accept(c, op, h, m);
        comm_zmq_stash_put(l, h, m);
        return false;
    }
    if (h->seq == t->seq + 1) {
        comm_zmq_stash_put(l, h, m);
        return false;
    }
    if (t == c && !op->p2p && h->seq == op->seq)
        return s_accept(c, op, h, m);
    s_drop(c, op, h, m, h->seq <= t->seq ? "earlier operation" : "operation too far ahead");
    return false;
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
        comm_zmq_note_bad(c->l, &m, "multipart message");
        s_drop(c, op, NULL, &m, "multipart message");
        return 1;
    }
    wire_hdr_t h;
    const char *why = NULL;
    if (!s_hdr_parse(&m, &h, &why)) {
        comm_zmq_note_bad(c->l, &m, why);
        s_drop(c, op, NULL, &m, why);
        return 1;
    }
    *accepted = s_route(c, op, &h, &m);
    return 1;
}

static bool s_done(const comm_t *c, const op_t *op)
{
    for (int j = 0; j < c->nranks; j++) {
        if (j == c->rank)
            continue;
        if (c->peers[j].has_out || op->vt->waiting_on(c, op, j) || !op->vt->sent_all(c, op, j))
            return false;
    }
    return op->vt->finished(c, op);
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
        if (!op->vt->waiting_on(c, op, j))
            continue;
        s_list_add(waiting, sizeof waiting, j);
        if (c->peers[j].heard == 0)
            s_list_add(silent, sizeof silent, j);
    }
    return shoal_fail(SHOAL_ERR_TIMEOUT,
                      "comm %s (generation %" PRIu64 ", group %" PRIu32 ", step %" PRIu64
                      ", %s %" PRIu64 ", rank %d/%d): no progress for %" PRIu64 " ms;%s%s%s "
                      "waiting on rank(s) %s%s%s%s%s%s",
                      op->name, c->generation, c->group, op->step, op->p2p ? "message" : "op",
                      op->seq, c->rank, c->nranks, idle_ms,
                      silent[0] ? " no message from rank " : "", silent, silent[0] ? ";" : "",
                      waiting[0] ? waiting : "none", blocked[0] ? "; cannot send to rank(s) " : "",
                      blocked, op->dropped ? " (dropped messages; last: " : "",
                      op->dropped ? op->why : "", op->dropped ? ")" : "");
}

static shoal_err_t s_aborted(const comm_t *c, const char *name, uint64_t step)
{
    if (c->given_up_by)
        return shoal_fail(SHOAL_ERR_ABORTED,
                          "comm %s (generation %" PRIu64 ", group %" PRIu32 ", step %" PRIu64
                          "): rank %d gave the comm up",
                          name, c->generation, c->group, step, c->given_up_by - 1);
    return shoal_fail(SHOAL_ERR_ABORTED,
                      "comm %s (generation %" PRIu64 ", group %" PRIu32 ", step %" PRIu64
                      "): aborted",
                      name, c->generation, c->group, step);
}

/* Frames of this op held while we were behind. Only frames the op accepts are taken, so routing
 * never stashes while the stash is walked. */
static void s_take_held(comm_t *c, op_t *op)
{
    comm_listener_t *l = c->l;
    size_t k = 0;
    for (size_t i = 0; i < l->nstash; i++) {
        held_t *e = l->stash[i];
        const wire_hdr_t *h = &e->h;
        bool mine = h->generation == c->generation && h->group == c->group &&
                    (h->kind == KIND_GIVE_UP ||
                     (h->seq == op->seq && (h->kind == KIND_P2P) == op->p2p &&
                      (!op->p2p || (int)h->src == op->src)));
        if (mine) {
            l->stash_bytes -= zmq_msg_size(&e->msg);
            s_route(c, op, &e->h, &e->msg);
            free(e);
        } else {
            l->stash[k++] = e;
        }
    }
    l->nstash = k;
}

/* Sends what is owed: one message per peer per pass so that every peer's stream starts early. */
static shoal_err_t s_send_owed(comm_t *c, op_t *op, bool *moved)
{
    shoal_err_t rc = SHOAL_OK;
    for (bool any = true; any;) {
        any = false;
        for (int j = 0; j < c->nranks; j++) {
            peer_t *p = &c->peers[j];
            if (j == c->rank)
                continue;
            if (!p->has_out) {
                if (!op->vt->next_out(c, op, j, &rc)) {
                    if (rc != SHOAL_OK)
                        return rc;
                    continue;
                }
                p->has_out = true;
            }
            if (zmq_msg_send(&p->out, p->conn->push, ZMQ_DONTWAIT) >= 0) {
                p->has_out = false; /* zmq owns the content now; p->out is empty */
                any = *moved = true;
            } else if (errno != EAGAIN && errno != EINTR) {
                return shoal_fail(SHOAL_ERR_IO, "comm %s: send to rank %d (%s): %s", op->name, j,
                                  p->conn->endpoint, zmq_strerror(errno));
            }
        }
    }
    return SHOAL_OK;
}

/* Drives op to completion: sends what is owed, receives and routes, waits in zmq_poll. */
static shoal_err_t s_progress(comm_t *c, op_t *op)
{
    shoal_err_t rc = SHOAL_OK;
    comm_listener_t *l = c->l;
    uint64_t last = clock_mono_ns();
    uint64_t timeout_ns = (uint64_t)c->timeout_ms * 1000000ull;

    s_take_held(c, op);
    for (;;) {
        if (op->fatal != SHOAL_OK)
            return op->fatal;
        if (atomic_load(&c->aborted))
            return s_aborted(c, op->name, op->step);
        bool moved = false;
        if ((rc = s_send_owed(c, op, &moved)) != SHOAL_OK)
            return rc;
        for (int n = 0; n < RECV_BATCH && op->fatal == SHOAL_OK; n++) {
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
        if (op->fatal != SHOAL_OK)
            return op->fatal;
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
                    (zmq_pollitem_t){.socket = c->peers[j].conn->push, .events = ZMQ_POLLOUT};
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

shoal_err_t comm_zmq_run(comm_t *c, op_t *op)
{
    shoal_err_t rc = SHOAL_OK;
    if (!op->p2p)
        op->seq = ++c->seq;
    for (int j = 0; j < c->nranks; j++) {
        peer_t *p = &c->peers[j];
        p->heard = 0;
        p->rs_next = p->ag_next = p->ag_got = p->rs_got = p->got_bytes = 0;
        p->acked = p->ack_sent = 0;
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

shoal_err_t comm_zmq_usable(comm_t *c, const char *what)
{
    if (!c)
        return shoal_fail(SHOAL_ERR_INVALID, "comm %s: NULL comm", what);
    if (atomic_load(&c->aborted))
        return s_aborted(c, what, 0);
    if (!c->l)
        return shoal_fail(SHOAL_ERR_STATE,
                          "comm %s (generation %" PRIu64 ", group %" PRIu32
                          "): listener destroyed",
                          what, c->generation, c->group);
    if (c->broken != SHOAL_OK)
        return shoal_fail(SHOAL_ERR_STATE,
                          "comm %s (generation %" PRIu64 ", group %" PRIu32
                          "): an earlier operation failed (%s); create a new comm",
                          what, c->generation, c->group, shoal_strerror(c->broken));
    return SHOAL_OK;
}

shoal_err_t comm_zmq_send_now(comm_t *c, int j, zmq_msg_t *m, const char *what)
{
    void *push = c->peers[j].conn->push;
    uint64_t t0 = clock_mono_ns(), limit = (uint64_t)c->timeout_ms * 1000000ull;
    for (;;) {
        if (zmq_msg_send(m, push, ZMQ_DONTWAIT) >= 0)
            return SHOAL_OK;
        int e = errno;
        if (e == EINTR)
            continue;
        shoal_err_t rc = SHOAL_OK;
        uint64_t now = clock_mono_ns();
        if (e != EAGAIN)
            rc = shoal_fail(SHOAL_ERR_IO, "comm %s: send to rank %d (%s): %s", what, j,
                            c->peers[j].conn->endpoint, zmq_strerror(e));
        else if (atomic_load(&c->aborted))
            rc = s_aborted(c, what, 0);
        else if (now - t0 >= limit)
            rc = shoal_fail(SHOAL_ERR_TIMEOUT,
                            "comm %s (generation %" PRIu64 ", group %" PRIu32
                            "): cannot queue to rank %d for %d ms",
                            what, c->generation, c->group, j, c->timeout_ms);
        if (rc != SHOAL_OK) {
            zmq_msg_close(m);
            return rc;
        }
        /* With no send high-water mark zmq refuses only while it has no pipe to the peer. */
        zmq_pollitem_t it[2] = {{.fd = c->wake[0], .events = ZMQ_POLLIN},
                                {.socket = push, .events = ZMQ_POLLOUT}};
        zmq_poll(it, 2, (long)((limit - (now - t0)) / 1000000ull) + 1);
    }
}
