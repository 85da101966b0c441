/* daemon.h: the worker daemon (`shoal-worker --coordinator ENDPOINT`): registers with the
 * coordinator, trains its cell of each plan it is given (data-parallel, CPU), reports steps and
 * checkpoints, survives dead peers and a lost coordinator, and leaves cleanly on request.
 * ops/WORKER.md documents flags, the state directory and the behaviour on faults. */
#ifndef SHOAL_WORKER_DAEMON_H
#define SHOAL_WORKER_DAEMON_H

#include <signal.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *coordinator;    /* the coordinator's worker endpoint (required) */
    const char *name;           /* NULL: <hostname>-<pid> */
    const char *state_dir;      /* NULL: $STATE_DIRECTORY, else /var/lib/shoal/worker-<name> */
    const char *data_endpoint;  /* bind endpoint of the data plane; NULL: tcp://127.0.0.1:0 when
                                 * the coordinator is local, else tcp://\*:0 */
    const char *advertise_host; /* host peers use for a wildcard data endpoint (NULL: hostname) */
    const char *institution;    /* NULL: "" */
    const char *device;         /* cpu | cuda:N | auto (NULL: auto; worker/device.h) */
    const char *metrics_path;   /* JSON lines, one per step (NULL: none) */
    const char *metrics_listen; /* ADDR:PORT of a Prometheus /metrics server (NULL: none) */
    double grace_seconds;       /* SIGTERM: finish or abandon the step within this (default 10) */
    int comm_timeout_ms;        /* longest collective wait without progress (default 30000) */
    int threads;                /* BLAS threads (0: the run spec's train.threads) */
    const volatile sig_atomic_t *stop_flag; /* nonzero: leave (SIGTERM/SIGINT handler sets it) */
    const char *keys_dir;       /* CURVE: key.secret, key.public, coordinator.public (NULL: none) */
    int insecure;               /* plaintext TCP to the coordinator and peers (--insecure) */
} daemon_config_t;

/* Runs the daemon on the calling thread (training) plus a session thread, until *stop_flag is
 * set; then finishes or abandons the step within the grace period, sends Leave and returns
 * SHOAL_OK. Errors only for what prevents the daemon from running at all (state directory
 * unusable or locked by another worker, data endpoint unbindable, bad configuration); every
 * fault during training is reported to the coordinator and survived. */
shoal_err_t daemon_run(const daemon_config_t *cfg);

/* Test builds only (shoal-worker-attack, SHOAL_HANDOVER_STALL_MS; handover_stall.c): a worker
 * handing its cell over stalls `ms` after the header, as a giver that hangs or dies mid-way. */
void daemon_set_handover_stall_ms(int ms);
/* The same for a worker taking a cell over (SHOAL_HANDOVER_TAKE_STALL_MS): it stalls `ms` after
 * the header, as a slow taker; a newer plan or a stop still ends the stall. */
void daemon_set_handover_take_stall_ms(int ms);

#ifdef __cplusplus
}
#endif
#endif
