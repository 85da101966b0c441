/* verify.c: `shoalctl verify`: checks a run's ledger. Without a public key the coordinator
 * re-checks its own hash chain (and its own signatures); with --pubkey shoalctl fetches the
 * entries (or reads an exported ledger file) and checks the chain and every entry's Ed25519
 * signature itself, trusting nothing the coordinator says about them. */
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"
#include "ledger_chain.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl verify RUN [--pubkey FILE|HEX] [--json]\n"
    "       shoalctl verify --ledger FILE --pubkey FILE|HEX [--json]\n"
    "  Recomputes every ledger entry's hash and checks the chain. Exit 0 when intact, 1 when\n"
    "  broken (the first bad entry and the reason are printed).\n"
    "  --pubkey K    the coordinator's Ed25519 public key (64 hex digits, or a file holding them,\n"
    "                e.g. STATE_DIR/ledger_signing.pub): shoalctl checks the chain and that\n"
    "                EVERY entry is signed by K; unsigned entries fail\n"
    "  --ledger FILE check an exported ledger (`shoalctl events RUN --json > FILE`) offline,\n"
    "                without a coordinator\n"
    "  --json prints the verification document (run, ok, entries, first_bad, reason).\n";

/* Every entry of `run`'s chain, page by page, into the array `all`. */
static int s_fetch_all(const ctl_opts_t *o, const char *run, json_t *all, char *chain,
                       size_t chain_cap)
{
    ctl_client_t *c = ctl_connect(o);
    if (!c)
        return CTL_EXIT_ERROR;
    uint64_t since = 0;
    int ex;
    for (;;) {
        json_t *doc = NULL;
        if ((ex = ctl_events_page(o, c, run, since, 0, &doc)) != CTL_EXIT_OK)
            break;
        snprintf(chain, chain_cap, "%s", ctl_json_str(doc, CTL_F_RUN, run));
        json_t *page = json_object_get(doc, CTL_F_EVENTS);
        size_t n = json_array_size(page);
        json_array_extend(all, page);
        long long last = n ? ctl_json_int(json_array_get(page, n - 1), CTL_F_SEQ, 0) : 0;
        json_decref(doc);
        if (n < 1000 || last <= 0 || (uint64_t)last <= since)
            break;
        since = (uint64_t)last;
    }
    ctl_client_destroy(&c);
    return ex;
}

/* An exported ledger: {"events": [...]} as `shoalctl events RUN --json` prints it, or a bare
 * array of entries. */
static json_t *s_load_export(const ctl_opts_t *o, const char *path)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        ctl_error(o, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    json_t *entries = json_is_array(doc) ? json_incref(doc)
                                         : json_incref(json_object_get(doc, CTL_F_EVENTS));
    json_decref(doc);
    if (!json_is_array(entries)) {
        json_decref(entries);
        ctl_error(o, "%s: not an exported ledger (expected {\"events\": [...]} or an array)",
                  path);
        return NULL;
    }
    return entries;
}

/* Prints the verdict on a chain checked here; returns the exit code. */
static int s_report(const ctl_opts_t *o, const char *what, const char *pk_hex, uint64_t n,
                    uint64_t bad, const char *reason)
{
    if (!bad && n == 0) {
        bad = 1;
        reason = "entry 1: the ledger holds no entries";
    }
    if (o->json) {
        json_t *doc = ctl_verify_encode(&(ctl_verify_t){
            .run = what, .reason = reason, .entries = n, .first_bad = bad, .ok = bad == 0});
        ctl_print_json(doc);
        json_decref(doc);
    }
    if (bad)
        return ctl_error(o, "%s: ledger BROKEN at %s (public key %s)", what, reason, pk_hex);
    if (!o->json)
        printf("%s: ledger intact, %llu entries verified, every one signed by %s\n", what,
               (unsigned long long)n, pk_hex);
    return CTL_EXIT_OK;
}

static int s_verify_signed(ctl_opts_t *o, const char *run, const char *ledger_file,
                           const char *pubkey)
{
    uint8_t pk[LEDGER_PUBKEY_LEN];
    char pk_hex[LEDGER_PUBKEY_HEX], chain[256], reason[512];
    if (ledger_pubkey_parse(pubkey, pk) != SHOAL_OK)
        return ctl_error(o, "--pubkey: %s", shoal_errmsg());
    ledger_hex(pk, sizeof pk, pk_hex);
    json_t *entries = NULL;
    int ex = CTL_EXIT_ERROR;
    if (ledger_file) {
        snprintf(chain, sizeof chain, "%s", ledger_file);
        entries = s_load_export(o, ledger_file);
    } else if ((entries = json_array())) {
        ex = s_fetch_all(o, run, entries, chain, sizeof chain);
        if (ex != CTL_EXIT_OK) {
            json_decref(entries);
            return ex;
        }
    }
    if (!entries)
        return CTL_EXIT_ERROR;
    uint64_t n = 0, bad = 0;
    ledger_chain_check_array(entries, pk, true, &n, &bad, reason, sizeof reason);
    json_decref(entries);
    char what[300];
    snprintf(what, sizeof what, "%s %s", ledger_file ? "file" : "run", chain);
    return s_report(o, what, pk_hex, n, bad, reason);
}

int cmd_verify(ctl_opts_t *o, int argc, char **argv)
{
    const char *pubkey = NULL, *ledger_file = NULL, *run = NULL;
    const ctl_optdef_t defs[] = {{"pubkey", true, &pubkey, NULL},
                                 {"ledger", true, &ledger_file, NULL},
                                 {NULL, false, NULL, NULL}};
    int ex = ctl_parse_target(o, argc, argv, defs, s_usage, NULL, &run);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    if (ledger_file && run)
        return ctl_usage_error(o, s_usage, "give RUN or --ledger FILE, not both");
    if (ledger_file && !pubkey)
        return ctl_usage_error(o, s_usage, "--ledger needs --pubkey (whose signatures to check)");
    if (!ledger_file && !run)
        return ctl_usage_error(o, s_usage, "missing RUN");
    if (pubkey)
        return s_verify_signed(o, run, ledger_file, pubkey);

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
