/* relay.h: the host relay (`shoal-worker relay`). One per host: the host's workers connect to it
 * instead of the coordinator, and it carries them all over one connection, each worker's
 * messages with its slot on the relay as one more route frame (relay_hold.h). The coordinator
 * answers on that route, and the relay hands each answer to its worker. A coordinator with
 * 10,000 workers then holds 1,250 connections, not 10,000, and reads a host's heartbeats in one
 * burst (ops/CAPACITY.md). When a worker's connection to the relay closes (the process died),
 * the relay says so on the worker's route (RelayClosed), as the coordinator's socket monitor
 * reports a direct worker's close; when the relay dies, its connection's close covers all its
 * workers. Plaintext only: with CURVE a worker's key is its own connection's (the coordinator
 * refuses relayed messages then). */
#ifndef SHOAL_RELAY_H
#define SHOAL_RELAY_H

#include <signal.h>

#include "err.h"
#include "relay_hold.h"

#define RELAY_ENDPOINT_MAX 512

typedef struct {
    char listen[RELAY_ENDPOINT_MAX];      /* the host's workers connect here */
    char coordinator[RELAY_ENDPOINT_MAX]; /* the coordinator's worker endpoint */
    char name[128];                       /* sender of its RelayClosed notices */
    int hold_ms;                          /* the longest a heartbeat waits to share a write */
} relay_config_t;

typedef struct {
    unsigned long long up, down, closed, dropped_up, dropped_down;
    int workers; /* relayed now (connections open) */
} relay_stats_t;

typedef struct relay relay_t;

/* Binds the local endpoint and connects to the coordinator (plaintext). */
shoal_err_t relay_open(const relay_config_t *cfg, relay_t **out);
/* One round: waits up to timeout_ms for messages, relays them, sends what is due. */
shoal_err_t relay_poll_once(relay_t *r, int timeout_ms);
/* Rounds until *stop. */
shoal_err_t relay_run(relay_t *r, volatile sig_atomic_t *stop);
void relay_stats(const relay_t *r, relay_stats_t *out);
void relay_close(relay_t *r);

#endif
