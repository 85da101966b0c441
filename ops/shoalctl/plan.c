/* plan.c: `shoalctl plan RUN`: the placement the coordinator would make now from the live
 * workers (topology, stages, expert shards, one cell per worker), computed but not applied. */
#include <stdio.h>

#include "ctl_reply.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl plan RUN [--json]\n"
    "  Shows the plan the coordinator would give the live workers now (dry run: nothing is\n"
    "  stored, no worker is told). --json prints the coordinator's plan document: generation,\n"
    "  topology {dp, pp, ep}, stages, experts, peers [{worker, rank, cell, ...}], start_step.\n";

static void s_print(const json_t *doc)
{
    const json_t *plan = json_object_get(doc, CTL_F_PLAN);
    const json_t *topo = json_object_get(plan, CTL_F_TOPOLOGY);
    printf("generation %lld: dp %lld x pp %lld x ep %lld, from step %lld",
           ctl_json_int(plan, CTL_F_GENERATION, 0), ctl_json_int(topo, CTL_F_DP, 0),
           ctl_json_int(topo, CTL_F_PP, 0), ctl_json_int(topo, CTL_F_EP, 0),
           ctl_json_int(plan, CTL_F_START_STEP, 0));
    const char *src = ctl_json_str(plan, CTL_F_SOURCE, NULL);
    if (src)
        printf(" (state from %s)", src);
    printf("\n");

    size_t i;
    const json_t *s;
    const json_t *stages = json_object_get(plan, CTL_F_STAGES);
    if (json_array_size(stages) > 0) {
        static const char *const head[] = {"STAGE", "LAYERS", "EMBEDDING", "HEAD"};
        ctl_table_t *t = ctl_table_new(4, head);
        json_array_foreach(stages, i, s)
        {
            char st[24], layers[48];
            long long first = ctl_json_int(s, CTL_F_FIRST_LAYER, 0),
                      n = ctl_json_int(s, CTL_F_N_LAYERS, 0);
            snprintf(st, sizeof(st), "%lld", ctl_json_int(s, CTL_F_STAGE, (long long)i));
            snprintf(layers, sizeof(layers), n > 0 ? "%lld-%lld" : "none", first, first + n - 1);
            const char *cells[] = {
                st, layers, json_is_true(json_object_get(s, CTL_F_HAS_EMBEDDING)) ? "yes" : "no",
                json_is_true(json_object_get(s, CTL_F_HAS_HEAD)) ? "yes" : "no"};
            if (t)
                ctl_table_add(t, cells);
        }
        if (t) {
            printf("\n");
            ctl_table_print(t, stdout);
        }
        ctl_table_destroy(&t);
    }
    const json_t *peers = json_object_get(plan, CTL_F_PEERS);
    if (json_array_size(peers) == 0) {
        printf("\nno cells (no live worker to place)\n");
        return;
    }
    static const char *const head[] = {"RANK", "WORKER", "REPLICA", "STAGE", "EP_RANK", "EXPERTS"};
    ctl_table_t *t = ctl_table_new(6, head);
    const json_t *experts = json_object_get(plan, CTL_F_EXPERTS);
    json_array_foreach(peers, i, s)
    {
        const json_t *cell = json_object_get(s, CTL_F_CELL);
        char rank[24], rep[24], stage[24], ep[24];
        snprintf(rank, sizeof(rank), "%lld", ctl_json_int(s, CTL_F_RANK, (long long)i));
        snprintf(rep, sizeof(rep), "%lld", ctl_json_int(cell, CTL_F_REPLICA, 0));
        snprintf(stage, sizeof(stage), "%lld", ctl_json_int(cell, CTL_F_STAGE, 0));
        long long epr = ctl_json_int(cell, CTL_F_EP_RANK, 0);
        snprintf(ep, sizeof(ep), "%lld", epr);
        /* The routed experts this ep rank holds ({ep_rank, first, count} per rank). */
        char held[64] = "all";
        size_t k;
        const json_t *x;
        json_array_foreach(experts, k, x)
        {
            long long first = ctl_json_int(x, CTL_F_FIRST, 0),
                      count = ctl_json_int(x, CTL_F_COUNT, 0);
            if (ctl_json_int(x, CTL_F_EP_RANK, -1) == epr && count > 0)
                snprintf(held, sizeof(held), "%lld-%lld", first, first + count - 1);
        }
        const char *cells[] = {rank, ctl_json_str(s, CTL_F_WORKER, "?"), rep, stage, ep, held};
        if (t)
            ctl_table_add(t, cells);
    }
    if (t) {
        printf("\n");
        ctl_table_print(t, stdout);
    }
    ctl_table_destroy(&t);
}

/* ctl_target_fn of `plan`: always a dry run. */
static shoal_err_t s_dry_run(ctl_client_t *c, const char *run, ctl_reply_t *reply)
{
    return ctl_client_plan(c, run, true, reply);
}

int cmd_plan(ctl_opts_t *o, int argc, char **argv)
{
    const char *run;
    int ex = ctl_parse_target(o, argc, argv, NULL, s_usage, "RUN", &run);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;

    ctl_reply_t reply = {0};
    json_t *doc = NULL;
    if ((ex = ctl_request(o, s_dry_run, run, &reply, &doc)) == CTL_EXIT_OK) {
        if (o->json)
            ctl_print_json(doc);
        else
            s_print(doc);
    }
    json_decref(doc);
    ctl_reply_fini(&reply);
    return ex;
}
