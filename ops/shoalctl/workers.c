/* workers.c: `shoalctl workers`: every worker the coordinator knows, with its state, run, cell
 * and last heartbeat; --json gives the documented object. */
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl workers [--json]\n"
    "  --json prints {\"workers\": [{\"id\", \"name\", \"state\", \"run\", \"cell\": "
    "{\"replica\",\n"
    "  \"stage\", \"ep_rank\"}, \"last_heartbeat_ms\"}]}; run and cell are null for a worker\n"
    "  without an assignment; last_heartbeat_ms is the milliseconds since the last heartbeat\n"
    "  arrived, null when none arrived since the coordinator started. State standby: an active\n"
    "  worker a running plan holds as a spare (no cell; placed by the next plan that needs it).\n";

/* One worker of the coordinator's workers reply (ctl_reply.h) as the documented `workers --json`
 * object: run and cell null without an assignment, last_heartbeat_ms null before the first. */
static json_t *s_worker_normalise(const json_t *obj)
{
    ctl_worker_t w;
    ctl_worker_decode(obj, &w);
    json_t *cell = w.has_cell ? json_pack("{s:i, s:i, s:i}", CTL_F_REPLICA, w.replica, CTL_F_STAGE,
                                          w.stage, CTL_F_EP_RANK, w.ep_rank)
                              : json_null();
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o}", CTL_F_ID, w.id, CTL_F_NAME, w.name,
                     CTL_F_STATE, w.state[0] ? w.state : "unknown", CTL_F_RUN,
                     w.run[0] ? json_string(w.run) : json_null(), CTL_F_CELL, cell,
                     CTL_F_LAST_HEARTBEAT_MS,
                     w.last_heartbeat_ms >= 0 ? json_integer(w.last_heartbeat_ms) : json_null());
}

static json_t *s_normalise(const json_t *doc)
{
    json_t *list = json_array();
    json_t *out = json_pack("{s:o}", CTL_F_WORKERS, list);
    if (!out)
        return NULL;
    size_t i;
    const json_t *w;
    json_array_foreach(json_object_get(doc, CTL_F_WORKERS), i, w)
    {
        json_t *n = s_worker_normalise(w);
        if (!n || json_array_append_new(list, n) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* The table of a normalised document (its nulls decode as "" and -1). */
static void s_print_table(const json_t *doc)
{
    const json_t *list = json_object_get(doc, CTL_F_WORKERS);
    if (json_array_size(list) == 0) {
        printf("no workers\n");
        return;
    }
    static const char *const head[] = {"ID", "NAME", "STATE", "RUN", "CELL", "HEARTBEAT"};
    ctl_table_t *t = ctl_table_new(6, head);
    size_t i;
    const json_t *obj;
    json_array_foreach(list, i, obj)
    {
        ctl_worker_t w;
        ctl_worker_decode(obj, &w);
        char cell[96] = "-", hb[48] = "-";
        if (w.has_cell)
            snprintf(cell, sizeof(cell), "r%d/s%d/e%d", w.replica, w.stage, w.ep_rank);
        if (w.last_heartbeat_ms >= 0) {
            char ago[32];
            ctl_format_duration((double)w.last_heartbeat_ms / 1000.0, ago, sizeof(ago));
            snprintf(hb, sizeof(hb), "%s ago", ago);
        }
        const char *cells[] = {w.id, w.name, w.state, w.run[0] ? w.run : NULL, cell, hb};
        if (t)
            ctl_table_add(t, cells);
    }
    if (t)
        ctl_table_print(t, stdout);
    ctl_table_destroy(&t);
}

/* ctl_target_fn of the workers request, which names no target. */
static shoal_err_t s_request(ctl_client_t *c, const char *target, ctl_reply_t *reply)
{
    (void)target;
    return ctl_client_workers(c, reply);
}

int cmd_workers(ctl_opts_t *o, int argc, char **argv)
{
    const char *pos[1];
    int n_pos;
    int ex = ctl_parse_args(o, argc, argv, NULL, s_usage, pos, 0, &n_pos);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;

    ctl_reply_t reply = {0};
    json_t *doc = NULL, *norm = NULL;
    if ((ex = ctl_request(o, s_request, NULL, &reply, &doc)) != CTL_EXIT_OK)
        goto out;
    ex = CTL_EXIT_ERROR;
    if (!(norm = s_normalise(doc))) {
        ctl_error(o, "out of memory");
        goto out;
    }
    if (o->json)
        ctl_print_json(norm);
    else
        s_print_table(norm);
    ex = CTL_EXIT_OK;
out:
    json_decref(norm);
    json_decref(doc);
    ctl_reply_fini(&reply);
    return ex;
}
