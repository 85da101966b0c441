/* plan.c: `shoalctl plan RUN`: the placement the coordinator would make now from the live
 * workers (topology, stages, expert shards, one cell per worker with its layers, experts and
 * estimated memory, the groups that cross hosts or institutions, the spares), computed but not
 * applied. */
#include <stdio.h>
#include <string.h>

#include "ctl_reply.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl plan RUN [--json]\n"
    "  Shows the plan the coordinator would give the live workers now (dry run: nothing is\n"
    "  stored, no worker is told): per worker its cell, layers, experts, estimated memory and\n"
    "  declared memory; the ep groups, pipelines and dp groups that span hosts or institutions;\n"
    "  the spares (standby). --json prints the coordinator's plan document: generation,\n"
    "  topology {dp, pp, ep}, stages, experts, peers [{worker, rank, cell, ...}], spares,\n"
    "  groups, note, start_step.\n";

/* Prints a table after a blank line (nothing when it could not be built) and destroys it. */
static void s_table_flush(ctl_table_t **t)
{
    if (*t) {
        printf("\n");
        ctl_table_print(*t, stdout);
    }
    ctl_table_destroy(t);
}

/* Bytes as "1.5 GiB" ("?" for 0 = unknown). */
static void s_bytes(long long b, char *buf, size_t cap)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    for (; v >= 1024 && u < 4; u++)
        v /= 1024;
    if (b <= 0)
        snprintf(buf, cap, "?");
    else
        snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

/* The groups that span more than one host or institution, one line each. */
static void s_print_groups(const json_t *plan)
{
    size_t i;
    const json_t *g;
    int n = 0;
    json_array_foreach(json_object_get(plan, CTL_F_GROUPS), i, g)
    {
        long long hosts = ctl_json_int(g, CTL_F_HOSTS, 1), insts = ctl_json_int(g, CTL_F_INSTITUTIONS, 1);
        if (hosts <= 1 && insts <= 1)
            continue;
        const char *kind = ctl_json_str(g, CTL_F_KIND, "?");
        long long r = ctl_json_int(g, CTL_F_REPLICA, -1), s = ctl_json_int(g, CTL_F_STAGE, -1);
        char what[64];
        if (strcmp(kind, "ep") == 0)
            snprintf(what, sizeof what, "ep group (replica %lld, stage %lld)", r, s);
        else if (strcmp(kind, "pipeline") == 0)
            snprintf(what, sizeof what, "pipeline of replica %lld", r);
        else
            snprintf(what, sizeof what, "dp group of stage %lld", s);
        printf("%s%s spans %lld hosts, %lld institutions\n", n++ ? "" : "\n", what, hosts, insts);
    }
    if (n == 0)
        printf("\nevery group within one host\n");
}

static void s_print_spares(const json_t *plan)
{
    const json_t *spares = json_object_get(plan, CTL_F_SPARES), *s;
    size_t i;
    if (json_array_size(spares) == 0)
        return;
    static const char *const head[] = {"SPARE", "HOST", "INSTITUTION", "DECLARED"};
    ctl_table_t *t = ctl_table_new(4, head);
    json_array_foreach(spares, i, s)
    {
        char mem[32];
        s_bytes(ctl_json_int(s, CTL_F_MEMORY_BYTES, 0), mem, sizeof mem);
        const char *cells[] = {ctl_json_str(s, CTL_F_WORKER, "?"), ctl_json_str(s, CTL_F_HOST, ""),
                               ctl_json_str(s, CTL_F_INSTITUTION, ""), mem};
        if (t)
            ctl_table_add(t, cells);
    }
    s_table_flush(&t);
}

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
    const char *note = ctl_json_str(plan, CTL_F_NOTE, "");
    if (note[0])
        printf("note: %s\n", note);

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
        s_table_flush(&t);
    }
    const json_t *peers = json_object_get(plan, CTL_F_PEERS);
    if (json_array_size(peers) == 0) {
        printf("\nno cells (no live worker to place)\n");
        return;
    }
    static const char *const head[] = {"RANK",    "WORKER",  "REPLICA", "STAGE",
                                       "EP_RANK", "EXPERTS", "LAYERS",  "MEM_EST",
                                       "DECLARED", "HOST",   "INSTITUTION"};
    ctl_table_t *t = ctl_table_new(11, head);
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
        /* the layers of the cell's stage */
        char layers[48] = "?", est[32], decl[32];
        const json_t *st = json_array_get(stages, (size_t)ctl_json_int(cell, CTL_F_STAGE, 0));
        long long first = ctl_json_int(st, CTL_F_FIRST_LAYER, 0), nl = ctl_json_int(st, CTL_F_N_LAYERS, 0);
        if (nl > 0)
            snprintf(layers, sizeof layers, "%lld-%lld", first, first + nl - 1);
        s_bytes(ctl_json_int(s, CTL_F_MEM_EST_BYTES, 0), est, sizeof est);
        s_bytes(ctl_json_int(s, CTL_F_MEMORY_BYTES, 0), decl, sizeof decl);
        const char *cells[] = {rank,   ctl_json_str(s, CTL_F_WORKER, "?"), rep, stage, ep, held,
                               layers, est, decl, ctl_json_str(s, CTL_F_HOST, ""),
                               ctl_json_str(s, CTL_F_INSTITUTION, "")};
        if (t)
            ctl_table_add(t, cells);
    }
    s_table_flush(&t);
    s_print_groups(plan);
    s_print_spares(plan);
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
    return ctl_show(o, s_dry_run, run, s_print);
}
