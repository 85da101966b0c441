/* relay_hold.h: what a host relay sends up to the coordinator, in one place for the relay
 * (worker/relay.h) and the simulator that plays many relays (tests/sim/shoal_sim.c).
 *
 * A relayed message is two frames, the worker's slot on the relay (wire.h,
 * WIRE_RELAY_SLOT_LEN) and its packed Envelope. Heartbeats wait up to hold_ms so that a
 * host's beats leave in one burst: the coordinator's I/O thread then reads them in one system
 * call, where each alone on its connection cost a wake-up, a recv and a send of their own
 * (ops/CAPACITY.md, "one connection per worker"). Anything else sends the queue at once, in
 * order, so a worker's messages keep their order. */
#ifndef SHOAL_RELAY_HOLD_H
#define SHOAL_RELAY_HOLD_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct {
    uint32_t slot;
    uint8_t *buf;
    size_t len;
} relay_held_t;

typedef struct {
    int hold_ms;           /* the longest a heartbeat waits (0: none waits) */
    relay_held_t *q;
    int n, cap;
    int64_t first_ms;      /* monotonic: when the oldest queued message came */
    unsigned long long sent, dropped; /* messages sent up; dropped (the socket was full) */
} relay_hold_t;

void relay_hold_init(relay_hold_t *h, int hold_ms);
void relay_hold_fini(relay_hold_t *h);

/* Whether buf is a packed Envelope of type MSG_HEARTBEAT. protoc-c packs fields in number order,
 * so the type (field 1) leads: a look at two bytes, no unpacking. */
int relay_is_heartbeat(const void *buf, size_t len);

/* Sends (or queues, for a heartbeat) one message of `slot` (buf copied) on `sock`: queued
 * messages go first. SHOAL_ERR_NOMEM when the copy fails (nothing queued). */
shoal_err_t relay_hold_send(relay_hold_t *h, void *sock, uint32_t slot, const void *buf,
                            size_t len, int64_t now_ms);

/* Sends the queue when its oldest message is due (or at once with force). */
void relay_hold_flush(relay_hold_t *h, void *sock, int64_t now_ms, int force);

/* Milliseconds until the oldest queued message is due (0: due; -1: nothing queued). */
int relay_hold_due_in(const relay_hold_t *h, int64_t now_ms);

#endif
