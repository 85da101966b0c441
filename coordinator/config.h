/* config.h: the coordinator's settings: one descriptor table drives defaults, bounds, the YAML
 * config file (errors as FILE:LINE:COLUMN) and the command-line flags (which take precedence). */
#ifndef SHOAL_COORD_CONFIG_H
#define SHOAL_COORD_CONFIG_H

#include <stdio.h>

#include "err.h"

#define CONFIG_STR_MAX 512
#define CONFIG_DEFAULT_STATE_DIR "/var/lib/shoal/coordinator"
#define CONFIG_IPC_PATH_MAX 100 /* sun_path is 108 bytes; stay clear of it */

typedef struct {
    char state_dir[CONFIG_STR_MAX]; /* state_dir: RocksDB and the control socket live here */
    char listen[CONFIG_STR_MAX];    /* listen: worker ROUTER endpoint (tcp, port 7400) */
    char control[CONFIG_STR_MAX];   /* control: shoalctl endpoint ("" = ipc://STATE/control.sock) */
    char log_level[16];             /* log_level: error|warn|info|debug (info) */
    int heartbeat_interval_ms;      /* heartbeat_interval_ms: told to workers (500) */
    int dead_after_ms;              /* dead_after_ms: silence before a worker is dead (3000) */
    int closed_grace_ms;            /* closed_grace_ms: a closed connection, then this beyond a
                                     * heartbeat period without a message: dead (150; 0 = off) */
    int step_window;                /* step_window: steps a worker may run ahead unasked (4) */
    int min_workers;                /* min_workers: live workers needed to start a run (1) */
    int quarantine_after_failures;  /* plan failures in a row that quarantine a worker (3; 0 off) */
    int quarantine_after_bad_messages; /* malformed or out-of-plan messages that quarantine a
                                        * worker (10; 0 off) */
    int rate_limit_msgs_per_s;      /* messages per second per worker connection (5000; 0 off) */
    int rate_limit_burst;           /* the bucket's depth (10000) */
    int replan_backoff_ms;          /* first wait between failure re-plans of a run (1000) */
    int replan_backoff_max_ms;      /* the wait doubles up to this (30000) */
    int expert_load_half_life_steps; /* steps after which a step's expert loads weigh half (32) */
    int replicate_ack_ms;            /* an unconfirmed Replicate is sent again after (30000) */
    int replicate_retries;           /* that many times at most, the wait doubling (3) */
    int plan_deltas;                 /* 1: re-plans send plan deltas to members that can take one */
    int replica_repair_ms;           /* under-replicated shards re-checked this often (30000) */
    char ledger_signing_key[CONFIG_STR_MAX]; /* ledger_signing_key: Ed25519 secret key file
                                              * ("" = STATE_DIR/ledger_signing.key, made at
                                              * first start) */
    char keys_dir[CONFIG_STR_MAX];   /* keys_dir: its CURVE key pair (key.secret, key.public) */
    char allow_list[CONFIG_STR_MAX]; /* allow_list: worker and operator keys (zsec.h format) */
    int insecure;                    /* insecure: 1 = plaintext TCP (--insecure) */
    char log_format[16];            /* log_format: plain|json (plain: journald prefixes under
                                     * systemd) */
    char metrics_listen[CONFIG_STR_MAX]; /* metrics_listen: ADDR:PORT of /metrics ("" = off) */
} coord_config_t;

/* Fills every default. */
void config_defaults(coord_config_t *cfg);

/* Sets one key from its text form; `where` ("FILE:LINE:COL" or "--flag") prefixes errors.
 * SHOAL_ERR_NOTFOUND for an unknown key, SHOAL_ERR_INVALID for a bad or out-of-range value. */
shoal_err_t config_set(coord_config_t *cfg, const char *key, const char *value, const char *where);

/* Applies a YAML file: a mapping of the keys above to scalars. Unknown keys, duplicates,
 * non-scalar values, bad values and YAML syntax errors fail with "FILE:LINE:COL: ...". */
shoal_err_t config_load_file(coord_config_t *cfg, const char *path);

/* config_load_file over `len` bytes of YAML text; `origin` stands for the file name in errors. */
shoal_err_t config_load_string(coord_config_t *cfg, const char *text, size_t len,
                               const char *origin);

/* Resolves derived values (control default from state_dir) and checks ipc:// path lengths. */
shoal_err_t config_finish(coord_config_t *cfg);

/* The list of keys with defaults and bounds, for --help and the docs. */
void config_print_keys(FILE *out);

#endif
