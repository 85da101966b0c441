/* workers.c: `shoalctl workers`: every worker the coordinator knows, with its state, run, cell
 * and last heartbeat; --json gives the documented object. */
#include <stdlib.h>
#include <string.h>

#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl workers [--json]\n"
    "  --json prints {\"workers\": [{\"id\", \"name\", \"state\", \"run\", \"cell\": "
    "{\"replica\",\n"
    "  \"stage\", \"ep_rank\"}, \"last_heartbeat_ms\"}]}; run and cell are null for a worker\n"
    "  without an assignment; last_heartbeat_ms is the coordinator's wall clock (ms since the\n"
    "  epoch) when the last heartbeat arrived, null before the first.\n";

static json_t *s_string_or_null(const json_t *obj, const char *key)
{
    const char *s = ctl_json_str(obj, key, NULL);
    return s && *s ? json_string(s) : json_null();
}

static json_t *s_worker_normalise(const json_t *w)
{
    const json_t *cell = json_object_get(w, "cell");
    json_t *cell_out =
        json_is_object(cell)
            ? json_pack("{s:I, s:I, s:I}", "replica", (json_int_t)ctl_json_int(cell, "replica", 0),
                        "stage", (json_int_t)ctl_json_int(cell, "stage", 0), "ep_rank",
                        (json_int_t)ctl_json_int(cell, "ep_rank", 0))
            : json_null();
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o}", "id", ctl_json_str(w, "id", ""), "name",
                     ctl_json_str(w, "name", ""), "state", ctl_json_str(w, "state", "unknown"),
                     "run", s_string_or_null(w, "run"), "cell", cell_out, "last_heartbeat_ms",
                     ctl_json_int(w, "last_heartbeat_ms", -1) >= 0
                         ? ctl_json_number_or_null(w, "last_heartbeat_ms")
                         : json_null());
}

static json_t *s_normalise(const json_t *doc)
{
    json_t *list = json_array();
    json_t *out = json_pack("{s:o}", "workers", list);
    if (!out)
        return NULL;
    size_t i;
    const json_t *w;
    json_array_foreach(json_object_get(doc, "workers"), i, w)
    {
        json_t *n = s_worker_normalise(w);
        if (!n || json_array_append_new(list, n) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static void s_print_table(const json_t *doc)
{
    const json_t *list = json_object_get(doc, "workers");
    if (json_array_size(list) == 0) {
        printf("no workers\n");
        return;
    }
    static const char *const head[] = {"ID", "NAME", "STATE", "RUN", "CELL", "HEARTBEAT"};
    ctl_table_t *t = ctl_table_new(6, head);
    size_t i;
    const json_t *w;
    json_array_foreach(list, i, w)
    {
        char cell[96] = "-", hb[48] = "-";
        const json_t *cj = json_object_get(w, "cell");
        if (json_is_object(cj))
            snprintf(cell, sizeof(cell), "r%lld/s%lld/e%lld", ctl_json_int(cj, "replica", 0),
                     ctl_json_int(cj, "stage", 0), ctl_json_int(cj, "ep_rank", 0));
        long long age = ctl_json_int(w, "last_heartbeat_ms", -1);
        if (age >= 0) {
            char ago[32];
            ctl_format_duration((double)age / 1000.0, ago, sizeof(ago));
            snprintf(hb, sizeof(hb), "%s ago", ago);
        }
        const char *cells[] = {ctl_json_str(w, "id", ""),
                               ctl_json_str(w, "name", ""),
                               ctl_json_str(w, "state", ""),
                               ctl_json_str(w, "run", NULL),
                               cell,
                               hb};
        if (t)
            ctl_table_add(t, cells);
    }
    if (t)
        ctl_table_print(t, stdout);
    ctl_table_destroy(&t);
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
    ctl_client_t *c = ctl_connect(o);
    ex = CTL_EXIT_ERROR;
    if (!c)
        goto out;
    shoal_err_t rc = ctl_client_workers(c, &reply);
    if ((ex = ctl_check_reply(o, rc, &reply)) != CTL_EXIT_OK)
        goto out;
    ex = CTL_EXIT_ERROR;
    if (!(doc = ctl_reply_doc(o, &reply)))
        goto out;
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
    ctl_client_destroy(&c);
    return ex;
}
