/* coord.h: the coordinator daemon's core: state loaded from RocksDB, the worker ROUTER and the
 * control ROUTER served from one zmq_poll loop, and a periodic cron (dead-worker sweep, plan
 * application, run scheduling). main.c only parses flags and calls these. */
#ifndef SHOAL_COORD_H
#define SHOAL_COORD_H

#include <signal.h>

#include "config.h"
#include "err.h"

typedef struct coord coord_t;

/* Opens the store under cfg->state_dir, loads every run, plan and worker, binds both sockets
 * (a stale ipc socket file left by a killed coordinator is replaced: the RocksDB lock already
 * proves no other coordinator uses this state dir). *out is NULL on failure. */
shoal_err_t coord_new(const coord_config_t *cfg, coord_t **out);

/* Closes sockets and the store; idempotent, nulls *self_p. */
void coord_destroy(coord_t **self_p);

/* Serves until *stop becomes nonzero (signal handler). Sends sd_notify READY=1 first and
 * WATCHDOG=1 from the cron when NOTIFY_SOCKET is set. */
shoal_err_t coord_run(coord_t *c, volatile sig_atomic_t *stop);

/* One poll iteration of at most timeout_ms, then the cron if due (tests, benchmarks). */
shoal_err_t coord_poll_once(coord_t *c, int timeout_ms);

/* Messages handled and messages dropped since start. */
/* SIGHUP: when *flag is set, the next cron reloads the allow-list (and clears it). */
void coord_set_reload_flag(coord_t *c, volatile sig_atomic_t *flag);
/* Re-reads the CURVE allow-list now (shoalctl keys reload); the old one stays on error. */
shoal_err_t coord_reload_keys(coord_t *c);

void coord_counters(const coord_t *c, unsigned long long *handled, unsigned long long *dropped);

/* What the guards counted since start (coord_guard.c), for metrics: worker messages dropped
 * over the per-connection rate limit, malformed or out-of-plan messages, quarantines. */
typedef struct {
    unsigned long long rate_dropped, bad_messages, quarantines;
} coord_guard_counters_t;
void coord_guard_counters(const coord_t *c, coord_guard_counters_t *out);

#endif
