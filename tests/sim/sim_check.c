/* sim_check.c: reading back what shoal-sim drivers did and what the coordinator recorded. */
#include "sim_check.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <signal.h>
#include <unistd.h>

#include "coord_testlib.h"

int sim_events_load(const char *path, sim_event_t **out)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0, cap = 0;
    sim_event_t e;
    long long ms;
    while (fscanf(f, "%15s %31s %71s %lld", e.kind, e.name, e.id, &ms) == 4) {
        e.wall_ms = ms;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            sim_event_t *p = realloc(*out, (size_t)cap * sizeof *p);
            if (!p) {
                fclose(f);
                return -1;
            }
            *out = p;
        }
        (*out)[n++] = e;
    }
    fclose(f);
    return n;
}

json_t *sim_ledger(const char *dir, const char *chain)
{
    json_t *all = json_array();
    uint64_t since = 0;
    for (;;) {
        tc_reply_t r;
        int rc = -1;
        for (int tries = 0; tries < 20 && rc != 0; tries++) /* a loaded coordinator: 3 s each */
            rc = tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_EVENTS, chain, since, &r);
        if (rc != 0 || !r.ok) {
            if (rc == 0)
                tc_reply_fini(&r);
            json_decref(all);
            return NULL;
        }
        json_t *ev = json_object_get(r.json, "events");
        size_t n = json_array_size(ev);
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(ev, i);
            json_array_append(all, e);
            since = (uint64_t)json_integer_value(json_object_get(e, "seq"));
        }
        tc_reply_fini(&r);
        if (n == 0)
            return all;
    }
}

static const char *s_str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* The first ledger entry at or after `since_ms` where `id` went to dead, or NULL. */
static const json_t *s_death_entry(const json_t *ledger, const char *id, int64_t since_ms)
{
    size_t i;
    const json_t *e;
    json_array_foreach(ledger, i, e)
    {
        const json_t *d = json_object_get(e, "detail");
        if (strcmp(s_str(e, "kind"), "worker_state") == 0 && strcmp(s_str(d, "worker"), id) == 0 &&
            strcmp(s_str(d, "to"), "dead") == 0 &&
            json_integer_value(json_object_get(e, "time_ms")) >= since_ms)
            return e;
    }
    return NULL;
}

static int s_plan_has(const json_t *plan_entry, const char *id)
{
    size_t i;
    const json_t *w;
    json_array_foreach(json_object_get(json_object_get(plan_entry, "detail"), "workers"), i, w)
    {
        if (strcmp(json_string_value(w) ? json_string_value(w) : "", id) == 0)
            return 1;
    }
    return 0;
}

void sim_check_deaths(const sim_event_t *ev, int n, const json_t *run_ledger,
                      const json_t *cluster_ledger, sim_deaths_t *out)
{
    memset(out, 0, sizeof *out);
    out->latency_ms = calloc((size_t)n + 1, sizeof *out->latency_ms);
    for (int k = 0; k < n; k++) {
        if (strcmp(ev[k].kind, "death") != 0)
            continue;
        out->deaths++;
        const json_t *d = s_death_entry(run_ledger, ev[k].id, ev[k].wall_ms);
        if (!d)
            d = s_death_entry(cluster_ledger, ev[k].id, ev[k].wall_ms);
        if (!d) {
            if (!out->first_missing[0])
                snprintf(out->first_missing, sizeof out->first_missing, "%s (%s) never declared "
                         "dead", ev[k].id, ev[k].name);
            continue;
        }
        const int64_t at = json_integer_value(json_object_get(d, "time_ms"));
        out->latency_ms[out->detected++] = (double)(at - ev[k].wall_ms);
        /* the plan in force when it died, and the first plan after it was declared dead */
        const json_t *before = NULL, *after = NULL;
        size_t i;
        const json_t *e;
        json_array_foreach(run_ledger, i, e)
        {
            if (strcmp(s_str(e, "kind"), "plan") != 0)
                continue;
            int64_t t = json_integer_value(json_object_get(e, "time_ms"));
            if (t <= ev[k].wall_ms)
                before = e;
            else if (t >= at && !after)
                after = e;
        }
        if (!before || !s_plan_has(before, ev[k].id))
            continue; /* a spare: no cell to re-plan */
        out->members++;
        if (after && !s_plan_has(after, ev[k].id))
            out->replanned++;
        else if (!out->first_missing[0])
            snprintf(out->first_missing, sizeof out->first_missing,
                     "%s (%s) declared dead but no plan without it followed", ev[k].id,
                     ev[k].name);
    }
}

void sim_deaths_fini(sim_deaths_t *d)
{
    free(d->latency_ms);
    d->latency_ms = NULL;
}

static int s_dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double sim_quantile(double *v, int n, double q)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, s_dcmp);
    int i = (int)(q * (n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

pid_t sim_spawn(const char *bin, char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(bin, argv);
        _exit(127);
    }
    return pid;
}
