/* status.c: `shoalctl status [RUN]`: every run (or one) with its state, progress, loss, plan
 * generation and last committed checkpoint; --json gives the documented object. */
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl status [RUN] [--json]\n"
    "  --json prints {\"runs\": [{\"id\", \"name\", \"state\", \"step\", \"total_steps\", "
    "\"loss\",\n"
    "  \"generation\", \"checkpoint_step\", \"reason\"}]}; state is pending, running, paused, done,\n"
    "  failed or cancelled; loss is null before the first step; reason says why a run failed,\n"
    "  was cancelled or is paused waiting for workers (\"unplaced: ...\"), else \"\".\n";

/* One run of the coordinator's status reply (ctl_reply.h) as the documented `status --json`
 * object: exactly its nine fields, loss null before the first committed step, reason "" unless
 * the run failed, was cancelled or is paused waiting for workers. */
static json_t *s_run_normalise(const json_t *r)
{
    ctl_run_status_t st;
    ctl_run_status_decode(r, &st);
    json_t *loss = st.step > 0 && st.has_loss ? json_real(st.loss) : json_null();
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:o, s:I, s:I, s:s}", CTL_F_ID, st.id, CTL_F_NAME,
                     st.name, CTL_F_STATE, st.state[0] ? st.state : "unknown", CTL_F_STEP,
                     (json_int_t)st.step, CTL_F_TOTAL_STEPS, (json_int_t)st.total_steps, CTL_F_LOSS,
                     loss, CTL_F_GENERATION, (json_int_t)st.generation, CTL_F_CHECKPOINT_STEP,
                     (json_int_t)st.checkpoint_step, CTL_F_REASON, st.reason);
}

json_t *status_doc_normalise(const json_t *doc)
{
    json_t *runs = json_array();
    json_t *out = json_pack("{s:o}", CTL_F_RUNS, runs);
    if (!out)
        return NULL;
    size_t i;
    const json_t *r;
    json_array_foreach(json_object_get(doc, CTL_F_RUNS), i, r)
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

static void s_print_table(const json_t *doc)
{
    const json_t *runs = json_object_get(doc, CTL_F_RUNS);
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
        ctl_run_status_t rs;
        ctl_run_status_decode(r, &rs);
        snprintf(step, sizeof(step), "%lld/%lld", (long long)rs.step, (long long)rs.total_steps);
        if (rs.has_loss)
            snprintf(loss, sizeof(loss), "%.4f", rs.loss);
        else
            snprintf(loss, sizeof(loss), "-");
        snprintf(gen, sizeof(gen), "%lld", (long long)rs.generation);
        if (rs.checkpoint_step > 0)
            snprintf(ckpt, sizeof(ckpt), "step %lld", (long long)rs.checkpoint_step);
        else
            snprintf(ckpt, sizeof(ckpt), "-");
        const char *cells[] = {rs.id, rs.name, rs.state, step, loss, gen, ckpt};
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
    json_array_foreach(json_object_get(doc, CTL_F_RUNS), i, r)
    {
        ctl_run_status_t st;
        ctl_run_status_decode(r, &st);
        if (st.reason[0])
            printf("run %s: %s\n", st.id, st.reason);
    }
}

int cmd_status(ctl_opts_t *o, int argc, char **argv)
{
    const char *run;
    int ex = ctl_parse_target(o, argc, argv, NULL, s_usage, NULL, &run);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;

    ctl_reply_t reply = {0};
    json_t *doc = NULL, *st = NULL;
    if ((ex = ctl_request(o, ctl_client_status, run, &reply, &doc)) != CTL_EXIT_OK)
        goto out;
    ex = CTL_EXIT_ERROR;
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
    return ex;
}
