/* history.c: `shoalctl history RUN [--json|--csv] [--from STEP]`: the run's per-step history as
 * the coordinator keeps it (one row per committed step: wall time, loss, tokens, tokens/s, step
 * time, grad norm, plan generation), read page by page and printed as it comes, so that a long
 * run is never one giant reply or one giant buffer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"
#include "numparse.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl history RUN [--from STEP] [--json | --csv]\n"
    "  The run's per-step history as the coordinator recorded it: one row per committed step\n"
    "  with the commit's wall time, the loss (mean over the ranks), the step's tokens (the\n"
    "  global batch), tokens/s, the slowest rank's step time, the grad norm and the plan\n"
    "  generation. A step committed together with later ones (heartbeat-only reports) has no\n"
    "  row of its own.\n"
    "  --from STEP   rows from this step on (default 1)\n"
    "  --json        {\"run\": ID, \"rows\": [{\"step\", \"time_ms\", \"loss\", \"tokens\",\n"
    "                \"step_seconds\", \"tokens_per_s\", \"grad_norm\", \"generation\", \"ranks\"}]}\n"
    "  --csv         the same fields, one line per row, with a header line\n";

static const char *const s_fields[] = {"step",         "time_ms",   "loss",
                                       "tokens",       "step_seconds", "tokens_per_s",
                                       "grad_norm",    "generation", "ranks"};
#define S_N_FIELDS (sizeof s_fields / sizeof s_fields[0])

int ctl_history_each(const ctl_opts_t *o, const char *run, int64_t from, ctl_history_fn fn,
                     void *ctx, char *run_id, size_t cap)
{
    ctl_client_t *c = ctl_connect(o);
    if (!c)
        return CTL_EXIT_ERROR;
    uint64_t since = from > 1 ? (uint64_t)(from - 1) : 0;
    int ex = CTL_EXIT_OK;
    for (bool more = true; more && ex == CTL_EXIT_OK;) {
        ctl_reply_t reply = {0};
        json_t *doc = NULL;
        ex = ctl_check_reply(o, ctl_client_history(c, run, since, 0, &reply), &reply);
        if (ex == CTL_EXIT_OK && !(doc = ctl_reply_doc(o, &reply)))
            ex = CTL_EXIT_ERROR;
        ctl_reply_fini(&reply);
        if (ex != CTL_EXIT_OK)
            break;
        if (run_id)
            snprintf(run_id, cap, "%s", ctl_json_str(doc, CTL_F_RUN, run));
        const json_t *rows = json_object_get(doc, CTL_F_ROWS);
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row)
        {
            if (ex == CTL_EXIT_OK)
                ex = fn(row, ctx);
        }
        const long long next = ctl_json_int(doc, CTL_F_NEXT, 0);
        /* a next that does not move on would loop forever: treat it as the end */
        more = next > 0 && (uint64_t)next > since && json_array_size(rows) > 0;
        since = more ? (uint64_t)next : since;
        json_decref(doc);
    }
    ctl_client_destroy(&c);
    return ex;
}

static int s_append(json_t *row, void *ctx)
{
    return json_array_append(ctx, row) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}

int ctl_history_fetch(const ctl_opts_t *o, const char *run, json_t **rows, char *run_id,
                      size_t cap)
{
    if (!(*rows = json_array()))
        return ctl_error(o, "out of memory");
    int ex = ctl_history_each(o, run, 1, s_append, *rows, run_id, cap);
    if (ex != CTL_EXIT_OK) {
        json_decref(*rows);
        *rows = NULL;
    }
    return ex;
}

typedef struct {
    const ctl_opts_t *o;
    bool csv;
    long long n, t0_ms;
    const char *run_id; /* set by ctl_history_each before the first row */
} s_print_t;

/* --json: the envelope around the rows (ids are [A-Za-z0-9-_]: no escaping needed) */
static void s_json_open(const s_print_t *p)
{
    printf("{\n  \"run\": \"%s\",\n  \"rows\": [", p->run_id);
}

static int s_print_row(json_t *row, void *ctxp)
{
    s_print_t *p = ctxp;
    if (p->o->json) {
        char *s = json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!s)
            return ctl_error(p->o, "out of memory");
        if (p->n == 0)
            s_json_open(p);
        printf("%s\n    %s", p->n ? "," : "", s);
        free(s);
    } else if (p->csv) {
        for (size_t f = 0; f < S_N_FIELDS; f++) {
            const json_t *v = json_object_get(row, s_fields[f]);
            if (json_is_integer(v))
                printf("%s%lld", f ? "," : "", (long long)json_integer_value(v));
            else
                printf("%s%.9g", f ? "," : "", json_number_value(v));
        }
        putchar('\n');
    } else {
        const long long ms = ctl_json_int(row, "time_ms", 0);
        if (p->n == 0) {
            printf("%8s  %-24s  %9s  %10s  %12s  %9s  %9s  %4s\n", "STEP", "TIME", "ELAPSED",
                   "LOSS", "TOKENS/S", "STEP_S", "GNORM", "GEN");
            p->t0_ms = ms;
        }
        char when[40], elapsed[32];
        ctl_format_time_ms(ms, when, sizeof when);
        snprintf(elapsed, sizeof elapsed, "%.1f s", (double)(ms - p->t0_ms) / 1000.0);
        printf("%8lld  %-24s  %9s  %10.4f  %12.1f  %9.3f  %9.3f  %4lld\n",
               ctl_json_int(row, "step", 0), when, elapsed, ctl_json_real(row, "loss", 0),
               ctl_json_real(row, "tokens_per_s", 0), ctl_json_real(row, "step_seconds", 0),
               ctl_json_real(row, "grad_norm", 0), ctl_json_int(row, "generation", 0));
    }
    p->n++;
    return CTL_EXIT_OK;
}

int cmd_history(ctl_opts_t *o, int argc, char **argv)
{
    const char *from_s = NULL;
    bool csv = false;
    const ctl_optdef_t defs[] = {{"from", true, &from_s, NULL},
                                 {"csv", false, NULL, &csv},
                                 {NULL, false, NULL, NULL}};
    const char *run;
    int ex = ctl_parse_target(o, argc, argv, defs, s_usage, "RUN", &run);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    int64_t from = 1;
    if (from_s && numparse_i64(from_s, 1, INT64_MAX, &from) != SHOAL_OK)
        return ctl_usage_error(o, s_usage, "--from: expected a step >= 1, got '%s'", from_s);
    if (csv && o->json)
        return ctl_usage_error(o, s_usage, "--json and --csv exclude each other");
    char run_id[64] = "";
    s_print_t p = {o, csv, 0, 0, run_id};
    if (csv)
        for (size_t f = 0; f < S_N_FIELDS; f++)
            printf("%s%s", s_fields[f], f + 1 < S_N_FIELDS ? "," : "\n");
    /* JSON streams too: the envelope is opened before the first row, closed after the last */
    ex = ctl_history_each(o, run, from, s_print_row, &p, run_id, sizeof run_id);
    if (ex != CTL_EXIT_OK)
        return ex;
    if (o->json) {
        if (p.n == 0)
            s_json_open(&p);
        printf("%s]\n}\n", p.n ? "\n  " : "");
    } else if (!csv && p.n == 0) {
        printf("run %s: no committed step yet\n", run_id[0] ? run_id : run);
    }
    return CTL_EXIT_OK;
}
