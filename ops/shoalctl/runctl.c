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

int cmd_pause(ctl_opts_t *o, int argc, char **argv)
{
    return ctl_target_verb(o, argc, argv, s_pause_usage, ctl_client_pause, "run", "pausing");
}

int cmd_resume(ctl_opts_t *o, int argc, char **argv)
{
    return ctl_target_verb(o, argc, argv, s_resume_usage, ctl_client_resume, "run", "resumed");
}

int cmd_cancel(ctl_opts_t *o, int argc, char **argv)
{
    return ctl_target_verb(o, argc, argv, s_cancel_usage, ctl_client_cancel, "run", "cancelled");
}
