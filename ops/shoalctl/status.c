/* status.c: `shoalctl status [RUN]`: every run (or one) with its state, progress, loss, plan
 * generation and last committed checkpoint; --json gives the documented object. */
#include <stdlib.h>
#include <string.h>

#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl status [RUN] [--json]\n"
    "  --json prints {\"runs\": [{\"id\", \"name\", \"state\", \"step\", \"total_steps\", "
    "\"loss\",\n"
    "  \"generation\", \"checkpoint_step\"}]}; state is pending, running, paused, done, failed\n"
    "  or cancelled; loss is null before the first step.\n";

/* The coordinator may name the total "total_steps" or "steps". */
static json_t *s_run_normalise(const json_t *r)
{
    json_t *total = ctl_json_number_or_null(r, "total_steps");
    if (json_is_null(total)) {
        json_decref(total);
        total = ctl_json_number_or_null(r, "steps");
    }
    /* Before the first committed step there is no loss, whatever placeholder is sent. */
    json_t *loss =
        ctl_json_int(r, "step", 0) > 0 ? ctl_json_number_or_null(r, "loss") : json_null();
    if (json_is_integer(loss)) { /* loss is always a real in our output */
        json_t *real = json_real((double)json_integer_value(loss));
        json_decref(loss);
        loss = real;
    }
    return json_pack("{s:s, s:s, s:s, s:I, s:o, s:o, s:I, s:I}", "id", ctl_json_str(r, "id", ""),
                     "name", ctl_json_str(r, "name", ""), "state",
                     ctl_json_str(r, "state", "unknown"), "step",
                     (json_int_t)ctl_json_int(r, "step", 0), "total_steps", total, "loss", loss,
                     "generation", (json_int_t)ctl_json_int(r, "generation", 0), "checkpoint_step",
                     (json_int_t)ctl_json_int(r, "checkpoint_step", 0));
}

json_t *status_doc_normalise(const json_t *doc)
{
    json_t *runs = json_array();
    json_t *out = json_pack("{s:o}", "runs", runs);
    if (!out)
        return NULL;
    const json_t *src = json_object_get(doc, "runs");
    if (!src && json_is_object(json_object_get(doc, "run")))
        src = json_object_get(doc, "run"); /* a one-run answer */
    if (!src && json_is_object(doc) && json_object_get(doc, "id"))
        src = doc;
    if (json_is_object(src)) {
        json_t *r = s_run_normalise(src);
        if (!r || json_array_append_new(runs, r) != 0)
            goto fail;
        return out;
    }
    size_t i;
    const json_t *r;
    json_array_foreach(src, i, r)
    {
        json_t *n = s_run_normalise(r);
        if (!n || json_array_append_new(runs, n) != 0)
            goto fail;
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static void s_print_table(const json_t *st)
{
    const json_t *runs = json_object_get(st, "runs");
    if (json_array_size(runs) == 0) {
        printf("no runs\n");
        return;
    }
    static const char *const head[] = {"ID",   "NAME",       "STATE",     "STEP",
                                       "LOSS", "GENERATION", "CHECKPOINT"};
    ctl_table_t *t = ctl_table_new(7, head);
    size_t i;
    const json_t *r;
    json_array_foreach(runs, i, r)
    {
        char step[64], loss[32], gen[32], ckpt[32];
        const json_t *total = json_object_get(r, "total_steps");
        if (json_is_integer(total))
            snprintf(step, sizeof(step), "%lld/%lld", ctl_json_int(r, "step", 0),
                     (long long)json_integer_value(total));
        else
            snprintf(step, sizeof(step), "%lld", ctl_json_int(r, "step", 0));
        const json_t *l = json_object_get(r, "loss");
        if (json_is_number(l))
            snprintf(loss, sizeof(loss), "%.4f", json_number_value(l));
        else
            snprintf(loss, sizeof(loss), "-");
        snprintf(gen, sizeof(gen), "%lld", ctl_json_int(r, "generation", 0));
        long long cs = ctl_json_int(r, "checkpoint_step", 0);
        if (cs > 0)
            snprintf(ckpt, sizeof(ckpt), "step %lld", cs);
        else
            snprintf(ckpt, sizeof(ckpt), "-");
        const char *cells[] = {ctl_json_str(r, "id", ""),
                               ctl_json_str(r, "name", ""),
                               ctl_json_str(r, "state", ""),
                               step,
                               loss,
                               gen,
                               ckpt};
        if (t)
            ctl_table_add(t, cells);
    }
    if (t)
        ctl_table_print(t, stdout);
    ctl_table_destroy(&t);
}

/* Why a run is where it is (e.g. "unplaced: every worker quarantined"), when the coordinator
 * says; the --json document keeps to the documented fields. */
static void s_print_reasons(const json_t *doc)
{
    size_t i;
    const json_t *r;
    json_array_foreach(json_object_get(doc, "runs"), i, r)
    {
        const char *why = ctl_json_str(r, "reason", "");
        if (why && *why)
            printf("run %s: %s\n", ctl_json_str(r, "id", "?"), why);
    }
}

int cmd_status(ctl_opts_t *o, int argc, char **argv)
{
    const char *pos[1];
    int n_pos;
    int ex = ctl_parse_args(o, argc, argv, NULL, s_usage, pos, 1, &n_pos);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;

    ctl_reply_t reply = {0};
    json_t *doc = NULL, *st = NULL;
    ctl_client_t *c = ctl_connect(o);
    ex = CTL_EXIT_ERROR;
    if (!c)
        goto out;
    shoal_err_t rc = ctl_client_status(c, n_pos ? pos[0] : "", &reply);
    if ((ex = ctl_check_reply(o, rc, &reply)) != CTL_EXIT_OK)
        goto out;
    ex = CTL_EXIT_ERROR;
    if (!(doc = ctl_reply_doc(o, &reply)))
        goto out;
    if (!(st = status_doc_normalise(doc))) {
        ctl_error(o, "out of memory");
        goto out;
    }
    if (o->json) {
        ctl_print_json(st);
    } else {
        s_print_table(st);
        s_print_reasons(doc);
    }
    ex = CTL_EXIT_OK;
out:
    json_decref(st);
    json_decref(doc);
    ctl_reply_fini(&reply);
    ctl_client_destroy(&c);
    return ex;
}
