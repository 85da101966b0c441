/* verify.c: `shoalctl verify RUN`: the coordinator re-checks the run's ledger hash chain from
 * its first entry; exit 1 when any entry is missing, altered or out of order. */
#include "ctl_reply.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl verify RUN [--json]\n"
    "  Recomputes every ledger entry's hash and checks the chain. Exit 0 when intact, 1 when\n"
    "  broken (the first bad entry and the reason are printed).\n"
    "  --json prints the coordinator's verification document (ok, entries, first_bad, reason).\n";

int cmd_verify(ctl_opts_t *o, int argc, char **argv)
{
    const char *run;
    int ex = ctl_parse_target(o, argc, argv, NULL, s_usage, "RUN", &run);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;

    ctl_reply_t reply = {0};
    json_t *doc = NULL;
    ex = CTL_EXIT_ERROR;
    shoal_err_t rc = ctl_call(o, ctl_client_verify, run, &reply);
    if (rc != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    /* A verdict (intact or broken) carries the verify document (ctl_reply.h); a refusal (unknown
     * run, ...) carries none. */
    if (!reply.json[0]) {
        ex = reply.ok ? ctl_error(o, "run %s: the coordinator sent no verification", run)
                      : ctl_check_reply(o, rc, &reply);
        goto out;
    }
    ctl_verify_t v;
    if (!(doc = ctl_reply_doc(o, &reply)))
        goto out;
    if (ctl_verify_decode(doc, &v) != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    if (o->json)
        ctl_print_json(doc);
    if (reply.ok && v.ok) {
        if (!o->json)
            printf("run %s: ledger intact, %llu entries verified\n", run,
                   (unsigned long long)v.entries);
        ex = CTL_EXIT_OK;
    } else {
        ctl_error(o, "run %s: ledger BROKEN at entry %llu: %s", run,
                  (unsigned long long)v.first_bad, v.reason[0] ? v.reason : "(no reason given)");
    }
out:
    json_decref(doc);
    ctl_reply_fini(&reply);
    return ex;
}
