/* runlog.h: a run's history as `release` publishes it and `plot` draws it: per-step metrics
 * from the coordinator's history (MSG_CTL_HISTORY) or merged from the workers' --metrics JSON
 * lines, and the plan changes (joins, deaths, drains) from the ledger. Also reads both back
 * from a release directory. */
#ifndef SHOAL_RUNLOG_H
#define SHOAL_RUNLOG_H

#include <jansson.h>

#include "err.h"

/* One step of the run, merged over the ranks of the newest plan generation that reported it
 * (a step trained again after a rollback counts once, as last trained). */
typedef struct {
    long long step;
    double loss;         /* the lowest rank's (every rank reports the step's global loss) */
    double lr, grad_norm;
    double tokens_per_s; /* the run's throughput: the global batch over the slowest rank's step */
    double step_seconds; /* the slowest rank's */
    long long generation;
    int ranks;           /* lines merged (history: ranks that reported exactly this step) */
    long long time_ms;   /* wall clock of the step's commit (0: unknown: workers' files) */
} runlog_point_t;

typedef enum { RUNLOG_JOIN, RUNLOG_DEATH, RUNLOG_DRAIN, RUNLOG_PLAN } runlog_change_t;

/* A plan change: the plan of `generation` (>= 2) applies from `step`. */
typedef struct {
    long long step, time_ms, generation;
    runlog_change_t kind; /* from the plan's reason; a death outranks a drain outranks a join */
    char reason[256];
} runlog_marker_t;

typedef struct {
    runlog_point_t *points; /* ascending step */
    int n_points;
    runlog_marker_t *markers; /* ascending generation */
    int n_markers;
} runlog_t;

/* Reads JSON-lines metrics files (shoal-worker --metrics) and merges the lines of run `run_id`
 * (every run when NULL or "") into l->points. SHOAL_ERR_IO names an unreadable file;
 * SHOAL_ERR_FORMAT names file:line of a line that is not a metrics object. */
shoal_err_t runlog_read_metrics(runlog_t *l, const char *const *files, int n_files,
                                const char *run_id);

/* Fills l->points from the coordinator's history rows (ctl_history_fetch: {step, time_ms,
 * loss, tokens, step_seconds, tokens_per_s, grad_norm, generation, ranks}). SHOAL_ERR_NOMEM. */
shoal_err_t runlog_points_from_history(runlog_t *l, const json_t *rows);

/* Whether every point has its wall time (then plots use a time axis). */
int runlog_has_times(const runlog_t *l);

/* runlog_read_metrics of a comma-separated list of files ("a.jsonl,b.jsonl"). */
shoal_err_t runlog_read_metrics_list(runlog_t *l, const char *list, const char *run_id);

/* The ledger entries of kind "plan" (new references in a new array; NULL on out of memory). */
json_t *runlog_plan_history(const json_t *events);

/* Fills l->markers from plan entries (runlog_plan_history's form): every generation after the
 * first. SHOAL_ERR_NOMEM only. */
shoal_err_t runlog_markers_from_plans(runlog_t *l, const json_t *plans);

/* Reads a release directory's metrics.jsonl and plan_history.json into *l. */
shoal_err_t runlog_read_release(runlog_t *l, const char *dir);

/* JSON object / CSV line of a point (CSV header: runlog_csv_header). */
json_t *runlog_point_json(const runlog_point_t *p);
extern const char runlog_csv_header[];
void runlog_point_csv(const runlog_point_t *p, char *out, size_t cap);

const char *runlog_change_name(runlog_change_t kind);

void runlog_fini(runlog_t *l);

#endif
