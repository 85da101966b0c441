/* plot.c: `shoalctl plot RUN|DIR --out FILE.png|svg`: a run's loss and tokens/s over wall time
 * with the plan changes marked, drawn with cairo, from the coordinator's history and ledger, from
 * a release directory, or (--metrics) from the workers' metrics files (over steps: their lines
 * carry no time). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl_reply.h"
#include "release.h"
#include "runlog.h"
#include "shoalctl.h"
#ifdef SHOAL_HAVE_CAIRO
#include "plot_draw.h"
#endif

static const char s_usage[] =
    "usage: shoalctl plot RUN --out FILE.png|FILE.svg [--metrics FILE[,FILE...]]\n"
    "       shoalctl plot DIR --out FILE.png|FILE.svg\n"
    "  Draws the loss and tokens/s of every committed step over wall time (seconds, or\n"
    "  minutes for a run over 10 min, since the first step), with the plan changes marked\n"
    "  when they were made (green: a worker joined, red: one died, purple: one was drained or\n"
    "  left, grey: another re-plan). The metrics come from the coordinator's per-step history\n"
    "  of RUN and the plan changes from its ledger, or both from DIR, a `shoalctl release`\n"
    "  directory. --metrics reads the workers' --metrics files instead of the history\n"
    "  (offline files): their lines carry no time, so the x axis is then the step.\n";

#ifdef SHOAL_HAVE_CAIRO
/* The plan changes of RUN from the coordinator's ledger; run_id receives RUN's id. */
static int s_markers_from_coordinator(const ctl_opts_t *o, const char *run, runlog_t *log,
                                      char *run_id, size_t cap)
{
    json_t *events = NULL, *plans = NULL;
    int ex = release_fetch_ledger(o, run, &events);
    snprintf(run_id, cap, "%s", ctl_json_str(json_array_get(events, 0), CTL_F_RUN, run));
    if (ex == CTL_EXIT_OK && (!(plans = runlog_plan_history(events)) ||
                              runlog_markers_from_plans(log, plans) != SHOAL_OK))
        ex = ctl_error(o, "out of memory");
    json_decref(plans);
    json_decref(events);
    return ex;
}
#endif

int cmd_plot(ctl_opts_t *o, int argc, char **argv)
{
    const char *out = NULL, *metrics = NULL, *target = NULL;
    const ctl_optdef_t defs[] = {{"out", true, &out, NULL},
                                 {"metrics", true, &metrics, NULL},
                                 {NULL, false, NULL, NULL}};
    int ex = ctl_parse_target(o, argc, argv, defs, s_usage, "RUN or DIR", &target);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    if (!out || !out[0])
        return ctl_usage_error(o, s_usage, "--out FILE.png|FILE.svg is required");
#ifndef SHOAL_HAVE_CAIRO
    (void)metrics;
    return ctl_error(o, "this shoalctl was built without cairo (libcairo2-dev): it cannot draw");
#else
    struct stat st;
    const int is_dir = stat(target, &st) == 0 && S_ISDIR(st.st_mode);
    runlog_t log = {0};
    char run_id[64] = "", title[256];
    if (is_dir) {
        if (runlog_read_release(&log, target) != SHOAL_OK) {
            ex = ctl_error(o, "%s", shoal_errmsg());
            goto out;
        }
        snprintf(title, sizeof title, "release %s", target);
    } else {
        if ((ex = s_markers_from_coordinator(o, target, &log, run_id, sizeof run_id)) !=
            CTL_EXIT_OK)
            goto out;
        json_t *rows = NULL;
        if (!metrics && (ex = ctl_history_fetch(o, run_id, &rows, NULL, 0)) != CTL_EXIT_OK)
            goto out;
        shoal_err_t rc = metrics ? runlog_read_metrics_list(&log, metrics, run_id)
                                 : runlog_points_from_history(&log, rows);
        json_decref(rows);
        if (rc != SHOAL_OK) {
            ex = ctl_error(o, "%s", shoal_errmsg());
            goto out;
        }
        snprintf(title, sizeof title, "run %s", run_id);
    }
    if (log.n_points == 0) {
        ex = ctl_error(o, "no metrics of %s to plot%s", target,
                       is_dir || metrics ? ""
                                         : " (no step committed yet, or a run older than the "
                                           "coordinator's history: give --metrics FILES)");
        goto out;
    }
    if (plot_draw(&log, title, out) != SHOAL_OK) {
        ex = ctl_error(o, "%s", shoal_errmsg());
        goto out;
    }
    printf("plotted %d step(s) and %d plan change(s) to %s (x axis: %s)\n", log.n_points,
           log.n_markers, out, runlog_has_times(&log) ? "wall time" : "step");
    ex = CTL_EXIT_OK;
out:
    runlog_fini(&log);
    return ex;
#endif
}
