/* config.c: the coordinator's config table; common/cfgtable reads its YAML file (positions in
 * every error) and applies flag overrides. */
#include "config.h"

#include <stddef.h>
#include <string.h>

#include "cfgtable.h"
#include "log.h"

static int s_level_check(const char *value, char *msg, size_t cap)
{
    if (log_level_parse(value) >= 0)
        return 1;
    snprintf(msg, cap, "'%s' is not one of error, warn, info, debug", value);
    return 0;
}

static int s_format_check(const char *value, char *msg, size_t cap)
{
    if (log_format_parse(value) >= 0)
        return 1;
    snprintf(msg, cap, "'%s' is not one of plain, json", value);
    return 0;
}

/* clang-format off */
#define STR(k, dflt, h)                                                                       \
    {.key = #k, .type = CFG_STR, .offset = offsetof(coord_config_t, k),                      \
     .size = sizeof(((coord_config_t *)0)->k), .def = dflt, .help = h}
#define INT(k, dflt, lo, hi, h)                                                               \
    {.key = #k, .type = CFG_INT, .offset = offsetof(coord_config_t, k), .min = lo, .max = hi, \
     .def = dflt, .help = h}

/* The one table of settings: YAML keys, flags (--state-dir for state_dir), defaults, bounds. */
static const cfg_desc_t s_desc[] = {
    STR(state_dir, CONFIG_DEFAULT_STATE_DIR, "RocksDB state and control socket"),
    STR(listen, "tcp://*:7400", "worker ROUTER endpoint"),
    STR(control, "", "shoalctl endpoint (default ipc://STATE_DIR/control.sock)"),
    {.key = "log_level", .type = CFG_STR, .offset = offsetof(coord_config_t, log_level),
     .size = sizeof(((coord_config_t *)0)->log_level), .check = s_level_check, .def = "info",
     .help = "error, warn, info or debug"},
    INT(heartbeat_interval_ms, "500", 10, 600000, "heartbeat period told to workers"),
    INT(dead_after_ms, "3000", 50, 86400000, "silence after which a worker is declared dead"),
    INT(closed_grace_ms, "150", 0, 86400000,
        "a worker whose connection closed and that sends nothing for a heartbeat period plus "
        "this is dead (a killed process: well under a second); 0 = heartbeats only"),
    INT(step_window, "4", 1, 1000000, "steps workers may train ahead of the last committed step"),
    INT(min_workers, "1", 1, 1000000, "live workers needed to start a run"),
    INT(quarantine_after_failures, "3", 0, 1000000,
        "plan failures in a row (no step between) that quarantine a worker; 0 = never"),
    INT(quarantine_after_bad_messages, "10", 0, 1000000,
        "malformed or out-of-plan messages from a worker that quarantine it; 0 = never"),
    INT(rate_limit_msgs_per_s, "5000", 0, 100000000,
        "messages per second one worker connection may send (token bucket; the excess is "
        "dropped unanswered and counted); 0 = no limit"),
    INT(rate_limit_burst, "10000", 1, 100000000, "depth of that bucket (messages)"),
    INT(replan_backoff_ms, "1000", 0, 3600000,
        "least wait between two re-plans of a run caused by failures"),
    INT(replan_backoff_max_ms, "30000", 0, 3600000, "the failure re-plan wait doubles up to this"),
    INT(replicate_ack_ms, "30000", 0, 86400000,
        "a Replicate order whose copy is not confirmed (MSG_SHARD_HELD) within this is sent "
        "again, the wait doubling each time; 0 = sent once"),
    INT(replicate_retries, "3", 0, 1000, "re-sends of one unconfirmed Replicate order"),
    INT(plan_deltas, "1", 0, 1,
        "1 = after a re-plan a member that was sent the previous generation gets only the peers "
        "that changed (ops/COORDINATOR.md); 0 = every member gets the full plan"),
    INT(replica_repair_ms, "30000", 0, 86400000,
        "every this long, each active run's newest checkpoint is checked for shards with fewer "
        "live holders than checkpoint.replicas + 1 and no order in flight, and copies ordered "
        "(orders live in memory: this repairs what a coordinator restart forgot); 0 = off"),
    INT(expert_load_half_life_steps, "32", 1, 1000000,
        "hot experts: steps after which a step's reported expert loads weigh half"),
    STR(ledger_signing_key, "",
        "Ed25519 key file that signs the ledger (shoalctl keys new-signing); default "
        "STATE_DIR/ledger_signing.key, created at first start"),
    STR(keys_dir, "", "CURVE key pair dir (key.secret 0600, key.public; shoalctl keys new)"),
    STR(allow_list, "", "CURVE allow-list file: worker and operator public keys (ops/SECURITY.md)"),
    INT(insecure, "0", 0, 1, "1 = plaintext TCP without CURVE (--insecure; a warning at start)"),
    {.key = "log_format", .type = CFG_STR, .offset = offsetof(coord_config_t, log_format),
     .size = sizeof(((coord_config_t *)0)->log_format), .check = s_format_check, .def = "plain",
     .help = "plain (journald priority prefixes under systemd) or json"},
    STR(metrics_listen, "", "ADDR:PORT serving Prometheus /metrics over HTTP (\"\" = off)"),
};
/* clang-format on */

static const char *const s_sections[] = {""};

static const cfgtable_t s_table = {
    .desc = s_desc,
    .n_desc = (int)(sizeof s_desc / sizeof s_desc[0]),
    .sections = s_sections,
    .n_sections = 1,
    .what = "coordinator config",
    .allow_empty = 1,
    .text_values = 1, /* a value in the file means what the same text means as a flag */
};

shoal_err_t config_set(coord_config_t *cfg, const char *key, const char *value, const char *where)
{
    return cfgtable_set(&s_table, cfg, key, value, where);
}

void config_defaults(coord_config_t *cfg)
{
    cfgtable_defaults(&s_table, cfg, sizeof *cfg);
}

void config_print_keys(FILE *out)
{
    for (int i = 0; i < s_table.n_desc; i++)
        fprintf(out, "  %-26s %s (default %s)\n", s_desc[i].key, s_desc[i].help,
                s_desc[i].def[0] ? s_desc[i].def : "derived");
}

shoal_err_t config_load_file(coord_config_t *cfg, const char *path)
{
    return cfgtable_load_file(&s_table, cfg, path);
}

shoal_err_t config_load_string(coord_config_t *cfg, const char *text, size_t len,
                               const char *origin)
{
    return cfgtable_load_string(&s_table, cfg, text, len, origin, NULL);
}

static shoal_err_t s_check_ipc(const char *endpoint, const char *key)
{
    if (strncmp(endpoint, "ipc://", 6) != 0)
        return SHOAL_OK;
    size_t n = strlen(endpoint + 6);
    if (n >= CONFIG_IPC_PATH_MAX)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "%s: ipc socket path of %zu bytes is too long (max %d): %s; use a "
                          "shorter state dir or set %s explicitly",
                          key, n, CONFIG_IPC_PATH_MAX - 1, endpoint + 6, key);
    return SHOAL_OK;
}

shoal_err_t config_finish(coord_config_t *cfg)
{
    if (!cfg->control[0]) {
        int n =
            snprintf(cfg->control, sizeof cfg->control, "ipc://%s/control.sock", cfg->state_dir);
        if (n >= (int)sizeof cfg->control)
            return shoal_fail(SHOAL_ERR_INVALID, "state_dir too long: %s", cfg->state_dir);
    }
    if (!cfg->state_dir[0])
        return shoal_fail(SHOAL_ERR_INVALID, "state_dir: empty");
    if (cfg->dead_after_ms <= cfg->heartbeat_interval_ms)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "dead_after_ms (%d) must exceed heartbeat_interval_ms (%d)",
                          cfg->dead_after_ms, cfg->heartbeat_interval_ms);
    if (cfg->replan_backoff_max_ms < cfg->replan_backoff_ms)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "replan_backoff_max_ms (%d) must be at least replan_backoff_ms (%d)",
                          cfg->replan_backoff_max_ms, cfg->replan_backoff_ms);
    const int tcp = strncmp(cfg->listen, "tcp://", 6) == 0 || strncmp(cfg->control, "tcp://", 6) == 0;
    if (tcp && !cfg->insecure && (!cfg->keys_dir[0] || !cfg->allow_list[0]))
        return shoal_fail(SHOAL_ERR_INVALID,
                          "TCP endpoints need CURVE: set keys_dir and allow_list (ops/SECURITY.md), "
                          "or run with --insecure for plaintext");
    shoal_err_t rc = s_check_ipc(cfg->control, "control");
    if (rc == SHOAL_OK)
        rc = s_check_ipc(cfg->listen, "listen");
    return rc;
}
