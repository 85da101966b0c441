/* verify.c: `shoalctl verify RUN`: the coordinator re-checks the run's ledger hash chain from
 * its first entry; exit 1 when any entry is missing, altered or out of order. */
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl verify RUN [--json]\n"
    "  Recomputes every ledger entry's hash and checks the chain. Exit 0 when intact, 1 when\n"
    "  broken (the first bad entry and the reason are printed).\n"
    "  --json prints the coordinator's verification document (ok, entries, first_bad, reason).\n";

/* A chain is broken when the document says so in any of the ways it may: ok/valid false or a
 * first bad entry. */
static bool s_chain_ok(const json_t *doc)
{
    const char *keys[] = {"ok", "valid", "verified"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const json_t *v = json_object_get(doc, keys[i]);
        if (json_is_boolean(v) && !json_is_true(v))
            return false;
    }
    return ctl_json_int(doc, "first_bad", 0) == 0;
}

int cmd_verify(ctl_opts_t *o, int argc, char **argv)
{
    const char *pos[1];
    int n_pos;
    int ex = ctl_parse_args(o, argc, argv, NULL, s_usage, pos, 1, &n_pos);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    if (n_pos != 1)
        return ctl_usage_error(o, s_usage, "expected one RUN");

    ctl_reply_t reply = {0};
    json_t *doc = NULL;
    ctl_client_t *c = ctl_connect(o);
    ex = CTL_EXIT_ERROR;
    if (!c)
        goto out;
    shoal_err_t rc = ctl_client_verify(c, pos[0], &reply);
    if (rc != SHOAL_OK) {
        ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    /* A broken chain may come back as ok=false with the document still attached. */
    doc = reply.json[0] ? ctl_reply_doc(o, &reply) : NULL;
    bool intact = reply.ok && (!doc || s_chain_ok(doc));
    if (!reply.ok && !json_object_get(doc, "first_bad")) {
        /* Refused (unknown run, ...) rather than a verdict on the chain. */
        ex = ctl_check_reply(o, rc, &reply);
        goto out;
    }
    if (o->json && doc)
        ctl_print_json(doc);
    if (intact) {
        if (!o->json)
            printf("run %s: ledger intact, %lld entries verified\n", pos[0],
                   ctl_json_int(doc, "entries", ctl_json_int(doc, "n_entries", 0)));
        ex = CTL_EXIT_OK;
    } else {
        const char *why = ctl_json_str(doc, "reason", reply.message);
        ctl_error(o, "run %s: ledger BROKEN at entry %lld: %s", pos[0],
                  ctl_json_int(doc, "first_bad", 0), why && *why ? why : "(no reason given)");
    }
out:
    json_decref(doc);
    ctl_reply_fini(&reply);
    ctl_client_destroy(&c);
    return ex;
}
