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

int cmd_drain(ctl_opts_t *o, int argc, char **argv)
{
    return ctl_target_verb(o, argc, argv, s_drain_usage, ctl_client_drain, "worker", "draining");
}

int cmd_undrain(ctl_opts_t *o, int argc, char **argv)
{
    return ctl_target_verb(o, argc, argv, s_undrain_usage, ctl_client_undrain, "worker",
                           "undrained");
}
