/* events.c: `shoalctl events RUN`: the run's ledger, oldest first: every decision the
 * coordinator made (submit, plans, joins, deaths, checkpoint commits, ...). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ctl_reply.h"
#include "numparse.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl events RUN [--since SEQ] [--limit N] [--follow] [--json]\n"
    "  RUN may also be `cluster`: decisions outside any run (coordinator starts, registrations).\n"
    "  --since SEQ   only entries with seq > SEQ (default 0: from the start)\n"
    "  --limit N     at most N entries (default: all; with --follow: per poll)\n"
    "  --follow      keep polling for new entries once a second until Ctrl-C\n"
    "  --json prints {\"events\": [{\"seq\", \"time_ms\", \"kind\", \"run\", \"detail\",\n"
    "  \"prev_hash\", \"hash\"}]} as stored in the ledger (one object per line with --follow).\n";

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

/* The entries array of the answer (ctl_reply.h: {run, events}). */
static const json_t *s_entries(const json_t *doc)
{
    return json_object_get(doc, CTL_F_EVENTS);
}

static void s_print_entry(const json_t *e, bool json, bool one_line)
{
    if (json) {
        char *s = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s && one_line)
            printf("%s\n", s);
        free(s);
        return;
    }
    char when[80];
    ctl_format_time_ms(ctl_json_int(e, CTL_F_TIME_MS, 0), when, sizeof when);
    char *detail = json_dumps(json_object_get(e, CTL_F_DETAIL), JSON_COMPACT | JSON_ENCODE_ANY);
    printf("%6lld  %s  %-16s %s\n", ctl_json_int(e, CTL_F_SEQ, 0), when,
           ctl_json_str(e, CTL_F_KIND, "?"), detail ? detail : "{}");
    free(detail);
}

int ctl_events_page(const ctl_opts_t *o, ctl_client_t *c, const char *run, uint64_t since,
                    unsigned limit, json_t **doc)
{
    ctl_reply_t reply = {0};
    shoal_err_t rc = ctl_client_events(c, run, since, limit, &reply);
    int ex = ctl_check_reply(o, rc, &reply);
    if (ex == CTL_EXIT_OK && !(*doc = ctl_reply_doc(o, &reply)))
        ex = CTL_EXIT_ERROR;
    ctl_reply_fini(&reply);
    return ex;
}

int cmd_events(ctl_opts_t *o, int argc, char **argv)
{
    const char *since_s = NULL, *limit_s = NULL;
    bool follow = false;
    const ctl_optdef_t defs[] = {{"since", true, &since_s, NULL},
                                 {"limit", true, &limit_s, NULL},
                                 {"follow", false, NULL, &follow},
                                 {NULL, false, NULL, NULL}};
    const char *run;
    int ex = ctl_parse_target(o, argc, argv, defs, s_usage, "RUN", &run);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    uint64_t since = 0, limit = 0;
    if (since_s && numparse_u64(since_s, UINT64_MAX, &since) != SHOAL_OK)
        return ctl_usage_error(o, s_usage, "--since: expected a ledger seq >= 0, got '%s'",
                               since_s);
    if (limit_s && (numparse_u64(limit_s, 1000000, &limit) != SHOAL_OK || limit == 0))
        return ctl_usage_error(o, s_usage, "--limit: expected 1..1000000, got '%s'", limit_s);

    if (follow) {
        signal(SIGINT, s_on_signal);
        signal(SIGTERM, s_on_signal);
    }
    ctl_client_t *c = ctl_connect(o);
    json_t *all = json_array();
    ex = CTL_EXIT_ERROR;
    if (!c || !all)
        goto out;
    bool header = o->json;
    for (;;) {
        json_t *doc = NULL;
        if ((ex = ctl_events_page(o, c, run, since, (unsigned)limit, &doc)) != CTL_EXIT_OK)
            goto out;
        if (!header) { /* only once the coordinator answered: errors leave stdout empty */
            printf("%6s  %-24s  %-16s %s\n", "SEQ", "TIME", "KIND", "DETAIL");
            header = true;
        }
        size_t i, n = 0;
        json_t *e;
        json_array_foreach(s_entries(doc), i, e)
        {
            s_print_entry(e, o->json, follow);
            if (o->json && !follow)
                json_array_append(all, e);
            long long seq = ctl_json_int(e, CTL_F_SEQ, 0);
            if (seq > 0 && (uint64_t)seq > since)
                since = (uint64_t)seq;
            n++;
        }
        json_decref(doc);
        fflush(stdout);
        /* Without --limit, ask again while full pages (the coordinator's 1000) come back;
         * with it, one answer is the whole result. --follow polls until interrupted. */
        if (!follow && (limit > 0 || n < 1000))
            break;
        if (follow && n == 0)
            clock_sleep_ms(1000);
        if (s_stop)
            break;
    }
    if (o->json && !follow) {
        json_t *out = json_pack("{s:O}", CTL_F_EVENTS, all);
        if (out)
            ctl_print_json(out);
        json_decref(out);
    }
    ex = CTL_EXIT_OK;
out:
    json_decref(all);
    ctl_client_destroy(&c);
    return ex;
}
