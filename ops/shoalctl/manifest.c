/* manifest.c: `shoalctl manifest RUN [--step K]`: a committed checkpoint's manifest: each
 * shard's cell, writer, files and holders (the workers keeping a verified copy of it). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ctl_reply.h"
#include "numparse.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl manifest RUN [--step K] [--json]\n"
    "  The committed checkpoint of step K (default: the latest): per shard its cell, the worker\n"
    "  that wrote it and the workers holding a verified copy (checkpoint.replicas), with the\n"
    "  path on each. --json prints the manifest document (ops/COORDINATOR.md).\n";

int ctl_manifest_request(const ctl_opts_t *o, const char *run, int64_t step, ctl_reply_t *reply,
                         json_t **doc)
{
    ctl_client_t *c = ctl_connect(o);
    if (!c)
        return CTL_EXIT_ERROR;
    int ex = ctl_check_reply(o, ctl_client_manifest(c, run, step, reply), reply);
    ctl_client_destroy(&c);
    if (ex == CTL_EXIT_OK && !(*doc = ctl_reply_doc(o, reply)))
        ex = CTL_EXIT_ERROR;
    return ex;
}

int cmd_manifest(ctl_opts_t *o, int argc, char **argv)
{
    const char *step_s = NULL, *run = NULL;
    const ctl_optdef_t defs[] = {{"step", true, &step_s, NULL}, {NULL, false, NULL, NULL}};
    int ex = ctl_parse_target(o, argc, argv, defs, s_usage, "RUN", &run);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    int64_t step = 0;
    if (step_s && numparse_i64(step_s, 1, INT64_MAX, &step) != SHOAL_OK)
        return ctl_usage_error(o, s_usage, "--step: expected a step >= 1");
    ctl_reply_t reply = {0};
    json_t *doc = NULL;
    if ((ex = ctl_manifest_request(o, run, step, &reply, &doc)) != CTL_EXIT_OK)
        goto out;
    if (o->json) {
        ctl_print_json(doc);
        goto out;
    }
    const json_t *shards = json_object_get(json_object_get(doc, CTL_F_MANIFEST), CTL_F_SHARDS);
    printf("run %s checkpoint %" PRId64 ": %zu shard(s)\n", ctl_json_str(doc, CTL_F_RUN, run),
           (int64_t)ctl_json_int(doc, CTL_F_STEP, step), json_array_size(shards));
    for (size_t i = 0; i < json_array_size(shards); i++) {
        const json_t *s = json_array_get(shards, i), *cell = json_object_get(s, CTL_F_CELL);
        const json_t *holders = json_object_get(s, CTL_F_HOLDERS);
        printf("  cell r%lld/s%lld/e%lld written by %s, held by",
               ctl_json_int(cell, CTL_F_REPLICA, -1), ctl_json_int(cell, CTL_F_STAGE, -1),
               ctl_json_int(cell, CTL_F_EP_RANK, -1), ctl_json_str(s, CTL_F_WORKER, "?"));
        for (size_t h = 0; h < json_array_size(holders); h++)
            printf(" %s", ctl_json_str(json_array_get(holders, h), CTL_F_WORKER, "?"));
        printf("%s\n", json_array_size(holders) ? "" : " (not recorded)");
    }
out:
    json_decref(doc);
    ctl_reply_fini(&reply);
    return ex;
}
