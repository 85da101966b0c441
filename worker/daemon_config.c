/* daemon_config.c: the worker daemon's settings table (daemon_config.h). */
#include "daemon_config.h"

#include <stddef.h>
#include <string.h>

#include "cfgtable.h"

/* The numbers live in a struct of their own so the table can name them by offset; the
 * daemon's config holds pointers that a table of values cannot describe. */
typedef struct {
    double grace_seconds;
    int comm_timeout_ms;
    int threads;
} s_values_t;

/* clang-format off */
static const cfg_desc_t s_desc[] = {
    {.key = "--grace-seconds", .type = CFG_REAL, .offset = offsetof(s_values_t, grace_seconds),
     .min = 0, .max = 3600, .flags = CFG_MIN_OPEN, .def = "10",
     .help = "S  on SIGTERM finish or abandon the step within S seconds"},
    {.key = "--comm-timeout-ms", .type = CFG_INT, .offset = offsetof(s_values_t, comm_timeout_ms),
     .min = 10, .max = 86400000, .def = "30000",
     .help = "T  longest collective wait without progress"},
    {.key = "--threads", .type = CFG_INT, .offset = offsetof(s_values_t, threads), .min = 1,
     .max = 1024, .def_doc = "default: the run spec's train.threads", .help = "N  compute threads (GEMM blocks and kernel loops)"},
};
/* clang-format on */

static const char *const s_sections[] = {""};

static const cfgtable_t s_table = {
    .desc = s_desc,
    .n_desc = (int)(sizeof s_desc / sizeof s_desc[0]),
    .sections = s_sections,
    .n_sections = 1,
    .what = "worker daemon flags",
};

static s_values_t s_get(const daemon_config_t *cfg)
{
    return (s_values_t){cfg->grace_seconds, cfg->comm_timeout_ms, cfg->threads};
}

static void s_put(daemon_config_t *cfg, const s_values_t *v)
{
    cfg->grace_seconds = v->grace_seconds;
    cfg->comm_timeout_ms = v->comm_timeout_ms;
    cfg->threads = v->threads;
}

void daemon_config_defaults(daemon_config_t *cfg)
{
    s_values_t v;
    cfgtable_defaults(&s_table, &v, sizeof v);
    s_put(cfg, &v);
}

shoal_err_t daemon_config_set(daemon_config_t *cfg, const char *flag, const char *value)
{
    s_values_t v = s_get(cfg);
    shoal_err_t rc = cfgtable_set(&s_table, &v, flag, value, "shoal-worker");
    if (rc == SHOAL_OK)
        s_put(cfg, &v);
    return rc;
}

void daemon_config_print_flags(FILE *out)
{
    for (int i = 0; i < s_table.n_desc; i++) {
        const cfg_desc_t *d = &s_desc[i];
        const char *space = strchr(d->help, ' ');
        int metavar = space ? (int)(space - d->help) : 0;
        char flag[64];
        snprintf(flag, sizeof flag, "%s %.*s", d->key, metavar, d->help);
        fprintf(out, "  %-20s %s (%s)\n", flag, space ? space + 2 : d->help,
                d->def ? d->def : d->def_doc);
    }
}
