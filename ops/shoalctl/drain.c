/* drain.c: `shoalctl drain WORKER` (finish the step, leave the plan, stay registered) and
 * `shoalctl undrain WORKER` (plan it again at the next step boundary). */
#include "shoalctl.h"

static const char s_drain_usage[] =
    "usage: shoalctl drain WORKER [--json]\n"
    "  The worker (id or name) finishes its current step and leaves the plan; the run goes on\n"
    "  with a new plan generation without it. It stays registered, idle, until undrained.\n";
static const char s_undrain_usage[] =
    "usage: shoalctl undrain WORKER [--json]\n"
    "  A drained worker (id or name) is planned again at the next step boundary.\n";

typedef shoal_err_t (*s_worker_fn)(ctl_client_t *c, const char *worker, ctl_reply_t *reply);

static int s_worker_verb(ctl_opts_t *o, int argc, char **argv, const char *usage, s_worker_fn fn,
                         const char *done)
{
    const char *pos[1];
    int n_pos;
    int ex = ctl_parse_args(o, argc, argv, NULL, usage, pos, 1, &n_pos);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    if (n_pos != 1)
        return ctl_usage_error(o, usage, "expected one WORKER");

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
        printf("worker %s %s%s%s\n", pos[0], done, reply.message[0] ? ": " : "", reply.message);
    }
out:
    json_decref(doc);
    ctl_reply_fini(&reply);
    ctl_client_destroy(&c);
    return ex;
}

int cmd_drain(ctl_opts_t *o, int argc, char **argv)
{
    return s_worker_verb(o, argc, argv, s_drain_usage, ctl_client_drain, "draining");
}

int cmd_undrain(ctl_opts_t *o, int argc, char **argv)
{
    return s_worker_verb(o, argc, argv, s_undrain_usage, ctl_client_undrain, "undrained");
}
