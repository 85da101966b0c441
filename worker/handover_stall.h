/* handover_stall.h: shoal-worker-attack's stalled hand-over giver (test build only). */
#ifndef SHOAL_WORKER_HANDOVER_STALL_H
#define SHOAL_WORKER_HANDOVER_STALL_H

/* SHOAL_HANDOVER_STALL_MS=N (1..3600000): a cell this worker hands over stalls N ms after the
 * header (daemon_set_handover_stall_ms); SHOAL_HANDOVER_TAKE_STALL_MS=N: a cell it takes over
 * stalls N ms after the header (daemon_set_handover_take_stall_ms). 0 when unset or set, -1 for
 * a bad value (printed). */
int handover_stall_install_from_env(void);

#endif
