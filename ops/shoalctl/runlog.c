/* runlog.c: per-step metrics merged from the workers' JSON lines, plan changes from the ledger
 * (runlog.h). */
#include "runlog.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

/* One metrics line as a worker wrote it. */
typedef struct {
    long long step, generation, time_ms;
    int rank;
    double loss, lr, grad_norm, tokens_per_s, step_seconds;
} s_line_t;

typedef struct {
    s_line_t *v;
    size_t n, cap;
} s_lines_t;

static double s_num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

static shoal_err_t s_push(s_lines_t *ls, const s_line_t *x)
{
    if (ls->n == ls->cap) {
        size_t ncap = ls->cap ? ls->cap * 2 : 256;
        s_line_t *nv = realloc(ls->v, ncap * sizeof *nv);
        if (!nv)
            return shoal_fail(SHOAL_ERR_NOMEM, "metrics: out of memory");
        ls->v = nv;
        ls->cap = ncap;
    }
    ls->v[ls->n++] = *x;
    return SHOAL_OK;
}

static shoal_err_t s_read_file(s_lines_t *ls, const char *path, const char *run_id)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return shoal_fail(SHOAL_ERR_IO, "metrics file %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    shoal_err_t rc = SHOAL_OK;
    while (rc == SHOAL_OK && getline(&line, &cap, f) >= 0) {
        lineno++;
        if (line[strspn(line, " \t\r\n")] == '\0')
            continue;
        json_t *o = json_loads(line, 0, NULL);
        const json_t *step = json_object_get(o, "step");
        if (!json_is_object(o) || !json_is_integer(step) || !json_is_number(json_object_get(o, "loss"))) {
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s:%ld: not a metrics line (a JSON object with "
                            "an integer step and a loss)", path, lineno);
        } else {
            const char *run = json_string_value(json_object_get(o, "run"));
            if (!run_id || !run_id[0] || !run || strcmp(run, run_id) == 0) {
                s_line_t x = {
                    .step = json_integer_value(step),
                    .generation = (long long)s_num(o, "generation"),
                    .rank = (int)s_num(o, "rank"),
                    .loss = s_num(o, "loss"),
                    .lr = s_num(o, "lr"),
                    .grad_norm = s_num(o, "grad_norm"),
                    .tokens_per_s = s_num(o, "tokens_per_s"),
                    .step_seconds = s_num(o, "step_seconds"),
                    .time_ms = (long long)s_num(o, "time_ms"), /* a release's rows have it */
                };
                rc = s_push(ls, &x);
            }
        }
        json_decref(o);
    }
    if (rc == SHOAL_OK && ferror(f))
        rc = shoal_fail(SHOAL_ERR_IO, "metrics file %s: read error", path);
    free(line);
    fclose(f);
    return rc;
}

/* step ascending, then generation descending, then rank ascending */
static int s_cmp_line(const void *pa, const void *pb)
{
    const s_line_t *a = pa, *b = pb;
    if (a->step != b->step)
        return a->step < b->step ? -1 : 1;
    if (a->generation != b->generation)
        return a->generation > b->generation ? -1 : 1;
    return (a->rank > b->rank) - (a->rank < b->rank);
}

shoal_err_t runlog_read_metrics(runlog_t *l, const char *const *files, int n_files,
                                const char *run_id)
{
    s_lines_t ls = {0};
    shoal_err_t rc = SHOAL_OK;
    for (int i = 0; i < n_files && rc == SHOAL_OK; i++)
        rc = s_read_file(&ls, files[i], run_id);
    if (rc != SHOAL_OK)
        goto out;
    qsort(ls.v, ls.n, sizeof *ls.v, s_cmp_line);
    free(l->points);
    l->n_points = 0;
    if (!(l->points = calloc(ls.n + 1, sizeof *l->points))) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "metrics: out of memory");
        goto out;
    }
    for (size_t i = 0; i < ls.n;) {
        /* the group of this step's newest generation; older tries of the step are skipped */
        const s_line_t *first = &ls.v[i];
        runlog_point_t *p = &l->points[l->n_points++];
        *p = (runlog_point_t){.step = first->step, .loss = first->loss, .lr = first->lr,
                              .grad_norm = first->grad_norm, .generation = first->generation,
                              .time_ms = first->time_ms};
        size_t j = i;
        for (; j < ls.n && ls.v[j].step == first->step; j++) {
            if (ls.v[j].generation != first->generation)
                continue;
            p->ranks++;
            if (ls.v[j].step_seconds > p->step_seconds)
                p->step_seconds = ls.v[j].step_seconds;
        }
        /* every rank's tokens/s is the global batch over its own step time */
        const double tokens = first->tokens_per_s * first->step_seconds;
        p->tokens_per_s = p->step_seconds > 0 ? tokens / p->step_seconds : first->tokens_per_s;
        i = j;
    }
out:
    free(ls.v);
    return rc;
}

shoal_err_t runlog_points_from_history(runlog_t *l, const json_t *rows)
{
    free(l->points);
    l->n_points = 0;
    if (!(l->points = calloc(json_array_size(rows) + 1, sizeof *l->points)))
        return shoal_fail(SHOAL_ERR_NOMEM, "history: out of memory");
    size_t i;
    const json_t *row;
    json_array_foreach(rows, i, row)
    {
        l->points[l->n_points++] = (runlog_point_t){
            .step = (long long)s_num(row, "step"),
            .loss = s_num(row, "loss"),
            .grad_norm = s_num(row, "grad_norm"),
            .tokens_per_s = s_num(row, "tokens_per_s"),
            .step_seconds = s_num(row, "step_seconds"),
            .generation = (long long)s_num(row, "generation"),
            .ranks = (int)s_num(row, "ranks"),
            .time_ms = (long long)s_num(row, "time_ms"),
        };
    }
    return SHOAL_OK;
}

int runlog_has_times(const runlog_t *l)
{
    for (int i = 0; i < l->n_points; i++)
        if (l->points[i].time_ms <= 0)
            return 0;
    return l->n_points > 0;
}

shoal_err_t runlog_read_metrics_list(runlog_t *l, const char *list, const char *run_id)
{
    char *copy = strdup(list);
    const char *files[256];
    int n = 0;
    if (!copy)
        return shoal_fail(SHOAL_ERR_NOMEM, "metrics: out of memory");
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (n < 256)
            files[n++] = t;
    shoal_err_t rc = runlog_read_metrics(l, files, n, run_id);
    free(copy);
    return rc;
}

json_t *runlog_plan_history(const json_t *events)
{
    json_t *plans = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        const char *kind = json_string_value(json_object_get(e, "kind"));
        if (plans && kind && strcmp(kind, "plan") == 0 && json_array_append(plans, e) != 0) {
            json_decref(plans);
            plans = NULL;
        }
    }
    return plans;
}

static runlog_change_t s_classify(const char *reason)
{
    if (strstr(reason, " dead") || strstr(reason, " gone") || strstr(reason, "failure"))
        return RUNLOG_DEATH;
    if (strstr(reason, "drain") || strstr(reason, " left"))
        return RUNLOG_DRAIN;
    if (strstr(reason, " joins"))
        return RUNLOG_JOIN;
    return RUNLOG_PLAN;
}

shoal_err_t runlog_markers_from_plans(runlog_t *l, const json_t *plans)
{
    free(l->markers);
    l->n_markers = 0;
    if (!(l->markers = calloc(json_array_size(plans) + 1, sizeof *l->markers)))
        return shoal_fail(SHOAL_ERR_NOMEM, "plan history: out of memory");
    size_t i;
    const json_t *e;
    json_array_foreach(plans, i, e)
    {
        const json_t *d = json_object_get(e, "detail");
        long long gen = (long long)s_num(d, "generation");
        if (gen < 2)
            continue; /* the first plan starts the run: no change to mark */
        runlog_marker_t *m = &l->markers[l->n_markers++];
        const char *reason = json_string_value(json_object_get(d, "reason"));
        snprintf(m->reason, sizeof m->reason, "%s", reason ? reason : "");
        m->generation = gen;
        m->step = (long long)s_num(d, "start_step");
        m->time_ms = (long long)s_num(e, "time_ms");
        m->kind = s_classify(m->reason);
    }
    return SHOAL_OK;
}

shoal_err_t runlog_read_release(runlog_t *l, const char *dir)
{
    char metrics[PATH_MAX], plans_path[PATH_MAX];
    shoal_err_t rc;
    if ((rc = fsutil_path(metrics, sizeof metrics, "%s/metrics.jsonl", dir)) != SHOAL_OK ||
        (rc = fsutil_path(plans_path, sizeof plans_path, "%s/plan_history.json", dir)) != SHOAL_OK)
        return rc;
    const char *files[] = {metrics};
    if ((rc = runlog_read_metrics(l, files, 1, NULL)) != SHOAL_OK)
        return rc;
    json_error_t jerr;
    json_t *plans = json_load_file(plans_path, 0, &jerr);
    if (!json_is_array(plans)) {
        json_decref(plans);
        return shoal_fail(SHOAL_ERR_FORMAT, "%s:%d: not a JSON array of plan entries (%s)",
                          plans_path, jerr.line, jerr.text);
    }
    rc = runlog_markers_from_plans(l, plans);
    json_decref(plans);
    return rc;
}

json_t *runlog_point_json(const runlog_point_t *p)
{
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:I, s:i, s:I}", "step",
                     (json_int_t)p->step, "loss", p->loss, "lr", p->lr, "grad_norm",
                     p->grad_norm, "tokens_per_s", p->tokens_per_s, "step_seconds",
                     p->step_seconds, "generation", (json_int_t)p->generation, "ranks", p->ranks,
                     "time_ms", (json_int_t)p->time_ms);
}

const char runlog_csv_header[] =
    "step,loss,lr,grad_norm,tokens_per_s,step_seconds,generation,ranks,time_ms\n";

void runlog_point_csv(const runlog_point_t *p, char *out, size_t cap)
{
    snprintf(out, cap, "%lld,%.9g,%.9g,%.9g,%.1f,%.6f,%lld,%d,%lld\n", p->step, p->loss, p->lr,
             p->grad_norm, p->tokens_per_s, p->step_seconds, p->generation, p->ranks,
             p->time_ms);
}

const char *runlog_change_name(runlog_change_t kind)
{
    switch (kind) {
    case RUNLOG_JOIN: return "join";
    case RUNLOG_DEATH: return "death";
    case RUNLOG_DRAIN: return "drain";
    default: return "plan";
    }
}

void runlog_fini(runlog_t *l)
{
    if (!l)
        return;
    free(l->points);
    free(l->markers);
    *l = (runlog_t){0};
}
