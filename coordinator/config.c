/* config.c: the coordinator's config table, its YAML file (libyaml events, positions in every
 * error) and flag overrides. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "log.h"

typedef enum { CFG_STR, CFG_INT, CFG_LEVEL } cfg_type_t;

typedef struct {
    const char *key;
    cfg_type_t type;
    size_t offset;
    size_t size; /* for strings */
    const char *def;
    long min, max;
    const char *help;
} cfg_desc_t;

#define STR(k, field, def, help)                                                                   \
    {                                                                                              \
        k, CFG_STR, offsetof(coord_config_t, field), sizeof(((coord_config_t *)0)->field), def, 0, \
            0, help                                                                                \
    }
#define INT(k, field, def, lo, hi, help)                                                           \
    {                                                                                              \
        k, CFG_INT, offsetof(coord_config_t, field), 0, def, lo, hi, help                          \
    }

/* The one table of settings: YAML keys, flags (--state-dir for state_dir), defaults, bounds. */
static const cfg_desc_t s_table[] = {
    STR("state_dir", state_dir, CONFIG_DEFAULT_STATE_DIR, "RocksDB state and control socket"),
    STR("listen", listen, "tcp://*:7400", "worker ROUTER endpoint"),
    STR("control", control, "", "shoalctl endpoint (default ipc://STATE_DIR/control.sock)"),
    {"log_level", CFG_LEVEL, offsetof(coord_config_t, log_level), 16, "info", 0, 0,
     "error, warn, info or debug"},
    INT("heartbeat_interval_ms", heartbeat_interval_ms, "500", 10, 600000,
        "heartbeat period told to workers"),
    INT("dead_after_ms", dead_after_ms, "3000", 50, 86400000,
        "silence after which a worker is declared dead"),
    INT("step_window", step_window, "4", 1, 1000000,
        "steps workers may train ahead of the last committed step"),
    INT("min_workers", min_workers, "1", 1, 1000000, "live workers needed to start a run"),
    INT("quarantine_after_failures", quarantine_after_failures, "3", 0, 1000000,
        "plan failures in a row (no step between) that quarantine a worker; 0 = never"),
    INT("replan_backoff_ms", replan_backoff_ms, "1000", 0, 3600000,
        "least wait between two re-plans of a run caused by failures"),
    INT("replan_backoff_max_ms", replan_backoff_max_ms, "30000", 0, 3600000,
        "the failure re-plan wait doubles up to this"),
};
#define N_KEYS (sizeof s_table / sizeof s_table[0])

static const cfg_desc_t *s_find(const char *key)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(s_table[i].key, key) == 0)
            return &s_table[i];
    return NULL;
}

shoal_err_t config_set(coord_config_t *cfg, const char *key, const char *value, const char *where)
{
    const cfg_desc_t *d = s_find(key);
    if (!d)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s: unknown key '%s'", where, key);
    char *dst = (char *)cfg + d->offset;
    switch (d->type) {
    case CFG_LEVEL:
        if (log_level_parse(value) < 0)
            return shoal_fail(SHOAL_ERR_INVALID,
                              "%s: %s: '%s' is not one of error, warn, info, debug", where, key,
                              value);
        /* fallthrough */
    case CFG_STR:
        if (strlen(value) >= d->size)
            return shoal_fail(SHOAL_ERR_INVALID, "%s: %s: value longer than %zu bytes", where, key,
                              d->size - 1);
        memcpy(dst, value, strlen(value) + 1);
        return SHOAL_OK;
    case CFG_INT: {
        char *end = NULL;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end)
            return shoal_fail(SHOAL_ERR_INVALID, "%s: %s: '%s' is not an integer", where, key,
                              value);
        if (v < d->min || v > d->max)
            return shoal_fail(SHOAL_ERR_INVALID, "%s: %s: %ld is out of range [%ld, %ld]", where,
                              key, v, d->min, d->max);
        *(int *)dst = (int)v;
        return SHOAL_OK;
    }
    }
    return shoal_fail(SHOAL_ERR_INVALID, "%s: %s: bad descriptor", where, key);
}

void config_defaults(coord_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_KEYS; i++) {
        shoal_err_t rc = config_set(cfg, s_table[i].key, s_table[i].def, "default");
        (void)rc; /* the table's defaults are valid by construction (tested) */
    }
}

void config_print_keys(FILE *out)
{
    for (size_t i = 0; i < N_KEYS; i++)
        fprintf(out, "  %-26s %s (default %s)\n", s_table[i].key, s_table[i].help,
                s_table[i].def[0] ? s_table[i].def : "derived");
}

shoal_err_t config_load_file(coord_config_t *cfg, const char *path)
{
    shoal_err_t rc = SHOAL_OK;
    FILE *f = fopen(path, "rb");
    if (!f)
        return shoal_fail(SHOAL_ERR_IO, "%s: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_event_t ev;
    int have_ev = 0, depth = 0, seen_map = 0;
    unsigned char seen[N_KEYS] = {0};
    char key[128] = "";
    int expect_value = 0;
    char where[600];
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: yaml parser", path);
    }
    yaml_parser_set_input_file(&parser, f);
    for (;;) {
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "%s:%zu:%zu: YAML error: %s", path,
                            parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                            parser.problem ? parser.problem : "syntax");
            goto out;
        }
        have_ev = 1;
        snprintf(where, sizeof where, "%s:%zu:%zu", path, ev.start_mark.line + 1,
                 ev.start_mark.column + 1);
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            goto out;
        case YAML_MAPPING_START_EVENT:
            if (depth > 0 || seen_map) {
                rc = shoal_fail(SHOAL_ERR_INVALID, "%s: %s%s: expected a scalar value", where,
                                key[0] ? key : "", key[0] ? "" : "config");
                goto out;
            }
            depth++;
            seen_map = 1;
            break;
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        case YAML_SEQUENCE_START_EVENT:
            rc = shoal_fail(SHOAL_ERR_INVALID, "%s: %s: expected a scalar value, not a list", where,
                            expect_value ? key : "config");
            goto out;
        case YAML_ALIAS_EVENT:
            rc = shoal_fail(SHOAL_ERR_INVALID, "%s: aliases are not supported", where);
            goto out;
        case YAML_SCALAR_EVENT: {
            const char *text = (const char *)ev.data.scalar.value;
            if (depth != 1) {
                rc = shoal_fail(SHOAL_ERR_INVALID, "%s: expected a mapping of settings", where);
                goto out;
            }
            if (!expect_value) {
                const cfg_desc_t *d = s_find(text);
                if (!d) {
                    rc = shoal_fail(SHOAL_ERR_NOTFOUND, "%s: unknown key '%s'", where, text);
                    goto out;
                }
                size_t idx = (size_t)(d - s_table);
                if (seen[idx]) {
                    rc = shoal_fail(SHOAL_ERR_INVALID, "%s: duplicate key '%s'", where, text);
                    goto out;
                }
                seen[idx] = 1;
                snprintf(key, sizeof key, "%s", text);
                expect_value = 1;
            } else {
                SHOAL_CHECK_GOTO(config_set(cfg, key, text, where), rc, out);
                expect_value = 0;
            }
            break;
        }
        default:
            break;
        }
        yaml_event_delete(&ev);
        have_ev = 0;
    }
out:
    if (have_ev)
        yaml_event_delete(&ev);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
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
    shoal_err_t rc = s_check_ipc(cfg->control, "control");
    if (rc == SHOAL_OK)
        rc = s_check_ipc(cfg->listen, "listen");
    return rc;
}
