/* relay_hold.c: the relay's upward queue (relay_hold.h). */
#include "relay_hold.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "shoal.pb-c.h"
#include "wire.h"

void relay_hold_init(relay_hold_t *h, int hold_ms, const char *sender)
{
    memset(h, 0, sizeof *h);
    h->hold_ms = hold_ms > 0 ? hold_ms : 0;
    snprintf(h->sender, sizeof h->sender, "%s", sender ? sender : "relay");
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

/* The queue as one RelayBatch, sent; the queue is empty after. */
static void s_send_batch(relay_hold_t *h, void *sock)
{
    Shoal__RelayItem *items = calloc((size_t)h->n, sizeof *items);
    Shoal__RelayItem **ptrs = calloc((size_t)h->n, sizeof *ptrs);
    if (items && ptrs) {
        for (int i = 0; i < h->n; i++) {
            shoal__relay_item__init(&items[i]);
            items[i].slot = h->q[i].slot;
            items[i].envelope.data = h->q[i].buf;
            items[i].envelope.len = h->q[i].len;
            ptrs[i] = &items[i];
        }
        Shoal__RelayBatch batch = SHOAL__RELAY_BATCH__INIT;
        batch.n_items = (size_t)h->n;
        batch.items = ptrs;
        Shoal__Envelope env;
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_RELAY_BATCH, "", h->sender, 0,
                           ++h->batches);
        env.body_case = SHOAL__ENVELOPE__BODY_RELAY_BATCH;
        env.relay_batch = &batch;
        /* a full socket (the coordinator gone or far behind) drops: workers send again */
        if (wire_send(sock, NULL, &env, ZMQ_DONTWAIT) == SHOAL_OK)
            h->sent += (unsigned long long)h->n;
        else
            h->dropped += (unsigned long long)h->n;
    } else {
        h->dropped += (unsigned long long)h->n;
    }
    free(items);
    free(ptrs);
    for (int i = 0; i < h->n; i++)
        free(h->q[i].buf);
    h->n = 0;
}

void relay_hold_flush(relay_hold_t *h, void *sock, int64_t now_ms, int force)
{
    if (h->n == 0 || (!force && now_ms - h->first_ms < h->hold_ms))
        return;
    s_send_batch(h, sock);
}

shoal_err_t relay_hold_send(relay_hold_t *h, void *sock, uint32_t slot, const void *buf,
                            size_t len, int64_t now_ms)
{
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
    if (h->hold_ms == 0 || !relay_is_heartbeat(buf, len))
        s_send_batch(h, sock);
    return SHOAL_OK;
}

int relay_hold_due_in(const relay_hold_t *h, int64_t now_ms)
{
    if (h->n == 0)
        return -1;
    int64_t left = h->first_ms + h->hold_ms - now_ms;
    return left > 0 ? (int)left : 0;
}
