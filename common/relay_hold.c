/* relay_hold.c: the relay's upward queue (relay_hold.h). */
#include "relay_hold.h"

#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "shoal.pb-c.h"
#include "wire.h"

void relay_hold_init(relay_hold_t *h, int hold_ms)
{
    memset(h, 0, sizeof *h);
    h->hold_ms = hold_ms > 0 ? hold_ms : 0;
}

void relay_hold_fini(relay_hold_t *h)
{
    for (int i = 0; i < h->n; i++)
        free(h->q[i].buf);
    free(h->q);
    memset(h, 0, sizeof *h);
}

int relay_is_heartbeat(const void *buf, size_t len)
{
    const unsigned char *b = buf;
    return len >= 2 && b[0] == 0x08 && b[1] == SHOAL__MSG_TYPE__MSG_HEARTBEAT;
}

static void s_send_one(relay_hold_t *h, void *sock, uint32_t slot, const void *buf, size_t len)
{
    unsigned char frame[WIRE_RELAY_SLOT_LEN];
    wire_relay_slot_put(frame, slot);
    /* a full socket (the coordinator gone or far behind) drops: workers send again */
    if (zmq_send(sock, frame, sizeof frame, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        h->dropped++;
        return;
    }
    if (zmq_send(sock, buf, len, ZMQ_DONTWAIT) < 0)
        h->dropped++; /* unreachable after the first frame went: ZeroMQ sends parts atomically */
    else
        h->sent++;
}

void relay_hold_flush(relay_hold_t *h, void *sock, int64_t now_ms, int force)
{
    if (h->n == 0 || (!force && now_ms - h->first_ms < h->hold_ms))
        return;
    for (int i = 0; i < h->n; i++) {
        s_send_one(h, sock, h->q[i].slot, h->q[i].buf, h->q[i].len);
        free(h->q[i].buf);
    }
    h->n = 0;
}

shoal_err_t relay_hold_send(relay_hold_t *h, void *sock, uint32_t slot, const void *buf,
                            size_t len, int64_t now_ms)
{
    if (h->hold_ms == 0 || !relay_is_heartbeat(buf, len)) {
        relay_hold_flush(h, sock, now_ms, 1);
        s_send_one(h, sock, slot, buf, len);
        return SHOAL_OK;
    }
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        relay_held_t *q = realloc(h->q, (size_t)cap * sizeof *q);
        if (!q)
            return shoal_fail(SHOAL_ERR_NOMEM, "relay queue of %d messages", cap);
        h->q = q;
        h->cap = cap;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return shoal_fail(SHOAL_ERR_NOMEM, "relayed message of %zu bytes", len);
    memcpy(copy, buf, len);
    if (h->n == 0)
        h->first_ms = now_ms;
    h->q[h->n++] = (relay_held_t){slot, copy, len};
    return SHOAL_OK;
}

int relay_hold_due_in(const relay_hold_t *h, int64_t now_ms)
{
    if (h->n == 0)
        return -1;
    int64_t left = h->first_ms + h->hold_ms - now_ms;
    return left > 0 ? (int)left : 0;
}
