/* runctl.c: `shoalctl pause RUN`, `resume RUN`, `cancel RUN`: run state changes, applied by the
 * coordinator at a step boundary. */
#include "shoalctl.h"

static const char s_pause_usage[] =
    "usage: shoalctl pause RUN [--json]\n"
    "  Workers finish their current step and wait; nothing is lost. `resume` continues.\n";
static const char s_resume_usage[] = "usage: shoalctl resume RUN [--json]\n"
                                     "  Continues a paused run from its last committed step.\n";
static const char s_cancel_usage[] =
    "usage: shoalctl cancel RUN [--json]\n"
    "  Ends the run for good (state cancelled); committed checkpoints are kept.\n";

typedef shoal_err_t (*s_run_fn)(ctl_client_t *c, const char *run, ctl_reply_t *reply);

static int s_run_verb(ctl_opts_t *o, int argc, char **argv, const char *usage, s_run_fn fn,
                      const char *done)
{
    const char *pos[1];
    int n_pos;
    int ex = ctl_parse_args(o, argc, argv, NULL, usage, pos, 1, &n_pos);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    if (n_pos != 1)
        return ctl_usage_error(o, usage, "expected one RUN");

    ctl_reply_t reply = {0};
    json_t *doc = NULL;
    ctl_client_t *c = ctl_connect(o);
    ex = CTL_EXIT_ERROR;
    if (!c)
        goto out;
    shoal_err_t rc = fn(c, pos[0], &reply);
    if ((ex = ctl_check_reply(o, rc, &reply)) != CTL_EXIT_OK)
        goto out;
    if (o->json) {
        if (!(doc = ctl_reply_doc(o, &reply))) {
            ex = CTL_EXIT_ERROR;
            goto out;
        }
        ctl_print_json(doc);
    } else {
        printf("run %s %s%s%s\n", pos[0], done, reply.message[0] ? ": " : "", reply.message);
    }
out:
    json_decref(doc);
    ctl_reply_fini(&reply);
    ctl_client_destroy(&c);
    return ex;
}

int cmd_pause(ctl_opts_t *o, int argc, char **argv)
{
    return s_run_verb(o, argc, argv, s_pause_usage, ctl_client_pause, "pausing");
}

int cmd_resume(ctl_opts_t *o, int argc, char **argv)
{
    return s_run_verb(o, argc, argv, s_resume_usage, ctl_client_resume, "resumed");
}

int cmd_cancel(ctl_opts_t *o, int argc, char **argv)
{
    return s_run_verb(o, argc, argv, s_cancel_usage, ctl_client_cancel, "cancelled");
}
