/* fuzz_ctl_json: the JSON documents of the control API as shoalctl decodes the coordinator's
 * replies (common/ctl_reply.c: status, workers, verify), a plan document as the coordinator
 * reloads it (plan_from_json), and an exported ledger as `shoalctl verify --ledger` checks it
 * (common/ledger_chain.c). Invariant: a plan that parses serialises to JSON that parses again. */
#include <jansson.h>

#include "ctl_reply.h"
#include "fuzz_util.h"
#include "ledger_chain.h"
#include "plan.h"

static void s_each_object(const json_t *doc)
{
    ctl_run_status_t rs;
    ctl_worker_t w;
    ctl_verify_t v;
    ctl_run_status_decode(doc, &rs);
    ctl_worker_decode(doc, &w);
    (void)ctl_verify_decode(doc, &v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)data, size, JSON_DECODE_ANY, &jerr);
    if (!doc)
        return 0;
    s_each_object(doc);
    const char *k;
    json_t *v, *e;
    size_t i;
    if (json_is_object(doc)) /* the lists of a reply: {"runs": [...]}, {"workers": [...]} */
        json_object_foreach(doc, k, v)
        {
            json_array_foreach(v, i, e) s_each_object(e);
        }

    plan_t plan;
    memset(&plan, 0, sizeof plan);
    const json_t *pj = json_object_get(doc, "plan"); /* shoalctl plan's reply holds one */
    if (plan_from_json(pj ? pj : doc, &plan) == SHOAL_OK) {
        json_t *again = plan_to_json(&plan);
        plan_t plan2;
        memset(&plan2, 0, sizeof plan2);
        FUZZ_ASSERT(again != NULL);
        if (plan_from_json(again, &plan2) != SHOAL_OK) {
            fprintf(stderr, "%s\n", shoal_errmsg());
            FUZZ_ASSERT(!"a parsed plan's JSON parses again");
        }
        plan_fini(&plan2);
        json_decref(again);
    }
    plan_fini(&plan);

    static const uint8_t pk[LEDGER_PUBKEY_LEN] = {1, 2, 3};
    uint64_t n = 0, bad = 0;
    char reason[256];
    const json_t *entries = json_is_object(doc) ? json_object_get(doc, "events") : doc;
    ledger_chain_check_array(entries, pk, true, &n, &bad, reason, sizeof reason);
    ledger_chain_check_array(entries, NULL, false, &n, &bad, reason, sizeof reason);
    FUZZ_ASSERT(bad == 0 || n == bad - 1);
    json_decref(doc);
    return 0;
}
