/* daemon_config.h: the worker daemon's tunable settings (daemon_config_t's numbers) in one
 * descriptor table (common/cfgtable.h): defaults, bounds, flag parsing and --help lines. The
 * one home of the daemon's defaults: grace 10 s, collective timeout 30000 ms, threads from the
 * run spec. */
#ifndef SHOAL_WORKER_DAEMON_CONFIG_H
#define SHOAL_WORKER_DAEMON_CONFIG_H

#include <stdio.h>

#include "daemon.h"
#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sets grace_seconds, comm_timeout_ms and threads to their defaults; other fields untouched. */
void daemon_config_defaults(daemon_config_t *cfg);

/* Applies one flag ("--grace-seconds", "--comm-timeout-ms", "--threads") from its text.
 * SHOAL_ERR_NOTFOUND for another flag; SHOAL_ERR_INVALID with "shoal-worker: --threads:
 * 0 is out of range [1, 1024]". */
shoal_err_t daemon_config_set(daemon_config_t *cfg, const char *flag, const char *value);

/* The --help lines of these flags: "  --grace-seconds S    ... (10)". */
void daemon_config_print_flags(FILE *out);

#ifdef __cplusplus
}
#endif
#endif
