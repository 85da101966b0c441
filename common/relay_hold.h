/* relay_hold.h: what a host relay sends up to the coordinator, in one place for the relay
 * (worker/relay.h) and the simulator that plays many relays (tests/sim/shoal_sim.c).
 *
 * Workers' messages go up in RelayBatch envelopes (proto/shoal.proto), each item a worker's slot
 * and its packed Envelope. Heartbeats wait up to hold_ms so that a host's beats leave as one
 * message: the coordinator then reads, handles and answers them with one ZeroMQ message each
 * way, where each alone cost a wake-up, a recv and a send of the kernel and ZeroMQ
 * (ops/CAPACITY.md, "one connection per worker"). Anything else sends the queue at once, itself
 * last, so a worker's messages keep their order. */
#ifndef SHOAL_RELAY_HOLD_H
#define SHOAL_RELAY_HOLD_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* `shoal-worker relay --hold-ms` and shoal-sim --hold-ms by default */
#define RELAY_DEFAULT_HOLD_MS 100

typedef struct {
    uint32_t slot;
    uint8_t *buf;
    size_t len;
} relay_held_t;

typedef struct {
    int hold_ms;           /* the longest a heartbeat waits (0: none waits) */
    char sender[64];       /* the batches' sender (the relay's name) */
    relay_held_t *q;
    int n, cap;
    int64_t first_ms;      /* monotonic: when the oldest queued message came */
    unsigned long long sent, dropped; /* messages sent up; dropped (the socket was full) */
    unsigned long long batches;       /* RelayBatch messages sent */
} relay_hold_t;

void relay_hold_init(relay_hold_t *h, int hold_ms, const char *sender);
void relay_hold_fini(relay_hold_t *h);

/* Whether buf is a packed Envelope of type MSG_HEARTBEAT. protoc-c packs fields in number order,
 * so the type (field 1) leads: a look at two bytes, no unpacking. */
int relay_is_heartbeat(const void *buf, size_t len);

/* Queues one message of `slot` (buf copied) and, unless it is a heartbeat that may wait, sends
 * the queue on `sock` as one RelayBatch. SHOAL_ERR_NOMEM when the copy fails (nothing queued). */
shoal_err_t relay_hold_send(relay_hold_t *h, void *sock, uint32_t slot, const void *buf,
                            size_t len, int64_t now_ms);

/* Sends the queue as one RelayBatch when its oldest message is due (or at once with force); a
 * full socket drops it (counted: workers send again). */
void relay_hold_flush(relay_hold_t *h, void *sock, int64_t now_ms, int force);

/* Milliseconds until the oldest queued message is due (0: due; -1: nothing queued). */
int relay_hold_due_in(const relay_hold_t *h, int64_t now_ms);

#endif
